"""The events ``rtmpd.core.client.ClientSession`` hands to its adapter, and its states.

Small frozen values, like ``rtmpd.core.events``; a player also gets that
module's ``MediaReceived``, ``MetadataReceived`` and ``DataReceived``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from rtmpd.core.events import DataReceived, MediaReceived, MetadataReceived

__all__ = [
    "Acknowledged",
    "ClientEvent",
    "ClientState",
    "Connected",
    "Refused",
    "StatusReceived",
    "StreamStarted",
    "StreamStopped",
]


class ClientState(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating stream"
    STARTING = "starting"
    ACTIVE = "active"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    """``connect`` succeeded: the server's properties and info objects (dicts, maybe empty)."""

    properties: dict[str, Any]
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """``NetStream.Publish.Start`` or ``NetStream.Play.Start``: media may flow on ``stream_id``."""

    stream_id: int
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused a step (``stage``: "connect", "createStream", "publish" or "play").

    ``code`` and ``description`` come from the info object (empty if it had none).
    """

    stage: str
    code: str
    description: str
    info: Any


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Any other status or notification (``onFCPublish``, ``onStatus`` after the start, ``onBWDone``)."""

    name: str
    code: str
    info: Any
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """A played stream ended at the server (``Play.UnpublishNotify``, ``Play.Stop``, StreamEOF)."""

    code: str


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The server acknowledged ``sequence_number`` bytes (modulo 2**32) of ours."""

    sequence_number: int


ClientEvent = (
    Connected
    | StreamStarted
    | Refused
    | StatusReceived
    | StreamStopped
    | Acknowledged
    | MediaReceived
    | MetadataReceived
    | DataReceived
)
