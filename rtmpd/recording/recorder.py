"""The recording service: published streams to FLV files, written by a thread per recording.

``Recorder`` is a Twisted ``Service`` and a ``StreamListener`` of the
relay's registry. For each published stream whose key matches
``--record-match`` (all when none is given) it keeps a ``StreamRecording``
(``rtmpd.recording.recording``) and feeds it every relayed message with the
relay's ``MediaInfo``; ``recording_for(key)`` shows it. The service owns
what is shared by all recordings: the settings, the file paths claimed in
this process (``rtmpd.recording.paths``), the writers' construction, and
shutdown.

Nothing here waits for a disk. ``stopService`` finalizes every open file
and returns a Deferred that fires when all are closed (twistd waits for it
on SIGTERM/SIGINT), or after ``finalize_timeout`` seconds if a disk hangs.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rtmpd.config import ServerConfig
from rtmpd.core.classify import MediaInfo
from rtmpd.core.messages import Message
from rtmpd.recording.admission import RecordingAdmission
from rtmpd.recording.flvfile import SegmentFile, keyframe_slots_for
from rtmpd.recording.paths import FilePaths
from rtmpd.recording.recording import StreamRecording
from rtmpd.recording.writer import (
    DEFAULT_MAX_QUEUE_BYTES,
    RecordingWriter,
    WriterEvent,
    fsync_directory,
    open_exclusive,
)
from rtmpd.relay.listener import StreamListener
from rtmpd.relay.registry import StreamRegistry
from rtmpd.relay.stream import Stream

__all__ = ["FINALIZE_TIMEOUT", "Recorder"]

#: Seconds stopService waits for files to be finalized before giving up on a hung disk.
FINALIZE_TIMEOUT = 30.0


class Recorder(service.Service, StreamListener):
    """Records published streams into ``config.record_dir`` (see the module doc).

    Raises ValueError when ``config.record_dir`` is None. ``open_file(path)``
    creates a file exclusively (FileExistsError if it exists) and returns
    an unbuffered binary file; ``call_from_thread`` runs a callable in the
    reactor thread (default: the clock's, else the global reactor's). Both
    exist for test doubles, as do ``writer_options`` (passed to each
    ``RecordingWriter``). ``keyframe_slots`` overrides the index size
    ``keyframe_slots_for`` derives from the segment interval.

    A failing disk or a writer that falls behind ends only that recording;
    no method here raises for it.
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
        hand_over: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        if config.record_dir is None:
            raise ValueError("Recorder needs config.record_dir")
        self.record_dir = config.record_dir
        self.patterns = tuple(config.record_match)
        self.max_size = config.record_max_size
        self.fsync_interval = config.record_fsync_interval
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
        #: How writers hand a turn's tags to their thread at once (``RecordingWriter``); None: one by one.
        self._hand_over = hand_over
        self.format = config.record_format
        self._paths = FilePaths(self.record_dir, self.format)
        self.admission = RecordingAdmission(clock, config.record_max_active, config.record_max_new)
        #: Recordings fed by the registry, by stream.
        self.recordings: dict[Stream, StreamRecording] = {}
        #: Every recording whose writer has not finished (including ones being finalized).
        self.unfinished: set[StreamRecording] = set()
        # The latest recording of each stream, and the latest stream recorded under each key, kept
        # only while the stream object exists (recordings hold their stream weakly for this).
        self._latest: weakref.WeakKeyDictionary[Stream, StreamRecording] = weakref.WeakKeyDictionary()
        self._streams: weakref.WeakValueDictionary[str, Stream] = weakref.WeakValueDictionary()
        #: Totals of the recordings that ended (for the metrics): bytes queued to their files, failures.
        self.ended_bytes = 0
        self.ended_failed = 0

    # -- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self not in self.registry.listeners:
            self.registry.listeners.append(self)
        self.log.info(
            "Recording enabled",
            record_dir=self.record_dir,
            file_format=self.format,
            match=list(self.patterns),
            max_size=self.max_size,
            interval=self.interval_ms and self.interval_ms / 1000,
            max_active=self.admission.max_active,
            max_new_per_minute=self.admission.max_new_per_minute,
            fsync_interval=self.fsync_interval,
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

    # -- what others ask ------------------------------------------------------------------

    def matches(self, key: str) -> bool:
        """Whether stream ``key`` ("app/name") is recorded: no patterns, or any fnmatch (case-sensitive)."""
        return not self.patterns or any(fnmatch.fnmatchcase(key, p) for p in self.patterns)

    def recording_for(self, key: str) -> StreamRecording | None:
        """The current or last recording of stream ``key``, while that stream object exists; else None."""
        stream = self._streams.get(key)
        return self._latest.get(stream) if stream is not None else None

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

    def start_recording(self, key: str) -> StreamRecording | None:
        """Record live stream ``key`` from now on, into a new file, whatever --record-match says (an
        operator's request). Returns the new recording, or None when ``key`` is not live or is being
        recorded already."""
        stream = self.registry.get(key)
        if stream is None or not stream.live or stream in self.recordings:
            return None
        self.log.info("recording started on request", stream_key=key)
        return self._record(stream)

    # -- registry listener ---------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        wish = getattr(stream.publisher, "record", None)
        if wish is False:
            self.log.info("Stream not recorded (its authorisation says record: false)", stream_key=stream.key)
            return
        if wish is None and not self.matches(stream.key):
            self.log.debug("Stream not recorded (no --record-match pattern matches)", stream_key=stream.key)
            return
        self._record(stream)

    def _record(self, stream: Stream) -> StreamRecording:
        previous = self.recordings.get(stream)
        if previous is not None:
            previous.close()
        recording = StreamRecording(self, stream, self.clock.seconds())
        self.recordings[stream] = recording
        self.unfinished.add(recording)
        self._latest[stream] = recording
        self._streams[stream.key] = stream
        return recording

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        recording = self.recordings.get(stream)
        if recording is not None:
            recording.message(message, info)

    def stream_unpublished(self, stream: Stream) -> None:
        recording = self.recordings.get(stream)
        if recording is not None:
            recording.close()

    # -- for StreamRecording (rtmpd.recording.recording.RecordingHost) ------------------------

    def paths_for(self, key: str, when: float) -> tuple[str, Iterator[str]]:
        """The first path to try for a file of ``key`` starting at ``when``, and every path to try in turn."""
        return self._paths.claim(key, when)

    def new_writer(self, recording: StreamRecording) -> RecordingWriter:
        call = self._call_from_thread

        def report(event: WriterEvent) -> None:
            # Called in the writer thread; the recording is only ever touched in the reactor thread.
            call(recording.writer_event, event)

        options = {
            "fsync_interval": self.fsync_interval,
            # A test's disk double has no directory to sync.
            "sync_dir": fsync_directory if self.open_file is open_exclusive else None,
            "segment_file": _mp4_segment_file() if self.format == "mp4" else SegmentFile,
            "hand_over": self._hand_over,
            **self.writer_options,
        }
        return RecordingWriter(
            report,
            open_file=self.open_file,
            max_queue_bytes=self.max_queue_bytes,
            name=f"rtmpd-recording {recording.stream_key}",
            **options,
        )

    def forget(self, recording: StreamRecording) -> None:
        """Stop feeding ``recording`` (it is ending); ``recording_for`` keeps showing it."""
        stream = recording.stream
        if stream is not None and self.recordings.get(stream) is recording:
            del self.recordings[stream]

    def closed(self, recording: StreamRecording) -> None:
        if recording in self.unfinished:
            self.ended_bytes += recording.bytes_before + recording.bytes
            self.ended_failed += recording.state == "failed"
        self.unfinished.discard(recording)


def _mp4_segment_file() -> type:
    """The MP4 writer, imported when a recording in MP4 starts: an FLV-only server never loads it."""
    from rtmpd.recording.mp4file import Mp4SegmentFile

    return Mp4SegmentFile
