"""Recording limits and durability without real clients: files only at the first frame, the budgets of
open recordings and new files, one WARN line a minute, periodic fsync off the reactor and directory fsyncs."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import flv
from rtmpd.recording.admission import WARN_INTERVAL, RecordingAdmission
from rtmpd.recording.flvfile import build_prologue
from rtmpd.recording.writer import (
    RecordingWriter,
    SegmentFinalized,
    SegmentOpened,
    fsync_directory,
    open_exclusive,
)
from rtmpd.tap import Options
from tests.media_samples import AAC_SEQUENCE_HEADER, aac_frame, avc_keyframe
from tests.test_recorder import A, Disk, FakeTime, RecorderTestCase


def warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["log_format"].startswith("Recording limit reached")]


class AdmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_open_recordings_are_capped_and_a_finished_one_frees_its_slot(self) -> None:
        admission = RecordingAdmission(self.clock, max_active=2, max_new_per_minute=100)
        self.assertTrue(admission.start("live/a", True))
        self.assertTrue(admission.start("live/b", True))
        self.assertFalse(admission.start("live/c", True))
        self.assertEqual((admission.active, admission.refusals), (2, 1))
        admission.finish()
        self.assertTrue(admission.start("live/c", False))
        self.assertEqual(admission.active, 2)

    def test_new_files_are_a_token_bucket_refilled_at_the_rate(self) -> None:
        admission = RecordingAdmission(self.clock, max_active=100, max_new_per_minute=3)
        self.assertEqual([admission.start(f"live/{i}", True) for i in range(4)], [True, True, True, False])
        # Segments count too.
        self.assertFalse(admission.segment("live/0"))
        self.clock.advance(19.9)
        self.assertFalse(admission.segment("live/0"))
        self.clock.advance(0.1)
        self.assertTrue(admission.segment("live/0"))
        # The bucket never holds more than a minute's worth.
        self.clock.advance(3600)
        self.assertEqual([admission.segment("live/0") for _ in range(4)], [True, True, True, False])

    def test_refusals_are_one_warn_line_a_minute_and_asking_again_is_not_counted(self) -> None:
        admission = RecordingAdmission(self.clock, max_active=1, max_new_per_minute=100)
        admission.start("live/ok", True)
        with capturedLogs() as logs:
            for i in range(500):
                admission.start(f"live/attack{i}", True)
                admission.start(f"live/attack{i}", False)
            self.clock.advance(WARN_INTERVAL)
            admission.start("live/late", True)
        (first, second) = warnings(logs)
        self.assertEqual(len(logs), 2)
        self.assertEqual((first["stream_key"], first["refused_unlogged"]), ("live/attack0", 0))
        self.assertEqual((second["stream_key"], second["refused_unlogged"]), ("live/late", 499))
        self.assertIn("--record-max-active", first["cause"])
        self.assertEqual(first["log_level"].name, "warn")
        self.assertEqual(admission.refusals, 501)

    def test_limits_below_one_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            RecordingAdmission(self.clock, 0, 10)
        with self.assertRaises(ValueError):
            RecordingAdmission(self.clock, 10, 0)

    def test_options(self) -> None:
        options = Options()
        options.parseOptions(
            ["--record-max-active", "7", "--record-max-new", "9", "--record-fsync-interval", "0.5"]
        )
        config = options.config()
        self.assertEqual(
            (config.record_max_active, config.record_max_new, config.record_fsync_interval), (7, 9, 0.5)
        )
        defaults = Options()
        defaults.parseOptions([])
        self.assertEqual(
            (defaults.config().record_max_active, defaults.config().record_fsync_interval), (100, 5.0)
        )
        for bad in (["--record-max-active", "0"], ["--record-fsync-interval", "-1"]):
            with self.assertRaises(SystemExit):
                Options().parseOptions(bad)


class FilesAtTheFirstFrameTests(RecorderTestCase):
    record_config = {"record_max_active": 2}

    def test_publishes_without_media_open_no_file_and_log_nothing(self) -> None:
        with capturedLogs() as logs:
            for i in range(50):
                pub, sid = self.publisher(f"empty{i}")
                self.send_headers(pub, sid)
                pub.transport.loseConnection()
                self.server.flush()
        self.assertEqual(self.disk.files, {})
        self.assertEqual(self.recorder.admission.active, 0)
        self.assertEqual(self.recorder.unfinished, set())
        mine = [e for e in logs if e.get("log_namespace", "").startswith("rtmpd.recording")]
        self.assertEqual([e for e in mine if e["log_level"].name != "debug"], [])

    def test_over_the_cap_the_stream_is_relayed_unrecorded_then_recorded_when_a_slot_frees(self) -> None:
        with capturedLogs() as logs:
            first, s1 = self.publisher("one")
            second, s2 = self.publisher("two")
            third, s3 = self.publisher("three")
            watcher, _ = self.player("three")
            for pub, sid in ((first, s1), (second, s2), (third, s3)):
                self.send_headers(pub, sid)
            for pub, sid in ((first, s1), (second, s2), (third, s3)):
                self.send_gops(pub, sid, 0, gops=2)
            refused = self.recording("live/three")
            self.assertEqual(refused.state, "refused")
            self.assertIsNone(refused.file)
            recorded = [self.recording("live/one"), self.recording("live/two")]
            self.calls.run_until(lambda: all(r.files for r in recorded))
            self.assertEqual(sorted(self.disk.files), sorted(r.file for r in recorded))
            # The player of the unrecorded stream got its media all the same.
            self.server.flush()
            self.assertGreaterEqual(len(watcher.media()), 2 * 10 * 2)
            self.unpublish(first, "live/one")
            # A slot is free: the third stream starts a file at its next keyframe.
            self.send_gops(third, s3, 2000, gops=1)
            self.assertEqual(refused.state, "recording")
            recording = self.unpublish(third, "live/three")
        self.assertEqual(recording.state, "finished")
        data = self.data(recording.file)
        self.assertEqual(flv.parse_flv(data)[1][3].payload, avc_keyframe(2))
        (warning,) = warnings(logs)
        self.assertEqual(warning["stream_key"], "live/three")


class SegmentRateTests(RecorderTestCase):
    record_config = {"record_interval": 1.0, "record_max_new": 2}

    def test_over_the_rate_a_recording_goes_on_in_its_current_file(self) -> None:
        with capturedLogs() as logs:
            pub, sid = self.publisher()
            self.send_headers(pub, sid)
            self.send_gops(pub, sid, 0, gops=6)
            recording = self.unpublish(pub)
        # Two tokens: the first file and one segment; the rest of the stream stays in the second file.
        self.assertEqual(len(recording.files), 2)
        self.assertEqual(recording.state, "finished")
        self.assertEqual(len(warnings(logs)), 1)
        self.assertIn("the current file goes on", warnings(logs)[0]["cause"])


class RecordedFsyncTests(RecorderTestCase):
    def test_the_recorder_passes_its_fsync_interval_and_syncs_no_directory_of_a_disk_double(self) -> None:
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        pub.send_media(A, sid, 0, aac_frame(1))
        self.server.flush()
        recording = self.recording()
        writer = recording._writer
        self.assertEqual(writer._fsync_interval, 5.0)
        self.assertIsNone(writer._sync_dir)


class FsyncTests(SynchronousTestCase):
    def prologue(self):
        return build_prologue(
            {}, [(flv.TAG_AUDIO, AAC_SEQUENCE_HEADER)], has_audio=True, has_video=False, keyframe_slots=0
        )

    def writer(self, **kw: Any) -> tuple[RecordingWriter, list, list, list]:
        events: list = []
        synced: list = []
        dirs: list = []
        self.time = FakeTime()
        writer = RecordingWriter(
            events.append,
            open_file=Disk(),
            threaded=False,
            monotonic=self.time,
            sync_file=lambda f: synced.append(f.tell()),
            sync_dir=dirs.append,
            **kw,
        )
        return writer, events, synced, dirs

    def test_open_files_are_fsynced_every_interval_when_something_new_was_written(self) -> None:
        w, events, synced, dirs = self.writer(fsync_interval=2.0)
        w.start_segment(iter(["/rec/a.flv"]), self.prologue())
        self.assertEqual(dirs, ["/rec/a.flv"])
        w.write(flv.TAG_AUDIO, 0, aac_frame(1))
        self.time.now += 1.9
        w.write(flv.TAG_AUDIO, 23, aac_frame(2))
        self.assertEqual(synced, [])
        self.time.now += 0.1
        w.write(flv.TAG_AUDIO, 46, aac_frame(3))
        self.assertEqual(len(synced), 1)
        # Nothing new written since: the next interval syncs nothing.
        self.time.now += 2.0
        w._maintain(caught_up=True)
        self.assertEqual(len(synced), 1)
        w.end_segment()
        self.assertEqual([type(e) for e in events], [SegmentOpened, SegmentFinalized])
        # The directory again once the file is finalized.
        self.assertEqual(dirs, ["/rec/a.flv", "/rec/a.flv"])

    def test_interval_zero_syncs_only_at_the_end(self) -> None:
        w, _, synced, _ = self.writer(fsync_interval=0)
        w.start_segment(iter(["/rec/a.flv"]), self.prologue())
        for i in range(10):
            self.time.now += 10
            w.write(flv.TAG_AUDIO, i * 23, aac_frame(i))
        self.assertEqual(synced, [])
        # Only the patch timer wakes the thread.
        self.assertEqual(w._wait_time(), 1.0)

    def test_a_failing_directory_sync_fails_the_recording(self) -> None:
        def broken(path: str) -> None:
            raise OSError(5, "Input/output error")

        events: list = []
        w = RecordingWriter(events.append, open_file=Disk(), threaded=False, sync_dir=broken)
        w.start_segment(iter(["/rec/a.flv"]), self.prologue())
        self.assertEqual(events[0].error, "EIO: Input/output error")

    def test_real_directory_and_file_sync(self) -> None:
        tmp = tempfile.mkdtemp(prefix="rtmpd-fsync-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "a.flv")
        events: list = []
        w = RecordingWriter(
            events.append,
            open_file=open_exclusive,
            threaded=False,
            sync_dir=fsync_directory,
            fsync_interval=0.001,
        )
        w.start_segment(iter([path]), self.prologue())
        w.write(flv.TAG_AUDIO, 0, aac_frame(1))
        w.close()
        self.assertEqual(
            [type(e).__name__ for e in events], ["SegmentOpened", "SegmentFinalized", "WriterClosed"]
        )
        self.assertGreater(os.path.getsize(path), 0)
