"""The events ``rtmpd.core.session.ServerSession`` hands to its adapter.

Each is a small frozen value, made from bytes the peer sent, and says what
the adapter has to act on; what the session handles by itself (ping replies,
acknowledgements, Set Chunk Size on the incoming side, Abort) never shows up
as an event except where the adapter logs it. Payloads are ``bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from rtmpd.core.commands import Command
from rtmpd.core.messages import Message

__all__ = [
    "BufferLengthSet",
    "CommandReceived",
    "DataReceived",
    "Event",
    "HandshakeCompleted",
    "MediaReceived",
    "MessageIgnored",
    "MetadataReceived",
    "PeerChunkSizeChanged",
]


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """C0/C1/C2 were received and S0/S1/S2 queued; ``digest`` for the Flash (digest) handshake."""

    digest: bool


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A decoded command message (type 20 or 17) that passed the connect gate."""

    command: Command


class MediaReceived(NamedTuple):
    """An audio (8) or video (9) message, untouched (also each one taken out of an Aggregate).

    A ``NamedTuple``, not a frozen dataclass like the others: it is made once per media message,
    and a frozen dataclass costs three times as much to build.
    """

    message: Message


@dataclass(frozen=True, slots=True)
class MetadataReceived:
    """``onMetaData``: ``message`` is an AMF0 data message (type 18) without ``@setDataFrame``;
    ``values`` is its object (``{}`` when the publisher sent none)."""

    message: Message
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Any other data message (``onCuePoint``, ``onTextData``...), as AMF0 (type 18) without
    ``@setDataFrame``, ready to relay."""

    message: Message


@dataclass(frozen=True, slots=True)
class PeerChunkSizeChanged:
    """The peer announced a new chunk size for what it sends (already in effect)."""

    size: int


@dataclass(frozen=True, slots=True)
class BufferLengthSet:
    """User control SetBufferLength: the peer buffers ``buffer_ms`` of message stream ``stream_id``."""

    stream_id: int
    buffer_ms: int


@dataclass(frozen=True, slots=True)
class MessageIgnored:
    """A message of a type the server does not act on (shared objects, unknown types)."""

    message: Message


Event = (
    HandshakeCompleted
    | CommandReceived
    | MediaReceived
    | MetadataReceived
    | DataReceived
    | PeerChunkSizeChanged
    | BufferLengthSet
    | MessageIgnored
)
