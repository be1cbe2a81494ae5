"""Command and data messages: AMF-encoded names, transaction ids and arguments.

A command message (type 20, or 17 for AMF3 clients) is a sequence of AMF
values: name, transaction id, command object, then arguments. Type 17 starts
with one format byte (0) and then AMF0 values that may switch to AMF3.
Status replies (``onStatus``/``_error``) carry an info object with ``level``,
``code`` and ``description``; ``status_info`` builds one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rtmpd.core import amf0
from rtmpd.core.amf_types import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_NODES
from rtmpd.core.errors import AMFDecodeError, MalformedCommand
from rtmpd.core.messages import Message, MessageType

#: Chunk stream used for command messages we send.
COMMAND_CSID = 3


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded command: ``name(transaction_id, command_object, *args)`` on message stream ``stream_id``."""

    name: str
    transaction_id: float
    command_object: Any
    args: tuple[Any, ...]
    stream_id: int = 0


#: Longest command name accepted by default (``Limits.max_command_name``).
DEFAULT_MAX_COMMAND_NAME = 256


def _amf_values(
    message: Message,
    max_depth: int,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> list[Any]:
    payload = message.payload
    if message.type_id in (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3):
        # AMF3 command/data messages begin with a format selector byte that
        # must be 0 (the values themselves are AMF0 with 0x11 switches).
        if not payload or payload[0] != 0:
            raise AMFDecodeError("AMF3 message does not start with format byte 0")
        payload = payload[1:]
    return amf0.decode_all(payload, max_depth=max_depth, max_nodes=max_nodes, max_bytes=max_bytes)


def decode_command(
    message: Message,
    *,
    max_depth: int = 64,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_name: int = DEFAULT_MAX_COMMAND_NAME,
) -> Command:
    """Decode a type 20/17 message.

    Raises AMFDecodeError (``AMFBudgetExceeded`` past the expansion budget,
    see ``rtmpd.core.amf0.decode``) or MalformedCommand: no name, a name
    longer than ``max_name`` characters, or a transaction id that is not a
    finite number (null counts as 0).
    """
    values = _amf_values(message, max_depth, max_nodes, max_bytes)
    if not values or not isinstance(values[0], str):
        raise MalformedCommand("command message does not start with a command name")
    name = values[0]
    if len(name) > max_name:
        # The name itself is not repeated: it is what a log line must not carry.
        raise MalformedCommand(f"command name of {len(name)} characters (limit {max_name})")
    txn = values[1] if len(values) > 1 else 0.0
    if isinstance(txn, bool) or not isinstance(txn, (int, float)):
        # Some clients send null for notifications; treat anything else as malformed.
        if txn is None:
            txn = 0.0
        else:
            raise MalformedCommand(f"command {name!r} has a non-numeric transaction id")
    elif not math.isfinite(txn):
        raise MalformedCommand(f"command {name!r} has a transaction id that is not a finite number")
    command_object = values[2] if len(values) > 2 else None
    return Command(name, float(txn), command_object, tuple(values[3:]), message.stream_id)


def decode_data(message: Message, *, max_depth: int = 64) -> list[Any]:
    """Decode a type 18/15 data message into its AMF values. Raises AMFDecodeError."""
    return _amf_values(message, max_depth)


def encode_command(
    name: str,
    transaction_id: float,
    command_object: Any = None,
    *args: Any,
    stream_id: int = 0,
    timestamp: int = 0,
) -> Message:
    """An AMF0 command message (type 20)."""
    payload = amf0.encode_many(name, transaction_id, command_object, *args)
    return Message(MessageType.COMMAND_AMF0, timestamp, stream_id, payload)


def encode_data(*values: Any, stream_id: int = 0, timestamp: int = 0) -> Message:
    """An AMF0 data message (type 18), e.g. ``encode_data("onMetaData", {...})``."""
    return Message(MessageType.DATA_AMF0, timestamp, stream_id, amf0.encode_many(*values))


def status_info(level: str, code: str, description: str = "", **extra: Any) -> dict[str, Any]:
    """The info object of an ``onStatus``/``_result``/``_error`` reply."""
    info: dict[str, Any] = {"level": level, "code": code, "description": description}
    info.update(extra)
    return info


def on_status(stream_id: int, level: str, code: str, description: str = "", **extra: Any) -> Message:
    """``onStatus(0, null, info)`` on a NetStream."""
    return encode_command(
        "onStatus", 0, None, status_info(level, code, description, **extra), stream_id=stream_id
    )
