"""Cuts one stream's classified media into fMP4 parts and keyframe-aligned segments, sans-IO.

A ``Segmenter`` is one generation of a stream's HLS media: one
``rtmpd.core.fmp4.Fmp4Muxer``, one init segment, writing into a shared
``Window``. It never reads a clock: the wall time of media time 0
(``anchor``) is given, and each segment's program date-time is derived
from it.

Rules it keeps:

- Nothing is muxed before the stream's first video keyframe (or, for an
  audio-only stream, its first audio frame): the first segment starts
  decodable. Configuration messages always go to the muxer.
- The primary track is video when there is one, else audio; durations are
  its durations.
- A keyframe of the primary video track always starts a new part (marked
  independent), and starts a new segment when the open one is at least
  the target duration long. An audio-only stream cuts segments at any
  frame once the target is reached.
- A part ends before one more sample of the primary track would make it longer than the part
  target the playlist declares (the spec's limit), so a part is at most that (one sample, if that
  is longer). The declared target is the configured one plus ``TIMESTAMP_SLACK``: RTMP timestamps
  are whole milliseconds, so N frames of a steady frame rate measure N frame durations give or
  take 1 ms; against the bare target, 15 frames at 30 fps (0.500 or 0.501 s) would not fit in a
  0.5 s part: a 1 s segment became parts of 14, 15 and 1 frames, three requests where two do.
  For the same reason a segment may end when it is up to 1 ms short of its target.
- ``finish`` flushes what is buffered and completes the open segment.

``feed`` raises what the muxer raises (``Fmp4Error``): the caller then
finishes this generation and starts a new one.
"""

from __future__ import annotations

from rtmpd.core.classify import MediaInfo
from rtmpd.core.fmp4 import AUDIO_TRACK_ID, VIDEO_TRACK_ID, Fmp4Muxer
from rtmpd.core.messages import Message, MessageType
from rtmpd.hls.segments import Part, Window

__all__ = ["TIMESTAMP_SLACK", "Segmenter", "declared_part_target"]

_MEDIA = (MessageType.AUDIO, MessageType.VIDEO)
#: Seconds a part may measure beyond the configured part duration (module doc).
TIMESTAMP_SLACK = 0.001


def declared_part_target(part_duration: float) -> float:
    """The PART-TARGET a playlist declares for ``--hls-part-duration``: every part is at most this long."""
    return round(part_duration + TIMESTAMP_SLACK, 6)


class Segmenter:
    """One generation of a stream's HLS media (module doc).

    ``segment_target`` and ``part_target`` are seconds; ``epoch`` names this
    generation's init segment; ``anchor`` is the Unix time of media time 0;
    ``discontinuity`` marks its first segment as a discontinuity.
    """

    def __init__(
        self,
        window: Window,
        *,
        epoch: str,
        segment_target: float,
        part_target: float,
        anchor: float,
        discontinuity: bool = False,
    ) -> None:
        if part_target <= 0 or segment_target < part_target:
            raise ValueError("need 0 < part target <= segment target")
        self.window = window
        self.epoch = epoch
        self.segment_target = segment_target
        self.part_target = part_target
        self._part_limit = declared_part_target(part_target)
        # A GOP of the target duration may measure 1 ms less (and its parts' float sum a little less).
        self._segment_limit = segment_target - TIMESTAMP_SLACK
        self.anchor = anchor
        self.muxer = Fmp4Muxer()
        self._discontinuity = discontinuity
        self._started = False
        self._next_independent = True
        #: The timestamp (ms) where the next segment starts.
        self._next_start_ms = 0
        self.finished = False

    @property
    def _primary(self) -> int:
        return VIDEO_TRACK_ID if any(t.kind == "video" for t in self.muxer.tracks) else AUDIO_TRACK_ID

    def _seconds(self, track_id: int, duration: int) -> float:
        for track in self.muxer.tracks:
            if track.track_id == track_id:
                return duration / track.timescale
        return 0.0

    def feed(self, message: Message, info: MediaInfo) -> bool:
        """Take one relayed message; True when a new part was made."""
        if self.finished or message.type_id not in _MEDIA:
            return False
        if info.config_slot is None and not self._started:
            tracks = self.muxer.tracks
            has_video = any(t.kind == "video" for t in tracks)
            if has_video and not (info.is_video and info.is_keyframe):
                return False
            if not tracks:
                return False
            self._started = True
            self._next_start_ms = message.timestamp
        self.muxer.add(message, info)
        if self._started and self.epoch not in self.window.inits:
            # Fixes the track set: a track configured after the first frame is not muxed.
            self.window.add_init(self.epoch, self.muxer.init_segment())
        if info.config_slot is not None or not self._started:
            return False
        primary = self._primary
        count, duration = self.muxer.pending(primary)
        if not count:
            return False
        seconds = self._seconds(primary, duration)
        open_ = self.window.open
        so_far = (open_.duration if open_ is not None else 0.0) + seconds
        if primary == VIDEO_TRACK_ID:
            if info.is_video and info.is_keyframe:
                self._cut(seconds, end_segment=so_far >= self._segment_limit, next_ms=message.timestamp)
                self._next_independent = True
                return True
        elif so_far >= self._segment_limit:
            self._cut(seconds, end_segment=True, next_ms=message.timestamp)
            return True
        # Cut before the part would outgrow its target with one more sample: EXT-X-PART durations
        # must not exceed PART-TARGET.
        if seconds + seconds / count > self._part_limit + 1e-6:
            self._cut(seconds, end_segment=False, next_ms=message.timestamp)
            return True
        return False

    def _cut(self, seconds: float, *, end_segment: bool, next_ms: int) -> None:
        self._add_part(self.muxer.flush(), seconds)
        if end_segment:
            self.window.close_segment()
            self._next_start_ms = next_ms

    def _add_part(self, data: bytes, seconds: float) -> None:
        window = self.window
        if not data:
            return
        if window.open is None:
            window.start_segment(self.epoch, self.anchor + self._next_start_ms / 1000, self._discontinuity)
            self._discontinuity = False
        independent = self._next_independent or self._primary == AUDIO_TRACK_ID
        window.add_part(Part(data, seconds, independent))
        self._next_independent = False

    def finish(self) -> None:
        """Flush every buffered sample into a last part and complete the open segment."""
        if self.finished:
            return
        self.finished = True
        if self._started:
            primary = self._primary
            count, duration = self.muxer.pending(primary)
            # The held last sample gets its predecessor's duration (the muxer's rule); the mean is near.
            last = duration / count if count else self._default_frame(primary)
            self._add_part(self.muxer.flush(final=True), self._seconds(primary, round(duration + last)))
        self.window.close_segment()

    def _default_frame(self, track_id: int) -> float:
        for track in self.muxer.tracks:
            if track.track_id == track_id:
                return track.timescale / 30 if track.kind == "video" else 1024
        return 0.0
