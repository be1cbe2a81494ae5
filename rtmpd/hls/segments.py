"""The window of one stream's HLS media in memory: init segments, segments and their parts.

A ``Window`` keeps the last ``size`` complete segments listed in the
playlist, ``spare`` more that are no longer listed (a client that read an
older playlist may still fetch them), and the segment being made. Parts are
kept only for the last ``part_segments`` segments (LL-HLS lists parts only
near the live edge); older segments keep just their joined bytes, built once
and shared by every viewer. Memory is therefore bounded by the window, the
segment duration and the stream's bit rate.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Availability", "Part", "Segment", "Window"]


@dataclass(frozen=True, slots=True)
class Part:
    """One partial segment: a ``moof`` + ``mdat`` fragment."""

    data: bytes
    #: Seconds of the primary track (video, else audio).
    duration: float
    #: Starts with a sync sample of the video track (or audio only).
    independent: bool


@dataclass(slots=True)
class Segment:
    """A media segment: its parts in order; ``data`` once it is complete."""

    msn: int
    #: Which init segment (muxer generation) it needs.
    epoch: str
    #: The first segment of a new generation (a new publish or a changed configuration).
    discontinuity: bool
    #: Wall time (Unix seconds) of its first sample, for EXT-X-PROGRAM-DATE-TIME.
    start_time: float
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0
    data: bytes | None = None
    #: Parts were dropped (the segment left the live edge): only ``data`` is kept.
    parts_dropped: bool = False

    @property
    def complete(self) -> bool:
        return self.data is not None


class Availability(enum.Enum):
    """What the window says about a segment or part a client asks for."""

    READY = "ready"
    #: Not made yet; it may be.
    PENDING = "pending"
    #: Will never exist in this window (out of the window, or its segment ended with fewer parts).
    GONE = "gone"


class Window:
    """The bounded segment window of one stream (module doc)."""

    def __init__(self, size: int, *, spare: int = 2, part_segments: int = 3) -> None:
        if size < 1:
            raise ValueError("the window holds at least one segment")
        self.size = size
        self.spare = spare
        self.part_segments = part_segments
        self.inits: dict[str, bytes] = {}
        #: Complete segments, oldest first, then at most one open segment.
        self.segments: deque[Segment] = deque()
        self.next_msn = 0
        #: Discontinuities of segments that left ``segments`` (EXT-X-DISCONTINUITY-SEQUENCE).
        self.discontinuity_sequence = 0
        #: The longest segment so far, in seconds (EXT-X-TARGETDURATION never shrinks).
        self.longest = 0.0
        #: Grows at every change of what a playlist would show (a rendered playlist is reused until then).
        self.version = 0

    # -- writing -------------------------------------------------------------------------

    @property
    def open(self) -> Segment | None:
        last = self.segments[-1] if self.segments else None
        return last if last is not None and not last.complete else None

    def add_init(self, epoch: str, data: bytes) -> None:
        self.inits[epoch] = data

    def start_segment(self, epoch: str, start_time: float, discontinuity: bool) -> Segment:
        if self.open is not None:
            raise ValueError("a segment is already open")
        segment = Segment(self.next_msn, epoch, discontinuity and bool(self.segments), start_time)
        self.next_msn += 1
        self.segments.append(segment)
        self.version += 1
        return segment

    def add_part(self, part: Part) -> None:
        segment = self.open
        if segment is None:
            raise ValueError("no open segment")
        segment.parts.append(part)
        segment.duration += part.duration
        self.version += 1

    def close_segment(self) -> Segment | None:
        """Complete the open segment (an empty one is dropped); evict what left the window."""
        segment = self.open
        if segment is None:
            return None
        if not segment.parts:
            self.segments.pop()
            self.next_msn -= 1
            return None
        segment.data = b"".join(p.data for p in segment.parts)
        self.version += 1
        self.longest = max(self.longest, segment.duration)
        self._evict()
        return segment

    def _evict(self) -> None:
        complete = [s for s in self.segments if s.complete]
        for segment in complete[: max(0, len(complete) - self.part_segments)]:
            if not segment.parts_dropped:
                segment.parts = [Part(b"", p.duration, p.independent) for p in segment.parts]
                segment.parts_dropped = True
        while len(complete) > self.size + self.spare:
            gone = self.segments.popleft()
            complete.pop(0)
            if gone.discontinuity:
                self.discontinuity_sequence += 1
        epochs = {s.epoch for s in self.segments}
        for epoch in [e for e in self.inits if e not in epochs and e != self._newest_epoch()]:
            del self.inits[epoch]

    def _newest_epoch(self) -> str | None:
        return self.segments[-1].epoch if self.segments else None

    # -- reading -------------------------------------------------------------------------

    def listed(self) -> list[Segment]:
        """The segments a playlist lists: the last ``size`` complete ones, then the open one."""
        complete = [s for s in self.segments if s.complete][-self.size :]
        open_ = self.open
        return complete + ([open_] if open_ is not None else [])

    def skipped_discontinuities(self) -> int:
        """EXT-X-DISCONTINUITY-SEQUENCE of the first listed segment."""
        listed = self.listed()
        first = listed[0].msn if listed else self.next_msn
        return self.discontinuity_sequence + sum(
            1 for s in self.segments if s.msn < first and s.discontinuity
        )

    def segment(self, msn: int) -> Segment | None:
        if not self.segments:
            return None
        index = msn - self.segments[0].msn
        if 0 <= index < len(self.segments):
            return self.segments[index]
        return None

    def last_complete_msn(self) -> int | None:
        for segment in reversed(self.segments):
            if segment.complete:
                return segment.msn
        return None

    def segment_availability(self, msn: int) -> Availability:
        segment = self.segment(msn)
        if segment is not None:
            return Availability.READY if segment.complete else Availability.PENDING
        return Availability.PENDING if msn >= self.next_msn else Availability.GONE

    def part_availability(self, msn: int, index: int) -> Availability:
        segment = self.segment(msn)
        if segment is None:
            return Availability.PENDING if msn >= self.next_msn else Availability.GONE
        if index < len(segment.parts):
            return Availability.GONE if segment.parts_dropped else Availability.READY
        return Availability.GONE if segment.complete else Availability.PENDING

    def part_data(self, msn: int, index: int) -> bytes | None:
        if self.part_availability(msn, index) is not Availability.READY:
            return None
        return self.segment(msn).parts[index].data  # type: ignore[union-attr]
