"""The thread that writes one stream's recording, so the reactor never waits for a disk.

The reactor thread calls ``start_segment``, ``write``, ``end_segment`` and
``close``: each only puts a small tuple on a queue (``write`` first checks
the byte budget and refuses, returning False, rather than grow the backlog
past ``max_queue_bytes``). The writer thread takes them in order and drives
a ``SegmentFile``:

- the first bytes of a file, and every tag, are handed to the OS as soon as
  the queue is empty, and at least every ``flush_interval`` seconds when it
  never is (``write`` is then the only thing that can block, in this thread);
- ``duration`` and ``filesize`` are patched every ``patch_interval`` seconds;
- what reached the OS is fsynced every ``fsync_interval`` seconds (0: only
  at the end), so a power cut loses at most that much of a recording;
- ``end_segment`` finalizes the file (index, numbers, fsync, close);
- the directory is fsynced (``sync_dir``) once a file is created and once it
  is finalized, so the file's name survives a power cut too.

What happens is reported through ``report(event)``, called in the writer
thread; the recorder wraps it with ``reactor.callFromThread``. On request
(``report_drained``) the thread also reports ``Drained`` once, when its
backlog has fallen to a given mark: whoever waits for the disk to catch up
is told so, and never has to look. An OSError
(ENOSPC, EIO, ...) ends the recording: the file is cut back to its last
whole tag and patched, ``WriterFailed`` is reported, and everything queued
afterwards is discarded until ``close``. After ``close`` the thread
finalizes any open file, reports ``WriterClosed`` and exits.

Hand-over: with ``hand_over`` (a function that calls its argument once the
reactor's current turn is over, e.g. ``lambda f: reactor.callLater(0, f)``)
the tags written in one turn (one read from the publisher: a frame or
several) reach the thread together, as one queue item. The thread then wakes,
and writes to the OS, once per turn instead of once per tag; a wake-up and a
``write`` cost more than the tag itself. Other calls hand over what is held
first, so the order is kept. Without it, each tag is handed over at once.

With ``threaded=False`` every call is carried out at once in the caller's
thread (for tests): the same code, no thread.
"""

from __future__ import annotations

import errno
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.python.failure import Failure

from rtmpd.recording.disk import describe_error, fsync_directory, fsync_file, open_exclusive
from rtmpd.recording.flvfile import TAG_OVERHEAD, SegmentFile

__all__ = [
    "DEFAULT_MAX_QUEUE_BYTES",
    "Drained",
    "RecordingWriter",
    "SegmentFinalized",
    "SegmentOpened",
    "WriterClosed",
    "WriterEvent",
    "WriterFailed",
    "describe_error",
    "fsync_directory",
    "fsync_file",
    "open_exclusive",
]

#: Backlog allowed per recording: about 20 s of a 12 Mb/s stream.
DEFAULT_MAX_QUEUE_BYTES = 32 * 1024 * 1024
#: A file's bytes reach the OS at least this often (seconds) even when the queue never empties.
FLUSH_INTERVAL = 1.0
#: Buffered bytes that force a write before the flush interval is up.
FLUSH_BYTES = 1024 * 1024
#: How often duration and filesize are patched while a file grows (seconds).
PATCH_INTERVAL = 1.0
#: Open files are fsynced this often (seconds) by default.
FSYNC_INTERVAL = 5.0
#: How many numbered alternatives are tried when a file name is taken.
MAX_NAME_ATTEMPTS = 1000


@dataclass(frozen=True, slots=True)
class SegmentOpened:
    """A file was created; ``path`` may differ from the one asked for if that was taken."""

    path: str


@dataclass(frozen=True, slots=True)
class SegmentFinalized:
    """A file was finalized: its index, duration and size are written, it is closed (and fsynced)."""

    path: str
    duration: float
    size: int


@dataclass(frozen=True, slots=True)
class WriterFailed:
    """The recording stopped on an error; the file holds ``size`` bytes of whole tags."""

    path: str | None
    error: str
    duration: float
    size: int
    #: The traceback of an error that is not an OSError (a bug), else None.
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class WriterClosed:
    """The thread has finished: nothing of this recording is open any more."""


