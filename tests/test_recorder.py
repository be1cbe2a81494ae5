"""The recorder without real clients: file names, the FLV file layout, the writer thread, the service.

Disks are test doubles (``Disk``): files kept in memory that can fail with
ENOSPC/EIO after some bytes, or block every write until released. The
writer thread reports through ``ThreadCalls``, which the test runs in its
own thread (as the reactor would), so every wait is on an event.
"""

from __future__ import annotations

import ast
import errno
import gc
import io
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.admin.views import announced_framerate
from rtmpd.config import ServerConfig
from rtmpd.core import amf0, flv
from rtmpd.core.amf_types import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NODES
from rtmpd.core.limits import Limits
from rtmpd.core.messages import Message, MessageType
from rtmpd.recording.flvfile import (
    MAX_KEYFRAME_SLOTS,
    SegmentFile,
    build_prologue,
    keyframe_slots_for,
    publisher_metadata,
    thin_index,
)
from rtmpd.recording.names import recording_file_name, safe_part
from rtmpd.recording.recorder import Recorder
from rtmpd.recording.throttle import AHEAD_SECONDS, PublisherThrottle
from rtmpd.recording.writer import (
    Drained,
    RecordingWriter,
    SegmentFinalized,
    SegmentOpened,
    WriterClosed,
    WriterFailed,
    describe_error,
)
from rtmpd.relay.registry import StreamRegistry
from rtmpd.relay.stream import Stream
from rtmpd.testing import MemoryServer
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V = MessageType.AUDIO, MessageType.VIDEO
WAIT = 10.0
#: 2023-11-14 22:13:20 UTC
EPOCH = 1_700_000_000


# -- test doubles ----------------------------------------------------------------------


