"""The FLV v10 file format (Adobe FLV specification v10.1, annex E), sans-IO.

Writing: ``encode_header`` and ``encode_tag`` return the bytes of a file
piece by piece; the caller owns the file. Reading: ``FLVReader.feed`` takes
bytes in any pieces and returns the complete tags; ``parse_flv`` does the
same for a whole file in memory.

Script data: ``unwrap_set_data_frame`` turns an RTMP ``@setDataFrame``
data message into the ``onMetaData`` tag body a file or a player wants,
and ``metadata_with_placeholders`` builds an ``onMetaData`` body whose
duration, file size and keyframe index can be patched in place once a
recording is finished (AMF0 numbers are fixed-size doubles).

A file is: header (9 bytes), PreviousTagSize0 (UI32, 0), then for each tag
an 11-byte tag header, the tag body and a UI32 PreviousTagSize (11 + body
size). All integers are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from rtmpd.core import amf0
from rtmpd.core.errors import AMFDecodeError, AMFEncodeError, LocalProtocolError, MalformedTag

__all__ = [
    "FLAG_AUDIO",
    "FLAG_VIDEO",
    "TAG_AUDIO",
    "TAG_SCRIPT",
    "TAG_VIDEO",
    "FLVReader",
    "Tag",
    "encode_header",
    "encode_script_tag_payload",
    "encode_tag",
    "metadata_with_placeholders",
    "parse_flv",
    "patch_number",
    "unwrap_set_data_frame",
]

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

#: TypeFlags bits of the file header.
FLAG_AUDIO = 0x04
FLAG_VIDEO = 0x01

_SIGNATURE = b"FLV"
_HEADER_SIZE = 9
_TAG_HEADER_SIZE = 11
_MAX_TAG_SIZE = 0xFFFFFF
_MAX_TIMESTAMP = 0xFFFFFFFF
# The two top bits of a tag's first byte are reserved and must be 0; a file
# that has them set is corrupt or not where we think it is.
_RESERVED_TAG_BITS = 0xC0

_U32 = struct.Struct(">I")
#: A tag header: type and body size, timestamp (low 24 bits, then the top 8), a zero stream id.
_TAG_HEADER = struct.Struct(">II3x")
_DOUBLE = struct.Struct(">d")
_AMF_NUMBER = 0x00


# -- writing ------------------------------------------------------------------


def encode_header(has_audio: bool, has_video: bool) -> bytes:
    """Return the 13 bytes that start an FLV file.

    That is the 9-byte header ("FLV", version 1, TypeFlags, DataOffset 9)
    followed by PreviousTagSize0 (UI32 0), so the first ``encode_tag``
    output can be appended directly.
    """
    flags = (FLAG_AUDIO if has_audio else 0) | (FLAG_VIDEO if has_video else 0)
    return _SIGNATURE + bytes((1, flags)) + _U32.pack(_HEADER_SIZE) + _U32.pack(0)


def encode_tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
    """Return one tag: 11-byte header, ``payload``, and its PreviousTagSize (see ``tag_parts``)."""
    header, trailer = tag_parts(tag_type, timestamp, len(payload))
    return b"".join((header, payload, trailer))


def tag_parts(tag_type: int, timestamp: int, size: int) -> tuple[bytes, bytes]:
    """The bytes before and after a tag's ``size``-byte body: its 11-byte header, its PreviousTagSize.

    Written around the body as it is, so a tag costs no copy of its body.

    ``timestamp`` is a 32-bit millisecond count: its low 24 bits go in the
    Timestamp field and its top 8 bits in TimestampExtended. StreamID is 0.
    ``tag_type`` is written verbatim as the tag's first byte.

    Raises LocalProtocolError if ``tag_type`` is not a byte, ``timestamp``
    is outside 0..2**32-1, or ``payload`` is longer than 2**24-1 bytes (the
    size field is 24 bits).
    """
    if not 0 <= tag_type <= 0xFF:
        raise LocalProtocolError(f"FLV tag type {tag_type} is not a byte")
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise LocalProtocolError(f"FLV timestamp {timestamp} is not a 32-bit value")
    if size > _MAX_TAG_SIZE:
        raise LocalProtocolError(f"FLV tag body of {size} bytes exceeds 2**24-1")
    header = _TAG_HEADER.pack((tag_type << 24) | size, ((timestamp & 0xFFFFFF) << 8) | (timestamp >> 24))
    return header, _U32.pack(_TAG_HEADER_SIZE + size)


# -- reading ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tag:
    """One FLV tag.

    ``tag_type`` is the tag's first byte (8 audio, 9 video, 18 script; the
    Filter bit 0x20 is not stripped), ``timestamp`` the full 32-bit value,
    ``offset`` the position of the tag header in the file.
    """

    tag_type: int
    timestamp: int
    payload: bytes
    offset: int


_HEADER, _SKIP, _PREVIOUS_TAG_SIZE_0, _TAGS = range(4)


class FLVReader:
    """Incremental FLV reader: ``feed`` bytes, get complete ``Tag`` values.

    Tags come out the same whatever way the file is split into ``feed``
    calls. A tag whose bytes have not all arrived stays buffered: its size
    is ``pending_bytes`` (at most one tag, so below 16 MiB + 15 bytes).
    ``header_flags`` and ``version`` are None until the header has arrived.

    Once ``feed`` has raised MalformedTag every later call raises it again:
    the reader cannot find tag boundaries after corruption.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        # File offset of _buffer[0].
        self._base = 0
        self._state = _HEADER
        self._skip = 0
        self._error: MalformedTag | None = None
        self.header_flags: int | None = None
        self.version: int | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet returned as part of a tag or the header."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Tag]:
        """Add ``data`` and return the tags it completes, in file order.

        Raises MalformedTag if the signature is not "FLV", DataOffset is
        below 9, PreviousTagSize0 is not 0, a tag's reserved bits are set,
        or a PreviousTagSize does not equal 11 + that tag's body size. Tags
        completed earlier in the same call are not returned then.
        """
        if self._error is not None:
            raise self._error
        self._buffer += data
        tags: list[Tag] = []
        pos = 0
        try:
            with memoryview(self._buffer) as view:
                pos = self._parse(view, tags)
        except MalformedTag as e:
            self._error = e
            raise
        del self._buffer[:pos]
        self._base += pos
        return tags

    def _parse(self, view: memoryview, tags: list[Tag]) -> int:
        pos = 0
        end = len(view)
        while True:
            if self._state == _HEADER:
                if end - pos < _HEADER_SIZE:
                    return pos
                if view[0:3] != _SIGNATURE:
                    raise MalformedTag(f"not an FLV file: signature {bytes(view[0:3])!r}")
                data_offset = _U32.unpack_from(view, 5)[0]
                if data_offset < _HEADER_SIZE:
                    raise MalformedTag(f"FLV DataOffset {data_offset} is inside the header")
                self.version = view[3]
                self.header_flags = view[4]
                # Bytes between the header and DataOffset are skipped as they
                # arrive, never buffered.
                self._skip = data_offset - _HEADER_SIZE
                self._state = _SKIP
                pos = _HEADER_SIZE
            elif self._state == _SKIP:
                n = min(self._skip, end - pos)
                pos += n
                self._skip -= n
                if self._skip:
                    return pos
                self._state = _PREVIOUS_TAG_SIZE_0
            elif self._state == _PREVIOUS_TAG_SIZE_0:
                if end - pos < 4:
                    return pos
                previous = _U32.unpack_from(view, pos)[0]
                if previous != 0:
                    raise MalformedTag(f"FLV PreviousTagSize0 is {previous}, not 0")
                pos += 4
                self._state = _TAGS
            else:
                if end - pos < _TAG_HEADER_SIZE:
                    return pos
                tag_type = view[pos]
                if tag_type & _RESERVED_TAG_BITS:
                    raise MalformedTag(
                        f"FLV tag at offset {self._base + pos} has reserved bits set (0x{tag_type:02x})"
                    )
                size = _U32.unpack_from(view, pos)[0] & 0xFFFFFF
                stamp = _U32.unpack_from(view, pos + 4)[0]
                total = _TAG_HEADER_SIZE + size + 4
                if end - pos < total:
                    return pos
                previous = _U32.unpack_from(view, pos + _TAG_HEADER_SIZE + size)[0]
                if previous != _TAG_HEADER_SIZE + size:
                    raise MalformedTag(
                        f"FLV tag at offset {self._base + pos}: PreviousTagSize {previous} "
                        f"!= {_TAG_HEADER_SIZE + size}"
                    )
                body = bytes(view[pos + _TAG_HEADER_SIZE : pos + _TAG_HEADER_SIZE + size])
                # Timestamp is 24 bits, then TimestampExtended holds bits 24-31.
                timestamp = (stamp >> 8) | ((stamp & 0xFF) << 24)
                tags.append(Tag(tag_type, timestamp, body, self._base + pos))
                pos += total