@dataclass(frozen=True, slots=True)
class Drained:
    """The backlog fell to the mark ``report_drained`` asked for (reported once per request)."""


WriterEvent = SegmentOpened | SegmentFinalized | WriterFailed | WriterClosed | Drained

_START, _TAG, _END, _CLOSE, _TAGS = range(5)


class RecordingWriter:
    """A bounded queue and one thread writing a recording's files in order (see the module doc).

    The reactor-side methods never block on the disk and never raise for
    it: a disk error is reported as ``WriterFailed``. ``report`` is called
    in the writer thread (in the caller's with ``threaded=False``).
    """

    def __init__(
        self,
        report: Callable[[WriterEvent], None],
        *,
        open_file: Callable[[str], BinaryIO] = open_exclusive,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        flush_interval: float = FLUSH_INTERVAL,
        patch_interval: float = PATCH_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
        threaded: bool = True,
        name: str = "rtmpd-recording",
        sync_on_finalize: bool = True,
        fsync_interval: float = FSYNC_INTERVAL,
        sync_file: Callable[[BinaryIO], None] = fsync_file,
        sync_dir: Callable[[str], None] | None = None,
        segment_file: Callable[[BinaryIO, str, Any], Any] = SegmentFile,
        hand_over: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        self._report = report
        self._open_file = open_file
        self.max_queue_bytes = max_queue_bytes
        self._flush_interval = flush_interval
        self._patch_interval = patch_interval
        self._now = monotonic
        self._sync = sync_on_finalize
        self._fsync_interval = fsync_interval
        self._sync_file = sync_file
        self._sync_dir = sync_dir
        self._segment_file = segment_file
        self._last_fsync = 0.0
        #: Bytes of the open file known to be on disk (fsynced).
        self._synced = 0
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        #: Report ``Drained`` once the backlog is at most this many bytes (None: nobody asked).
        self._drain_mark: int | None = None
        self._closing = False
        #: Set in the writer thread when a write failed; read by anyone.
        self.failed = False
        self._segment: Any = None
        self._last_flush = self._last_patch = 0.0
        self._thread: threading.Thread | None = None
        self._hand_over = hand_over if threaded else None
        #: Tag items written this turn, not yet handed to the thread (see the module docstring).
        self._held: list[tuple[Any, ...]] = []
        if threaded:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    # -- the reactor side ---------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes of tags queued and not yet taken by the writer thread."""
        return self._pending

    def start_segment(self, paths: Iterator[str], prologue: Any) -> None:
        """Queue: finalize any open file, create the first free path of ``paths``, write ``prologue``."""
        self._submit((_START, paths, prologue))

    def write(
        self, tag_type: int, timestamp: int, payload: bytes, keyframe: bool = False, info: Any = None
    ) -> bool:
        """Queue one tag; False (and nothing queued) if it would take the backlog past the budget.

        ``info`` (the relay's ``MediaInfo``) goes with it to the file, which may use it (MP4 does)."""
        size = len(payload) + TAG_OVERHEAD
        with self._lock:
            if self._pending + size > self.max_queue_bytes:
                return False
            self._pending += size
        item = (_TAG, tag_type, timestamp, payload, keyframe, size, info)
        if self._hand_over is None:
            self._submit(item)
        else:
            held = self._held
            held.append(item)
            if len(held) == 1:
                self._hand_over(self._release_held)
        return True

    def report_drained(self, mark: int | None) -> bool:
        """Ask for one ``Drained`` report as soon as the backlog is at most ``mark`` bytes.

        ``None`` withdraws the request. Returns False, and asks for nothing,
        when the backlog is that small already. A later call replaces an
        earlier request.
        """
        with self._lock:
            if mark is not None and self._pending <= mark:
                self._drain_mark = None
                return False
            self._drain_mark = mark
            return True

    def end_segment(self, duration_ms: int | None = None) -> None:
        """Queue: finalize the open file (``duration_ms``: its length, if it ends where the next begins)."""
        self._submit((_END, duration_ms))

    def close(self) -> None:
        """Queue: finalize any open file and end the thread (``WriterClosed`` follows). Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._submit((_CLOSE,))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end (tests, shutdown); True if it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _release_held(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._queue.put((_TAGS, held))

    def _submit(self, item: tuple[Any, ...]) -> None:
        self._release_held()
        if self._thread is None:
            self._handle(item)
            self._maintain(caught_up=True)
        else:
            self._queue.put(item)

    # -- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._wait_time())
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
                if item[0] == _CLOSE:
                    return
            self._maintain(caught_up=self._queue.empty())

    def _wait_time(self) -> float:
        if self._segment is None:
            return 3600.0
        # Buffered bytes are flushed when the queue empties, so only the timers are left to wake for.
        due = self._last_patch + self._patch_interval
        if self._fsync_interval > 0:
            due = min(due, self._last_fsync + self._fsync_interval)
        return max(0.05, due - self._now())

    def _handle(self, item: tuple[Any, ...]) -> None:
        op = item[0]
        if op == _TAGS:
            for tag in item[1]:
                self._handle(tag)
        elif op == _TAG:
            self._take(item[5])
            if self._segment is not None and not self.failed:
                self._guard(self._segment.append, item[1], item[2], item[3], item[4], item[6])
        elif op == _START:
            if not self.failed:
                self._finish_segment(None)
            if not self.failed:
                self._guard(self._open_segment, item[1], item[2])
        elif op == _END:
            if not self.failed:
                self._finish_segment(item[1])
        else:  # _CLOSE
            if not self.failed:
                self._finish_segment(None)
            self._report(WriterClosed())

    def _take(self, size: int) -> None:
        """Count a tag out of the backlog, reporting ``Drained`` if that reaches the requested mark."""
        with self._lock:
            mark = self._drain_mark
            if mark is None or self._pending - size > mark:
                self._pending -= size
                return
            self._drain_mark = None
        # Reported before the smaller backlog shows (and outside the lock, as ``report`` may call
        # back into this writer): whoever sees the backlog at the mark knows the report is on its way.
        self._report(Drained())
        with self._lock:
            self._pending -= size

    def _maintain(self, caught_up: bool) -> None:
        segment = self._segment
        if segment is None or self.failed:
            return
        now = self._now()
        due = now - self._last_flush >= self._flush_interval
        if caught_up or due or segment.buffered_bytes >= FLUSH_BYTES:
            self._last_flush = now
            self._guard(segment.flush)
        if not self.failed and now - self._last_patch >= self._patch_interval:
            self._last_patch = now
            self._guard(segment.patch_progress)
        if not self.failed and self._fsync_interval > 0 and now - self._last_fsync >= self._fsync_interval:
            self._last_fsync = now
            if segment.written > self._synced:
                self._synced = segment.written
                self._guard(self._sync_file, segment.file)

    def _guard(self, action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except Exception as e:  # an OSError from the disk, or a bug: either way this recording ends here
            self._fail(e, None if isinstance(e, OSError) else Failure())

    def _fail(self, error: Exception, failure: Failure | None) -> None:
        self.failed = True
        segment, self._segment = self._segment, None
        duration, size, path = 0.0, 0, getattr(error, "filename", None)
        if segment is not None:
            path = segment.path
            duration, size = segment.salvage()
        self._report(WriterFailed(path, describe_error(error), duration, size, failure))

    def _open_segment(self, paths: Iterator[str], prologue: Any) -> None:
        path = None
        for path in itertools.islice(paths, MAX_NAME_ATTEMPTS):
            try:
                file = self._open_file(path)
            except FileExistsError:
                continue
            self._segment = self._segment_file(file, path, prologue)
            self._last_flush = self._last_patch = self._last_fsync = self._now()
            self._synced = 0
            if self._sync_dir is not None:
                self._sync_dir(path)
            self._report(SegmentOpened(path))
            return
        raise FileExistsError(errno.EEXIST, "no free file name", path)

    def _finish_segment(self, duration_ms: int | None) -> None:
        segment = self._segment
        if segment is None:
            return
        try:
            duration, size = segment.finalize(duration_ms, sync=self._sync)
        except Exception as e:
            self._fail(e, None if isinstance(e, OSError) else Failure())
            return
        self._segment = None
        if self._sync_dir is not None:
            try:
                self._sync_dir(segment.path)
            except Exception as e:
                self._fail(e, None if isinstance(e, OSError) else Failure())
                return
        self._report(SegmentFinalized(segment.path, duration, size))