class MemoryFile(io.BytesIO):
    """A file in memory whose contents outlive ``close``.

    ``fail_after``: a write that would take the file past that many bytes
    writes up to there and raises OSError(``error``). ``gate``: every write
    waits until the Event is set (``blocked`` is set while one waits).
    ``max_write``: writes at most that many bytes per call.
    """

    def __init__(
        self,
        *,
        fail_after: int | None = None,
        error: int = errno.ENOSPC,
        gate: threading.Event | None = None,
        max_write: int | None = None,
    ) -> None:
        super().__init__()
        self.fail_after = fail_after
        self.error = error
        self.gate = gate
        self.max_write = max_write
        self.blocked = threading.Event()
        self.writes = 0
        self.saved: bytes | None = None
        self.changed = threading.Condition()

    def write(self, data) -> int:
        if self.gate is not None:
            self.blocked.set()
            if not self.gate.wait(WAIT * 3):
                raise AssertionError("the test never released the disk")
        data = bytes(data)
        if self.max_write is not None:
            data = data[: self.max_write]
        with self.changed:
            end = self.tell() + len(data)
            if self.fail_after is not None and end > self.fail_after:
                super().write(data[: max(0, self.fail_after - self.tell())])
                raise OSError(self.error, os.strerror(self.error))
            n = super().write(data)
            self.writes += 1
            self.changed.notify_all()
        return n

    def close(self) -> None:
        with self.changed:
            if not self.closed:
                self.saved = self.getvalue()
            super().close()
            self.changed.notify_all()

    @property
    def contents(self) -> bytes:
        with self.changed:
            return self.saved if self.closed else self.getvalue()

    def wait_until(self, predicate: Callable[[MemoryFile], bool], timeout: float = WAIT) -> bool:
        """Wait until ``predicate(self)`` holds after some write or close."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)


class Disk:
    """An ``open_file`` double: creates ``MemoryFile``s exclusively, by path."""

    def __init__(self, **file_options: Any) -> None:
        self.files: dict[str, MemoryFile] = {}
        self.file_options = file_options
        self.open_error: BaseException | None = None
        self.opened = threading.Event()

    def __call__(self, path: str) -> MemoryFile:
        if self.open_error is not None:
            raise self.open_error
        if path in self.files:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        f = self.files[path] = MemoryFile(**self.file_options)
        self.opened.set()
        return f

    def only(self) -> MemoryFile:
        assert len(self.files) == 1, list(self.files)
        return next(iter(self.files.values()))


class ThreadCalls:
    """A ``call_from_thread`` that hands calls to the test's thread, which runs them in ``run_until``."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()

    def __call__(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def run_until(self, done: Callable[[], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("condition not reached in time")
            try:
                f, args = self.calls.get(timeout=remaining)
            except queue.Empty:
                continue
            f(*args)

    def run_pending(self) -> None:
        """Run the calls handed over so far, without waiting for more."""
        while True:
            try:
                f, args = self.calls.get_nowait()
            except queue.Empty:
                return
            f(*args)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def metadata_of(data: bytes) -> dict[str, Any]:
    _, tags, _ = flv.parse_flv(data)
    name, values = amf0.decode_all(tags[0].payload)
    assert name == "onMetaData"
    return values


def tags_of(data: bytes) -> list[flv.Tag]:
    flags, tags, trailing = flv.parse_flv(data)
    assert trailing == 0, f"{trailing} bytes after the last whole tag"
    return tags


# -- file names ------------------------------------------------------------------------


class FileNameTests(SynchronousTestCase):
    def test_documented_format_in_utc(self) -> None:
        self.assertEqual(recording_file_name("live/test", EPOCH), "live_test_20231114_221320.flv")
        self.assertEqual(recording_file_name("live/test", EPOCH, 2), "live_test_20231114_221320_2.flv")

    def test_hostile_names_stay_one_plain_component(self) -> None:
        for key in (
            "live/../../etc/x",
            "../../etc/passwd",
            "live/a/b",
            "live/.hidden",
            "live/x\x00y",
            "live/\x1b[31mred",
            "live/" + "n" * 5000,
            "live/..",
            "/",
            "",
            "live/\u00e9t\u00e9 \u2603",
            ".../...",
            "live\\..\\x",
        ):
            name = recording_file_name(key, EPOCH)
            self.assert_plain(name)
            base = os.path.join("/rec", name)
            self.assertEqual(os.path.dirname(os.path.normpath(base)), "/rec", key)

    def assert_plain(self, name: str) -> None:
        self.assertNotIn("/", name)
        self.assertNotIn("\\", name)
        self.assertFalse(name.startswith("."), name)
        self.assertTrue(name.endswith(".flv"))
        self.assertTrue(name.isascii() and name.isprintable(), repr(name))
        self.assertLessEqual(len(name.encode()), 255)

    @given(
        st.text(),
        st.integers(min_value=0, max_value=4_000_000_000),
        st.integers(min_value=0, max_value=10**6),
    )
    def test_any_key_gives_a_plain_name(self, key: str, when: int, suffix: int) -> None:
        self.assert_plain(recording_file_name(key, when, suffix))

    def test_unsafe_characters_become_underscores(self) -> None:
        self.assertEqual(safe_part("a b/c", 64), "a_b_c")
        self.assertEqual(safe_part("..", 64), "unnamed")
        self.assertEqual(safe_part("", 64), "unnamed")
        self.assertEqual(safe_part("..x", 64), "x")
        self.assertEqual(len(safe_part("x" * 500, 64)), 64)


# -- the file layout -----------------------------------------------------------------


class PrologueTests(SynchronousTestCase):
    def test_header_flags_follow_the_tracks(self) -> None:
        for audio, video, flags in ((True, True, 5), (True, False, 4), (False, True, 1)):
            p = build_prologue({}, [], has_audio=audio, has_video=video, keyframe_slots=10)
            self.assertEqual(flv.parse_flv(p.data)[0], flags)
            self.assertEqual(p.keyframe_slots, 10 if video else 0)

    def test_metadata_then_headers_all_at_time_zero(self) -> None:
        meta = {"width": 640.0, "height": 360.0, "videocodecid": 7.0, "duration": 99.0, "datasize": 5.0}
        meta = publisher_metadata(amf0.encode_many("onMetaData", amf0.ECMAArray(meta)))
        p = build_prologue(
            meta,
            [(flv.TAG_AUDIO, AAC_SEQUENCE_HEADER), (flv.TAG_VIDEO, AVC_SEQUENCE_HEADER)],
            has_audio=True,
            has_video=True,
            keyframe_slots=4,
        )
        tags = tags_of(p.data)
        self.assertEqual([(t.tag_type, t.timestamp) for t in tags], [(18, 0), (8, 0), (9, 0)])
        self.assertEqual(tags[1].payload, AAC_SEQUENCE_HEADER)
        self.assertEqual(tags[2].payload, AVC_SEQUENCE_HEADER)
        values = metadata_of(p.data)
        self.assertEqual((values["width"], values["height"], values["videocodecid"]), (640.0, 360.0, 7.0))
        # The publisher's duration is a placeholder now; its file-describing fields are gone.
        self.assertEqual(values["duration"], 0.0)
        self.assertNotIn("datasize", values)
        self.assertEqual(values["keyframes"], {"times": [0.0] * 4, "filepositions": [0.0] * 4})

    def test_publisher_metadata_tolerates_garbage(self) -> None:
        self.assertEqual(publisher_metadata(None), {})
        self.assertEqual(publisher_metadata(b"\x02\x00"), {})
        self.assertEqual(publisher_metadata(amf0.encode_many("onCuePoint", {"a": 1.0})), {})
        body = amf0.encode_many("onMetaData", amf0.ECMAArray({"width": 1.0}))
        self.assertEqual(publisher_metadata(body), {"width": 1.0})

    def test_keyframe_slots_follow_the_interval(self) -> None:
        self.assertEqual(keyframe_slots_for(None), MAX_KEYFRAME_SLOTS)
        self.assertGreaterEqual(keyframe_slots_for(60), 61)
        self.assertEqual(keyframe_slots_for(10**6), MAX_KEYFRAME_SLOTS)


class SegmentFileTests(SynchronousTestCase):
    def segment(self, f: MemoryFile | None = None, slots: int = 8) -> tuple[SegmentFile, MemoryFile]:
        f = f or MemoryFile()
        p = build_prologue(
            {"width": 320.0},
            [(flv.TAG_VIDEO, AVC_SEQUENCE_HEADER)],
            has_audio=True,
            has_video=True,
            keyframe_slots=slots,
        )
        return SegmentFile(f, "x.flv", p), f

    def fill(self, segment: SegmentFile, keyframes: int = 3, gop_ms: int = 1000) -> list[tuple[int, int]]:
        index = []
        for k in range(keyframes):
            ts = k * gop_ms
            index.append((ts, segment.size))
            segment.append(flv.TAG_VIDEO, ts, avc_keyframe(k), keyframe=True)
            for i in range(1, 4):
                segment.append(flv.TAG_AUDIO, ts + i * 200, aac_frame(i))
                segment.append(flv.TAG_VIDEO, ts + i * 200, avc_interframe(i))
        return index

    def test_finalize_patches_duration_size_and_keyframe_index(self) -> None:
        segment, f = self.segment()
        index = self.fill(segment)
        duration, size = segment.finalize(sync=True)
        data = f.contents
        self.assertEqual((duration, size), (2.6, len(data)))
        values = metadata_of(data)
        self.assertEqual(values["duration"], 2.6)
        self.assertEqual(values["filesize"], float(len(data)))
        self.assertEqual(values["width"], 320.0)
        times = [ts / 1000 for ts, _ in index]
        positions = [float(pos) for _, pos in index]
        # Unused slots repeat the last real entry, so players never see a bogus keyframe at 0.
        self.assertEqual(values["keyframes"]["times"], times + [times[-1]] * 5)
        self.assertEqual(values["keyframes"]["filepositions"], positions + [positions[-1]] * 5)
        tags = {t.offset: t for t in tags_of(data)}
        for ts, pos in index:
            self.assertEqual(tags[pos].timestamp, ts)
            self.assertEqual(tags[pos].payload[0], 0x17)

    def test_duration_given_at_rotation_wins_when_longer(self) -> None:
        segment, f = self.segment()
        self.fill(segment, keyframes=1)
        self.assertEqual(segment.finalize(duration_ms=1000)[0], 1.0)
        self.assertEqual(metadata_of(f.contents)["duration"], 1.0)

    def test_progress_patch_describes_what_is_written_and_leaves_index_empty(self) -> None:
        segment, f = self.segment()
        self.fill(segment, keyframes=2)
        self.assertTrue(segment.patch_progress())
        values = metadata_of(f.contents)
        self.assertEqual(values["duration"], 1.6)
        self.assertEqual(values["filesize"], float(len(f.contents)))
        self.assertEqual(set(values["keyframes"]["filepositions"]), {0.0})
        self.assertFalse(segment.patch_progress())

    def test_more_keyframes_than_slots_thins_the_index(self) -> None:
        segment, f = self.segment(slots=4)
        index = self.fill(segment, keyframes=10)
        segment.finalize()
        positions = metadata_of(f.contents)["keyframes"]["filepositions"]
        self.assertEqual(len(positions), 4)
        self.assertEqual(positions[0], index[0][1])
        self.assertEqual(positions[-1], index[-1][1])
        self.assertEqual(positions, sorted(set(positions)))

    def test_thin_index(self) -> None:
        entries = [(i, i) for i in range(10)]
        self.assertEqual(thin_index(entries, 20), entries)
        self.assertEqual(thin_index(entries, 2), [(0, 0), (9, 9)])
        self.assertEqual(thin_index(entries, 1), [(0, 0)])

    def test_partial_writes_are_completed(self) -> None:
        segment, f = self.segment(MemoryFile(max_write=7))
        self.fill(segment)
        segment.finalize()
        self.assertEqual(len(tags_of(f.contents)), 2 + 3 * 7)

    def test_salvage_cuts_back_to_the_last_whole_tag(self) -> None:
        segment, f = self.segment(MemoryFile(fail_after=1200))
        self.fill(segment, keyframes=1)
        segment.flush()
        kept = segment.written
        self.fill(segment, keyframes=2)
        with self.assertRaises(OSError):
            segment.flush()
        duration, size = segment.salvage()
        self.assertEqual(size, kept)
        data = f.contents
        self.assertEqual(len(data), kept)
        tags = tags_of(data)
        self.assertEqual(tags[-1].timestamp, 600)
        self.assertEqual(metadata_of(data)["duration"], duration)
        self.assertEqual(metadata_of(data)["keyframes"]["filepositions"][0], float(tags[2].offset))


# -- the writer ------------------------------------------------------------------------


class WriterTests(SynchronousTestCase):
    def prologue(self):
        return build_prologue(
            {}, [(flv.TAG_AUDIO, AAC_SEQUENCE_HEADER)], has_audio=True, has_video=True, keyframe_slots=4
        )

    def writer(self, disk: Disk, **kw: Any) -> tuple[RecordingWriter, list]:
        events: list = []
        return RecordingWriter(events.append, open_file=disk, threaded=False, **kw), events

    def test_segment_lifecycle_in_order(self) -> None:
        disk = Disk()
        w, events = self.writer(disk)
        w.start_segment(iter(["a.flv"]), self.prologue())
        self.assertTrue(w.write(flv.TAG_VIDEO, 0, avc_keyframe(), True))
        self.assertTrue(w.write(flv.TAG_AUDIO, 10, aac_frame()))
        w.end_segment()
        w.close()
        self.assertEqual([type(e) for e in events], [SegmentOpened, SegmentFinalized, WriterClosed])
        self.assertEqual(events[1], SegmentFinalized("a.flv", 0.01, len(disk.files["a.flv"].contents)))
        self.assertEqual([t.tag_type for t in tags_of(disk.files["a.flv"].contents)], [18, 8, 9, 8])
        self.assertEqual(w.pending_bytes, 0)

    def test_taken_name_moves_to_the_next_candidate(self) -> None:
        disk = Disk()
        disk("a.flv")
        w, events = self.writer(disk)
        w.start_segment(iter(["a.flv", "a_1.flv"]), self.prologue())
        self.assertEqual(events, [SegmentOpened("a_1.flv")])

    def test_start_segment_finalizes_the_previous_file(self) -> None:
        disk = Disk()
        w, events = self.writer(disk)
        w.start_segment(iter(["a.flv"]), self.prologue())
        w.write(flv.TAG_VIDEO, 0, avc_keyframe(), True)
        w.start_segment(iter(["b.flv"]), self.prologue())
        self.assertIsInstance(events[1], SegmentFinalized)
        self.assertEqual(events[2], SegmentOpened("b.flv"))
        self.assertTrue(disk.files["a.flv"].closed)

    def test_disk_full_stops_the_recording_and_keeps_whole_tags(self) -> None:
        self.check_disk_error(errno.ENOSPC, "ENOSPC: No space left on device")

    def test_disk_io_error_stops_the_recording_and_keeps_whole_tags(self) -> None:
        self.check_disk_error(errno.EIO, "EIO: Input/output error")

    def check_disk_error(self, code: int, text: str) -> None:
        disk = Disk(fail_after=1500, error=code)
        w, events = self.writer(disk)
        w.start_segment(iter(["a.flv"]), self.prologue())
        for i in range(30):
            w.write(flv.TAG_VIDEO, i * 33, avc_keyframe(i), True)
        failed = [e for e in events if isinstance(e, WriterFailed)]
        self.assertEqual(len(failed), 1)
        self.assertEqual((failed[0].path, failed[0].error), ("a.flv", text))
        self.assertIsNone(failed[0].failure)
        data = disk.files["a.flv"].contents
        self.assertEqual(failed[0].size, len(data))
        self.assertGreater(len(tags_of(data)), 3)
        # Later tags are discarded, the thread still ends cleanly.
        w.write(flv.TAG_VIDEO, 5000, avc_keyframe(), True)
        w.close()
        self.assertIsInstance(events[-1], WriterClosed)
        self.assertEqual(disk.files["a.flv"].contents, data)

    def test_failing_open_is_reported_with_the_path(self) -> None:
        disk = Disk()
        disk.open_error = PermissionError(errno.EACCES, "Permission denied", "a.flv")
        w, events = self.writer(disk)
        w.start_segment(iter(["a.flv"]), self.prologue())
        self.assertEqual(events, [WriterFailed("a.flv", "EACCES: Permission denied", 0.0, 0)])

    def test_a_bug_is_reported_with_its_traceback(self) -> None:
        disk = Disk()
        disk.open_error = ZeroDivisionError("oops")
        w, events = self.writer(disk)
        w.start_segment(iter(["a.flv"]), self.prologue())
        self.assertEqual(events[0].error, "ZeroDivisionError: oops")
        self.assertIsNotNone(events[0].failure)

    def test_duration_and_size_patched_while_recording(self) -> None:
        disk, clock = Disk(), FakeTime()
        w, _ = self.writer(disk, monotonic=clock, patch_interval=2.0)
        w.start_segment(iter(["a.flv"]), self.prologue())
        w.write(flv.TAG_VIDEO, 0, avc_keyframe(), True)
        w.write(flv.TAG_VIDEO, 1500, avc_interframe())
        self.assertEqual(metadata_of(disk.files["a.flv"].contents)["duration"], 0.0)
        clock.now += 2.0
        w.write(flv.TAG_VIDEO, 1533, avc_interframe())
        values = metadata_of(disk.files["a.flv"].contents)
        self.assertEqual(values["duration"], 1.533)
        self.assertEqual(values["filesize"], float(len(disk.files["a.flv"].contents)))

    def test_describe_error(self) -> None:
        self.assertEqual(describe_error(OSError(errno.EIO, "Input/output error")), "EIO: Input/output error")
        self.assertEqual(describe_error(ValueError("x")), "ValueError: x")


class ThreadedWriterTests(SynchronousTestCase):
    def test_tags_reach_the_file_without_waiting_for_more(self) -> None:
        disk = Disk()
        events: queue.Queue = queue.Queue()
        w = RecordingWriter(events.put, open_file=disk)
        self.addCleanup(w.join, WAIT)
        self.addCleanup(w.close)
        w.start_segment(iter(["a.flv"]), WriterTests.prologue(self))
        self.assertIsInstance(events.get(timeout=WAIT), SegmentOpened)
        w.write(flv.TAG_VIDEO, 0, avc_keyframe(7), True)
        # No more tags, no close: the tag is handed to the OS on its own.
        self.assertTrue(disk.files["a.flv"].wait_until(lambda f: avc_keyframe(7) in f.contents))
        self.assertEqual(tags_of(disk.files["a.flv"].contents)[-1].payload, avc_keyframe(7))

    def test_stalled_disk_bounds_the_backlog_then_drains_in_order(self) -> None:
        gate = threading.Event()
        disk = Disk(gate=gate)
        events: queue.Queue = queue.Queue()
        w = RecordingWriter(events.put, open_file=disk, max_queue_bytes=10_000)
        self.addCleanup(gate.set)
        w.start_segment(iter(["a.flv"]), WriterTests.prologue(self))
        self.assertTrue(disk.opened.wait(WAIT))
        self.assertTrue(disk.files["a.flv"].blocked.wait(WAIT))
        accepted = 0
        started = time.monotonic()
        while w.write(flv.TAG_VIDEO, accepted * 33, avc_keyframe(accepted), True):
            accepted += 1
        # Refusing is immediate: the caller (the reactor) never waits for the disk.
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertLessEqual(w.pending_bytes, 10_000)
        self.assertGreater(accepted, 10)
        gate.set()
        w.close()
        self.assertTrue(w.join(WAIT))
        seen = []
        while not events.empty():
            seen.append(events.get())
        self.assertEqual([type(e) for e in seen], [SegmentOpened, SegmentFinalized, WriterClosed])
        payloads = [t.payload for t in tags_of(disk.files["a.flv"].contents) if t.tag_type == 9]
        self.assertEqual(payloads, [avc_keyframe(i) for i in range(accepted)])


class WriterHandOverTests(SynchronousTestCase):
    """With ``hand_over``, the tags of one reactor turn reach the thread together, in order."""

    def setUp(self) -> None:
        self.disk = Disk()
        self.events: queue.Queue = queue.Queue()
        self.turn_ends: list = []
        self.w = RecordingWriter(self.events.put, open_file=self.disk, hand_over=self.turn_ends.append)
        self.addCleanup(self.w.join, WAIT)
        self.addCleanup(self.w.close)
        self.w.start_segment(iter(["a.flv"]), WriterTests.prologue(self))
        self.assertIsInstance(self.events.get(timeout=WAIT), SegmentOpened)

    def payloads(self) -> list[bytes]:
        return [t.payload for t in tags_of(self.disk.files["a.flv"].contents) if t.tag_type == 9]

    def test_a_turns_tags_wait_for_its_end_then_go_together(self) -> None:
        for i in range(3):
            self.assertTrue(self.w.write(flv.TAG_VIDEO, i * 33, avc_keyframe(i), True))
        # One hand-over asked for the whole turn, and nothing handed to the thread before it.
        self.assertEqual(len(self.turn_ends), 1)
        self.assertEqual(self.w._queue.qsize(), 0)
        self.turn_ends.pop()()
        expected = [avc_keyframe(i) for i in range(3)]
        self.assertTrue(self.disk.files["a.flv"].wait_until(lambda f: avc_keyframe(2) in f.contents))
        self.assertEqual(self.payloads(), expected)
        self.w.write(flv.TAG_VIDEO, 99, avc_keyframe(9), True)
        self.assertEqual(len(self.turn_ends), 1)  # a new turn asks again

    def test_other_calls_hand_over_held_tags_first(self) -> None:
        self.w.write(flv.TAG_VIDEO, 0, avc_keyframe(1), True)
        self.w.write(flv.TAG_VIDEO, 33, avc_keyframe(2), True)
        self.w.close()  # before the turn ended: the tags still go into the file, before it is finalized
        self.assertTrue(self.w.join(WAIT))
        self.assertEqual(self.payloads(), [avc_keyframe(1), avc_keyframe(2)])
        self.turn_ends.pop()()  # the late end of the turn finds nothing left to hand over
        self.assertEqual(self.w._queue.qsize(), 0)


class WriterDrainTests(SynchronousTestCase):
    """``report_drained``: one ``Drained`` report when the backlog falls to the mark, none otherwise."""

    def stalled_writer(self) -> tuple[RecordingWriter, threading.Event, list, int]:
        """A threaded writer stuck on its disk with 20 tags queued: (writer, gate, reports, backlog)."""
        gate = threading.Event()
        self.addCleanup(gate.set)
        disk = Disk(gate=gate)
        reports: list = []
        box: list[RecordingWriter] = []
        # Each report is noted with the backlog it sees, to tell when it was sent.
        w = RecordingWriter(lambda e: reports.append((e, box[0].pending_bytes)), open_file=disk)
        box.append(w)
        w.start_segment(iter(["a.flv"]), WriterTests.prologue(self))
        self.assertTrue(disk.opened.wait(WAIT))
        self.assertTrue(disk.files["a.flv"].blocked.wait(WAIT))
        for i in range(20):
            self.assertTrue(w.write(flv.TAG_VIDEO, i * 33, avc_keyframe(i, 1000), True))
        return w, gate, reports, w.pending_bytes

    def test_drained_is_reported_once_before_the_backlog_shows_it(self) -> None:
        w, gate, reports, backlog = self.stalled_writer()
        mark = backlog // 4
        self.assertTrue(w.report_drained(mark))
        gate.set()
        w.close()
        self.assertTrue(w.join(WAIT))
        drained = [(e, seen) for e, seen in reports if isinstance(e, Drained)]
        self.assertEqual(len(drained), 1)
        # When it was sent, the backlog still showed more than the mark: anyone who sees it at the
        # mark can count on the report.
        self.assertGreater(drained[0][1], mark)
        self.assertEqual(w.pending_bytes, 0)

    def test_no_report_when_withdrawn_or_already_drained(self) -> None:
        w, gate, reports, backlog = self.stalled_writer()
        self.assertFalse(w.report_drained(backlog))
        self.assertTrue(w.report_drained(backlog // 4))
        self.assertTrue(w.report_drained(None))
        gate.set()
        w.close()
        self.assertTrue(w.join(WAIT))
        self.assertEqual([type(e) for e, _ in reports], [SegmentOpened, SegmentFinalized, WriterClosed])


# -- the throttle ------------------------------------------------------------------------


class FakeDrainWriter:
    """The writer as the throttle sees it: a backlog and a drain request."""

    def __init__(self) -> None:
        self.pending_bytes = 0
        self.mark: int | None = None

    def report_drained(self, mark: int | None) -> bool:
        if mark is not None and self.pending_bytes <= mark:
            self.mark = None
            return False
        self.mark = mark
        return True


class PublisherThrottleTests(SynchronousTestCase):
    """The throttle alone, on a fake clock: holds, and releases on events only."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.peer_calls: list[str] = []
        peer = SimpleNamespace(
            conn_id="c000001",
            hold_input=lambda: self.peer_calls.append("hold"),
            release_input=lambda: self.peer_calls.append("release"),
        )
        self.publication = SimpleNamespace(peer=peer, throttled=False, last_activity=0.0)
        # A bound of 1000 bytes: held at 250 and more, let go at 62 and less.
        self.throttle = PublisherThrottle(self.clock, "live/test", 1000, lambda: self.publication)
        self.writer = FakeDrainWriter()

    def hold(self, timestamp: int = 5000) -> None:
        """First tag at wall time 100, then ``timestamp`` ms of media at once with a high backlog."""
        self.throttle.consider(0, self.writer)
        self.writer.pending_bytes = 300
        self.throttle.consider(timestamp, self.writer)
        self.assertEqual(self.peer_calls, ["hold"])
        self.assertTrue(self.publication.throttled)
        self.assertEqual(self.writer.mark, 62)

    def test_drain_report_releases_with_no_timer_polling_in_between(self) -> None:
        self.hold()
        # One timer, for the moment the 5 s of media fall within 2 s of the wall clock; no poll.
        (lead_timer,) = self.clock.getDelayedCalls()
        self.assertEqual(lead_timer.getTime(), 100 + 5 - AHEAD_SECONDS)
        self.clock.advance(2.5)
        self.assertEqual(self.clock.getDelayedCalls(), [lead_timer])
        self.assertEqual(self.peer_calls, ["hold"])
        self.throttle.drained()
        self.assertEqual(self.peer_calls, ["hold", "release"])
        self.assertFalse(self.publication.throttled)
        self.assertEqual(self.publication.last_activity, 102.5)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(lead_timer.active())

    def test_released_at_the_exact_moment_the_lead_runs_out(self) -> None:
        self.hold()
        self.clock.advance(2.999)
        self.assertEqual(self.peer_calls, ["hold"])
        self.clock.advance(0.001)
        self.assertEqual(self.peer_calls, ["hold", "release"])
        self.assertFalse(self.publication.throttled)
        # The drain request is withdrawn with the hold.
        self.assertIsNone(self.writer.mark)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # A late drain report changes nothing.
        self.throttle.drained()
        self.assertEqual(self.peer_calls, ["hold", "release"])

    def test_media_read_after_the_hold_moves_the_moment_once(self) -> None:
        self.hold()
        # Tags already read when the hold began carry the media a second further.
        self.throttle.consider(6000, self.writer)
        self.assertEqual(self.peer_calls, ["hold"])
        (lead_timer,) = self.clock.getDelayedCalls()
        self.assertEqual(lead_timer.getTime(), 103.0)
        self.clock.advance(3)
        (lead_timer,) = self.clock.getDelayedCalls()
        self.assertEqual(lead_timer.getTime(), 104.0)
        self.assertEqual(self.peer_calls, ["hold"])
        self.clock.advance(1)
        self.assertEqual(self.peer_calls, ["hold", "release"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_held_at_real_time_or_with_a_small_backlog(self) -> None:
        self.throttle.consider(0, self.writer)
        self.writer.pending_bytes = 300
        self.clock.advance(3)
        # 5 s of media after 3 s: exactly 2 s ahead, not more.
        self.throttle.consider(5000, self.writer)
        self.writer.pending_bytes = 249
        self.throttle.consider(10_000, self.writer)
        self.assertEqual(self.peer_calls, [])
        self.assertFalse(self.publication.throttled)
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- the service ------------------------------------------------------------------------


class RecorderTestCase(SynchronousTestCase):
    """A MemoryServer on a fake clock, with a Recorder on a Disk double and ThreadCalls."""

    record_config: dict[str, Any] = {}
    #: A small keyframe index keeps file sizes in these tests easy to reason about.
    recorder_options: dict[str, Any] = {"keyframe_slots": 16}
    #: The server's limits (the same for the connections and the recorder).
    limits = Limits()

    def setUp(self) -> None:
        self.server = MemoryServer(ServerConfig(limits=self.limits))
        self.server.clock.advance(EPOCH)
        self.disk = self.make_disk()
        self.calls = ThreadCalls()
        config = ServerConfig(record_dir="/rec", limits=self.limits, **self.record_config)
        self.recorder = Recorder(
            config,
            self.server.registry,
            self.server.clock,
            open_file=self.disk,
            call_from_thread=self.calls,
            **self.recorder_options,
        )
        self.recorder.startService()
        self.addCleanup(self.stop)

    def make_disk(self) -> Disk:
        return Disk()

    def stop(self) -> None:
        if self.recorder.running:
            d = self.recorder.stopService()
            if d is not None:
                box: list = []
                d.addBoth(box.append)
                self.calls.run_until(lambda: bool(box))

    def client(self):
        return self.server.session()

    def publisher(self, name: str = "test"):
        return self.server.publisher(name)

    def player(self, name: str = "test"):
        return self.server.player(name)

    def send_headers(self, pub, sid, meta: dict | None = None) -> None:
        pub.send_metadata(
            sid,
            meta
            or {
                "width": 640.0,
                "height": 360.0,
                "videocodecid": 7.0,
                "audiocodecid": 10.0,
                "framerate": 30.0,
                "duration": 0.0,
            },
        )
        pub.send_media(A, sid, 0, AAC_SEQUENCE_HEADER)
        pub.send_media(V, sid, 0, AVC_SEQUENCE_HEADER)
        self.server.flush()

    def send_gops(
        self, pub, sid, start: int, gops: int, gop_ms: int = 1000, fps: int = 10, key_size: int = 100
    ) -> int:
        """``gops`` GOPs at ``fps``, one audio frame per video frame; returns the next timestamp."""
        step = 1000 // fps
        ts = start
        for _ in range(gops):
            for i in range(gop_ms // step):
                if i == 0:
                    pub.send_media(V, sid, ts & 0xFFFFFFFF, avc_keyframe(ts // 1000, key_size))
                else:
                    pub.send_media(V, sid, ts & 0xFFFFFFFF, avc_interframe(i))
                pub.send_media(A, sid, ts & 0xFFFFFFFF, aac_frame(i))
                ts += step
            self.server.flush()
        return ts

    def recording(self, key: str = "live/test"):
        return self.recorder.recording_for(key)

    def wait_closed(self, recording) -> None:
        self.calls.run_until(
            lambda: recording.state in ("finished", "failed") and recording not in self.recorder.unfinished
        )

    def unpublish(self, pub, key: str = "live/test"):
        recording = self.recording(key)
        pub.transport.loseConnection()
        self.server.flush()
        self.wait_closed(recording)
        return recording

    def data(self, path: str) -> bytes:
        return self.disk.files[path].contents


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep (the outermost counts one): {"inner": {"inner": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"inner": value}
    return value


def depth_of(value: Any) -> int:
    return 1 + depth_of(value["inner"]) if isinstance(value, dict) and "inner" in value else 1


class MetadataLimitsTests(RecorderTestCase):
    """The recorder writes the metadata as the connection decoded it, under the configured AMF limits."""

    #: Nesting past the decoder's default depth, and the onMetaData object around it.
    deep = DEFAULT_MAX_DEPTH + 16
    #: Numbers in an index past the decoder's default node budget (--max-amf-nodes).
    many = DEFAULT_MAX_NODES + 1000
    limits = Limits(max_amf_depth=deep + 8, max_amf_nodes=2 * DEFAULT_MAX_NODES)

    def test_metadata_within_the_configured_limits_but_past_the_defaults_is_recorded(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(
            pub,
            sid,
            {
                "width": 640.0,
                "height": 360.0,
                "videocodecid": 7.0,
                "framerate": 25.0,
                "deep": nested(self.deep),
            },
        )
        self.send_gops(pub, sid, 0, gops=2)
        # The admin views (API, manhole) read the same decoded values.
        self.assertEqual(announced_framerate(self.server.registry.get("live/test")), 25.0)
        recording = self.unpublish(pub)
        self.assertEqual(recording.state, "finished")
        _, tags, _ = flv.parse_flv(self.data(recording.file))
        name, values = amf0.decode_all(tags[0].payload, max_depth=self.limits.max_amf_depth)
        self.assertEqual((name, values["width"], values["videocodecid"]), ("onMetaData", 640.0, 7.0))
        self.assertEqual(depth_of(values["deep"]), self.deep)

    def test_metadata_past_the_default_node_budget_is_recorded(self) -> None:
        index = [float(i) for i in range(self.many)]
        pub, sid = self.publisher()
        self.send_headers(pub, sid, {"width": 640.0, "index": index})
        self.send_gops(pub, sid, 0, gops=1)
        recording = self.unpublish(pub)
        _, tags, _ = flv.parse_flv(self.data(recording.file))
        name, values = amf0.decode_all(tags[0].payload, max_nodes=self.limits.max_amf_nodes)
        self.assertEqual((name, values["width"]), ("onMetaData", 640.0))
        self.assertEqual(values["index"], index)


class MetadataPastTheConfiguredLimitsTests(RecorderTestCase):
    """Metadata within the decoder's defaults but past the configured limits never reaches a file."""

    limits = Limits(max_amf_depth=8, max_amf_nodes=1000)

    def test_the_connection_is_refused_and_the_file_keeps_the_metadata_it_had(self) -> None:
        for past_the_limit in ({"deep": nested(DEFAULT_MAX_DEPTH - 8)}, {"index": [0.0] * 2000}):
            with self.subTest(past_the_limit=list(past_the_limit)):
                self.refused_metadata_is_never_recorded(past_the_limit)

    def refused_metadata_is_never_recorded(self, past_the_limit: dict[str, Any]) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        recording = self.recording()
        pub.send_metadata(sid, {"width": 1280.0, **past_the_limit})
        self.server.flush()
        self.wait_closed(recording)
        self.assertFalse(pub.connected_transport)
        values = metadata_of(self.data(recording.file))
        self.assertEqual(values["width"], 640.0)
        self.assertFalse(set(past_the_limit) & set(values))


class RecorderTests(RecorderTestCase):
    def test_publish_records_one_file_with_rebased_timestamps_and_index(self) -> None:
        with capturedLogs() as logs:
            pub, sid = self.publisher()
            self.send_headers(pub, sid)
            end = self.send_gops(pub, sid, 5000, gops=3)
            recording = self.unpublish(pub)
        path = "/rec/live_test_20231114_221320.flv"
        self.assertEqual(list(self.disk.files), [path])
        self.assertEqual((recording.state, recording.file, recording.files), ("finished", path, [path]))
        data = self.data(path)
        tags = tags_of(data)
        self.assertEqual(flv.parse_flv(data)[0], flv.FLAG_AUDIO | flv.FLAG_VIDEO)
        self.assertEqual([t.payload for t in tags[1:3]], [AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER])
        frames = tags[3:]
        self.assertEqual(frames[0].payload, avc_keyframe(5))
        self.assertEqual(frames[0].timestamp, 0)
        self.assertEqual(frames[-1].timestamp, end - 100 - 5000)
        self.assertEqual(len(frames), 3 * 10 * 2)
        values = metadata_of(data)
        self.assertEqual(values["duration"], 2.9)
        self.assertEqual(values["filesize"], float(len(data)))
        self.assertEqual(values["width"], 640.0)
        keyframe_offsets = [t.offset for t in frames if t.tag_type == 9 and t.payload[0] == 0x17]
        self.assertEqual(values["keyframes"]["filepositions"][:3], [float(o) for o in keyframe_offsets])
        self.assertEqual(values["keyframes"]["times"][:3], [0.0, 1.0, 2.0])
        messages = [e["log_format"] for e in logs]
        for msg in ("recorder initialized", "recording started", "recording finalized"):
            self.assertIn(msg, messages)
        finalized = next(e for e in logs if e["log_format"] == "recording finalized")
        self.assertEqual(
            (finalized["file"], finalized["duration"], finalized["bytes"]), (path, 2.9, len(data))
        )
        initialized = next(e for e in logs if e["log_format"] == "recorder initialized")
        self.assertEqual((initialized["stream_key"], initialized["file"]), ("live/test", path))

    def test_state_is_visible_on_the_stream_while_recording(self) -> None:
        pub, sid = self.publisher()
        recording = self.recording()
        self.assertEqual(recording.state, "waiting")
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=2)
        self.calls.run_until(lambda: bool(recording.files))
        snap = recording.snapshot()
        self.assertEqual(snap["state"], "recording")
        self.assertEqual(snap["file"], "/rec/live_test_20231114_221320.flv")
        self.assertEqual(snap["duration"], 1.9)
        self.assertGreater(snap["bytes"], 40 * 15)
        self.assertIn("live/test", repr(recording))

    def test_timestamps_start_at_zero_across_the_32_bit_wrap(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        start = 2**32 - 1500
        self.send_gops(pub, sid, start, gops=3)
        recording = self.unpublish(pub)
        frames = tags_of(self.data(recording.file))[3:]
        stamps = [t.timestamp for t in frames]
        self.assertEqual(stamps[0], 0)
        self.assertEqual(stamps, sorted(stamps))
        self.assertEqual(stamps[-1], 2900)

    def test_publisher_clock_going_back_continues_the_file_timeline(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 10_000, gops=2)
        # An encoder restart: its timestamps begin again at 0.
        self.send_gops(pub, sid, 0, gops=2)
        recording = self.unpublish(pub)
        stamps = [t.timestamp for t in tags_of(self.data(recording.file))[3:]]
        self.assertEqual(stamps, sorted(stamps))
        self.assertEqual((stamps[0], stamps[-1]), (0, 1900 + 1900))
        self.assertEqual(metadata_of(self.data(recording.file))["duration"], 3.8)

    def test_enhanced_rtmp_tags_written_byte_for_byte(self) -> None:
        hevc_header = b"\x90hvc1" + bytes(range(30))
        hevc_key = b"\x91hvc1\x00\x00\x00" + b"K" * 50
        hevc_inter = b"\xa1hvc1\x00\x00\x00" + b"i" * 20
        # E-RTMP video Metadata (HDR colorInfo): track configuration, not a frame.
        hdr = b"\x94hvc1" + amf0.encode_many("colorInfo", {"colorConfig": {"bitDepth": 10.0}})
        hdr_update = b"\x94hvc1" + amf0.encode_many("colorInfo", {"colorConfig": {"bitDepth": 8.0}})
        opus_header = b"\x90Opus" + b"OpusHead" + bytes(11)
        opus_frame = b"\x91Opus" + b"o" * 30
        pub, sid = self.publisher()
        pub.send_media(A, sid, 0, opus_header)
        pub.send_media(V, sid, 0, hevc_header)
        pub.send_media(V, sid, 0, hdr)
        pub.send_media(V, sid, 0, hevc_key)
        pub.send_media(A, sid, 0, opus_frame)
        pub.send_media(V, sid, 20, hdr_update)
        pub.send_media(V, sid, 33, hevc_inter)
        self.server.flush()
        recording = self.unpublish(pub)
        data = self.data(recording.file)
        self.assertEqual(
            [t.payload for t in tags_of(data)[1:]],
            [opus_header, hevc_header, hdr, hevc_key, opus_frame, hdr_update, hevc_inter],
        )
        self.assertEqual(metadata_of(data)["keyframes"]["filepositions"][0], float(tags_of(data)[4].offset))

    def test_file_starts_at_a_frame_a_player_can_start_from(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        pub.send_media(V, sid, 0, avc_interframe(1))
        pub.send_media(MessageType.DATA_AMF0, sid, 0, amf0.encode_many("onCuePoint", {"n": 1.0}))
        pub.send_media(A, sid, 10, aac_frame(1))
        pub.send_media(V, sid, 33, avc_interframe(2))
        pub.send_media(V, sid, 66, avc_keyframe(3))
        pub.send_media(MessageType.DATA_AMF0, sid, 70, amf0.encode_many("onCuePoint", {"n": 2.0}))
        pub.send_media(V, sid, 100, avc_interframe(4))
        self.server.flush()
        recording = self.unpublish(pub)
        frames = tags_of(self.data(recording.file))[3:]
        # Audio may start a file; video frames before the first keyframe cannot be decoded.
        self.assertEqual(
            [(t.tag_type, t.timestamp, t.payload) for t in frames],
            [
                (8, 0, aac_frame(1)),
                (9, 56, avc_keyframe(3)),
                (18, 60, amf0.encode_many("onCuePoint", {"n": 2.0})),
                (9, 90, avc_interframe(4)),
            ],
        )

    def test_metadata_update_mid_file_goes_to_the_next_file_only(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        pub.send_metadata(sid, {"width": 1280.0, "height": 720.0})
        self.send_gops(pub, sid, 1000, gops=1)
        recording = self.unpublish(pub)
        scripts = [t for t in tags_of(self.data(recording.file)) if t.tag_type == 18]
        self.assertEqual(len(scripts), 1)

    def test_republish_starts_a_new_file_with_a_distinct_name(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        first = self.unpublish(pub)
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        second = self.unpublish(pub)
        self.assertEqual(first.file, "/rec/live_test_20231114_221320.flv")
        self.assertEqual(second.file, "/rec/live_test_20231114_221320_1.flv")
        for r in (first, second):
            self.assertEqual(metadata_of(self.data(r.file))["duration"], 0.9)

    def test_only_matching_keys_are_recorded(self) -> None:
        self.recorder.patterns = ("live/cam*",)
        pub, sid = self.publisher("other")
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        self.assertIsNone(self.recording("live/other"))
        cam, csid = self.publisher("cam1")
        self.send_headers(cam, csid)
        self.send_gops(cam, csid, 0, gops=1)
        recording = self.unpublish(cam, "live/cam1")
        self.assertEqual(list(self.disk.files), [recording.file])

    def test_hostile_stream_name_records_inside_the_directory(self) -> None:
        # The protocol refuses such names already; the recorder does not rely on it.
        registry = StreamRegistry(ServerConfig(), Clock().seconds)
        registry.listeners.append(self.recorder)
        stream = Stream("live/../../etc/x", ServerConfig(), registry.listeners, registry.forget_if_idle)
        stream.start(SimpleNamespace(peer=SimpleNamespace(conn_id="c000099")))
        for ts, payload in ((0, AAC_SEQUENCE_HEADER), (0, aac_frame(1)), (23, aac_frame(2))):
            stream.relay(Message(A, ts, 1, payload))
        stream.stop()
        self.wait_closed(self.recorder.recording_for(stream.key))
        (path,) = self.disk.files
        self.assertEqual(os.path.dirname(path), "/rec")
        self.assertTrue(os.path.basename(path).startswith("live_"), path)
        data = self.data(path)
        self.assertEqual(flv.parse_flv(data)[0], flv.FLAG_AUDIO)
        self.assertEqual(
            [t.payload for t in tags_of(data)[1:]], [AAC_SEQUENCE_HEADER, aac_frame(1), aac_frame(2)]
        )

    def test_recording_for_shows_the_current_then_the_last_recording(self) -> None:
        self.assertIsNone(self.recorder.recording_for("live/test"))
        pub, sid = self.publisher()
        current = self.recorder.recording_for("live/test")
        self.assertEqual(current.state, "waiting")
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        self.assertEqual(current.state, "recording")
        # A player keeps the stream object after the publisher leaves: the last recording stays visible.
        self.player()
        self.assertIs(self.unpublish(pub), current)
        self.assertIs(self.recorder.recording_for("live/test"), current)
        self.assertEqual(current.state, "finished")
        pub, sid = self.publisher()
        self.assertIsNot(self.recorder.recording_for("live/test"), current)

    def test_recording_for_forgets_a_stream_that_is_gone(self) -> None:
        registry = StreamRegistry(ServerConfig(), Clock().seconds)
        registry.listeners.append(self.recorder)
        stream = Stream("live/gone", ServerConfig(), registry.listeners, registry.forget_if_idle)
        stream.start(SimpleNamespace(peer=SimpleNamespace(conn_id="c000099")))
        stream.relay(Message(A, 0, 1, aac_frame(1)))
        stream.stop()
        recording = self.recorder.recording_for("live/gone")
        self.wait_closed(recording)
        self.assertIs(recording.stream, stream)
        del stream
        gc.collect()
        self.assertIsNone(self.recorder.recording_for("live/gone"))
        self.assertIsNone(recording.stream)
        self.assertEqual(recording.state, "finished")

    def test_stop_service_finalizes_every_open_recording(self) -> None:
        pubs = []
        for name in ("a", "b", "c"):
            pub, sid = self.publisher(name)
            self.send_headers(pub, sid)
            self.send_gops(pub, sid, 0, gops=2)
            pubs.append((pub, sid))
        d = self.recorder.stopService()
        box: list = []
        d.addBoth(box.append)
        self.assertEqual(box, [])
        self.calls.run_until(lambda: bool(box))
        self.assertEqual(len(self.disk.files), 3)
        for f in self.disk.files.values():
            self.assertTrue(f.closed)
            values = metadata_of(f.contents)
            self.assertEqual(values["duration"], 1.9)
            self.assertEqual(values["keyframes"]["times"][:2], [0.0, 1.0])
        # The publishers go on; nothing more is recorded.
        self.send_gops(*pubs[0], 2000, gops=1)
        self.assertEqual(self.server.registry.listeners, [])


class SegmentationTests(RecorderTestCase):
    record_config = {"record_interval": 2.0}

    def test_segments_play_alone_and_add_up(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 1000, gops=5)
        recording = self.unpublish(pub)
        self.assertEqual(len(recording.files), 3)
        self.assertEqual(
            recording.files,
            [
                "/rec/live_test_20231114_221320.flv",
                "/rec/live_test_20231114_221320_1.flv",
                "/rec/live_test_20231114_221320_2.flv",
            ],
        )
        durations = []
        first_payloads = []
        for path in recording.files:
            data = self.data(path)
            tags = tags_of(data)
            self.assertEqual(flv.parse_flv(data)[0], 5)
            self.assertEqual([t.payload for t in tags[1:3]], [AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER])
            self.assertEqual(tags[3].timestamp, 0)
            first_payloads.append(tags[3].payload)
            values = metadata_of(data)
            self.assertEqual(values["width"], 640.0)
            self.assertEqual(values["keyframes"]["times"][0], 0.0)
            durations.append(values["duration"])
        self.assertEqual(first_payloads, [avc_keyframe(1), avc_keyframe(3), avc_keyframe(5)])
        self.assertEqual(durations, [2.0, 2.0, 0.9])

    def test_audio_only_stream_is_cut_at_any_audio_frame(self) -> None:
        pub, sid = self.publisher()
        pub.send_media(A, sid, 0, AAC_SEQUENCE_HEADER)
        for i in range(50):
            pub.send_media(A, sid, i * 100, aac_frame(i))
        self.server.flush()
        recording = self.unpublish(pub)
        self.assertEqual(len(recording.files), 3)
        for path, first in zip(recording.files, (0, 20, 40), strict=True):
            data = self.data(path)
            self.assertEqual(flv.parse_flv(data)[0], flv.FLAG_AUDIO)
            tags = tags_of(data)
            self.assertEqual(metadata_of(data).get("keyframes"), None)
            self.assertEqual(
                (tags[1].payload, tags[2].payload, tags[2].timestamp),
                (AAC_SEQUENCE_HEADER, aac_frame(first), 0),
            )


class SegmentationBySizeTests(RecorderTestCase):
    record_config = {"record_max_size": 5000}

    def test_new_file_at_the_next_keyframe_past_the_size(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=12, gop_ms=500, key_size=1000)
        recording = self.unpublish(pub)
        self.assertGreater(len(recording.files), 2)
        for path in recording.files[:-1]:
            data = self.data(path)
            self.assertGreaterEqual(len(data), 5000)
            # The file would still have been under the limit before its last GOP.
            last_key = max(t.offset for t in tags_of(data) if t.tag_type == 9 and t.payload[0] == 0x17)
            self.assertLess(last_key, 5000)
        starts = [tags_of(self.data(p))[3].payload[0] for p in recording.files]
        self.assertEqual(set(starts), {0x17})


class DiskFailureTests(RecorderTestCase):
    def make_disk(self) -> Disk:
        return Disk(fail_after=3000, error=errno.ENOSPC)

    def test_disk_full_stops_recording_not_the_stream(self) -> None:
        with capturedLogs() as logs:
            pub, sid = self.publisher()
            player, psid = self.player()
            self.send_headers(pub, sid)
            for second in range(4):
                # One GOP at a time, each written before the next: the disk fills up mid-file.
                self.send_gops(pub, sid, second * 1000, gops=1)
                self.assertTrue(self.disk.opened.wait(WAIT))
                marker = avc_keyframe(second)
                self.assertTrue(self.disk.only().wait_until(lambda f, m=marker: f.closed or m in f.contents))
            recording = self.recording()
            self.calls.run_until(lambda: recording.state == "failed")
            self.send_gops(pub, sid, 4000, gops=2)
        errors = [e for e in logs if e["log_format"] == "recording failed"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["log_level"].name, "error")
        self.assertEqual(errors[0]["file"], "/rec/live_test_20231114_221320.flv")
        self.assertIn("ENOSPC", errors[0]["cause"])
        # The player got everything, before and after the failure.
        videos = [m for m in player.media(psid) if m.type_id == V]
        self.assertEqual(len(videos), 1 + 60)
        data = self.data(recording.file)
        self.assertLessEqual(len(data), 3000)
        self.assertGreater(len(tags_of(data)), 3)
        self.assertEqual(metadata_of(data)["filesize"], float(len(data)))
        self.assertTrue(pub.connected_transport)
        self.wait_closed(recording)
        self.assertEqual(recording.error, "ENOSPC: No space left on device")


class GatedDiskTestCase(RecorderTestCase):
    """The recorder's disk blocks every write until the test sets ``self.gate``."""

    def make_disk(self) -> Disk:
        self.gate = threading.Event()
        self.addCleanup(self.gate.set)
        return Disk(gate=self.gate)


class SlowDiskTests(GatedDiskTestCase):
    recorder_options = {"keyframe_slots": 16, "max_queue_bytes": 20_000}

    def test_blocked_disk_does_not_hold_up_players(self) -> None:
        pub, sid = self.publisher()
        player, psid = self.player()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        self.assertTrue(self.disk.opened.wait(WAIT))
        self.assertTrue(self.disk.only().blocked.wait(WAIT))
        # The writer thread is stuck in write(); the relay goes on in this (the reactor's) thread.
        self.send_gops(pub, sid, 1000, gops=2)
        self.assertFalse(self.gate.is_set())
        videos = [m for m in player.media(psid) if m.type_id == V]
        self.assertEqual(len(videos), 1 + 30)
        recording = self.recording()
        self.assertGreater(recording.pending_bytes, 0)
        self.gate.set()
        recording = self.unpublish(pub)
        frames = tags_of(self.disk.only().contents)[3:]
        self.assertEqual(len(frames), 60)

    def test_backlog_overflow_stops_recording_and_keeps_what_was_queued(self) -> None:
        with capturedLogs() as logs:
            pub, sid = self.publisher()
            player, psid = self.player()
            self.send_headers(pub, sid)
            self.send_gops(pub, sid, 0, gops=1)
            self.assertTrue(self.disk.opened.wait(WAIT))
            self.send_gops(pub, sid, 1000, gops=20)
        recording = self.recording()
        self.assertEqual(recording.state, "failed")
        errors = [e for e in logs if e["log_format"] == "recording failed"]
        self.assertEqual(len(errors), 1)
        self.assertIn("writer queue full", errors[0]["cause"])
        self.assertEqual(errors[0]["file"], "/rec/live_test_20231114_221320.flv")
        self.assertEqual(len([m for m in player.media(psid) if m.type_id == V]), 1 + 210)
        self.gate.set()
        self.wait_closed(recording)
        data = self.disk.only().contents
        frames = tags_of(data)[3:]
        stamps = [t.timestamp for t in frames]
        self.assertEqual(stamps, sorted(stamps))
        self.assertGreater(len(frames), 10)
        self.assertLess(len(frames), 420)
        self.assertEqual(metadata_of(data)["duration"], stamps[-1] / 1000)

    def test_stop_service_gives_up_on_a_hung_disk(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1)
        self.assertTrue(self.disk.opened.wait(WAIT))
        with capturedLogs() as logs:
            d = self.recorder.stopService()
            box: list = []
            d.addBoth(box.append)
            self.server.clock.advance(self.recorder.finalize_timeout)
        self.assertEqual(box, [None])
        self.assertIn("recordings not finalized before shutdown", [e["log_format"] for e in logs])


class StopRecordingTests(RecorderTestCase):
    def test_stop_recording_finalizes_the_file_and_the_stream_goes_on(self) -> None:
        pub, sid = self.publisher()
        player, psid = self.player()
        self.send_headers(pub, sid)
        end = self.send_gops(pub, sid, 0, gops=2)
        recording = self.recording()
        d = self.recorder.stop_recording("live/test")
        box: list = []
        d.addCallback(box.append)
        self.calls.run_until(lambda: bool(box))
        self.assertIs(box[0], recording)
        self.assertEqual(recording.state, "finished")
        size = len(self.data(recording.file))
        self.assertEqual(metadata_of(self.data(recording.file))["filesize"], float(size))
        before = len(player.media(psid))
        self.send_gops(pub, sid, end, gops=1)
        # Viewers keep receiving; the finalized file does not grow.
        self.assertGreater(len(player.media(psid)), before)
        self.assertEqual(len(self.data(recording.file)), size)
        self.assertIs(self.recorder.stop_recording("live/test"), False)

    def test_stop_recording_of_an_unknown_key(self) -> None:
        self.assertIs(self.recorder.stop_recording("live/nobody"), False)


class PauseSpy:
    """Wraps a transport to record pauseProducing/resumeProducing calls."""

    def __init__(self, transport) -> None:
        self._transport = transport
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class FasterThanRealTimeTests(GatedDiskTestCase):
    recorder_options = {"keyframe_slots": 16, "max_queue_bytes": 200_000}

    def spied_publisher(self):
        """A publisher whose server-side transport records pause/resume calls."""
        pub, sid = self.publisher()
        spy = pub.server_protocol.transport = PauseSpy(pub.server_protocol.transport)
        return pub, sid, spy

    def test_publisher_ahead_of_real_time_is_held_back_instead_of_losing_the_recording(self) -> None:
        pub, sid, spy = self.spied_publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1, key_size=2000)
        self.assertTrue(self.disk.opened.wait(WAIT))
        # 6 s of media in no wall time with the disk stuck: far ahead of real time.
        with capturedLogs() as logs:
            self.send_gops(pub, sid, 1000, gops=6, key_size=20_000)
        publication = self.server.registry.get("live/test").publisher
        self.assertEqual(spy.calls, ["pause"])
        self.assertTrue(publication.throttled)
        self.assertIn("Publisher held back for the recording", [e["log_format"] for e in logs])
        # Held back, it is not taken for an idle publisher.
        self.server.clock.advance(2)
        self.assertNotIn(publication, self.server.registry.idle_publishers())
        self.gate.set()
        recording = self.recording()
        self.assertTrue(self.disk.only().wait_until(lambda f: recording.pending_bytes < 10_000))
        # The writer reported the drain before the backlog showed it: deliver its reports.
        self.calls.run_pending()
        self.assertEqual(spy.calls, ["pause", "resume"])
        self.assertFalse(publication.throttled)
        recording = self.unpublish(pub)
        self.assertEqual(recording.state, "finished")
        self.assertEqual(len(tags_of(self.disk.only().contents)[3:]), 7 * 20)

    def test_held_back_only_while_ahead_then_the_recording_gives_way(self) -> None:
        pub, sid, spy = self.spied_publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1, key_size=2000)
        self.assertTrue(self.disk.opened.wait(WAIT))
        self.send_gops(pub, sid, 1000, gops=6, key_size=20_000)
        self.assertEqual(spy.calls, ["pause"])
        # The disk stays stuck and the wall clock catches up with the media: viewers must not wait.
        self.server.clock.advance(10)
        self.assertEqual(spy.calls, ["pause", "resume"])
        self.gate.set()

    def throttle_timers(self, recording) -> list:
        return [
            c
            for c in self.server.clock.getDelayedCalls()
            if getattr(c.func, "__self__", None) is recording.throttle
        ]

    def test_the_writers_drain_report_alone_lets_the_publisher_go(self) -> None:
        pub, sid, spy = self.spied_publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1, key_size=2000)
        self.assertTrue(self.disk.opened.wait(WAIT))
        self.send_gops(pub, sid, 1000, gops=6, key_size=20_000)
        self.assertEqual(spy.calls, ["pause"])
        recording = self.recording()
        # Only the lead timer, no poll: it is due when the last tag (6.9 s of media since the first,
        # all sent at once) falls within 2 s of the wall clock.
        self.server.clock.advance(1)
        (timer,) = self.throttle_timers(recording)
        self.assertEqual(timer.getTime(), EPOCH + 6.9 - AHEAD_SECONDS)
        self.server.clock.advance(2)
        self.assertEqual(self.throttle_timers(recording), [timer])
        self.assertEqual(spy.calls, ["pause"])
        self.gate.set()
        self.assertTrue(self.disk.only().wait_until(lambda f: recording.pending_bytes < 10_000))
        # No time passes: delivering the writer's reports is all it takes.
        self.calls.run_pending()
        self.assertEqual(spy.calls, ["pause", "resume"])
        self.assertEqual(self.throttle_timers(recording), [])

    def test_the_lead_timer_lets_the_publisher_go_when_its_lead_runs_out(self) -> None:
        pub, sid, spy = self.spied_publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=1, key_size=2000)
        self.assertTrue(self.disk.opened.wait(WAIT))
        self.send_gops(pub, sid, 1000, gops=6, key_size=20_000)
        self.server.clock.advance(6.9 - AHEAD_SECONDS - 0.01)
        self.assertEqual(spy.calls, ["pause"])
        self.server.clock.advance(0.01)
        self.assertEqual(spy.calls, ["pause", "resume"])
        self.assertEqual(self.throttle_timers(self.recording()), [])
        self.gate.set()

    def test_publisher_at_real_time_is_never_held_back(self) -> None:
        pub, sid, spy = self.spied_publisher()
        self.send_headers(pub, sid)
        ts = 0
        for _ in range(8):
            ts = self.send_gops(pub, sid, ts, gops=1, key_size=20_000)
            self.server.clock.advance(1.0)
        self.assertEqual(spy.calls, [])
        self.gate.set()


# -- the package's rules -----------------------------------------------------------------


class PackageRulesTests(SynchronousTestCase):
    """What the recording package promises about its own source (``issues show 10``)."""

    def modules(self) -> dict[str, ast.Module]:
        import rtmpd.recording

        folder = Path(rtmpd.recording.__file__).parent
        return {f"rtmpd.recording.{p.stem}": ast.parse(p.read_text()) for p in sorted(folder.glob("*.py"))}

    def imports(self, tree: ast.Module) -> set[str]:
        """Every module named by an import, TYPE_CHECKING ones included."""
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    def test_no_parsing_of_its_own_and_no_connection_internals(self) -> None:
        for name, tree in self.modules().items():
            imported = self.imports(tree)
            for forbidden in ("rtmpd.core.media", "rtmpd.server", "rtmpd.admin"):
                self.assertFalse(
                    [m for m in imported if m == forbidden or m.startswith(forbidden + ".")],
                    f"{name} imports {forbidden}",
                )
            attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            self.assertFalse(attributes & {"conn", "transport", "factory"}, name)

    def test_no_import_cycle_inside_the_package(self) -> None:
        modules = self.modules()
        edges = {
            name: {m for m in self.imports(tree) if m in modules and m != name}
            for name, tree in modules.items()
        }
        done: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> None:
            self.assertNotIn(name, path, f"import cycle: {' -> '.join((*path, name))}")
            if name in done:
                return
            for other in edges[name]:
                visit(other, (*path, name))
            done.add(name)

        for name in modules:
            visit(name, ())

    def test_modules_are_small_and_say_what_they_own(self) -> None:
        for name, tree in self.modules().items():
            self.assertTrue(ast.get_docstring(tree), f"{name} has no module docstring")
            self.assertLessEqual(max(getattr(n, "end_lineno", 0) or 0 for n in ast.walk(tree)), 400, name)
