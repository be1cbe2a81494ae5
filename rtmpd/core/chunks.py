"""The RTMP chunk stream (RTMP 1.0 spec, section 5.3): bytes <-> messages.

``ChunkReader`` reassembles the messages a peer sends; ``ChunkWriter`` and
``encode_message`` split ours into chunks. Both are sans-IO: bytes in,
``Message`` values out and the other way round.

This module owns every decision about chunk headers. Where real
implementations disagree with each other, it follows the majority and says
so here:

- A type-3 chunk that starts a new message adds the previous timestamp delta
  of its chunk stream. After a type-0 header the "delta" is the type-0
  timestamp itself: that is what the spec says (5.3.1.2.4, "If a Type 3 chunk
  follows a Type 0 chunk, then the timestamp delta for this Type 3 chunk is
  the same as the timestamp of the Type 0 chunk") and what librtmp and ffmpeg
  do; nginx-rtmp uses a delta of 0 instead. The writer never depends on the
  difference: it only uses a type-3 header for a new message after a type-1
  or type-2 header, where everybody agrees.
- Extended timestamps on type-3 chunks: Adobe FMS, librtmp and ffmpeg repeat
  the 4 bytes on every type-3 chunk that follows a header which had one;
  other clients follow the spec's silence and do not. The reader accepts
  both by peeking (see ``ChunkReader``); the writer always repeats them.
"""

from __future__ import annotations

import struct

from rtmpd.core.errors import (
    ChunkStreamError,
    InvalidChunkSize,
    LocalProtocolError,
    MessageTooLarge,
    PartialMessagesTooLarge,
    TooManyChunkStreams,
)
from rtmpd.core.limits import Limits
from rtmpd.core.messages import (
    COMMAND_TYPES,
    CONTROL_CSID,
    Abort,
    Message,
    MessageType,
    SetChunkSize,
    check_chunk_size,
    parse_control,
    set_chunk_size,
)

__all__ = ["ChunkReader", "ChunkWriter", "encode_basic_header", "encode_message"]

MIN_CSID = 2
MAX_CSID = 65599
#: The largest value of the 24-bit timestamp, delta and length fields; as a
#: timestamp or delta it means "look in the extended timestamp".
EXTENDED = 0xFFFFFF
_MASK32 = 0xFFFFFFFF
_DEFAULT_CHUNK_SIZE = 128

_U24U24U8 = struct.Struct(">BHBHB")  # 24-bit fields as (high byte, low 16 bits)
_U24 = struct.Struct(">BH")
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")

_SET_CHUNK_SIZE = int(MessageType.SET_CHUNK_SIZE)
_ABORT = int(MessageType.ABORT)
_COMMAND_TYPES = frozenset(int(t) for t in COMMAND_TYPES)


def encode_basic_header(fmt: int, csid: int) -> bytes:
    """Return the 1-, 2- or 3-byte basic header of a chunk of type ``fmt`` on ``csid``.

    Uses the shortest form: one byte for csid 2-63, two for 64-319, three for
    320-65599. Raises LocalProtocolError for any other csid or an fmt outside 0-3.
    """
    if not 0 <= fmt <= 3:
        raise LocalProtocolError(f"chunk format {fmt} outside 0..3")
    top = fmt << 6
    if MIN_CSID <= csid <= 63:
        return bytes((top | csid,))
    if 64 <= csid <= 319:
        return bytes((top, csid - 64))
    if 320 <= csid <= MAX_CSID:
        rest = csid - 64
        return bytes((top | 1, rest & 0xFF, rest >> 8))
    raise LocalProtocolError(f"chunk stream id {csid} outside {MIN_CSID}..{MAX_CSID}")


