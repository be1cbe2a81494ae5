"""One MP4 recording file: fragmented (``rtmpd.core.fmp4``), a fragment a second, indexed at the end.

Layout of every file (each segment of a recording is such a file and plays alone)::

    ftyp, moov           the tracks known when the first fragment is cut; mvhd's duration patched in place
    moof + mdat ...      one fragment about every second of media (``FRAGMENT_MS``), whole, in order
    mfra (tfra, mfro)    only on a clean end: per track, where its sync samples are (seeking)

Why it survives a crash: nothing is ever rewritten but the 4-byte duration
of ``mvhd`` (patched in place every second, like the FLV recording's
``duration``), and a fragment reaches the OS only whole. A SIGKILLed
server leaves ``ftyp``, ``moov`` and every fragment cut before the kill:
a file that plays up to its last second, with a duration about a second
old. A clean end adds the ``mfra`` index after the last fragment, so a
player can seek without reading every fragment.

Fragments are cut on media time: after a video sample once the fragment
holds at least ``FRAGMENT_MS`` (at a keyframe from half that), after an
audio sample when there is no video, and after any sample when the
video stops for ``3 * FRAGMENT_MS``. The muxer keeps each track's last
sample back until its duration is known, so the sample that triggers a cut
opens the next fragment (a keyframe starts its fragment).

``Mp4SegmentFile`` has ``flvfile.SegmentFile``'s interface and is driven
by the same writer thread; it is synchronous and knows nothing of threads.
A tag the muxer cannot read (``Fmp4Error``) is skipped and counted; a codec
configuration that changes within a file raises ``Fmp4ConfigChanged``
(the recording starts a new file before that happens: ``recording``).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from rtmpd.core.classify import MediaInfo, classify
from rtmpd.core.errors import Fmp4ConfigChanged, Fmp4Error
from rtmpd.core.fmp4 import Fmp4Muxer
from rtmpd.core.fmp4_boxes import box, full_box
from rtmpd.core.messages import Message, MessageType
from rtmpd.recording.disk import write_all

__all__ = ["FRAGMENT_MS", "Mp4Prologue", "Mp4SegmentFile", "build_mp4_prologue", "fragment_sync_samples"]

#: Media time per fragment, in milliseconds.
FRAGMENT_MS = 1000

_HEADER = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_SAMPLE_IS_NON_SYNC = 0x00010000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_FIRST_FLAGS = 0x000004
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTO = 0x000800
_TFHD_FIELDS = ((0x000001, 8), (0x000002, 4), (0x000008, 4), (0x000010, 4), (0x000020, 4))
#: tfra entries: 64-bit times and offsets (version 1); traf, trun and sample numbers on 4 bytes each.
_TFRA_LENGTHS = 0x3F


@dataclass(frozen=True, slots=True)
class Mp4Prologue:
    """What a new MP4 file starts from: the stream's codec configurations, as the late-join cache has them."""

    headers: tuple[tuple[Message, MediaInfo], ...]
    has_video: bool


def build_mp4_prologue(headers: Iterable[Message], has_video: bool) -> Mp4Prologue:
    """The prologue of a new file from the cache's sequence headers (classified here: a few at file start)."""
    return Mp4Prologue(tuple((m, classify(m)) for m in headers), has_video)