def parse_flv(data: bytes) -> tuple[int, list[Tag], int]:
    """Parse a whole FLV file held in memory.

    Returns ``(header_flags, tags, trailing)`` where ``trailing`` counts the
    bytes after the last complete tag (a file cut while being written ends
    in a partial tag: it is simply not returned).

    Raises MalformedTag if ``data`` is shorter than the 9-byte header, and
    wherever ``FLVReader.feed`` does.
    """
    reader = FLVReader()
    tags = reader.feed(data)
    if reader.header_flags is None:
        raise MalformedTag(f"not an FLV file: {len(data)} bytes is shorter than the header")
    return reader.header_flags, tags, reader.pending_bytes


# -- script data ----------------------------------------------------------------


def encode_script_tag_payload(name: str, value: Any) -> bytes:
    """Return a script tag body: the AMF0 string ``name`` then the AMF0 ``value``.

    For onMetaData, pass ``amf0.ECMAArray(metadata)`` as ``value``.
    Raises AMFEncodeError if ``value`` has no AMF0 form.
    """
    return amf0.encode_many(name, value)


_SET_DATA_FRAME = "@setDataFrame"
_AMF_STRING_MARKERS = (0x02, 0x0C)


def unwrap_set_data_frame(payload: bytes) -> bytes | None:
    """Strip a leading ``"@setDataFrame"`` from an RTMP AMF0 data message.

    Returns the rest of ``payload`` byte for byte (normally starting with
    the string "onMetaData"), or None when the first value is not that
    string, including when it cannot be decoded. Only the first value is
    decoded; nothing is re-encoded.
    """
    if not payload or payload[0] not in _AMF_STRING_MARKERS:
        return None
    try:
        first, end = amf0.decode(payload)
    except AMFDecodeError:
        return None
    if first != _SET_DATA_FRAME:
        return None
    return payload[end:]


