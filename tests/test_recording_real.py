"""Recording acceptance with real clients: ``twistd -n rtmpd --record-dir``, ffmpeg, ffprobe, rtmpdump.

Every file is checked the way an operator would: ffprobe's codecs and its
duration (which comes from the file's onMetaData, patched by the recorder),
a silent ``ffmpeg -v error`` decode, a remux to MP4, a seek. The onMetaData
numbers are also read with rtmpd's own FLV parser and compared with the
tags actually in the file.

Disk trouble (a full disk, a disk that stalls for seconds) needs a disk
double inside the server: those tests run twistd on a small .tac file that
builds the same service with ``Recorder(open_file=...)`` (``DoubleDiskServer``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0, flv
from tests.support import ServerProcess, ffmpeg_publish, require, run, twistd
from tests.test_relay_real import FfmpegPlayer, RtmpdumpPlayer, decode_file

NAME = re.compile(r"^live_(?P<stream>.+)_(?P<date>\d{8})_(?P<time>\d{6})(?:_\d+)?\.flv$")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- reading recordings -------------------------------------------------------------


class Recording:
    """One FLV file as rtmpd's parser and ffprobe see it."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        self.flags, self.tags, self.trailing = flv.parse_flv(self.data)
        name, self.metadata = amf0.decode_all(self.tags[0].payload)
        assert name == "onMetaData", name

    @property
    def last_timestamp(self) -> float:
        return max(t.timestamp for t in self.tags) / 1000

    def media(self, tag_type: int) -> list[flv.Tag]:
        return [t for t in self.tags[1:] if t.tag_type == tag_type]

    def keyframes(self) -> list[flv.Tag]:
        """AVC keyframes (frame type 1, NALU packet)."""
        return [t for t in self.media(flv.TAG_VIDEO) if t.payload[:2] == b"\x17\x01"]

    def probe(self) -> dict[str, Any]:
        result = run([require("ffprobe"), "-v", "error", "-show_streams", "-show_format", "-of", "json",
                      self.path], 30)
        if result.returncode != 0:
            raise AssertionError(f"ffprobe {self.path}: {result.stderr}")
        return json.loads(result.stdout)

    def codecs(self) -> set[str]:
        return {s["codec_name"] for s in self.probe()["streams"]}

    def probe_duration(self) -> float:
        return float(self.probe()["format"]["duration"])

    def first_video_packet_after_seek(self, seconds: float) -> tuple[float, bool]:
        """``ffmpeg -ss SECONDS -i FILE``: where the first video packet lands (seconds, keyframe?)."""
        result = run([require("ffmpeg"), "-hide_banner", "-v", "error", "-ss", str(seconds), "-i", self.path,
                      "-map", "0:v:0", "-c", "copy", "-copyts", "-frames:v", "1", "-f", "framecrc", "-"], 30)
        lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
        if result.returncode != 0 or not lines:
            raise AssertionError(f"seek in {self.path} failed: {result.stderr}")
        fields = [f.strip() for f in lines[0].split(",")]
        # framecrc: stream, dts, pts, duration, size, crc[, flags]; the flv time base is 1/1000.
        return int(fields[1]) / 1000, "K" in (fields[6] if len(fields) > 6 else "K")


