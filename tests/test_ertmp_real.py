"""Enhanced RTMP acceptance with a real modern client: ffmpeg 9 (imageio-ffmpeg) against ``twistd -n rtmpd``.

ffmpeg 9 publishes HEVC, AV1 and VP9 (with AAC or Opus) as Enhanced RTMP
tags, and a second audio track as E-RTMP v2 multitrack tags, with no
option needed. ffmpeg 9 players (one from the start, one joining 6 s in)
must decode the right codec from their first frame with no error or
warning, while the debian ffmpeg publishes and plays old-style H.264 on
another key; the server's recordings must decode in ffmpeg 9 with the
right codec and duration.

Streams are 320x240 at 25 fps with a keyframe every 2 s, encoded with the
fastest presets: these tests run on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rtmpd.core.flv import TAG_VIDEO, parse_flv
from rtmpd.core.media import parse_video
from rtmpd.core.messages import MessageType, UserControl, UserControlEvent, user_control
from rtmpd.server import service as server_module
from tests.media_samples import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, aac_frame, avc_keyframe
from tests.support import IN_CI, ServerProcess, ffmpeg_publish
from tests.test_relay_real import FfmpegPlayer, SocketRTMPClient

FPS = 25
GOP_FRAMES = 2 * FPS
SECONDS = 8
JOIN_AT = 6.0
RECONNECT = "NetConnection.Connect.ReconnectRequest"

VIDEO_ENCODERS = {
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast",
             "-x265-params", f"log-level=error:keyint={GOP_FRAMES}:min-keyint={GOP_FRAMES}:scenecut=0"],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "scd=0"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"],
}
AUDIO_ENCODERS = {"aac": ["-c:a", "aac", "-b:a", "64k"], "opus": ["-c:a", "libopus", "-b:a", "48k"]}


def ffmpeg9() -> str:
    """The ffmpeg 9 binary that imageio-ffmpeg ships; skip if it is missing (fail in CI)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # not installed, or no binary for this platform
        message = f"imageio-ffmpeg (ffmpeg 9) is not available: {e}"
        if IN_CI:
            raise AssertionError(message) from e
        raise SkipTest(message) from e


