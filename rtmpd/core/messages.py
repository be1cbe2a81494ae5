"""RTMP messages: type ids, the message value, and protocol/user control.

A ``Message`` is what the chunk layer reassembles and what the writer
splits; it knows nothing about chunk streams. Control messages (types 1-6)
are built and parsed here so the chunk reader, the writer and the adapter
share one definition of their byte layout (RTMP 1.0 spec, sections 5.4
and 6.2, 7.1.7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from rtmpd.core.errors import InvalidChunkSize, MalformedControlMessage, NestedAggregate

MAX_CHUNK_SIZE = 0x7FFFFFFF


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


#: Types whose size is bounded by the (small) command limit, not the media limit.
COMMAND_TYPES = frozenset(
    {
        MessageType.SET_CHUNK_SIZE,
        MessageType.ABORT,
        MessageType.ACKNOWLEDGEMENT,
        MessageType.USER_CONTROL,
        MessageType.WINDOW_ACK_SIZE,
        MessageType.SET_PEER_BANDWIDTH,
        MessageType.COMMAND_AMF0,
        MessageType.COMMAND_AMF3,
        MessageType.SHARED_OBJECT_AMF0,
        MessageType.SHARED_OBJECT_AMF3,
    }
)

#: Protocol control messages travel on chunk stream 2, message stream 0.
CONTROL_CSID = 2


@dataclass(frozen=True, slots=True)
class Message:
    """One complete RTMP message.

    ``timestamp`` is absolute and 32-bit (it wraps at 2**32 ms); ``payload``
    is immutable so one message can be shared by every subscriber.
    """

    type_id: int
    timestamp: int
    stream_id: int
    payload: bytes


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(IntEnum):
    HARD = 0
    SOFT = 1
    DYNAMIC = 2


@dataclass(frozen=True, slots=True)
class SetChunkSize:
    size: int


@dataclass(frozen=True, slots=True)
class Abort:
    csid: int


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    sequence_number: int


@dataclass(frozen=True, slots=True)
class WindowAckSize:
    size: int


@dataclass(frozen=True, slots=True)
class SetPeerBandwidth:
    size: int
    limit_type: int


@dataclass(frozen=True, slots=True)
class UserControl:
    """A user control event. ``value`` is the stream id, or the timestamp for
    ping events; ``buffer_length`` is only set for SetBufferLength."""

    event: int
    value: int
    buffer_length: int | None = None


ControlEvent = SetChunkSize | Abort | Acknowledgement | WindowAckSize | SetPeerBandwidth | UserControl

_U32 = struct.Struct(">I")
_U32U8 = struct.Struct(">IB")
_U16U32 = struct.Struct(">HI")
_U16U32U32 = struct.Struct(">HII")


def _control(type_id: int, payload: bytes) -> Message:
    return Message(type_id, 0, 0, payload)


def check_chunk_size(size: int) -> int:
    """Return ``size`` if it is a legal chunk size (1..2**31-1), else raise InvalidChunkSize."""
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise InvalidChunkSize(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
    return size


def set_chunk_size(size: int) -> Message:
    return _control(MessageType.SET_CHUNK_SIZE, _U32.pack(size))


def abort(csid: int) -> Message:
    return _control(MessageType.ABORT, _U32.pack(csid))


def acknowledgement(sequence_number: int) -> Message:
    return _control(MessageType.ACKNOWLEDGEMENT, _U32.pack(sequence_number & 0xFFFFFFFF))


def window_ack_size(size: int) -> Message:
    return _control(MessageType.WINDOW_ACK_SIZE, _U32.pack(size))


def set_peer_bandwidth(size: int, limit_type: int = PeerBandwidthLimit.DYNAMIC) -> Message:
    return _control(MessageType.SET_PEER_BANDWIDTH, _U32U8.pack(size, limit_type))


def user_control(event: int, value: int, buffer_length: int | None = None) -> Message:
    if event == UserControlEvent.SET_BUFFER_LENGTH:
        payload = _U16U32U32.pack(event, value, buffer_length or 0)
    else:
        payload = _U16U32.pack(event, value & 0xFFFFFFFF)
    return _control(MessageType.USER_CONTROL, payload)


def parse_control(message: Message) -> ControlEvent:
    """Decode a protocol control (types 1-3, 5, 6) or user control (type 4) message.

    Raises MalformedControlMessage for a payload of the wrong size and
    InvalidChunkSize for an illegal Set Chunk Size.
    """
    t, p = message.type_id, message.payload
    try:
        if t == MessageType.SET_CHUNK_SIZE:
            (size,) = _U32.unpack_from(p)
            # The spec says bit 31 must be zero; a set bit is an illegal size.
            return SetChunkSize(check_chunk_size(size))
        if t == MessageType.ABORT:
            return Abort(_U32.unpack_from(p)[0])
        if t == MessageType.ACKNOWLEDGEMENT:
            return Acknowledgement(_U32.unpack_from(p)[0])
        if t == MessageType.WINDOW_ACK_SIZE:
            return WindowAckSize(_U32.unpack_from(p)[0])
        if t == MessageType.SET_PEER_BANDWIDTH:
            size, limit = _U32U8.unpack_from(p)
            return SetPeerBandwidth(size, limit)
        if t == MessageType.USER_CONTROL:
            event, value = _U16U32.unpack_from(p)
            if event == UserControlEvent.SET_BUFFER_LENGTH:
                return UserControl(event, value, _U16U32U32.unpack_from(p)[2])
            return UserControl(event, value)
    except struct.error as e:
        raise MalformedControlMessage(
            f"control message type {t} with {len(p)}-byte payload is truncated"
        ) from e
    raise MalformedControlMessage(f"message type {t} is not a control message")


_TAG_HEADER = struct.Struct(">B3s3sB3s")
_AGGREGATE = 22


def split_aggregate(message: Message) -> list[Message]:
    """Split an Aggregate message (type 22) into its sub-messages, one level deep and without recursion.

    The payload is a run of FLV-style tags (11-byte header, body, 4-byte back
    pointer); each sub-message keeps its offset from the first tag's
    timestamp, rebased on the aggregate's own timestamp. Every header is
    checked first, reading the payload in place; only then is each body
    sliced out, once (a sub-message's payload is immutable ``bytes``, shared
    by every player), so an aggregate that is refused costs no copy.

    Raises MalformedControlMessage for a truncated or inconsistent payload
    and NestedAggregate for a sub-message that is itself an aggregate.
    """
    payload = message.payload
    total = len(payload)
    spans: list[tuple[int, int, int, int]] = []
    pos = 0
    while pos < total:
        if total - pos < _TAG_HEADER.size:
            raise MalformedControlMessage("aggregate message ends inside a sub-message header")
        type_id, size_b, ts_b, ts_ext, _ = _TAG_HEADER.unpack_from(payload, pos)
        if type_id == _AGGREGATE:
            raise NestedAggregate(f"aggregate message on stream {message.stream_id} holds an aggregate")
        size = int.from_bytes(size_b, "big")
        body_start = pos + _TAG_HEADER.size
        end = body_start + size + 4
        if end > total:
            raise MalformedControlMessage("aggregate sub-message runs past the end of the message")
        spans.append((type_id, int.from_bytes(ts_b, "big") | (ts_ext << 24), body_start, size))
        pos = end
    if not spans:
        return []
    first_ts = spans[0][1]
    base, stream_id = message.timestamp, message.stream_id
    return [
        Message(type_id, (base + ts - first_ts) & 0xFFFFFFFF, stream_id, payload[start : start + size])
        for type_id, ts, start, size in spans
    ]
