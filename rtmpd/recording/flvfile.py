"""One FLV recording file: a prologue, whole tags appended in order, numbers patched in place.

Layout of every file (each segment of a recording is such a file and plays alone)::

    FLV header + PreviousTagSize0                  flags: the tracks known at file start
    onMetaData script tag, timestamp 0             duration, filesize, keyframes{times, filepositions}
                                                   (placeholders), then the publisher's metadata
    audio sequence header tag(s), timestamp 0
    video sequence header tag(s), timestamp 0
    tags ...                                       byte for byte as received, timestamps from 0

``duration`` and ``filesize`` are patched every few seconds while the file
grows and once more at the end; the keyframe index is written only at the
end. Its slots are reserved up front (``keyframe_slots`` numbers in each
array, sized by ``keyframe_slots_for`` from the segment interval); a file
with more keyframes than slots gets an evenly thinned index, and unused
slots repeat the last real entry. Until the end the index is all
zeros, which players reject as a whole ("filepositions[0] is inside the
header") and then seek without it, so an unfinished file still plays.

``SegmentFile`` is synchronous and knows nothing about threads: the writer
thread (``rtmpd.recording.writer``) drives it. Its file object needs only
``write`` (may write part, returns the count), ``seek``, ``truncate`` and
``close``; ``fileno`` is used for fsync when present.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from rtmpd.core import amf0, flv
from rtmpd.core.errors import AMFDecodeError
from rtmpd.recording.disk import write_all

__all__ = [
    "MAX_KEYFRAME_SLOTS",
    "TAG_OVERHEAD",
    "SegmentFile",
    "SegmentPrologue",
    "build_prologue",
    "keyframe_slots_for",
    "publisher_fields",
    "publisher_metadata",
    "thin_index",
]

#: Keyframe index entries reserved in each file's onMetaData (18 bytes each).
MAX_KEYFRAME_SLOTS = 2000
MIN_KEYFRAME_SLOTS = 64

# The FLV tag header (type, size, timestamp, stream id): fixed by the format.
_TAG_HEADER_SIZE = 11
#: Bytes a tag takes in a file beyond its payload (tag header and PreviousTagSize).
TAG_OVERHEAD = _TAG_HEADER_SIZE + 4
#: An AMF0 number as it sits in the keyframe arrays: marker, then the double.
_NUMBER = struct.Struct(">Bd")
#: Metadata fields describing the publisher's own file or index; in a
#: recording they would contradict ours.
_STALE_FIELDS = frozenset(
    {"datasize", "lasttimestamp", "lastkeyframetimestamp", "lastkeyframelocation", "audiosize", "videosize"}
)


@dataclass(frozen=True, slots=True)
class SegmentPrologue:
    """The first bytes of a file and where its patchable numbers sit (absolute file offsets)."""

    data: bytes
    has_audio: bool
    has_video: bool
    #: Offsets of the 8-byte doubles of duration and filesize.
    duration_offset: int
    filesize_offset: int
    keyframe_slots: int
    #: Offsets of the AMF0 number marker of slot 0 of each keyframe array
    #: (the slots follow each other, 9 bytes apart); None without slots.
    keyframe_times_offset: int | None = None
    keyframe_positions_offset: int | None = None


def keyframe_slots_for(interval: float | None) -> int:
    """Index slots for a file of at most ``interval`` seconds: one keyframe a second, some slack, capped."""
    if interval is None:
        return MAX_KEYFRAME_SLOTS
    return min(MAX_KEYFRAME_SLOTS, max(MIN_KEYFRAME_SLOTS, math.ceil(interval) + 30))


def publisher_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a publisher's onMetaData object (as its connection decoded it) that a file keeps:
    all but those describing the publisher's own file or index."""
    return {k: v for k, v in values.items() if k not in _STALE_FIELDS}