def publish9(url: str, video: str, audios: list[str], seconds: float = SECONDS) -> subprocess.Popen:
    """ffmpeg 9 publishing testsrc in ``video`` and one sine track per entry of ``audios``, in real time."""
    cmd = [ffmpeg9(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}"]
    for n in range(len(audios)):
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={440 * (n + 1)}:sample_rate=48000"]
    cmd += ["-t", str(seconds), "-map", "0:v"]
    for n in range(len(audios)):
        cmd += ["-map", f"{n + 1}:a"]
    cmd += VIDEO_ENCODERS[video]
    cmd += ["-g", str(GOP_FRAMES), "-keyint_min", str(GOP_FRAMES), "-pix_fmt", "yuv420p"]
    for n, audio in enumerate(audios):
        codec, *options = AUDIO_ENCODERS[audio]
        cmd += [f"{codec}:{n}", *options]
    cmd += ["-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


class Decode9:
    """ffmpeg 9 decoding every stream of a URL or file into the null muxer, its log kept in a file.

    The log runs at ``level+verbose`` with ``showinfo`` on the video: every
    line carries its level (so errors and warnings are told apart from the
    end-of-run statistics) and every decoded frame is described.
    """

    _INPUT = re.compile(r"Stream #0:(\d+)[^:]*: (Video|Audio): (\w+)")
    _STATS = re.compile(r"Input stream #0:(\d+) \((audio|video)\): \d+ packets read \(\d+ bytes\); "
                        r"(\d+) frames decoded; (\d+) decode errors")
    _DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+\.\d+)")
    _BAD_LEVELS = ("[error]", "[fatal]", "[panic]", "[warning]")

    def __init__(self, source: str, log_path: str, *, timeout: float = 10.0) -> None:
        cmd = [ffmpeg9(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+verbose"]
        if source.startswith("rtmp://"):
            cmd += ["-rw_timeout", str(int(timeout * 1_000_000))]
        cmd += ["-i", source, "-map", "0", "-vf", "showinfo", "-f", "null", "-"]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in finish()
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log,
                                        stdin=subprocess.DEVNULL)
        self.lines: list[str] = []

    def finish(self, timeout: float = 40.0) -> int:
        """Wait for ffmpeg to exit (a live stream ends when its publisher stops); its exit status."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"ffmpeg 9 still running after {timeout}s") from None
        finally:
            self._log.close()
        with open(self.log_path, errors="replace") as log:
            self.lines = log.read().splitlines()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def input_codecs(self) -> list[tuple[str, str]]:
        """(kind, codec) of each input stream, in ffmpeg's order (before "Stream mapping")."""
        codecs = []
        for line in self.lines:
            if "Stream mapping:" in line:
                break
            match = self._INPUT.search(line)
            if match:
                codecs.append((match.group(2).lower(), match.group(3)))
        return codecs

    def decoded(self) -> list[tuple[str, int, int]]:
        """(kind, frames decoded, decode errors) per input stream, from ffmpeg's end-of-run statistics."""
        return [(m.group(2), int(m.group(3)), int(m.group(4)))
                for m in map(self._STATS.search, self.lines) if m]

    def duration(self) -> float | None:
        for line in self.lines:
            match = self._DURATION.search(line)
            if match:
                h, m, s = match.groups()
                return int(h) * 3600 + int(m) * 60 + float(s)
        return None

    def frames(self) -> list[str]:
        return [line for line in self.lines if "Parsed_showinfo" in line and " n:" in line]

    def errors(self) -> list[str]:
        return [line for line in self.lines if any(level in line for level in self._BAD_LEVELS)]


class ERTMPRealTestCase(SynchronousTestCase):
    """A server recording into a temporary directory; everything started here is stopped at cleanup."""

    def setUp(self) -> None:
        ffmpeg9()
        # Not self.mktemp(): under pytest it creates directories in the working tree.
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-ertmp-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record_dir = os.path.join(self.tmp, "recordings")
        os.mkdir(self.record_dir)
        self.server = ServerProcess("--record-dir", self.record_dir).start()
        self.addCleanup(self._stop_server)

    def _stop_server(self) -> None:
        self.server.stop()
        errors = self.server.errors()
        if errors:
            raise AssertionError(f"the server logged errors: {errors[:3]}")

    def process(self, process: Any) -> Any:
        def kill() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.addCleanup(kill)
        return process

    def player(self, key: str, name: str) -> Decode9:
        player = Decode9(self.server.url(key), os.path.join(self.tmp, f"{name}.log"))
        self.addCleanup(player.kill)
        return player

    def assertCleanDecode(self, decoder: Decode9, kinds: list[tuple[str, str]],
                          min_video_frames: int) -> None:
        """ffmpeg 9 exited 0, saw ``kinds`` (kind, codec), decoded them with no error or warning,
        and its first video frame was a keyframe."""
        status = decoder.finish()
        tail = "\n".join(decoder.lines[-25:])
        self.assertEqual(status, 0, tail)
        self.assertEqual(decoder.errors(), [])
        self.assertEqual(sorted(decoder.input_codecs()), sorted(kinds), tail)
        decoded = decoder.decoded()
        self.assertEqual([errors for _, _, errors in decoded], [0] * len(kinds), decoded)
        videos = [frames for kind, frames, _ in decoded if kind == "video"]
        self.assertGreaterEqual(videos[0], min_video_frames, decoded)
        self.assertTrue(all(frames > 0 for kind, frames, _ in decoded if kind == "audio"), decoded)
        first = decoder.frames()[0]
        self.assertIn("iskey:1", first)
        self.assertIn("type:I", first)

    def recording_of(self, key: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.server.wait_for_msg("recording finalized", timeout, stream_key=f"live/{key}")

    def assertRecordingDecodes(self, key: str, kinds: list[tuple[str, str]], seconds: float) -> str:
        """The recording of ``key`` decodes cleanly in ffmpeg 9 with ``kinds`` and lasts ``seconds`` ± 0.2."""
        path = self.recording_of(key)["file"]
        if not os.path.isabs(path):
            path = os.path.join(self.server.cwd or os.getcwd(), path)
        decoder = Decode9(path, os.path.join(self.tmp, f"{key}-file.log"))
        self.assertCleanDecode(decoder, kinds, int((seconds - 0.2) * FPS))
        duration = decoder.duration()
        self.assertIsNotNone(duration)
        # (trial's assertAlmostEqual ignores ``delta``.)
        self.assertLessEqual(abs(duration - seconds), 0.2, f"duration {duration} s, published {seconds} s")
        return path

    def codecs_detected(self, key: str) -> dict[str, Any]:
        return self.server.wait_for_msg("Codecs detected", 30, stream_key=f"live/{key}")

    def join_late(self, key: str, live_since: float) -> Decode9:
        # Waiting for a moment in the stream, not for an event: this is the test's premise.
        time.sleep(max(0.0, live_since + JOIN_AT - time.monotonic()))
        return self.player(key, f"{key}-late")


class CodecTests(ERTMPRealTestCase):
    def run_codec(self, key: str, video: str, audio: str, expect: tuple[str, str],
                  names: tuple[str, str]) -> None:
        publisher = self.process(publish9(self.server.url(key), video, [audio]))
        detected = self.codecs_detected(key)
        live_since = time.monotonic()
        self.assertEqual((detected["videoCodec"], detected["audioCodec"]), names)
        player = self.player(key, key)
        late = self.join_late(key, live_since)
        self.assertEqual(publisher.wait(40), 0, publisher.stderr.read())

        kinds = [("video", expect[0]), ("audio", expect[1])]
        # The first player probes a moment of live media before its first frame; the late one
        # starts at the cached keyframe of 6 s (or 4 s) and gets the 2 s or so that are left.
        self.assertCleanDecode(player, kinds, min_video_frames=(SECONDS - 2) * FPS)
        self.assertCleanDecode(late, kinds, min_video_frames=int(1.5 * FPS))
        self.assertRecordingDecodes(key, kinds, SECONDS)

    def test_hevc_aac_while_old_style_h264_plays_on_another_key(self) -> None:
        legacy = self.process(ffmpeg_publish(self.server.url("h264"), SECONDS, size="320x240", rate=FPS))
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/h264")
        legacy_player = FfmpegPlayer(self.server.url("h264"))
        self.addCleanup(legacy_player.kill)
        self.run_codec("hevc", "hevc", "aac", ("hevc", "aac"), ("H265", "AAC"))
        self.assertEqual(legacy.wait(30), 0)
        self.assertEqual(legacy_player.finish(), 0)
        self.assertEqual(legacy_player.errors(), [])
        self.assertGreaterEqual(legacy_player.decoded().get("video", 0), (SECONDS - 2) * FPS)

    def test_av1_opus(self) -> None:
        self.run_codec("av1", "av1", "opus", ("av1", "opus"), ("AV1", "Opus"))

    def test_vp9_opus(self) -> None:
        self.run_codec("vp9", "vp9", "opus", ("vp9", "opus"), ("VP9", "Opus"))


class MultitrackTests(ERTMPRealTestCase):
    def test_two_audio_tracks_are_relayed_and_recorded(self) -> None:
        """ffmpeg 9 sends a second audio track as E-RTMP v2 multitrack tags (track 1)."""
        publisher = self.process(publish9(self.server.url("mt"), "hevc", ["aac", "opus"]))
        self.codecs_detected("mt")
        live_since = time.monotonic()
        track = self.server.wait_for_msg("Track detected", 30, stream_key="live/mt")
        self.assertEqual((track["kind"], track["track"], track["codec"]), ("audio", 1, "Opus"))
        player = self.player("mt", "mt")
        late = self.join_late("mt", live_since)
        self.assertEqual(publisher.wait(40), 0, publisher.stderr.read())
        kinds = [("video", "hevc"), ("audio", "aac"), ("audio", "opus")]
        self.assertCleanDecode(player, kinds, min_video_frames=(SECONDS - 2) * FPS)
        # The late joiner gets both audio tracks' configuration before any frame.
        self.assertCleanDecode(late, kinds, min_video_frames=int(1.5 * FPS))
        path = self.assertRecordingDecodes("mt", kinds, SECONDS)
        with open(path, "rb") as f:
            _, tags, _ = parse_flv(f.read())
        multitrack_audio = [t for t in tags if t.tag_type == 8 and t.payload[0] == 0x95]
        self.assertGreater(len(multitrack_audio), SECONDS * 40)


class ReconnectTests(ERTMPRealTestCase):
    def publisher(self, key: str, **connect: Any) -> tuple[SocketRTMPClient, int]:
        client = SocketRTMPClient(self.server.port)
        self.addCleanup(client.close)
        client.handshake()
        client.wait(client.protocol.connect("live", **connect))
        sid = client.wait(client.protocol.create_stream())
        client.wait(client.protocol.publish(sid, key))
        self.send_gop(client, sid, 0)
        self.server.wait_for_msg("recording started", 20, stream_key=f"live/{key}")
        return client, sid

    def send_gop(self, client: SocketRTMPClient, sid: int, ts: int) -> None:
        protocol = client.protocol
        if ts == 0:
            protocol.send_media(MessageType.AUDIO, sid, 0, AAC_SEQUENCE_HEADER)
            protocol.send_media(MessageType.VIDEO, sid, 0, AVC_SEQUENCE_HEADER)
        protocol.send_media(MessageType.VIDEO, sid, ts, avc_keyframe(ts // 1000))
        protocol.send_media(MessageType.AUDIO, sid, ts, aac_frame(ts // 1000))

    def test_sigterm_asks_publishers_that_can_reconnect_then_finishes_as_usual(self) -> None:
        moving, msid = self.publisher("moving", capsEx=1.0, fourCcList=["hvc1"])
        staying, _ = self.publisher("staying")

        self.server.signal(signal.SIGTERM)
        request = moving.wait(moving.protocol.wait_for_status(RECONNECT), 10)
        info = request.args[0]
        self.assertEqual((request.name, request.stream_id, info["level"]), ("onStatus", 0, "status"))
        # The server still takes this publisher's media while it moves (the rest of its GOP)...
        self.send_gop(moving, msid, 1000)
        # The server handles a connection's messages in order: its ping answer says the GOP got there.
        moving.protocol.send(2, user_control(UserControlEvent.PING_REQUEST, 4242))
        moving.wait(moving.protocol.wait_for(
            lambda item: item == UserControl(UserControlEvent.PING_RESPONSE, 4242)), 10)
        asked = self.server.wait_for_msg("Reconnect requested", 10)
        self.assertEqual(asked["stream_keys"], ["live/moving"])
        self.assertIsNone(self.server.process.poll())
        # ...then the publisher leaves (to the next server), and the shutdown goes on at once.
        moving.close()
        left_at = time.monotonic()
        # twistd ends a SIGTERM shutdown by re-raising the signal once the reactor has stopped.
        self.assertIn(self.server.process.wait(20), (0, -signal.SIGTERM))
        self.assertLess(time.monotonic() - left_at, server_module.RECONNECT_GRACE)
        self.server.wait_for_msg("Publishers asked to reconnect have left", 5)

        self.assertIn(staying.wait_closed(10), ("EOF", "ConnectionResetError"))
        self.assertEqual([c for c in staying.protocol.commands if c.args and isinstance(c.args[0], dict)
                          and c.args[0].get("code") == RECONNECT], [])
        # Both recordings were finalized, the moving one with the keyframe sent after the request.
        path = self.recording_of("moving", 5)["file"]
        self.recording_of("staying", 5)
        with open(os.path.join(self.server.cwd or os.getcwd(), path), "rb") as f:
            _, tags, _ = parse_flv(f.read())
        keyframes = [t for t in tags if t.tag_type == TAG_VIDEO and parse_video(t.payload).is_keyframe]
        self.assertEqual(len(keyframes), 2)