class ChunkReader:
    """Reassembles the messages of an incoming chunk stream.

    ``feed`` may be called with any split of the byte stream; the messages
    it returns, taken together, do not depend on the split. State that
    outlives one call: the header fields of every chunk stream, the partial
    message of every chunk stream, the unfinished payload of the chunk being
    received, and at most one unfinished chunk header (a few bytes).

    Set Chunk Size and Abort are acted on as soon as they complete, before
    the next chunk is parsed, and are also returned like any other message.

    Extended timestamps on type-3 chunks (see the module docstring): when a
    type-3 chunk follows a header that carried an extended timestamp, the 4
    bytes after its basic header are consumed as a repeated extended
    timestamp if they equal the stored one, and are payload otherwise. This
    is ambiguous by nature: a payload that starts with exactly those 4 bytes
    from a client that does not repeat them is misread (SRS and nginx-rtmp's
    ``publish_time_fix`` make the same bet). To stay split-invariant the
    reader decides only from bytes it has: as soon as the bytes available
    differ from the stored value it decides "payload"; while they are a
    matching prefix shorter than 4 bytes it waits for more data. The one
    case where waiting could stall is a client that does not repeat the
    timestamp, whose last chunk of a message is shorter than 4 bytes and
    happens to match, and that then sends nothing until it hears back.

    Memory: the messages in progress on all chunk streams together may
    announce at most ``Limits.max_partial_message_bytes`` (a message counts
    its full length from its header until it completes or is aborted), so
    a peer cannot hold a message limit's worth on each of its chunk streams.
    ``chunks_received`` and ``messages_received`` count what was parsed, for
    the session's rate budget.
    """

    chunk_size: int
    bytes_received: int
    chunks_received: int
    messages_received: int

    def __init__(self, limits: Limits = Limits()) -> None:  # noqa: B008 - Limits is frozen
        self._limits = limits
        self.chunk_size = _DEFAULT_CHUNK_SIZE
        self.bytes_received = 0
        self.chunks_received = 0
        self.messages_received = 0
        #: Announced lengths of the messages in progress, summed over all chunk streams.
        self._in_progress = 0
        self._max_partial = limits.max_partial_message_bytes
        self._streams: dict[int, _InStream] = {}
        # Bytes of a chunk header that has not fully arrived yet.
        self._pending = b""
        # The chunk stream whose chunk payload is being received, and how
        # many payload bytes of that chunk are still to come.
        self._current: _InStream | None = None
        self._chunk_left = 0

    def feed(self, data: bytes) -> list[Message]:
        """Consume ``data`` and return every message it completes, in order.

        Raises a ``RemoteProtocolError`` subclass if the stream is illegal:
        ChunkStreamError (header on an unknown chunk stream), MessageTooLarge
        (raised at the header, before the payload is buffered),
        TooManyChunkStreams, PartialMessagesTooLarge, InvalidChunkSize or
        MalformedControlMessage. After
        an error the reader is unusable and messages completed earlier in the
        same call are not returned: the connection has to be closed anyway.
        """
        if type(data) is not bytes:
            # The parsing below slices and compares ``bytes``; Twisted always
            # hands us bytes, so this copy only happens for other callers.
            data = bytes(data)
        self.bytes_received += len(data)
        if self._pending:
            data = self._pending + data
            self._pending = b""
        view = memoryview(data)
        end = len(data)
        pos = 0
        out: list[Message] = []
        current = self._current
        left = self._chunk_left
        chunks = 0
        while True:
            if current is None:
                if pos >= end:
                    break
                header = self._parse_header(data, pos, end)
                if header is None:
                    self._pending = data[pos:]
                    break
                chunks += 1
                pos, current = header
                left = current.remaining
                size = self.chunk_size
                if left > size:
                    if current.buffer is None and current.ext is None and current.mark is not None:
                        # What ffmpeg and OBS send: the whole message here, its type-3 chunks not
                        # interleaved with another chunk stream's. Checking every continuation
                        # header at once and joining the pieces costs a fraction of a turn per chunk.
                        n = (left - 1) // size
                        stop = pos + left + n
                        if stop <= end and data[pos + size : stop : size + 1] == current.mark * n:
                            step = size + 1
                            last = pos + n * step
                            pieces = []
                            for q in range(pos, last, step):
                                pieces.append(view[q : q + size])
                            pieces.append(view[last:stop])
                            chunks += n
                            pos = stop
                            current.remaining = 0
                            self._in_progress -= current.length
                            message = Message(
                                current.type_id, current.timestamp, current.stream_id, b"".join(pieces)
                            )
                            out.append(message)
                            if message.type_id == _SET_CHUNK_SIZE or message.type_id == _ABORT:
                                self._apply_control(message)
                            current = None
                            continue
                    left = size
            # Take what is here of this chunk's payload in one slice.
            take = end - pos
            if take > left:
                take = left
            piece = view[pos : pos + take]
            pos += take
            left -= take
            remaining = current.remaining - take
            current.remaining = remaining
            if remaining:
                if current.buffer is None:
                    current.buffer = bytearray(piece)
                else:
                    current.buffer += piece
                if left:
                    break  # ``pos == end``: the rest of the chunk comes later
                current = None
                continue
            if current.buffer is None:
                payload = bytes(piece)
            else:
                current.buffer += piece
                payload = bytes(current.buffer)
                current.buffer = None
            self._in_progress -= current.length
            message = Message(current.type_id, current.timestamp, current.stream_id, payload)
            out.append(message)
            if message.type_id == _SET_CHUNK_SIZE or message.type_id == _ABORT:
                self._apply_control(message)
            current = None
        self._current = current
        self._chunk_left = left
        self.chunks_received += chunks
        self.messages_received += len(out)
        return out

    def _apply_control(self, message: Message) -> None:
        event = parse_control(message)
        if isinstance(event, SetChunkSize):
            self.chunk_size = event.size
        elif isinstance(event, Abort):
            stream = self._streams.get(event.csid)
            if stream is not None:
                if stream.remaining:
                    self._in_progress -= stream.length
                stream.remaining = 0
                stream.buffer = None

    def _parse_header(self, data: bytes, pos: int, end: int) -> tuple[int, _InStream] | None:
        """Parse the chunk header at ``pos``; return (payload position, stream) or None if incomplete.

        Nothing is changed until the whole header is there, so an incomplete
        header can be parsed again from the start when more bytes arrive.
        """
        first = data[pos]
        fmt = first >> 6
        csid = first & 0x3F
        pos += 1
        if csid == 0:
            if pos >= end:
                return None
            csid = 64 + data[pos]
            pos += 1
        elif csid == 1:
            if pos + 2 > end:
                return None
            csid = 64 + data[pos] + (data[pos + 1] << 8)
            pos += 2
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise ChunkStreamError(f"type-{fmt} chunk on chunk stream {csid} before any type-0 header")
            if len(self._streams) >= self._limits.max_chunk_streams:
                raise TooManyChunkStreams(f"more than {self._limits.max_chunk_streams} chunk streams")

        if fmt == 3:
            if stream.ext is not None:
                # Repeated extended timestamp or payload? See the class docstring.
                ext = stream.ext
                got = data[pos : pos + 4]
                if got == ext:
                    pos += 4
                elif len(got) < 4 and ext.startswith(got):
                    return None
            if not stream.remaining:
                total = self._in_progress + stream.length
                if total > self._max_partial:
                    self._too_much_in_progress(total)
                self._in_progress = total
                stream.timestamp = (stream.timestamp + stream.delta) & _MASK32
                stream.remaining = stream.length
            return pos, stream

        # Types 0, 1 and 2: a 24-bit timestamp (type 0) or delta first.
        size = 11 if fmt == 0 else 7 if fmt == 1 else 3
        if pos + size > end:
            return None
        length = type_id = stream_id = 0
        if fmt == 2:
            high, low = _U24.unpack_from(data, pos)
        else:
            high, low, length_high, length_low, type_id = _U24U24U8.unpack_from(data, pos)
            length = length_high << 16 | length_low
            if fmt == 0:
                stream_id = _U32LE.unpack_from(data, pos + 7)[0]
        field = high << 16 | low
        pos += size
        ext = None
        if field == EXTENDED:
            if pos + 4 > end:
                return None
            ext = data[pos : pos + 4]
            field = _U32.unpack(ext)[0]
            pos += 4

        if stream is not None and stream.remaining:
            # A full header in the middle of a message. The spec says the
            # rest of a message should use type 3, but ffmpeg and SRS accept
            # a header that repeats the message's length and type (and stream
            # id) as a continuation; so do we, keeping the message's timestamp.
            if fmt == 2 or (
                length == stream.length
                and type_id == stream.type_id
                and (fmt == 1 or stream_id == stream.stream_id)
            ):
                return pos, stream
            raise ChunkStreamError(
                f"new message header on chunk stream {csid} before its message was complete"
            )

        if fmt != 2:
            limit = (
                self._limits.max_command_message_size
                if type_id in _COMMAND_TYPES
                else self._limits.max_media_message_size
            )
            if length > limit:
                raise MessageTooLarge(f"message of type {type_id} announces {length} bytes, limit is {limit}")
        total = self._in_progress + (length if fmt != 2 else stream.length)  # type: ignore[union-attr]
        if total > self._max_partial:
            self._too_much_in_progress(total)
        self._in_progress = total
        if stream is None:
            stream = self._streams[csid] = _InStream()
            if csid < 64:
                stream.mark = bytes((0xC0 | csid,))
        if fmt == 0:
            stream.stream_id = stream_id
            stream.timestamp = field
        else:
            stream.timestamp = (stream.timestamp + field) & _MASK32
        if fmt != 2:
            stream.length = length
            stream.type_id = type_id
        stream.delta = field
        stream.ext = ext
        stream.remaining = stream.length
        return pos, stream

    def _too_much_in_progress(self, total: int) -> None:
        limit = self._limits.max_partial_message_bytes
        raise PartialMessagesTooLarge(f"messages in progress announce {total} bytes, limit is {limit}")