def _boxes(data: bytes, start: int, end: int) -> Iterable[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in ``data[start:end]`` (our own bytes: sizes trusted)."""
    pos = start
    while pos + 8 <= end:
        size, kind = _HEADER.unpack_from(data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def fragment_sync_samples(fragment: bytes) -> list[tuple[int, int, int, int]]:
    """For each track of a fragment we made, its first sync sample: (track id, presentation time in the
    track's timescale, traf number, sample number), numbers from 1. Tracks without one are left out."""
    found = []
    for kind, start, end in _boxes(fragment, 0, len(fragment)):
        if kind != b"moof":
            continue
        traf_number = 0
        for traf_kind, traf_start, traf_end in _boxes(fragment, start, end):
            if traf_kind != b"traf":
                continue
            traf_number += 1
            entry = _first_sync(fragment, traf_start, traf_end, traf_number)
            if entry is not None:
                found.append(entry)
        break
    return found


def _first_sync(data: bytes, start: int, end: int, traf_number: int) -> tuple[int, int, int, int] | None:
    track_id = base = 0
    default_flags = 0
    for kind, p, _ in _boxes(data, start, end):
        flags = int.from_bytes(data[p + 1 : p + 4], "big")
        if kind == b"tfhd":
            track_id = _U32.unpack_from(data, p + 4)[0]
            q = p + 8
            for bit, size in _TFHD_FIELDS:
                if flags & bit:
                    if bit == 0x000020:
                        default_flags = _U32.unpack_from(data, q)[0]
                    q += size
        elif kind == b"tfdt":
            base = struct.unpack_from(">Q" if data[p] == 1 else ">I", data, p + 4)[0]
        elif kind == b"trun":
            count = _U32.unpack_from(data, p + 4)[0]
            q = p + 8 + (4 if flags & _TRUN_DATA_OFFSET else 0)
            first_flags = None
            if flags & _TRUN_FIRST_FLAGS:
                first_flags = _U32.unpack_from(data, q)[0]
                q += 4
            signed = data[p] == 1
            time = base
            for number in range(1, count + 1):
                duration = sample_flags = cto = 0
                if flags & _TRUN_DURATION:
                    duration = _U32.unpack_from(data, q)[0]
                    q += 4
                if flags & _TRUN_SIZE:
                    q += 4
                if flags & _TRUN_FLAGS:
                    sample_flags = _U32.unpack_from(data, q)[0]
                    q += 4
                else:
                    sample_flags = first_flags if number == 1 and first_flags is not None else default_flags
                if flags & _TRUN_CTO:
                    cto = struct.unpack_from(">i" if signed else ">I", data, q)[0]
                    q += 4
                if not sample_flags & _SAMPLE_IS_NON_SYNC:
                    return track_id, max(0, time + cto), traf_number, number
                time += duration
    return None


def mfra(entries: dict[int, list[tuple[int, int, int, int, int]]]) -> bytes:
    """``mfra``: a ``tfra`` per track of (time, moof offset, traf number, trun number, sample number), and
    ``mfro`` giving the ``mfra``'s size (a reader finds it from the end of the file)."""
    tfras = []
    for track_id in sorted(entries):
        rows = entries[track_id]
        table = b"".join(struct.pack(">QQIII", *row) for row in rows)
        tfras.append(full_box(b"tfra", 1, 0, struct.pack(">III", track_id, _TFRA_LENGTHS, len(rows)), table))
    body = b"".join(tfras)
    size = 8 + len(body) + 16  # the mfra header, the tfras, the 16-byte mfro
    return box(b"mfra", body, full_box(b"mfro", 0, 0, _U32.pack(size)))


def _mvhd_duration_offset(init: bytes) -> int:
    """Where ``mvhd``'s (version 0) duration sits in an init segment."""
    for kind, start, end in _boxes(init, 0, len(init)):
        if kind == b"moov":
            for inner, p, _ in _boxes(init, start, end):
                if inner == b"mvhd":
                    # version/flags, creation, modification, timescale, then the duration
                    return p + 16
    raise Fmp4Error("init segment without moov/mvhd")


class Mp4SegmentFile:
    """An MP4 file being written (module doc): fragments buffered whole, flushed on demand.

    Same contract as ``flvfile.SegmentFile``: ``size`` counts every byte of
    the fragments cut, ``written`` those that reached the OS (always on a
    fragment boundary); an OSError propagates, then ``salvage`` cuts the
    file back to its last whole fragment.
    """

    def __init__(self, file: BinaryIO, path: str, prologue: Mp4Prologue) -> None:
        self.file = file
        self.path = path
        self.prologue = prologue
        self.muxer = Fmp4Muxer()
        #: Messages the muxer could not read, by error type (its own ``skipped`` counts the rest).
        self.skipped: Counter[str] = Counter()
        for message, info in prologue.headers:
            self._add(message, info)
        self._has_video = prologue.has_video
        self._pending: list[bytes] = []
        self._init: bytes | None = None
        self._duration_offset = 0
        self.size = 0
        self.written = 0
        self.last_timestamp = 0
        self.written_timestamp = 0
        #: Media time (ms) where the fragment being collected starts, None before the first sample.
        self._fragment_start: int | None = None
        #: Milliseconds of media in the fragments cut (so far), and in those written.
        self._cut_ms = 0
        #: Per track, one (time, moof offset, traf, trun, sample number) per fragment with a sync sample.
        self._index: dict[int, list[tuple[int, int, int, int, int]]] = {}
        self._patched: int | None = None
        self.closed = False

    @property
    def buffered_bytes(self) -> int:
        return self.size - self.written

    def _add(self, message: Message, info: MediaInfo) -> None:
        try:
            self.muxer.add(message, info)
        except Fmp4ConfigChanged:
            raise
        except Fmp4Error as e:
            # By type, not text: the text carries sizes a publisher chooses, and the keys must stay few.
            self.skipped[type(e).__name__] += 1

    def append(
        self,
        tag_type: int,
        timestamp: int,
        payload: bytes,
        keyframe: bool = False,
        info: MediaInfo | None = None,
    ) -> int:
        """Mux one message at ``timestamp`` (ms from the file's start); cut a fragment when one is due.

        Returns the bytes the fragment cut now adds (0 most of the time).
        """
        if tag_type not in (MessageType.AUDIO, MessageType.VIDEO):
            return 0
        message = Message(tag_type, timestamp, 1, payload)
        self._add(message, info if info is not None else classify(message))
        if timestamp > self.last_timestamp:
            self.last_timestamp = timestamp
        if self._fragment_start is None:
            self._fragment_start = timestamp
            return 0
        elapsed = timestamp - self._fragment_start
        is_video = tag_type == MessageType.VIDEO
        due = (
            (is_video and (elapsed >= FRAGMENT_MS or (keyframe and elapsed >= FRAGMENT_MS // 2)))
            or (not self._has_video and elapsed >= FRAGMENT_MS)
            or elapsed >= 3 * FRAGMENT_MS
        )
        if not due:
            return 0
        # The sample just added is held back by the muxer: it opens the next fragment.
        cut = self._cut(final=False)
        self._fragment_start = timestamp
        self._cut_ms = timestamp
        return cut

    def _cut(self, final: bool) -> int:
        muxer = self.muxer
        if not muxer.tracks:
            return 0
        # The init segment only once a fragment exists: VP9 and AV1 say their picture size in keyframes.
        data = muxer.flush(final=final)
        if not data:
            return 0
        if self._init is None:
            self._init = muxer.init_segment()
            self._duration_offset = _mvhd_duration_offset(self._init)
            self._pending.append(self._init)
            self.size += len(self._init)
        for track_id, time, traf, sample in fragment_sync_samples(data):
            rows = self._index.setdefault(track_id, [])
            # One entry per fragment is enough to seek: its first sync sample.
            rows.append((time, self.size, traf, 1, sample))
        self._pending.append(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Hand every fragment cut to the OS (no fsync); a fragment still collecting stays.

        One write per box, so that after an error ``written`` ends on the last whole one."""
        while self._pending:
            data = self._pending[0]
            self._write_all(data)
            self._pending.pop(0)
            self.written += len(data)
        self.written_timestamp = self._cut_ms

    def _write_all(self, data: bytes) -> None:
        write_all(self.file, self.path, data)

    def patch_progress(self) -> bool:
        """Flush, then patch mvhd's duration to what is written; False if it was current."""
        self.flush()
        if self._init is None or self.written < len(self._init) or self._patched == self.written_timestamp:
            return False
        self._patch_duration(self.written_timestamp)
        return True

    def _patch_duration(self, duration_ms: int) -> None:
        # The movie timescale is 1000: the duration is in milliseconds.
        self.file.seek(self._duration_offset)
        self._write_all(_U32.pack(min(duration_ms, 0xFFFFFFFF)))
        self.file.seek(self.written)
        self._patched = duration_ms

    def finalize(self, duration_ms: int | None = None, *, sync: bool = True) -> tuple[float, int]:
        """Cut the last fragment (every sample), write the ``mfra``, patch the duration, fsync, close.

        Returns (duration in seconds, file size). A file that never got a
        sample stays empty. On OSError the file stays open for ``salvage``.
        """
        self._cut(final=True)
        self._cut_ms = self.last_timestamp
        duration = max(self.last_timestamp, duration_ms or 0)
        if self._init is not None:
            index = mfra(self._index)
            self._pending.append(index)
            self.size += len(index)
        self.flush()
        if self._init is not None:
            self._patch_duration(duration)
        if sync:
            from rtmpd.recording.writer import fsync_file

            fsync_file(self.file)
        self.close()
        return duration / 1000.0, self.written

    def salvage(self) -> tuple[float, int]:
        """After an error: drop what is not written, cut the file to its last whole fragment, close."""
        self._pending.clear()
        self.size = self.written
        try:
            self.file.truncate(self.written)
            if self._init is not None and self.written >= len(self._init):
                self._patch_duration(self.written_timestamp)
        except (OSError, ValueError):
            pass
        self.close()
        return self.written_timestamp / 1000.0, self.written

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.file.close()
        except (OSError, ValueError):
            pass