def remux_to_mp4(path: str, directory: str) -> subprocess.CompletedProcess:
    out = os.path.join(directory, os.path.basename(path) + ".mp4")
    return run([require("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", path, "-c", "copy",
                out], 60)


class Progress:
    """Reads an ffmpeg's ``-progress pipe:1`` output; ``wait_seconds`` waits for its output time."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.seconds = 0.0
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and value.isdigit():
                with self._changed:
                    self.seconds = int(value) / 1e6
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_seconds(self, seconds: float, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.seconds >= seconds or self.process.poll() is not None,
                                          timeout):
                raise AssertionError(f"ffmpeg did not reach {seconds}s of output in {timeout}s")
            if self.seconds < seconds:
                raise AssertionError(f"ffmpeg ended at {self.seconds}s, before {seconds}s")


def publish(url: str, seconds: float, **kw: Any) -> tuple[subprocess.Popen, Progress]:
    process = ffmpeg_publish(url, seconds, extra=["-progress", "pipe:1", "-stats_period", "0.1"], **kw)
    return process, Progress(process)


def finish(process: subprocess.Popen, timeout: float = 60.0) -> int:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise AssertionError(f"{process.args[0]} still running after {timeout}s") from None
    return process.returncode


# -- the server with a disk double ----------------------------------------------------

_TAC = r'''
"""rtmpd with its recorder writing through a disk double, chosen by RTMPD_TEST_DISK:
"full:N" / "eio:N": a write taking a file past N bytes writes up to N, then fails (ENOSPC / EIO);
"stall:N:S": the first write taking a file past N bytes first sleeps S seconds."""
import errno, io, json, os, sys, threading, time

from twisted.application import service

from rtmpd import logs
from rtmpd.config import ServerConfig
from rtmpd.server.listening import ListeningService
from rtmpd.recording.recorder import Recorder
from rtmpd.server.service import RTMPService

logs.configure("json", "info", None)
kind, *numbers = os.environ["RTMPD_TEST_DISK"].split(":")
limit = int(numbers[0])
stalled = threading.Event()


def report(msg):
    # Straight to the real stdout: twistd turns sys.stdout into a log stream.
    sys.__stdout__.write(json.dumps({"msg": msg, "level": "info", "monotonic": time.monotonic()}) + "\n")
    sys.__stdout__.flush()


class DoubleFile(io.FileIO):
    def write(self, data):
        pos = self.tell()
        if pos + len(data) > limit:
            if kind in ("full", "eio"):
                if pos < limit:
                    super().write(bytes(data[: limit - pos]))
                code = errno.ENOSPC if kind == "full" else errno.EIO
                raise OSError(code, os.strerror(code))
            if kind == "stall" and not stalled.is_set():
                stalled.set()
                report("test disk stalled")
                time.sleep(float(numbers[1]))
                report("test disk resumed")
        return super().write(data)


top = RTMPService(ServerConfig())
config = ServerConfig(record_dir=os.environ["RTMPD_TEST_RECORD_DIR"])
recorder = Recorder(config, top.registry, top.factory.clock, open_file=lambda path: DoubleFile(path, "x"))
recorder.setServiceParent(top)
ListeningService("tcp:0:interface=127.0.0.1", top.factory).setServiceParent(top)
application = service.Application("rtmpd-disk-double")
top.setServiceParent(application)
'''


class DoubleDiskServer(ServerProcess):
    """``twistd -n -y`` on ``_TAC``: the rtmpd service whose recorder writes through a disk double."""

    def __init__(self, record_dir: str, disk: str, workdir: str) -> None:
        super().__init__(log_level="info")
        self.record_dir = record_dir
        self.disk = disk
        self.workdir = workdir

    def start(self, timeout: float = 20.0) -> DoubleDiskServer:
        tac = os.path.join(self.workdir, "disk_double.tac")
        with open(tac, "w") as f:
            f.write(_TAC)
        path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, RTMPD_TEST_DISK=self.disk, RTMPD_TEST_RECORD_DIR=self.record_dir,
                   PYTHONPATH=path)
        cmd = [twistd(), "-n", "--pidfile=", "--logger=rtmpd.logs.observer_factory", "-y", tac]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, text=True, bufsize=1, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_for(lambda e: e.get("msg") == "RTMP server listening", timeout)
        self.port = int(listening["addr"].rsplit(":", 1)[1])
        return self


# -- tests ------------------------------------------------------------------------------


class RecordingTestCase(SynchronousTestCase):
    server_args: tuple[str, ...] = ()

    def setUp(self) -> None:
        # Not self.mktemp(): under pytest it creates directories in the working tree.
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-rec-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record_dir = os.path.join(self.tmp, "recordings")
        self.server = self.start_server()
        self.addCleanup(self.server.stop)

    def start_server(self) -> ServerProcess:
        return ServerProcess("--record-dir", self.record_dir, *self.server_args, log_level="info").start()

    def spawned(self, process: subprocess.Popen) -> subprocess.Popen:
        self.addCleanup(lambda: process.poll() is None and (process.kill(), process.wait(10)))
        return process

    def files(self) -> list[str]:
        return sorted(os.listdir(self.record_dir))

    def wait_finalized(self, key: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``count`` files of ``key`` are finalized; their "recording finalized" events."""
        deadline = time.monotonic() + timeout
        while True:
            done = [e for e in self.server.messages("recording finalized") if e.get("stream_key") == key]
            if len(done) >= count:
                return done
            self.server.wait_for(lambda e: e.get("msg") == "recording finalized",
                                 max(0.1, deadline - time.monotonic()), start=len(self.server.events))

    def assert_close(self, first: float, second: float, delta: float, msg: Any = None) -> None:
        # trial's assertAlmostEqual ignores ``delta``.
        if abs(first - second) > delta:
            self.fail(f"{first!r} and {second!r} differ by more than {delta}" + (f": {msg}" if msg else ""))

    def assert_plays_alone(self, rec: Recording) -> None:
        """Decodes silently, H.264 + AAC, starts with a keyframe at 0, duration from its metadata."""
        self.assertEqual(rec.trailing, 0)
        self.assertEqual(rec.flags, flv.FLAG_AUDIO | flv.FLAG_VIDEO)
        self.assertEqual(decode_file(rec.path), [])
        self.assertEqual(rec.codecs(), {"h264", "aac"})
        self.assertEqual(rec.tags[1].timestamp, 0)
        frames = [t for t in rec.media(flv.TAG_VIDEO) if t.payload[1] == 1]
        # Video starts on a keyframe (audio may lead it by a frame).
        self.assertEqual(frames[0].payload[0] >> 4, 1)
        self.assertLess(frames[0].timestamp, 100)
        self.assert_close(rec.metadata["duration"], rec.last_timestamp, delta=0.2)
        self.assert_close(rec.probe_duration(), rec.metadata["duration"], delta=0.002)
        self.assertEqual(rec.metadata["filesize"], float(len(rec.data)))


class AcceptanceTests(RecordingTestCase):
    def test_ten_second_publish_gives_one_finalized_seekable_file(self) -> None:
        started = datetime.now(UTC)
        pub, _ = publish(self.server.url("acceptance"), 10, gop_seconds=1)
        self.spawned(pub)
        self.assertEqual(finish(pub), 0)
        (event,) = self.wait_finalized("live/acceptance")
        (name,) = self.files()
        match = NAME.match(name)
        self.assertIsNotNone(match, name)
        self.assertEqual(match["stream"], "acceptance")
        stamp = datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        self.assertLess(abs((stamp - started).total_seconds()), 30)
        path = os.path.join(self.record_dir, name)
        initialized = self.server.wait_for_msg("recorder initialized", stream_key="live/acceptance")
        self.assertEqual(initialized["file"], path)
        self.server.wait_for_msg("recording started", stream_key="live/acceptance", file=path)
        rec = Recording(path)
        self.assertEqual((event["file"], event["bytes"]), (path, len(rec.data)))
        self.assertEqual(event["duration"], rec.metadata["duration"])

        # Codecs, and a duration from the file's own metadata within 0.2 s of what was published.
        self.assertEqual(rec.codecs(), {"h264", "aac"})
        self.assert_close(rec.metadata["duration"], 10.0, delta=0.2)
        self.assert_close(rec.probe_duration(), 10.0, delta=0.2)
        self.assert_plays_alone(rec)
        self.assertEqual(rec.metadata["width"], 640.0)
        self.assertEqual(rec.metadata["videocodecid"], 7.0)

        remux = remux_to_mp4(path, self.tmp)
        self.assertEqual((remux.returncode, remux.stderr), (0, ""))

        # The keyframe index points at the keyframe tags, and seeking uses it.
        keyframes = {t.offset: t.timestamp / 1000 for t in rec.keyframes()}
        index = rec.metadata["keyframes"]
        for when, pos in zip(index["times"], index["filepositions"], strict=True):
            self.assertEqual(keyframes[int(pos)], when)
        self.assertEqual(len(set(index["filepositions"])), len(keyframes))
        # ffmpeg keeps whole seconds of the index's times, so it may land just after 5 s rather than before.
        landed, is_key = rec.first_video_packet_after_seek(5.0)
        self.assertTrue(is_key)
        self.assert_close(landed, 5.0, delta=1.0 + 0.05)

    def test_three_keys_recorded_while_three_players_watch(self) -> None:
        keys = ["one", "two", ".hidden/x..y"]
        publishers = [self.spawned(publish(self.server.url(key), 4)[0]) for key in keys]
        for key in keys:
            self.server.wait_for_msg("recording started", stream_key=f"live/{key}")
        players = [FfmpegPlayer(self.server.url(key)) for key in keys]
        for player in players:
            self.addCleanup(player.kill)
        for player in players:
            player.wait_frames(30)
        for pub in publishers:
            self.assertEqual(finish(pub), 0)
        for player in players:
            player.finish()
            self.assertEqual(player.errors(), [])
        events = {key: self.wait_finalized(f"live/{key}")[0] for key in keys}
        self.assertEqual(len(self.files()), 3)
        for key, event in events.items():
            path = event["file"]
            # An odd stream name still makes a plain file right inside the directory.
            self.assertEqual(os.path.dirname(path), self.record_dir)
            self.assertFalse(os.path.basename(path).startswith("."))
            rec = Recording(path)
            self.assert_plays_alone(rec)
            self.assert_close(rec.metadata["duration"], 4.0, delta=0.3, msg=key)


class StopTests(RecordingTestCase):
    def test_sigkill_leaves_a_file_that_plays_up_to_the_last_second(self) -> None:
        pub, progress = publish(self.server.url("crash"), 20)
        self.spawned(pub)
        self.server.wait_for_msg("recording started", stream_key="live/crash")
        progress.wait_seconds(8.0)
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(20)
        (name,) = self.files()
        rec = Recording(os.path.join(self.record_dir, name))
        # Whole tags only, up to within a second of the kill.
        self.assertGreaterEqual(rec.last_timestamp, 7.0)
        result = run([require("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-t", "7", "-i", rec.path,
                      "-f", "null", "-"], 60)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        # Never finalized, but its metadata was patched as it grew: roughly how long it is.
        self.assert_close(rec.metadata["duration"], rec.last_timestamp, delta=1.5)
        self.assertGreater(rec.probe_duration(), 6.0)

    def test_sigterm_finalizes_the_open_file(self) -> None:
        pub, progress = publish(self.server.url("term"), 20)
        self.spawned(pub)
        self.server.wait_for_msg("recording started", stream_key="live/term")
        progress.wait_seconds(3.0)
        self.server.signal(signal.SIGTERM)
        # twistd stops cleanly, then ends itself with the signal it got.
        self.assertIn(self.server.process.wait(30), (0, -signal.SIGTERM))
        self.assertEqual(self.server.errors(), [])
        (event,) = self.server.messages("recording finalized")
        rec = Recording(event["file"])
        self.assertEqual(rec.trailing, 0)
        self.assertGreater(rec.last_timestamp, 2.5)
        self.assertEqual(rec.metadata["duration"], rec.last_timestamp)
        self.assertEqual(rec.metadata["filesize"], float(len(rec.data)))
        self.assertNotEqual(rec.metadata["keyframes"]["filepositions"][0], 0.0)
        self.assertEqual(decode_file(rec.path), [])


class SegmentByIntervalTests(RecordingTestCase):
    server_args = ("--record-interval", "2")

    def test_segments_play_alone_and_add_up(self) -> None:
        pub, _ = publish(self.server.url("seg"), 7, gop_seconds=1)
        self.spawned(pub)
        self.assertEqual(finish(pub), 0)
        started = self.server.messages("recording started")
        events = self.wait_finalized("live/seg", len(started))
        self.assertGreaterEqual(len(started), 3)
        self.assertEqual([e["file"] for e in events], [e["file"] for e in started])
        self.assertEqual(len(self.files()), len(started))
        durations = []
        for event in events:
            rec = Recording(event["file"])
            self.assert_plays_alone(rec)
            durations.append(rec.metadata["duration"])
        for duration in durations[:-1]:
            self.assertTrue(2.0 <= duration <= 3.0 + 0.05, durations)
        self.assert_close(sum(durations), 7.0, delta=0.3)


class SegmentBySizeTests(RecordingTestCase):
    server_args = ("--record-max-size", "100000")

    def test_segments_play_alone_and_add_up(self) -> None:
        pub, _ = publish(self.server.url("seg"), 6, gop_seconds=1)
        self.spawned(pub)
        self.assertEqual(finish(pub), 0)
        started = self.server.messages("recording started")
        events = self.wait_finalized("live/seg", len(started))
        self.assertGreaterEqual(len(started), 2)
        total = 0.0
        for i, event in enumerate(events):
            rec = Recording(event["file"])
            self.assert_plays_alone(rec)
            total += rec.metadata["duration"]
            if i < len(events) - 1:
                self.assertGreaterEqual(len(rec.data), 100000)
                self.assertLess(rec.keyframes()[-1].offset, 100000)
        self.assert_close(total, 6.0, delta=0.3)


class DiskTroubleTests(RecordingTestCase):
    disk = "full:150000"

    def start_server(self) -> ServerProcess:
        os.makedirs(self.record_dir)
        return DoubleDiskServer(self.record_dir, self.disk, self.tmp).start()


class DiskFullTests(DiskTroubleTests):
    disk = "full:150000"

    def test_full_disk_stops_the_recording_not_the_viewers(self) -> None:
        pub, _ = publish(self.server.url("full"), 6)
        self.spawned(pub)
        self.server.wait_for_msg("recording started", stream_key="live/full")
        player = FfmpegPlayer(self.server.url("full"))
        self.addCleanup(player.kill)
        error = self.server.wait_for_msg("recording failed", stream_key="live/full")
        self.assertEqual(error["level"], "error")
        self.assertIn("ENOSPC", error["cause"])
        self.assertEqual(os.path.dirname(error["file"]), self.record_dir)
        self.assertEqual(finish(pub), 0)
        self.assertEqual(player.finish(), 0)
        # The player saw the stream to its end, well past the failure.
        self.assertEqual(player.errors(), [])
        self.assertGreater(player.media_seconds, 4.0)
        rec = Recording(error["file"])
        self.assertLessEqual(len(rec.data), 150000)
        self.assertEqual(error["bytes"], len(rec.data))
        self.assertEqual(rec.trailing, 0)
        self.assertEqual(decode_file(rec.path), [])
        self.assert_close(rec.metadata["duration"], rec.last_timestamp, delta=0.05)
        self.assertEqual(rec.metadata["filesize"], float(len(rec.data)))
        self.assert_close(rec.probe_duration(), rec.metadata["duration"], delta=0.002)
        self.assertEqual(self.server.messages("recording finalized"), [])


class SlowDiskTests(DiskTroubleTests):
    disk = "stall:120000:3"

    def test_stalled_disk_does_not_delay_a_live_player(self) -> None:
        pub, _ = publish(self.server.url("slow"), 8)
        self.spawned(pub)
        self.server.wait_for_msg("recording started", stream_key="live/slow")
        player = RtmpdumpPlayer(self.server.url("slow"), os.path.join(self.tmp, "played.flv"))
        self.addCleanup(player.kill)
        stalled = self.server.wait_for_msg("test disk stalled")
        resumed = self.server.wait_for_msg("test disk resumed")
        self.assertEqual(finish(pub), 0)
        (event,) = self.wait_finalized("live/slow")
        player.kill()
        arrivals = [when for when, _, _ in player.video]
        start, end = stalled["monotonic"], resumed["monotonic"]
        self.assertGreaterEqual(end - start, 2.9)
        during = [t for t in arrivals if start + 0.25 < t < end - 0.25]
        # About 30 frames a second kept arriving while the writer thread was stuck in write().
        self.assertGreaterEqual(len(during), int(0.8 * 30 * (end - start - 0.5)))
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        self.assertLess(max(gaps), 0.5)
        # Nothing was lost: the backlog was written once the disk came back.
        rec = Recording(event["file"])
        self.assert_plays_alone(rec)
        self.assert_close(rec.metadata["duration"], 8.0, delta=0.3)