class _InStream:
    """What the reader remembers about one incoming chunk stream."""

    __slots__ = ("timestamp", "delta", "length", "type_id", "stream_id", "ext", "remaining", "buffer", "mark")

    def __init__(self) -> None:
        #: Timestamp of the message in progress, or of the last one.
        self.timestamp = 0
        #: What a type-3 header starting a new message adds to ``timestamp``.
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        #: The 4 extended timestamp bytes of the last type-0/1/2 header, if it had them.
        self.ext: bytes | None = None
        #: Payload bytes of the message in progress still to come (0: none in progress).
        self.remaining = 0
        #: Payload received so far of a message spread over several chunks.
        self.buffer: bytearray | None = None
        #: The one-byte basic header of a type-3 chunk on this stream (None: a longer one).
        self.mark: bytes | None = None


def _check_message(message: Message) -> int:
    """Return the payload length of ``message``, or raise LocalProtocolError if it cannot be sent."""
    length = len(message.payload)
    if length > EXTENDED:
        raise LocalProtocolError(f"message of {length} bytes does not fit the 24-bit length field")
    if not 0 <= message.type_id <= 0xFF:
        raise LocalProtocolError(f"message type {message.type_id} outside 0..255")
    if not 0 <= message.timestamp <= _MASK32:
        raise LocalProtocolError(f"timestamp {message.timestamp} outside 0..2**32-1")
    if not 0 <= message.stream_id <= _MASK32:
        raise LocalProtocolError(f"message stream id {message.stream_id} outside 0..2**32-1")
    return length


