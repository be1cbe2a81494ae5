"""One stream's recording from publish to unpublish: which messages go into which file, at what time.

This module owns the per-stream state machine, in the reactor thread:
``waiting`` (no frame yet, so no file) -> ``recording`` -> ``finalizing`` ->
``finished``, or ``failed`` from any of them; ``refused`` (over a limit of
``rtmpd.recording.admission``, no file) until a file may start. For each
relayed message it does the cheap part: decide whether it belongs in the
file (a file is created only at a frame a player can start from, never at
publish), place it on the file's timeline (``rtmpd.recording.timeline``),
decide when to start the next file, and queue the payload for the writer
thread (``rtmpd.recording.writer``). A file's first bytes are built from
the stream's late-join cache when it starts (``rtmpd.recording.prologue``).
An MP4 file also ends when a codec configuration changes (its ``moov``
cannot say it); the next one starts with the new configuration.

It reads no payload: what a message is comes with it, in the relay's
``rtmpd.core.classify.MediaInfo`` (``is_config``, ``is_keyframe``,
``is_metadata``). It touches the publisher only through its throttle
(``rtmpd.recording.throttle``) and the stream only to read its late-join
cache and current publication; it holds the stream weakly.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rtmpd.core.classify import MediaInfo
from rtmpd.core.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO
from rtmpd.core.messages import Message, MessageType
from rtmpd.recording.admission import RecordingAdmission
from rtmpd.recording.announce import FileAnnouncer
from rtmpd.recording.flvfile import TAG_OVERHEAD
from rtmpd.recording.prologue import file_start
from rtmpd.recording.throttle import PublisherThrottle
from rtmpd.recording.timeline import MAX_BACKWARD_JUMP_MS, FileTimeline
from rtmpd.recording.writer import (
    Drained,
    RecordingWriter,
    SegmentFinalized,
    SegmentOpened,
    WriterClosed,
    WriterEvent,
    WriterFailed,
)

if TYPE_CHECKING:
    from rtmpd.relay.stream import Publication, Stream

__all__ = ["MAX_BACKWARD_JUMP_MS", "RecordingHost", "StreamRecording"]


class RecordingHost(Protocol):
    """What a ``StreamRecording`` needs from the service that runs it: the ``Recorder``."""

    clock: IReactorTime
    #: Start a new file at the next keyframe past this many bytes / milliseconds (None: never).
    max_size: int | None
    interval_ms: int | None
    #: Keyframe index entries reserved in each file.
    keyframe_slots: int
    #: Backlog bound of each writer.
    max_queue_bytes: int
    #: The budgets of open recordings and new files.
    admission: RecordingAdmission
    #: The file format: "flv" or "mp4".
    format: str

    def paths_for(self, key: str, when: float) -> tuple[str, Iterator[str]]:
        """The first path to try for a file of ``key`` starting at ``when``, then every path in turn."""

    def new_writer(self, recording: StreamRecording) -> RecordingWriter:
        """A writer whose reports reach ``recording.writer_event`` in the reactor thread."""

    def forget(self, recording: StreamRecording) -> None:
        """Stop feeding ``recording`` messages: it is ending."""

    def closed(self, recording: StreamRecording) -> None:
        """Nothing of ``recording`` is open any more."""


class StreamRecording:
    """One stream's recording, from publish to unpublish, possibly in several files (segments).

    Read-only for everyone but the recorder: ``state`` is "waiting" (no
    frame yet, so no file), "refused" (over a recording limit, no file yet),
    "recording", "finalizing", "finished" or "failed"; ``file`` the current
    (or last) file, None before the first; ``bytes`` and
    ``duration`` (seconds) describe that file as queued for writing;
    ``pending_bytes`` is the writer's backlog; ``files`` every file
    created; ``error`` why it failed; ``started_at`` when the stream was
    published (Unix time). ``stream`` is the stream while that object
    exists, else None.

    ``message`` never raises for a disk: a writer that falls
    ``max_queue_bytes`` behind, or meets a disk error, fails the recording
    (ERROR ``recording failed``) and the stream goes on.
    """

    log = Logger()

    def __init__(self, host: RecordingHost, stream: Stream, when: float) -> None:
        self.host = host
        self._stream = weakref.ref(stream)
        self.stream_key = stream.key
        self.started_at = when
        self.state = "waiting"
        self.error: str | None = None
        self.files: list[str] = []
        self.segments = 0
        self.bytes = 0
        self.duration = 0.0
        self.file: str | None = None
        #: Whether this recording holds one of the admission's open-recording slots.
        self._admitted = False
        self._segment_refused = False
        self._mp4 = host.format == "mp4"
        #: MP4: the sequence headers the open file was started with.
        self._configs: frozenset[bytes] = frozenset()
        self._writer: RecordingWriter | None = None
        self._open = False
        self._has_video = False
        self._video_started = False
        self._audio_seen = self._video_seen = False
        self._timeline = FileTimeline()
        self._waiters: list[defer.Deferred] = []
        #: Bytes of this recording's earlier files (``bytes`` is the current file's): for the metrics.
        self.bytes_before = 0
        self.throttle = PublisherThrottle(host.clock, stream.key, host.max_queue_bytes, self._publication)
        self._announce = FileAnnouncer(stream.notifier, stream.key)

    def __repr__(self) -> str:
        return (
            f"<StreamRecording {self.stream_key} {self.state} file={self.file!r} bytes={self.bytes} "
            f"duration={self.duration:.3f} pending={self.pending_bytes}>"
        )

    @property
    def stream(self) -> Stream | None:
        return self._stream()

    def _publication(self) -> Publication | None:
        stream = self._stream()
        return stream.publisher if stream is not None else None

    @property
    def pending_bytes(self) -> int:
        return self._writer.pending_bytes if self._writer is not None else 0

    def snapshot(self) -> dict[str, Any]:
        """The state as plain values, for logs and the manhole."""
        return {
            "stream_key": self.stream_key,
            "state": self.state,
            "file": self.file,
            "bytes": self.bytes,
            "duration": round(self.duration, 3),
            "pending_bytes": self.pending_bytes,
            "segments": self.segments,
            "files": list(self.files),
            "error": self.error,
        }

    # -- messages (reactor thread) ------------------------------------------------

    def message(self, message: Message, info: MediaInfo) -> None:
        """Take one relayed message: start, continue or rotate the file, and queue its tag."""
        t = message.type_id
        header = info.is_config
        keyframe = info.is_keyframe
        if t == MessageType.VIDEO:
            tag_type = TAG_VIDEO
            self._video_seen = True
        elif t == MessageType.AUDIO:
            tag_type = TAG_AUDIO
            self._audio_seen = True
        elif t == MessageType.DATA_AMF0:
            if info.is_metadata or self._mp4:
                # MP4 recordings hold audio and video only.
                # The file's own onMetaData (with the patched duration) must stay the only one a
                # player reads; an update goes into the next file's prologue from the cache.
                return
            tag_type, header, keyframe = TAG_SCRIPT, False, False
        else:
            return
        if not self._open:
            # Configuration (sequence headers, E-RTMP track config) goes into the prologue from the
            # cache; a file starts at a frame a player can start from: a video keyframe, or audio.
            if header or not (keyframe or t == MessageType.AUDIO):
                return
            if not (self._may_rotate() if self._admitted else self._admit()):
                return
            self._start_segment(message, self.host.paths_for(self.stream_key, self.host.clock.seconds()))
        elif header and self._mp4:
            # The MP4 file carries its configuration in its moov only: a new one needs a new file, at
            # the next frame a player can start from (its prologue comes from the cache).
            if self._config_changes(info, message.payload):
                self._end_file()
            return
        rel = self._timeline.place(message.timestamp)
        if keyframe or (t == MessageType.AUDIO and not self._has_video):
            if self._limit_reached(rel) and self._may_rotate():
                self._rotate(message, rel)
                rel = 0
            if keyframe:
                self._video_started = True
        elif t == MessageType.VIDEO and not header and not self._video_started and info.error is None:
            # Frames before the file's first keyframe cannot be decoded.
            return
        self._queue(tag_type, rel, message.payload, keyframe, info)
        if self._open and self._writer is not None:
            # A recording that failed on this tag holds nobody back.
            self.throttle.consider(message.timestamp, self._writer)

    def _admit(self) -> bool:
        """Whether the first file may start now (taking a slot); a refusal makes the state "refused"."""
        if self.state not in ("waiting", "refused"):
            return False
        if not self.host.admission.start(self.stream_key, first_try=self.state == "waiting"):
            self.state = "refused"
            return False
        self._admitted = True
        return True

    def _may_rotate(self) -> bool:
        """Whether the next segment may start now; if not, the current file goes on."""
        allowed = self.host.admission.segment(self.stream_key, first_try=not self._segment_refused)
        self._segment_refused = not allowed
        return allowed

    def _config_changes(self, info: MediaInfo, payload: bytes) -> bool:
        first = info.first
        return (
            first is not None
            and first.is_sequence_header
            and first.packet_type == 0
            and payload not in self._configs
        )

    def _end_file(self) -> None:
        """Finalize the open file; the next frame a player can start from opens the next one."""
        assert self._writer is not None
        self._writer.end_segment(None)
        self._open = False
        self.log.info(
            "recording file ends: codec configuration changed", stream_key=self.stream_key, file=self.file
        )

    def _limit_reached(self, rel: int) -> bool:
        host = self.host
        return bool(
            (host.max_size is not None and self.bytes >= host.max_size)
            or (host.interval_ms is not None and rel >= host.interval_ms)
        )

    def _queue(self, tag_type: int, rel: int, payload: bytes, keyframe: bool, info: MediaInfo) -> None:
        writer = self._writer
        if writer is None or not self._open:
            return
        if not writer.write(tag_type, rel, payload, keyframe, info if self._mp4 else None):
            self._fail(
                f"writer queue full ({writer.pending_bytes} bytes waiting for the disk, "
                f"limit {writer.max_queue_bytes})"
            )
            return
        size = len(payload) + TAG_OVERHEAD
        self.bytes += size
        if self._timeline.advance(rel):
            self.duration = rel / 1000.0

    def _start_segment(self, message: Message, paths: tuple[str, Iterator[str]]) -> None:
        stream = self._stream()
        if stream is None:  # Cannot happen while the stream feeds us; nothing to build a file from.
            return
        start = file_start(
            stream.cache,
            self.host.format,
            video_seen=self._video_seen,
            audio_seen=self._audio_seen,
            keyframe_slots=self.host.keyframe_slots,
        )
        self._configs = start.configs
        has_video = start.has_video
        first, candidates = paths
        self._open = True
        self._has_video = has_video
        self._video_started = False
        self._timeline.start(message.timestamp)
        if self._writer is None:
            self.log.info("recorder initialized", stream_key=self.stream_key, file=first)
        self.file = first
        self.bytes = start.size
        self.duration = 0.0
        self.segments += 1
        self.state = "recording"
        if self._writer is None:
            self._writer = self.host.new_writer(self)
        self._writer.start_segment(candidates, start.prologue)

    def _rotate(self, message: Message, rel: int) -> None:
        assert self._writer is not None
        # The old file ends exactly where the new one begins, so segment durations add up.
        self._writer.end_segment(rel)
        self.bytes_before += self.bytes
        self._start_segment(message, self.host.paths_for(self.stream_key, self.host.clock.seconds()))

    # -- ending -------------------------------------------------------------------

    def close(self) -> defer.Deferred:
        """Finalize the open file and end the writer; the Deferred fires (with self) once it has."""
        d = self.when_closed()
        if self.state in ("waiting", "refused", "recording"):
            self.state = "finalizing"
            self._open = False
            self._stop_writer()
        return d

    def when_closed(self) -> defer.Deferred:
        """A Deferred that fires (with self) once nothing of this recording is open."""
        if self.state in ("finished", "failed") and self._writer is None:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    def _stop_writer(self) -> None:
        self.throttle.release()
        self.host.forget(self)
        if self._writer is not None:
            self._writer.close()
        else:
            # No frame ever came (or the limits refused every one), so no file was created. Debug only:
            # publishes without media cost an attacker nothing, and must not cost the log a line each.
            self.log.debug("recording ended before any file", stream_key=self.stream_key, state=self.state)
            self.file = None
            self._closed()

    def _fail(self, cause: str, **fields: Any) -> None:
        self.error = cause
        self.log.error(
            "recording failed",
            stream_key=self.stream_key,
            file=self.file,
            cause=cause,
            bytes=fields.get("size", self.bytes),
            duration=fields.get("duration", round(self.duration, 3)),
        )
        if self.state in ("waiting", "refused", "recording"):
            self.state = "failed"
            self._open = False
            self._stop_writer()
        elif self.state == "finalizing":
            # Failed while finishing: the writer is already closing.
            self.state = "failed"

    def _closed(self) -> None:
        self._writer = None
        if self._admitted:
            self._admitted = False
            self.host.admission.finish()
        if self.state != "failed":
            self.state = "finished"
        self.host.closed(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    # -- writer thread reports (delivered in the reactor thread) ----------------------

    def writer_event(self, event: WriterEvent) -> None:
        """Take one report of the writer thread, in the reactor thread."""
        if isinstance(event, Drained):
            self.throttle.drained()
        elif isinstance(event, SegmentOpened):
            self.file = event.path
            self.files.append(event.path)
            self._announce.started(event.path, len(self.files))
        elif isinstance(event, SegmentFinalized):
            self._announce.finalized(event.path, event.duration, event.size, self.error)
        elif isinstance(event, WriterFailed):
            if event.path is not None:
                self.file = event.path
            if event.failure is not None:
                self.log.failure(
                    "recording writer error", event.failure, stream_key=self.stream_key, file=self.file
                )
            self._fail(event.error, size=event.size, duration=round(event.duration, 3))
            if event.path in self.files:  # a file that was started ends here, cut short
                self._announce.cut_short(event.path, event.duration, event.size, self.error)
            # A failed file keeps its bytes (cut back to the last whole tag): that is the file's size now.
            self.bytes = event.size
        elif isinstance(event, WriterClosed):
            self._closed()