def publisher_metadata(payload: bytes | None) -> dict[str, Any]:
    """``publisher_fields`` of the onMetaData body of a file (the script tag's payload), or {}.

    For reading a recording back; the recorder never decodes what a client sent
    (``rtmpd.relay.latejoin.LateJoinCache.metadata_values``). Never raises: undecodable
    metadata is treated as absent.
    """
    if not payload:
        return {}
    try:
        values = amf0.decode_all(payload)
    except AMFDecodeError:
        return {}
    if len(values) < 2 or values[0] != "onMetaData" or not isinstance(values[1], dict):
        return {}
    return publisher_fields(values[1])


def build_prologue(
    metadata: dict[str, Any],
    headers: Iterable[tuple[int, bytes]],
    *,
    has_audio: bool,
    has_video: bool,
    keyframe_slots: int,
) -> SegmentPrologue:
    """Header, placeholder onMetaData and sequence header tags of a new file.

    ``headers`` are (tag type, payload) pairs, written in order at
    timestamp 0. Keyframe slots are reserved only when ``has_video``.
    Raises LocalProtocolError (from rtmpd.core.flv) if ``keyframe_slots``
    is negative or a header payload is too large for a tag.
    """
    slots = keyframe_slots if has_video else 0
    body, offsets = flv.metadata_with_placeholders(metadata, keyframe_slots=slots)
    head = flv.encode_header(has_audio, has_video)
    base = len(head) + _TAG_HEADER_SIZE
    parts = [head, flv.encode_tag(flv.TAG_SCRIPT, 0, body)]
    parts.extend(flv.encode_tag(tag_type, 0, payload) for tag_type, payload in headers)
    times = positions = None
    if slots:
        times = base + offsets["keyframes.times.0"] - 1
        positions = base + offsets["keyframes.filepositions.0"] - 1
        # patch_index writes each array as one run of 9-byte numbers: prove the layout is that.
        for name in ("times", "filepositions"):
            if offsets[f"keyframes.{name}.{slots - 1}"] - offsets[f"keyframes.{name}.0"] != 9 * (slots - 1):
                raise AssertionError(f"keyframe {name} slots are not contiguous")
    return SegmentPrologue(
        data=b"".join(parts),
        has_audio=has_audio,
        has_video=has_video,
        duration_offset=base + offsets["duration"],
        filesize_offset=base + offsets["filesize"],
        keyframe_slots=slots,
        keyframe_times_offset=times,
        keyframe_positions_offset=positions,
    )


def thin_index(entries: list[tuple[int, int]], slots: int) -> list[tuple[int, int]]:
    """At most ``slots`` entries of ``entries``, evenly spread, keeping the first and last.

    With ``slots`` >= len(entries) the list is returned as is.
    """
    n = len(entries)
    if n <= slots:
        return entries
    if slots == 1:
        return entries[:1]
    # Strictly increasing indices because n > slots.
    return [entries[round(i * (n - 1) / (slots - 1))] for i in range(slots)]