def _local_chunk_size(size: int) -> int:
    try:
        return check_chunk_size(size)
    except InvalidChunkSize as e:
        raise LocalProtocolError(str(e)) from e


def _chunked(first: bytes, continuation: bytes, payload: bytes, chunk_size: int) -> bytes:
    """Return ``first`` + the payload's first chunk, then each further chunk behind ``continuation``."""
    length = len(payload)
    if length <= chunk_size:
        return first + payload
    view = memoryview(payload)
    parts = [first, view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(continuation)
        parts.append(view[offset : offset + chunk_size])
    return b"".join(parts)


def _headers(
    fmt: int, csid: int, field: int, length: int, type_id: int, stream_id: int
) -> tuple[bytes, bytes]:
    """Return the first chunk's full header and the type-3 header of the chunks after it."""
    basic = encode_basic_header(fmt, csid)
    continuation = encode_basic_header(3, csid)
    ext = b""
    if field >= EXTENDED:
        # Repeated on every type-3 chunk of the message: librtmp and ffmpeg expect it.
        ext = _U32.pack(field)
        continuation += ext
        field = EXTENDED
    if fmt == 3:
        return basic + ext, continuation
    header = _U24.pack(field >> 16, field & 0xFFFF)
    if fmt != 2:
        header = _U24U24U8.pack(field >> 16, field & 0xFFFF, length >> 16, length & 0xFFFF, type_id)
        if fmt == 0:
            header += _U32LE.pack(stream_id)
    return basic + header + ext, continuation


def encode_message(csid: int, message: Message, chunk_size: int) -> bytes:
    """Encode ``message`` on ``csid`` with a type-0 header and type-3 continuation chunks.

    Stateless: the bytes are what a fresh ``ChunkWriter`` with this chunk
    size writes for a first message on ``csid``, so one encoding can be sent
    to many peers (on chunk streams their writers do not use). Raises
    LocalProtocolError for an illegal csid or chunk size, or a message whose
    fields do not fit the header.
    """
    length = _check_message(message)
    if not 1 <= chunk_size <= 0x7FFFFFFF:
        raise LocalProtocolError(f"chunk size {chunk_size} outside 1..{0x7FFFFFFF}")
    first, continuation = _headers(0, csid, message.timestamp, length, message.type_id, message.stream_id)
    return _chunked(first, continuation, message.payload, chunk_size)


class ChunkWriter:
    """Splits outgoing messages into chunks, compressing headers per chunk stream.

    Header choice for each message, against the previous one on its csid:
    type 0 the first time, when the message stream id changes or when the
    timestamp goes backwards (including a wrap past 2**32); type 1 when the
    length or type changes; type 2 when only the delta changes; type 3 when
    everything repeats, including the delta. Type 3 is not used right after
    a type-0 header (readers disagree on its delta, see the module
    docstring) nor for a delta needing an extended timestamp.
    """

    chunk_size: int

    def __init__(self, chunk_size: int = _DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = _local_chunk_size(chunk_size)
        self._streams: dict[int, _OutStream] = {}

    def set_chunk_size(self, size: int) -> bytes:
        """Return the Set Chunk Size message for ``size`` and use ``size`` for every chunk after it.

        Raises LocalProtocolError for a size outside 1..2**31-1.
        """
        _local_chunk_size(size)
        data = self.write(CONTROL_CSID, set_chunk_size(size))
        self.chunk_size = size
        return data

    def write(self, csid: int, message: Message) -> bytes:
        """Return the chunks of ``message`` on chunk stream ``csid``.

        Raises LocalProtocolError for a csid outside 2..65599 or a message
        whose fields do not fit the header.
        """
        length = _check_message(message)
        if not MIN_CSID <= csid <= MAX_CSID:
            raise LocalProtocolError(f"chunk stream id {csid} outside {MIN_CSID}..{MAX_CSID}")
        timestamp = message.timestamp
        previous = self._streams.get(csid)
        if previous is None or message.stream_id != previous.stream_id or timestamp < previous.timestamp:
            fmt, field, delta = 0, timestamp, None
        else:
            field = delta = timestamp - previous.timestamp
            if length != previous.length or message.type_id != previous.type_id:
                fmt = 1
            elif delta == previous.delta and delta < EXTENDED:
                fmt = 3
            else:
                fmt = 2
        first, continuation = _headers(fmt, csid, field, length, message.type_id, message.stream_id)
        self._streams[csid] = _OutStream(timestamp, delta, length, message.type_id, message.stream_id)
        return _chunked(first, continuation, message.payload, self.chunk_size)


class _OutStream:
    """What the writer remembers about the last message on one chunk stream."""

    __slots__ = ("timestamp", "delta", "length", "type_id", "stream_id")

    def __init__(self, timestamp: int, delta: int | None, length: int, type_id: int, stream_id: int) -> None:
        self.timestamp = timestamp
        #: None after a type-0 header: the next message never gets type 3.
        self.delta = delta
        self.length = length
        self.type_id = type_id
        self.stream_id = stream_id