# The fields the recorder owns; always written first so that their offsets
# do not depend on the publisher's metadata.
_PATCHED_FIELDS = ("duration", "filesize")
_KEYFRAMES = "keyframes"
_KEYFRAME_ARRAYS = ("times", "filepositions")


def metadata_with_placeholders(metadata: dict, *, keyframe_slots: int = 0) -> tuple[bytes, dict[str, int]]:
    """Build an onMetaData script tag body whose numbers can be patched in place.

    The body is AMF0 ``"onMetaData"`` then an ECMA array holding, first,
    ``duration`` and ``filesize`` (0.0), then if ``keyframe_slots`` > 0
    ``keyframes``: an object of two strict arrays ``times`` and
    ``filepositions`` of ``keyframe_slots`` numbers (0.0), then the entries
    of ``metadata`` in order. Entries of ``metadata`` named duration,
    filesize or keyframes are replaced; entries AMF0 cannot encode (non-str
    or empty key, unencodable value) are dropped.

    The returned dict maps ``"duration"``, ``"filesize"`` and, for each
    slot i, ``"keyframes.times.<i>"`` and ``"keyframes.filepositions.<i>"``
    to the offset in the body of that number's 8-byte double, for
    ``patch_number``. Unused keyframe slots should be left at 0 (players
    read them as keyframes at time 0, position 0) or filled in with the
    last real entry.

    Raises LocalProtocolError if ``keyframe_slots`` is negative.
    """
    if keyframe_slots < 0:
        raise LocalProtocolError(f"keyframe_slots {keyframe_slots} is negative")
    entries: dict[str, Any] = dict.fromkeys(_PATCHED_FIELDS, 0.0)
    if keyframe_slots:
        entries[_KEYFRAMES] = {name: [0.0] * keyframe_slots for name in _KEYFRAME_ARRAYS}
    for key, value in metadata.items():
        if key in entries or key == _KEYFRAMES or not isinstance(key, str):
            continue
        try:
            amf0.encode(amf0.ECMAArray({key: value}))
        except AMFEncodeError:
            continue
        entries[key] = value
    payload = encode_script_tag_payload("onMetaData", amf0.ECMAArray(entries))
    offsets = _placeholder_offsets(keyframe_slots)
    # The offsets are computed from the AMF0 layout; prove they landed on
    # numbers rather than trust it.
    for name, offset in offsets.items():
        if payload[offset - 1] != _AMF_NUMBER or _DOUBLE.unpack_from(payload, offset)[0] != 0.0:
            raise LocalProtocolError(f"placeholder {name} is not at offset {offset}")
    return payload, offsets


def _placeholder_offsets(keyframe_slots: int) -> dict[str, int]:
    """Offsets of the placeholder doubles in the body ``metadata_with_placeholders`` encodes.

    AMF0 layout: "onMetaData" string; ECMA array marker + UI32 count; each
    property is a UI16-length UTF-8 key then a value; a number is marker +
    8-byte double; an object is a marker then properties; a strict array
    is marker + UI32 count then its values. amf0 writes no references, so
    every value is laid out in place.
    """
    pos = len(amf0.encode("onMetaData")) + 1 + 4
    offsets: dict[str, int] = {}
    for name in _PATCHED_FIELDS:
        pos += 2 + len(name) + 1
        offsets[name] = pos
        pos += 8
    if keyframe_slots:
        pos += 2 + len(_KEYFRAMES) + 1
        for name in _KEYFRAME_ARRAYS:
            pos += 2 + len(name) + 1 + 4
            for i in range(keyframe_slots):
                offsets[f"{_KEYFRAMES}.{name}.{i}"] = pos + 1
                pos += 9
    return offsets


def patch_number(buf: bytearray, offset: int, value: float) -> None:
    """Overwrite the AMF0 number whose 8-byte double starts at ``offset`` in ``buf``.

    ``offset`` is one returned by ``metadata_with_placeholders``, shifted
    by wherever the body sits in ``buf`` (e.g. + 11 inside an encoded tag).

    Raises LocalProtocolError if the double would not fit in ``buf`` or the
    byte before ``offset`` is not the AMF0 number marker.
    """
    if not 1 <= offset <= len(buf) - 8:
        raise LocalProtocolError(f"offset {offset} does not hold an 8-byte number in {len(buf)} bytes")
    if buf[offset - 1] != _AMF_NUMBER:
        raise LocalProtocolError(f"offset {offset} does not follow an AMF0 number marker")
    _DOUBLE.pack_into(buf, offset, value)