class SegmentFile:
    """An FLV file being written: buffered whole tags, flushed on demand, patched in place.

    Offsets: ``size`` counts every byte appended (the file's size once
    flushed); ``written`` counts the bytes that reached the OS, always
    ending on a tag boundary. Any OSError from the file propagates; after
    one, call ``salvage`` to cut the file back to its last whole tag.
    """

    def __init__(self, file: BinaryIO, path: str, prologue: SegmentPrologue) -> None:
        self.file = file
        self.path = path
        self.prologue = prologue
        self._pending: list[bytes] = [prologue.data]
        self.size = len(prologue.data)
        self.written = 0
        #: Largest tag timestamp appended, and among the tags written (ms from the start of this file).
        self.last_timestamp = 0
        self.written_timestamp = 0
        #: (timestamp ms, file offset of the tag) of every video keyframe.
        self.keyframes: list[tuple[int, int]] = []
        self._patched: tuple[float, float] | None = None
        self.closed = False

    @property
    def buffered_bytes(self) -> int:
        return self.size - self.written

    def append(
        self, tag_type: int, timestamp: int, payload: bytes, keyframe: bool = False, info: Any = None
    ) -> int:
        """Buffer one tag; returns its size in the file. Raises LocalProtocolError for an unwritable tag.

        ``info`` is ignored: an FLV file takes every tag as it is."""
        header, trailer = flv.tag_parts(tag_type, timestamp, len(payload))
        if keyframe:
            self.keyframes.append((timestamp, self.size))
        # Header, body and trailer are joined once, at the flush: the body is not copied twice.
        pending = self._pending
        pending.append(header)
        pending.append(payload)
        pending.append(trailer)
        size = len(payload) + TAG_OVERHEAD
        self.size += size
        if timestamp > self.last_timestamp:
            self.last_timestamp = timestamp
        return size

    def flush(self) -> None:
        """Hand every buffered tag to the OS (no fsync)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._write_all(data)
        self.written += len(data)
        self.written_timestamp = self.last_timestamp

    def _write_all(self, data: bytes) -> None:
        write_all(self.file, self.path, data)

    def _patch(self, offset: int, data: bytes) -> None:
        self.file.seek(offset)
        self._write_all(data)
        self.file.seek(self.written)

    def patch_progress(self) -> bool:
        """Flush, then patch duration and filesize to what is written; False if they were current."""
        self.flush()
        values = (self.written_timestamp / 1000.0, float(self.written))
        if values == self._patched:
            return False
        self._patch_numbers(*values)
        return True

    def _patch_numbers(self, duration: float, filesize: float) -> None:
        p = self.prologue
        # Written before the prologue is flushed they would land in the void.
        if self.written < len(p.data):
            return
        self._patch(p.duration_offset, struct.pack(">d", duration))
        self._patch(p.filesize_offset, struct.pack(">d", filesize))
        self._patched = (duration, filesize)

    def _patch_index(self) -> None:
        p = self.prologue
        if not p.keyframe_slots or self.written < len(p.data):
            return
        entries = thin_index([k for k in self.keyframes if k[1] < self.written], p.keyframe_slots)
        if not entries:
            return
        entries = entries + [entries[-1]] * (p.keyframe_slots - len(entries))
        times = b"".join(_NUMBER.pack(0, ts / 1000.0) for ts, _ in entries)
        positions = b"".join(_NUMBER.pack(0, float(pos)) for _, pos in entries)
        assert p.keyframe_times_offset is not None and p.keyframe_positions_offset is not None
        self._patch(p.keyframe_times_offset, times)
        self._patch(p.keyframe_positions_offset, positions)

    def finalize(self, duration_ms: int | None = None, *, sync: bool = True) -> tuple[float, int]:
        """Flush, write the keyframe index, duration and filesize, fsync (if ``sync``), close.

        ``duration_ms`` (at least the last timestamp) is the file's length
        when it is known to end where the next file starts. Returns
        (duration in seconds, file size). On OSError the file stays open
        for ``salvage``.
        """
        self.flush()
        duration = max(self.last_timestamp, duration_ms or 0) / 1000.0
        self._patch_index()
        self._patch_numbers(duration, float(self.written))
        if sync:
            self._fsync()
        self.close()
        return duration, self.written

    def salvage(self) -> tuple[float, int]:
        """After an error: drop unwritten tags, cut the file to its last whole tag, patch what can be, close.

        Never raises; returns (duration in seconds of what is kept, file size).
        """
        self._pending.clear()
        self.size = self.written
        duration = 0.0
        try:
            self.file.truncate(self.written)
            if self.written >= len(self.prologue.data):
                duration = self.written_timestamp / 1000.0
                self._patch_index()
                self._patch_numbers(duration, float(self.written))
        except (OSError, ValueError):
            pass  # The disk is failing: what is already there stays as it is.
        self.close()
        return duration, self.written

    def _fsync(self) -> None:
        fileno = getattr(self.file, "fileno", None)
        if fileno is None:
            return
        try:
            fd = fileno()
        except (OSError, ValueError):
            return  # Not a real file (a test double, a BytesIO).
        os.fsync(fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.file.close()
        except (OSError, ValueError):
            pass
