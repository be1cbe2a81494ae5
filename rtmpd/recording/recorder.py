"""The recording service: published streams to FLV files, written by a thread per recording.

``Recorder`` is a Twisted ``Service`` in rtmpd's service collection and a
``StreamListener`` of the registry. For each published stream whose key
matches ``--record-match`` (all when none is given) it keeps a
``StreamRecording``, which is also what ``stream.recording`` shows.

The reactor side does the cheap part of each message: decide whether it
belongs in the file (a file starts at a frame a player can start from),
rebase its timestamp so every file starts at 0, decide when to start the
next segment, and queue the payload for the writer thread
(``rtmpd.recording.writer``). A file's first bytes (header, onMetaData with
placeholders, sequence headers) are built here from the stream's late-join
cache when the file starts: the FLV header flags say which tracks that
cache (or the first frame) shows.

Nothing here waits for a disk. A writer that falls ``max_queue_bytes``
behind, or meets a disk error, stops that recording (ERROR log naming the
file and the cause); the stream goes on for its players. ``stopService``
finalizes every open file and returns a Deferred that fires when all are
closed (twistd waits for it on SIGTERM/SIGINT), or after
``finalize_timeout`` seconds if a disk hangs.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rtmpd.config import ServerConfig
from rtmpd.core.classify import MediaInfo
from rtmpd.core.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO
from rtmpd.core.messages import Message, MessageType
from rtmpd.recording.flvfile import build_prologue, publisher_metadata
from rtmpd.recording.names import recording_file_name
from rtmpd.recording.writer import (
    DEFAULT_MAX_QUEUE_BYTES,
    TAG_OVERHEAD,
    RecordingWriter,
    SegmentFinalized,
    SegmentOpened,
    WriterClosed,
    WriterEvent,
    WriterFailed,
    open_exclusive,
)
from rtmpd.relay.registry import Stream, StreamListener, StreamRegistry

__all__ = ["MAX_KEYFRAME_SLOTS", "Recorder", "StreamRecording", "keyframe_slots_for"]

#: Keyframe index entries reserved in each file's onMetaData (18 bytes each).
MAX_KEYFRAME_SLOTS = 2000
MIN_KEYFRAME_SLOTS = 64
#: Seconds stopService waits for files to be finalized before giving up on a hung disk.
FINALIZE_TIMEOUT = 30.0

#: Interleaving puts audio and video tags somewhat out of order; a timestamp further back than this
#: behind the file's latest is a jump of the publisher's clock.
MAX_BACKWARD_JUMP_MS = 2000
#: A publisher more than this far ahead of real time may be held back while the writer catches up.
THROTTLE_AHEAD_SECONDS = 2.0
#: Share of the writer's queue limit above which such a publisher is held back; it is let go
#: below a quarter of that.
THROTTLE_HIGH_SHARE = 0.25
#: How often a held-back publisher's recording backlog is looked at (seconds).
THROTTLE_POLL_SECONDS = 0.02

_HALF_RANGE = 0x80000000


def keyframe_slots_for(interval: float | None) -> int:
    """Index slots for a file of at most ``interval`` seconds: one keyframe a second, some slack, capped."""
    if interval is None:
        return MAX_KEYFRAME_SLOTS
    return min(MAX_KEYFRAME_SLOTS, max(MIN_KEYFRAME_SLOTS, math.ceil(interval) + 30))


def _present(value: Any) -> bool:
    return value is not None and value != ""


class PublisherThrottle:
    """Holds back a publisher that sends faster than real time while its recording's writer catches up.

    A file upload pushed flat out (``ffmpeg -i file -f flv`` without ``-re``)
    outruns any disk; instead of losing the recording when the writer's
    queue overflows, the publisher's socket stops being read (TCP pushes
    back) until the backlog is small again, as nginx-rtmp's synchronous
    writes do. A publisher at real time is never held back: a slow or
    stalled disk must not delay live viewers, so then the queue overflows
    and only the recording stops.
    """

    log = Logger()

    def __init__(self, recording: StreamRecording, max_queue_bytes: int) -> None:
        self.recording = recording
        self.high = int(max_queue_bytes * THROTTLE_HIGH_SHARE)
        self.low = self.high // 4
        self._origin: tuple[int, float] | None = None
        self._last_timestamp = 0
        self._publication: Any = None
        self._poll: Any = None

    def ahead_of_real_time(self, timestamp: int, now: float) -> bool:
        """Whether media time since the first message runs more than AHEAD_SECONDS ahead of the wall clock."""
        if self._origin is None:
            self._origin = (timestamp, now)
            return False
        first_ts, first_wall = self._origin
        media = ((timestamp - first_ts) & 0xFFFFFFFF) / 1000.0
        return media - (now - first_wall) > THROTTLE_AHEAD_SECONDS

    def consider(self, timestamp: int, pending: int, now: float) -> None:
        """Called after each queued tag: hold the publisher back if the backlog is high and it runs ahead."""
        self._last_timestamp = timestamp
        ahead = self.ahead_of_real_time(timestamp, now)
        if self._poll is not None or pending < self.high or not ahead:
            return
        publication = self.recording.stream.publisher
        if publication is None:
            return
        self._publication = publication
        publication.throttled = True
        publication.peer.hold_input()
        self.log.info(
            "Publisher held back for the recording",
            stream_key=self.recording.stream_key,
            conn_id=publication.peer.conn_id,
            pending_bytes=pending,
        )
        self._poll = self.recording.recorder.clock.callLater(THROTTLE_POLL_SECONDS, self._check)

    def _check(self) -> None:
        self._poll = None
        # Held back only while its lead lasts: once the wall clock catches up with its media, viewers
        # would wait, so a disk that still has not caught up loses the recording instead (queue full).
        ahead = self.ahead_of_real_time(self._last_timestamp, self.recording.recorder.now())
        if ahead and self.recording.pending_bytes > self.low and self.recording.state == "recording":
            self._poll = self.recording.recorder.clock.callLater(THROTTLE_POLL_SECONDS, self._check)
            return
        self.release()

    def release(self) -> None:
        """Let the publisher go on (the backlog drained, or the recording ended)."""
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
        publication, self._publication = self._publication, None
        if publication is not None and publication.throttled:
            publication.throttled = False
            publication.last_activity = self.recording.recorder.now()
            publication.peer.release_input()


class StreamRecording:
    """One stream's recording, from publish to unpublish, possibly in several files (segments).

    Read-only for everyone but the recorder: ``state`` is "waiting" (no
    frame yet, so no file), "recording", "finalizing", "finished" or
    "failed"; ``file`` the current (or last) file; ``bytes`` and
    ``duration`` (seconds) describe that file as queued for writing;
    ``pending_bytes`` is the writer's backlog; ``files`` every file
    created; ``error`` why it failed.
    """

    log = Logger()

    def __init__(self, recorder: Recorder, stream: Stream, when: float) -> None:
        self.recorder = recorder
        self.stream = stream
        self.stream_key = stream.key
        self.started_at = when
        self.state = "waiting"
        self.error: str | None = None
        self.files: list[str] = []
        self.segments = 0
        self.bytes = 0
        self.duration = 0.0
        self.total_bytes = 0
        self._next_paths = recorder.paths_for(stream.key, when)
        self.file: str | None = self._next_paths[0]
        self._writer: RecordingWriter | None = None
        self._open = False
        self._has_video = False
        self._video_started = False
        self._audio_seen = self._video_seen = False
        self._base = 0
        self._last = 0
        self._waiters: list[defer.Deferred] = []
        self.throttle = PublisherThrottle(self, recorder.max_queue_bytes)

    def __repr__(self) -> str:
        return (
            f"<StreamRecording {self.stream_key} {self.state} file={self.file!r} bytes={self.bytes} "
            f"duration={self.duration:.3f} pending={self.pending_bytes}>"
        )

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
            if info.is_metadata:
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
            self._start_segment(message, self._next_paths)
        rel = self._relative(message.timestamp)
        if keyframe or (t == MessageType.AUDIO and not self._has_video):
            if self._limit_reached(rel):
                self._rotate(message, rel)
                rel = 0
            if keyframe:
                self._video_started = True
        elif t == MessageType.VIDEO and not header and not self._video_started and info.error is None:
            # Frames before the file's first keyframe cannot be decoded.
            return
        self._queue(tag_type, rel, message.payload, keyframe)
        if self._writer is not None:
            self.throttle.consider(message.timestamp, self._writer.pending_bytes, self.recorder.now())

    def _relative(self, timestamp: int) -> int:
        """``timestamp`` on the file's timeline (0 at its first frame), across the 32-bit wrap."""
        rel = (timestamp - self._base) & 0xFFFFFFFF
        if rel >= _HALF_RANGE:
            rel -= 0x100000000
        if rel < self._last - MAX_BACKWARD_JUMP_MS:
            # The publisher's clock went back (an encoder restart): go on from where the file is.
            self._base = (timestamp - self._last) & 0xFFFFFFFF
            return self._last
        # A tag a little older than the file's first (audio interleaved late) goes at 0: FLV has no
        # negative time.
        return max(rel, 0)

    def _limit_reached(self, rel: int) -> bool:
        r = self.recorder
        return bool(
            (r.max_size is not None and self.bytes >= r.max_size)
            or (r.interval_ms is not None and rel >= r.interval_ms)
        )

    def _queue(self, tag_type: int, rel: int, payload: bytes, keyframe: bool) -> None:
        writer = self._writer
        if writer is None or not self._open:
            return
        if not writer.write(tag_type, rel, payload, keyframe):
            self._fail(
                f"writer queue full ({writer.pending_bytes} bytes waiting for the disk, "
                f"limit {writer.max_queue_bytes})"
            )
            return
        size = len(payload) + TAG_OVERHEAD
        self.bytes += size
        self.total_bytes += size
        if rel > self._last:
            self._last = rel
            self.duration = rel / 1000.0

    def _start_segment(self, message: Message, paths: tuple[str, Iterator[str]]) -> None:
        cache = self.stream.cache
        metadata = publisher_metadata(cache.metadata.payload if cache.metadata is not None else None)
        headers = [
            (TAG_VIDEO if m.type_id == MessageType.VIDEO else TAG_AUDIO, m.payload)
            for m in cache.codec_headers()
        ]
        has_video = bool(cache.video_headers) or self._video_seen or _present(metadata.get("videocodecid"))
        has_audio = bool(cache.audio_headers) or self._audio_seen or _present(metadata.get("audiocodecid"))
        prologue = build_prologue(
            metadata,
            headers,
            has_audio=has_audio,
            has_video=has_video,
            keyframe_slots=self.recorder.keyframe_slots,
        )
        first, candidates = paths
        self._open = True
        self._has_video = has_video
        self._video_started = False
        self._base = message.timestamp
        self._last = 0
        self.file = first
        self.bytes = len(prologue.data)
        self.total_bytes += self.bytes
        self.duration = 0.0
        self.segments += 1
        self.state = "recording"
        if self._writer is None:
            self._writer = self.recorder.new_writer(self)
        self._writer.start_segment(candidates, prologue)

    def _rotate(self, message: Message, rel: int) -> None:
        assert self._writer is not None
        # The old file ends exactly where the new one begins, so segment durations add up.
        self._writer.end_segment(rel)
        self._start_segment(message, self.recorder.paths_for(self.stream_key, self.recorder.now()))

    # -- ending -------------------------------------------------------------------

    def close(self) -> defer.Deferred:
        """Finalize the open file and end the writer; the Deferred fires (with self) once it has."""
        d = self.when_closed()
        if self.state in ("waiting", "recording"):
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
        self.recorder.forget(self)
        if self._writer is not None:
            self._writer.close()
        else:
            # No frame ever came, so no file was created.
            self.log.info("recording ended before any frame", stream_key=self.stream_key)
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
        if self.state in ("waiting", "recording"):
            self.state = "failed"
            self._open = False
            self._stop_writer()
        elif self.state == "finalizing":
            # Failed while finishing: the writer is already closing.
            self.state = "failed"

    def _closed(self) -> None:
        self._writer = None
        if self.state != "failed":
            self.state = "finished"
        self.recorder.closed(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    # -- writer thread reports (delivered in the reactor thread) ----------------------

    def writer_event(self, event: WriterEvent) -> None:
        if isinstance(event, SegmentOpened):
            self.file = event.path
            self.files.append(event.path)
            self.log.info(
                "recording started", stream_key=self.stream_key, file=event.path, segment=len(self.files)
            )
        elif isinstance(event, SegmentFinalized):
            self.log.info(
                "recording finalized",
                stream_key=self.stream_key,
                file=event.path,
                duration=round(event.duration, 3),
                bytes=event.size,
            )
        elif isinstance(event, WriterFailed):
            if event.path is not None:
                self.file = event.path
            if event.failure is not None:
                self.log.failure(
                    "recording writer error", event.failure, stream_key=self.stream_key, file=self.file
                )
            self._fail(event.error, size=event.size, duration=round(event.duration, 3))
            # A failed file keeps its bytes (cut back to the last whole tag): that is the file's size now.
            self.bytes = event.size
        elif isinstance(event, WriterClosed):
            self._closed()


class Recorder(service.Service, StreamListener):
    """Records published streams into ``config.record_dir`` (see the module doc).

    ``open_file(path)`` creates a file exclusively (FileExistsError if it
    exists) and returns an unbuffered binary file; ``call_from_thread``
    runs a callable in the reactor thread (default: the clock's, else the
    global reactor's). Both exist for test doubles, as do ``writer_options``
    (passed to each ``RecordingWriter``). ``keyframe_slots`` overrides the
    index size ``keyframe_slots_for`` derives from the segment interval.
    """

    log = Logger()
    name = "recorder"

    def __init__(
        self,
        config: ServerConfig,
        registry: StreamRegistry,
        clock: IReactorTime,
        *,
        open_file: Callable[[str], BinaryIO] = open_exclusive,
        call_from_thread: Callable[..., Any] | None = None,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        finalize_timeout: float = FINALIZE_TIMEOUT,
        keyframe_slots: int | None = None,
        writer_options: dict[str, Any] | None = None,
    ) -> None:
        if config.record_dir is None:
            raise ValueError("Recorder needs config.record_dir")
        self.record_dir = config.record_dir
        self.patterns = tuple(config.record_match)
        self.max_size = config.record_max_size
        self.interval_ms = None if config.record_interval is None else int(config.record_interval * 1000)
        if keyframe_slots is None:
            keyframe_slots = keyframe_slots_for(config.record_interval)
        self.keyframe_slots = keyframe_slots
        self.registry = registry
        self.clock = clock
        self.open_file = open_file
        self.max_queue_bytes = max_queue_bytes
        self.finalize_timeout = finalize_timeout
        self.writer_options = dict(writer_options or {})
        if call_from_thread is None:
            call_from_thread = getattr(clock, "callFromThread", None)
        if call_from_thread is None:
            from twisted.internet import reactor

            call_from_thread = reactor.callFromThread  # type: ignore[attr-defined]
        self._call_from_thread = call_from_thread
        #: Recordings fed by the registry, by stream.
        self.recordings: dict[Stream, StreamRecording] = {}
        #: Every recording whose writer has not finished (including ones being finalized).
        self.unfinished: set[StreamRecording] = set()
        self._claimed: set[str] = set()
        self._claimed_second: int | None = None

    # -- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self not in self.registry.listeners:
            self.registry.listeners.append(self)
        self.log.info(
            "Recording enabled",
            record_dir=self.record_dir,
            match=list(self.patterns),
            max_size=self.max_size,
            interval=self.interval_ms and self.interval_ms / 1000,
        )
        # Streams published before the recorder started (not the case under twistd) are recorded too.
        for stream in self.registry:
            if stream.live:
                self.stream_published(stream)

    def stopService(self) -> defer.Deferred | None:
        """Finalize every open recording; the Deferred fires once all files are closed (or on timeout)."""
        super().stopService()
        if self in self.registry.listeners:
            self.registry.listeners.remove(self)
        for recording in list(self.recordings.values()):
            recording.close()
        waiting = [r.when_closed() for r in self.unfinished]
        if not waiting:
            return None
        done: defer.Deferred = defer.Deferred()

        def all_closed(_: Any) -> None:
            if timer.active():
                timer.cancel()
                done.callback(None)

        def timed_out() -> None:
            # A hung disk must not hang shutdown: the writer threads are daemons and die with the process.
            self.log.error(
                "recordings not finalized before shutdown",
                timeout=self.finalize_timeout,
                files=sorted(str(r.file) for r in self.unfinished),
            )
            done.callback(None)

        timer = self.clock.callLater(self.finalize_timeout, timed_out)
        defer.DeferredList(waiting).addCallback(all_closed)
        return done

    # -- registry listener ---------------------------------------------------------------

    def matches(self, key: str) -> bool:
        """Whether stream ``key`` ("app/name") is recorded: no patterns, or any fnmatch (case-sensitive)."""
        return not self.patterns or any(fnmatch.fnmatchcase(key, p) for p in self.patterns)

    def stream_published(self, stream: Stream) -> None:
        if not self.matches(stream.key):
            self.log.debug("Stream not recorded (no --record-match pattern matches)", stream_key=stream.key)
            return
        previous = self.recordings.get(stream)
        if previous is not None:
            previous.close()
        recording = StreamRecording(self, stream, self.now())
        self.recordings[stream] = recording
        self.unfinished.add(recording)
        stream.recording = recording
        self.log.info("recorder initialized", stream_key=stream.key, file=recording.file)

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        recording = self.recordings.get(stream)
        if recording is not None:
            recording.message(message, info)

    def stream_unpublished(self, stream: Stream) -> None:
        recording = self.recordings.get(stream)
        if recording is not None:
            recording.close()

    def recording_for(self, key: str) -> StreamRecording | None:
        """The current or last recording of stream ``key``, while that stream object exists; else None."""
        stream = self.registry.get(key)
        return stream.recording if stream is not None else None

    def stop_recording(self, key: str) -> defer.Deferred | bool:
        """Finalize the recording of stream ``key`` now; the stream goes on for viewers unrecorded
        until it is published again. Returns False when ``key`` is not being recorded, else a
        Deferred that fires with the StreamRecording once its file is finalized."""
        stream = self.registry.get(key)
        recording = self.recordings.get(stream) if stream is not None else None
        if recording is None:
            return False
        self.log.info("recording stopped on request", stream_key=key, file=recording.file)
        return recording.close()

    # -- for StreamRecording ------------------------------------------------------------

    def now(self) -> float:
        return self.clock.seconds()

    def paths_for(self, key: str, when: float) -> tuple[str, Iterator[str]]:
        """The first path to try for a file of ``key`` starting at ``when``, and every path to try in turn.

        Names are claimed in this process, so two files of one key in the
        same second get distinct names at once; the writer's exclusive
        create settles any clash with files already on disk.
        """
        second = int(when)
        if second != self._claimed_second:
            # A name embeds its second: names of earlier seconds cannot clash with new ones.
            self._claimed.clear()
            self._claimed_second = second
        for suffix in itertools.count():
            name = recording_file_name(key, when, suffix)
            if name not in self._claimed:
                break
        self._claimed.add(name)
        first = os.path.join(self.record_dir, name)
        rest = (
            os.path.join(self.record_dir, recording_file_name(key, when, n))
            for n in itertools.count(suffix + 1)
        )
        return first, itertools.chain((first,), rest)

    def new_writer(self, recording: StreamRecording) -> RecordingWriter:
        call = self._call_from_thread

        def report(event: WriterEvent) -> None:
            # Called in the writer thread; the recording is only ever touched in the reactor thread.
            call(recording.writer_event, event)

        return RecordingWriter(
            report,
            open_file=self.open_file,
            max_queue_bytes=self.max_queue_bytes,
            name=f"rtmpd-recording {recording.stream_key}",
            **self.writer_options,
        )

    def forget(self, recording: StreamRecording) -> None:
        """Stop feeding ``recording`` (it is ending); ``stream.recording`` keeps showing it."""
        if self.recordings.get(recording.stream) is recording:
            del self.recordings[recording.stream]

    def closed(self, recording: StreamRecording) -> None:
        self.unfinished.discard(recording)
