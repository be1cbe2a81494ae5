"""Relay acceptance with real clients against ``twistd -n rtmpd``.

ffmpeg, rtmpdump (librtmp) and GStreamer publish and play real H.264 + AAC
streams through the server; every player decodes what it receives, and a
decoder error fails the test. Where a real client cannot do what a check
needs (stay connected across an unpublish, stop reading on demand), the
client is ``rtmpd.testing.RTMPTestClient`` over a real TCP connection,
driven by blocking socket reads (``SocketRTMPClient``).

The helper classes here are also used by ``tests/test_bad_input.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.messages import MessageType
from rtmpd.testing import RTMPTestClient
from tests.support import (
    ServerProcess,
    ffmpeg_publish,
    ffprobe_streams,
    gst_require,
    require,
    run,
)

KEYFRAME_INTERVAL = 2.0
FPS = 30


# -- real players ------------------------------------------------------------------


class PlayerProcess:
    """A real client process read by threads: ``finish`` waits for it, ``kill`` ends it."""

    #: What the process is, for messages.
    name = "player"
    process: subprocess.Popen
    _threads: list[threading.Thread]

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit (it does when the stream ends); its exit status."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"{self.name} still running after {timeout}s") from None
        for thread in self._threads:
            thread.join(10)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class FfmpegPlayer(PlayerProcess):
    """ffmpeg playing a URL into the null muxer, decoding every audio and video frame.

    Progress (``-progress``) is read by a thread and timestamped, so a test
    can tell how many frames were decoded and how much media time, and when.
    The log runs at ``level+verbose``: every line carries its level, which is
    how decoder errors are told apart from ffmpeg's end-of-run statistics.
    """

    name = "ffmpeg player"

    _INPUT_STATS = re.compile(r"Input stream #\d+:\d+ \((audio|video)\): \d+ packets read \(\d+ bytes\); "
                              r"(\d+) frames decoded")
    _BAD_LEVELS = ("[error]", "[fatal]", "[panic]", "[warning]")

    def __init__(self, url: str, *, showinfo: bool = False, rw_timeout: float = 10.0) -> None:
        cmd = [require("ffmpeg"), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+verbose",
               "-rw_timeout", str(int(rw_timeout * 1_000_000)), "-i", url]
        if showinfo:
            cmd += ["-vf", "showinfo"]
        cmd += ["-progress", "pipe:1", "-stats_period", "0.05", "-f", "null", "-"]
        self.started = time.monotonic()
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        stdin=subprocess.DEVNULL)
        #: (monotonic time, video frames decoded, media seconds) at each progress report.
        self.progress: list[tuple[float, int, float]] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._read_progress, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_progress(self) -> None:
        assert self.process.stdout is not None
        fields: dict[str, str] = {}
        for line in self.process.stdout:
            key, _, value = line.strip().partition("=")
            fields[key] = value
            if key == "progress":
                frames = int(fields.get("frame", "0") or 0)
                out_us = fields.get("out_time_us", "N/A")
                seconds = int(out_us) / 1e6 if out_us.lstrip("-").isdigit() else 0.0
                with self._changed:
                    self.progress.append((time.monotonic(), frames, max(seconds, 0.0)))
                    self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))

    @property
    def frames(self) -> int:
        with self._changed:
            return self.progress[-1][1] if self.progress else 0

    @property
    def media_seconds(self) -> float:
        with self._changed:
            return self.progress[-1][2] if self.progress else 0.0

    def first_frame_after(self) -> float | None:
        """Seconds from process start to the first report of a decoded video frame."""
        with self._changed:
            for when, frames, _ in self.progress:
                if frames > 0:
                    return when - self.started
        return None

    def wait_frames(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` video frames have been decoded; AssertionError on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.progress and self.progress[-1][1] >= count):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._threads[0].is_alive()):
                    raise AssertionError(f"ffmpeg decoded {self.frames} < {count} frames; stderr tail:\n"
                                         + "\n".join(self.stderr[-15:]))
                self._changed.wait(min(remaining, 0.2))

    def errors(self) -> list[str]:
        """Lines logged at warning level or worse (decoder errors, demuxer complaints)."""
        return [line for line in self.stderr if any(level in line for level in self._BAD_LEVELS)]

    def decoded(self) -> dict[str, int]:
        """Frames decoded per kind ({"audio": n, "video": m}), from ffmpeg's end-of-run statistics."""
        counts: dict[str, int] = {}
        for line in self.stderr:
            match = self._INPUT_STATS.search(line)
            if match:
                counts[match.group(1)] = int(match.group(2))
        return counts

    def showinfo_frames(self) -> list[str]:
        return [line for line in self.stderr if "Parsed_showinfo" in line and " n:" in line]


class RtmpdumpPlayer(PlayerProcess):
    """rtmpdump (librtmp) playing a live URL to stdout; the FLV is parsed as it arrives.

    The arrival time of each video tag is noted, and the whole FLV is written
    to ``path`` for decoding with ffmpeg afterwards.
    """

    name = "rtmpdump"

    def __init__(self, url: str, path: str, *, timeout: int = 10) -> None:
        self.path = path
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [require("rtmpdump"), "-q", "-r", url, "--live", "-m", str(timeout), "-o", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        #: (monotonic time, FLV timestamp ms, is keyframe) of each video frame (sequence headers left out).
        self.video: list[tuple[float, int, bool]] = []
        self.bytes = 0
        self._threads = [threading.Thread(target=self._read, daemon=True)]
        self._threads[0].start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        stream = self.process.stdout
        with open(self.path, "wb") as out:
            def take(n: int) -> bytes:
                data = stream.read(n)
                out.write(data)
                self.bytes += len(data)
                return data

            if len(take(13)) < 13:  # FLV header + first PreviousTagSize
                return
            while True:
                header = take(11)
                if len(header) < 11:
                    return
                size = int.from_bytes(header[1:4], "big")
                timestamp = int.from_bytes(header[4:7], "big") | header[7] << 24
                body = take(size + 4)
                if len(body) < size + 4:
                    return
                # AVC video: byte 1 is the AVCPacketType; 1 is a coded frame (0 the sequence header).
                if header[0] == 9 and size >= 2 and body[1] == 1:
                    self.video.append((time.monotonic(), timestamp, body[0] >> 4 == 1))

    def first_video_after(self) -> float | None:
        return self.video[0][0] - self.started if self.video else None



def decode_file(path: str) -> list[str]:
    """Decode a media file with ffmpeg; the error lines it printed (none means a clean decode)."""
    ffmpeg = require("ffmpeg")
    result = run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"], 60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0 and not lines:
        lines = [f"ffmpeg exited with {result.returncode}"]
    return lines


class GstPlayer(PlayerProcess):
    """GStreamer ``rtmp2src`` playing a URL, decoding with avdec_h264 and avdec_aac into counting fakesinks.

    ``-v`` makes each fakesink print a ``last-message = chain`` line per
    decoded buffer; ``GST_DEBUG=libav:2`` makes libav's decoder errors and
    warnings appear on stderr.
    """

    name = "gst-launch"

    def __init__(self, url: str) -> None:
        launch = gst_require("rtmp2src", "flvdemux", "h264parse", "avdec_h264", "aacparse", "avdec_aac")
        pipeline = (f"rtmp2src location={url} ! flvdemux name=demux "
                    "demux.video ! queue ! h264parse ! avdec_h264 "
                    "! fakesink name=vsink silent=false sync=false "
                    "demux.audio ! queue ! aacparse ! avdec_aac "
                    "! fakesink name=asink silent=false sync=false")
        env = dict(os.environ, GST_DEBUG="libav:2", GST_DEBUG_NO_COLOR="1")
        self.process = subprocess.Popen([launch, "-v", *pipeline.split()], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
        # Read as it comes: a full pipe would block the sinks, and a stalled player is not the point here.
        self._out: list[str] = []
        self._err: list[str] = []
        self._threads = [threading.Thread(target=self._out.extend, args=(self.process.stdout,), daemon=True),
                         threading.Thread(target=self._err.extend, args=(self.process.stderr,), daemon=True)]
        for thread in self._threads:
            thread.start()

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def buffers(self, sink: str) -> int:
        return self.stdout.count(f"GstFakeSink:{sink}: last-message = chain")

    def errors(self) -> list[str]:
        lines = (self.stdout + self.stderr).splitlines()
        return [line for line in lines if " libav " in line or line.startswith(("ERROR", "WARNING"))]


def gst_publish(url: str, seconds: float, *, width: int = 480, height: int = 270) -> subprocess.Popen:
    """GStreamer publishing videotestsrc (x264enc) + audiotestsrc (avenc_aac) through ``rtmp2sink``.

    The sources are not live: ``rtmp2sink`` syncs on the clock, so the stream
    still goes out in real time (as ``ffmpeg -re``). With live sources,
    ``flvmux`` (an aggregator) stops waiting for a track that is late and
    muxes the other: on a loaded machine the late track's frames then go out
    with the timestamp of the last tag ("Got backwards dts!"), several frames
    with one timestamp, which a player rightly reports.
    """
    launch = gst_require("videotestsrc", "x264enc", "h264parse", "flvmux", "rtmp2sink", "audiotestsrc",
                         "avenc_aac", "aacparse")
    video_buffers = int(seconds * FPS)
    audio_buffers = int(seconds * 48000 / 1024)
    keyint = int(KEYFRAME_INTERVAL * FPS)
    pipeline = (f"videotestsrc num-buffers={video_buffers} "
                f"! video/x-raw,width={width},height={height},framerate={FPS}/1 "
                f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={keyint} "
                "! h264parse ! flvmux streamable=true name=mux ! rtmp2sink location=" + url + " "
                f"audiotestsrc num-buffers={audio_buffers} samplesperbuffer=1024 "
                "! audio/x-raw,rate=48000 ! audioconvert ! avenc_aac ! aacparse ! mux.")
    return subprocess.Popen([launch, "-q", *pipeline.split()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


# -- an in-process RTMP client over a real socket ---------------------------------------


class ConnectionClosed(Exception):
    """The server closed (or reset) the connection."""


class _SocketTransport:
    """The part of ITransport that RTMPTestClient uses, over a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.sock.sendall(b"".join(data))

    def loseConnection(self) -> None:
        self.sock.close()

    abortConnection = loseConnection

    def getPeer(self):
        return self.sock.getpeername()

    def getHost(self):
        return self.sock.getsockname()


class SocketRTMPClient:
    """``RTMPTestClient`` over a real TCP connection, driven by blocking reads (no reactor).

    Nothing is read unless the test asks (``wait``, ``pump``): a client that
    is not pumped is a player that stops reading. ``rcvbuf`` shrinks the
    socket's receive buffer (set before connecting, so the TCP window is
    small from the start) to make the server's backpressure quick.
    """

    def __init__(self, port: int, *, rcvbuf: int | None = None, connect_timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(connect_timeout)
        self.sock.connect(("127.0.0.1", port))
        self.local_port = self.sock.getsockname()[1]
        self.protocol = RTMPTestClient()
        self.closed = False
        self.protocol.makeConnection(_SocketTransport(self.sock))

    @property
    def peer_addr(self) -> str:
        """How the server's log names this connection's peer."""
        return f"127.0.0.1:{self.local_port}"

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError as e:
            self.closed = True
            raise ConnectionClosed(str(e)) from e
        if not data:
            self.closed = True
            raise ConnectionClosed("EOF")
        self.protocol.dataReceived(data)

    def wait(self, d: Deferred, timeout: float = 10.0) -> Any:
        """Read until ``d`` fires; its result (its failure is raised). AssertionError on timeout."""
        box: list[Any] = []
        d.addBoth(box.append)
        deadline = time.monotonic() + timeout
        while not box:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer from the server within {timeout}s")
            self._receive(remaining)
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]

    def pump_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout}s")
            self._receive(remaining)

    def handshake(self, timeout: float = 10.0) -> None:
        self.wait(self.protocol.handshake_done, timeout)

    def start_playing(self, name: str, app: str = "live", timeout: float = 10.0) -> int:
        """Handshake, connect, createStream and play ``name``; the message stream id."""
        self.handshake(timeout)
        self.wait(self.protocol.connect(app), timeout)
        stream_id = self.wait(self.protocol.create_stream(), timeout)
        self.wait(self.protocol.play(stream_id, name), timeout)
        return stream_id

    def wait_closed(self, timeout: float = 10.0) -> str:
        """Read (and discard) until the server closes the connection; how it ended.

        AssertionError if it is still open after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"server did not close the connection within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                self.closed = True
                return type(e).__name__
            if not data:
                self.closed = True
                return "EOF"

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- tests ----------------------------------------------------------------------------


class RealClientTestCase(SynchronousTestCase):
    """Starts a server per test; publishers and players started here are killed at cleanup."""

    server_args: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.server = ServerProcess(*self.server_args).start()
        self.addCleanup(self._stop_server)
        # Not self.mktemp(): under pytest it creates directories in the working tree.
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def _stop_server(self) -> None:
        self.server.stop()
        errors = self.server.errors()
        if errors:
            raise AssertionError(f"the server logged errors: {errors[:3]}")

    def cleanup_process(self, process: Any) -> Any:
        def kill() -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(10)
        self.addCleanup(kill)
        return process

    def publish(self, key: str, seconds: float, **kwargs: Any) -> subprocess.Popen:
        return self.cleanup_process(ffmpeg_publish(self.server.url(key), seconds, **kwargs))

    def publishers(self) -> list[dict[str, Any]]:
        """The server's "publish command" log events, in order."""
        return self.server.messages("publish command")

    def refusals(self, conn_id: str) -> list[dict[str, Any]]:
        return [e for e in self.server.messages("Command refused") if e.get("conn_id") == conn_id]

    def wait_live(self, key: str, timeout: float = 20.0, start: int = 0) -> dict[str, Any]:
        """Wait until the server has the sequence headers of ``live/KEY`` (media is flowing)."""
        return self.server.wait_for_msg("Codecs detected", timeout, start, stream_key=f"live/{key}")

    def ffmpeg_player(self, key: str, **kwargs: Any) -> FfmpegPlayer:
        player = FfmpegPlayer(self.server.url(key), **kwargs)
        self.addCleanup(player.kill)
        return player

    def rtmpdump_player(self, key: str, name: str) -> RtmpdumpPlayer:
        player = RtmpdumpPlayer(self.server.url(key), os.path.join(self.tmp, name))
        self.addCleanup(player.kill)
        return player

    def gst_player(self, key: str) -> GstPlayer:
        player = GstPlayer(self.server.url(key))
        self.addCleanup(player.kill)
        return player

    def socket_client(self, **kwargs: Any) -> SocketRTMPClient:
        client = SocketRTMPClient(self.server.port, **kwargs)
        self.addCleanup(client.close)
        return client

    def assertCleanFfmpeg(self, player: FfmpegPlayer, min_seconds: float) -> dict[str, int]:
        """ffmpeg exited 0, logged no error or warning, and decoded about ``min_seconds`` of each track."""
        status = player.finish()
        errors = player.errors()
        if errors:
            streams = [line for line in player.stderr if "Stream #" in line or "Input #" in line]
            self.fail(f"ffmpeg logged {len(errors)} errors, the first: {errors[:5]}; input: {streams}")
        self.assertEqual(status, 0, "\n".join(player.stderr[-20:]))
        decoded = player.decoded()
        self.assertGreaterEqual(decoded.get("video", 0), int(min_seconds * FPS), decoded)
        # AAC frames are 1024 samples at 48 kHz: 46.875 per second.
        self.assertGreaterEqual(decoded.get("audio", 0), int(min_seconds * 46), decoded)
        return decoded


def video_size(player: FfmpegPlayer) -> tuple[int, int] | None:
    """The video size ffmpeg reported for its input."""
    for line in player.stderr:
        match = re.search(r"Stream #0:\d+.*: Video: h264.*?, (\d+)x(\d+)", line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def flv_of(messages: list, stream_id: int) -> bytes:
    """An FLV file of the audio, video and data messages a player received on ``stream_id``."""
    from rtmpd.core.flv import encode_header, encode_tag

    out = [encode_header(True, True)]
    for message in messages:
        if message.stream_id != stream_id or message.type_id not in (8, 9, 18):
            continue
        if message.payload.startswith(b"\x02\x00\x11|RtmpSampleAccess"):
            continue
        out.append(encode_tag(message.type_id, message.timestamp, message.payload))
    return b"".join(out)


class PlayTests(RealClientTestCase):
    def test_ffmpeg_rtmpdump_and_gstreamer_play_an_ffmpeg_publisher_at_once(self) -> None:
        publisher = self.publish("multi", 5)
        self.wait_live("multi")
        ffmpeg = self.ffmpeg_player("multi")
        rtmpdump = self.rtmpdump_player("multi", "rtmpdump.flv")
        gst = self.gst_player("multi")
        self.assertEqual(publisher.wait(30), 0, publisher.stderr.read())

        self.assertCleanFfmpeg(ffmpeg, min_seconds=4)

        self.assertEqual(rtmpdump.finish(), 0)
        self.assertGreaterEqual(len(rtmpdump.video), 4 * FPS)
        self.assertTrue(rtmpdump.video[0][2], "rtmpdump's first video frame is not a keyframe")
        self.assertEqual(decode_file(rtmpdump.path), [])

        self.assertEqual(gst.finish(), 0, gst.stderr[-2000:])
        self.assertEqual(gst.errors(), [])
        self.assertGreaterEqual(gst.buffers("vsink"), 4 * FPS)
        self.assertGreaterEqual(gst.buffers("asink"), 4 * 46)

    def test_gstreamer_rtmp2sink_publishes_and_ffmpeg_plays(self) -> None:
        # The player is there before the stream: a player that took 2 s to start on a loaded machine would
        # join at the second keyframe and see only the last GOP (late joining has tests of its own).
        player = self.ffmpeg_player("gst")
        self.server.wait_for_msg("Subscriber added", stream_key="live/gst")
        publisher = self.cleanup_process(gst_publish(self.server.url("gst"), 4, width=480, height=270))
        self.assertEqual(publisher.wait(30), 0, publisher.stderr.read())
        self.assertCleanFfmpeg(player, min_seconds=3)
        self.assertEqual(video_size(player), (480, 270))

    def test_three_keys_at_once_each_player_sees_its_own(self) -> None:
        sizes = {"small": (320, 240), "medium": (480, 270), "large": (640, 360)}
        publishers = [self.publish(key, 4, size=f"{w}x{h}") for key, (w, h) in sizes.items()]
        for key in sizes:
            self.wait_live(key)
        players = {key: self.ffmpeg_player(key) for key in sizes}
        for publisher in publishers:
            self.assertEqual(publisher.wait(30), 0)
        for key, player in players.items():
            self.assertCleanFfmpeg(player, min_seconds=3)
            self.assertEqual(video_size(player), sizes[key], key)


class LateJoinTests(RealClientTestCase):
    """Joining 6.5 s into a stream with keyframes every 2 s: 1.5 s before the next keyframe.

    The first frame's arrival is timed with rtmpdump, which writes every tag
    as it arrives. (ffmpeg is not a fair stopwatch: before its first decoded
    frame it probes about 0.75 s of live media whatever the server does.)
    """

    JOIN_AT = 6.5

    def test_late_joiner_gets_codec_parameters_and_decodes_from_the_first_frame(self) -> None:
        publisher = self.publish("late", 9)
        self.wait_live("late")
        live_since = time.monotonic()
        # Waiting for a moment in the stream, not for an event: this is the test's premise.
        time.sleep(max(0.0, live_since + self.JOIN_AT - time.monotonic()))

        rtmpdump = self.rtmpdump_player("late", "late.flv")
        ffmpeg = self.ffmpeg_player("late", showinfo=True)
        with ThreadPoolExecutor(1) as pool:
            probed = pool.submit(ffprobe_streams, self.server.url("late")).result(30)
        streams = {s["codec_type"]: s for s in probed}
        video, audio = streams["video"], streams["audio"]
        self.assertEqual((video["codec_name"], video["width"], video["height"], video["pix_fmt"]),
                         ("h264", 640, 360, "yuv420p"))
        self.assertEqual(video["profile"], "Constrained Baseline")
        self.assertEqual((audio["codec_name"], audio["profile"], audio["sample_rate"], audio["channels"]),
                         ("aac", "LC", "48000", 1))

        self.assertEqual(publisher.wait(30), 0)
        self.assertEqual(rtmpdump.finish(), 0)
        first_arrival, first_timestamp, first_is_key = rtmpdump.video[0]
        self.assertTrue(first_is_key)
        # The cached GOP starts at the keyframe of 6 s, before the join.
        self.assertLessEqual(first_timestamp, self.JOIN_AT * 1000)
        self.assertGreaterEqual(first_timestamp, (self.JOIN_AT - KEYFRAME_INTERVAL) * 1000)
        # Well under one keyframe interval (without the cache it would be 1.5 s).
        self.assertLess(rtmpdump.first_video_after(), KEYFRAME_INTERVAL / 4)
        self.assertEqual(decode_file(rtmpdump.path), [])

        decoded = self.assertCleanFfmpeg(ffmpeg, min_seconds=0)
        frames = ffmpeg.showinfo_frames()
        self.assertIn("iskey:1", frames[0])
        self.assertIn("type:I", frames[0])
        # From the cached keyframe at 6 s to the end at 9 s: 90 frames (30 from the next keyframe).
        self.assertGreaterEqual(decoded["video"], int(0.9 * (9 - 6) * FPS))


class PublisherTests(RealClientTestCase):
    def test_duplicate_refused_while_first_lives_and_killed_publisher_frees_key_at_once(self) -> None:
        first = self.publish("dup", 30)
        self.wait_live("dup")
        first_conn = self.publishers()[0]["conn_id"]

        second = self.publish("dup", 3, size="320x240")
        self.assertNotEqual(second.wait(20), 0, "the second publisher was not refused")
        second_conn = self.publishers()[1]["conn_id"]
        self.assertEqual([e["code"] for e in self.refusals(second_conn)], ["NetStream.Publish.BadName"])
        self.assertIsNone(first.poll(), "the first publisher did not survive the refusal")
        player = self.ffmpeg_player("dup")
        player.wait_frames(30)
        self.assertEqual(video_size(player), (640, 360))

        mark = len(self.server.events)
        first.kill()
        killed_at = time.monotonic()
        # The key is free as soon as the server sees the connection drop, not after a publisher timeout.
        self.server.wait_for_msg("Connection closed", 10, mark, conn_id=first_conn)
        self.assertLess(time.monotonic() - killed_at, 1.0)
        third = self.publish("dup", 3, size="320x240")
        event = self.server.wait_for_msg("publish command", 10, mark, stream_key="live/dup")
        self.wait_live("dup", 10, mark)
        self.assertEqual(self.refusals(event["conn_id"]), [])
        self.assertEqual(third.wait(20), 0)
        # The player of the first publisher exits when it unpublishes; it decoded cleanly until then.
        self.assertCleanFfmpeg(player, min_seconds=1)



class IdlePublisherTests(RealClientTestCase):
    server_args = ("--publisher-timeout", "2")

    def test_idle_publisher_is_replaced_after_the_timeout(self) -> None:
        first = self.publish("idle", 30)
        self.wait_live("idle")
        first_conn = self.publishers()[0]["conn_id"]
        first.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()

        early = self.publish("idle", 3, size="320x240")
        self.assertNotEqual(early.wait(20), 0, "a publisher was accepted before the timeout")
        early_conn = self.publishers()[1]["conn_id"]
        self.assertEqual([e["code"] for e in self.refusals(early_conn)], ["NetStream.Publish.BadName"])

        self.server.wait_for_msg("Publisher timed out", 10, conn_id=first_conn)
        self.assertGreaterEqual(time.monotonic() - stopped_at, 1.8)
        mark = len(self.server.events)
        late = self.publish("idle", 4, size="320x240")
        self.wait_live("idle", 10, mark)
        player = self.ffmpeg_player("idle")
        self.assertEqual(late.wait(20), 0)
        self.assertCleanFfmpeg(player, min_seconds=2)
        self.assertEqual(video_size(player), (320, 240))


class WaitingPlayerTests(RealClientTestCase):
    def test_real_players_waiting_before_publish_receive_the_stream(self) -> None:
        ffmpeg = self.ffmpeg_player("wait")
        rtmpdump = self.rtmpdump_player("wait", "wait.flv")
        self.server.wait_for(lambda e: e.get("msg") == "Subscriber added" and e.get("total_subscribers") == 2)
        publisher = self.publish("wait", 3)
        self.assertEqual(publisher.wait(30), 0)
        self.assertCleanFfmpeg(ffmpeg, min_seconds=2.5)
        self.assertEqual(rtmpdump.finish(), 0)
        self.assertGreaterEqual(len(rtmpdump.video), int(2.5 * FPS))
        self.assertEqual(decode_file(rtmpdump.path), [])

    def test_player_survives_unpublish_and_republish(self) -> None:
        """ffmpeg, rtmpdump and rtmp2src all end their session on NetStream.Play.UnpublishNotify, as
        they do with nginx-rtmp: the player that stays is RTMPTestClient over a real connection."""
        client = self.socket_client()
        stream_id = client.start_playing("again")
        protocol = client.protocol
        marks: list[int] = []

        def until(code: str) -> None:
            d = protocol.wait_for_status(code)
            d.addCallback(lambda _: marks.append(len(protocol.messages)))
            client.wait(d, 20)

        for size in ("640x360", "320x240"):
            publisher = self.publish("again", 2.5, size=size)
            until("NetStream.Play.PublishNotify")
            until("NetStream.Play.UnpublishNotify")
            self.assertEqual(publisher.wait(20), 0)

        self.assertFalse(client.closed)
        for (start, end), size in zip([marks[0:2], marks[2:4]], [(640, 360), (320, 240)], strict=True):
            path = os.path.join(self.tmp, f"part{start}.flv")
            with open(path, "wb") as f:
                f.write(flv_of(protocol.messages[start:end], stream_id))
            video = [m for m in protocol.messages[start:end] if m.type_id == MessageType.VIDEO]
            self.assertGreaterEqual(len(video), 2 * FPS)
            streams = {s["codec_type"]: s for s in ffprobe_streams(path)}
            self.assertEqual((streams["video"]["width"], streams["video"]["height"]), size)
            self.assertEqual(decode_file(path), [])


class SlowPlayerTests(RealClientTestCase):
    """A player that stops reading must not slow the others down nor make the server grow."""

    server_args = ("--play-timeout", "5")

    def test_stalled_player_is_dropped_and_others_keep_real_time(self) -> None:
        # 8 Mb/s of constant bitrate (filler NALs) fills the stalled socket's buffers in a few seconds.
        publisher = self.publish("slow", 12, extra=["-b:v", "8M", "-minrate", "8M", "-maxrate", "8M",
                                                    "-bufsize", "2M", "-x264-params", "nal-hrd=cbr"])
        self.wait_live("slow")
        pid = self.server.process.pid
        rss_before = rss_kib(pid)
        normal = self.ffmpeg_player("slow")
        slow = self.socket_client(rcvbuf=4096)
        slow.start_playing("slow")
        slow_conn = self.server.wait_for_msg("Connection accepted", peer_addr=slow.peer_addr)["conn_id"]
        # From here on the slow client reads nothing.

        rss_peak = rss_before
        deadline = time.monotonic() + 30
        while not self.server.messages("Player timed out") and time.monotonic() < deadline:
            rss_peak = max(rss_peak, rss_kib(pid))
            time.sleep(0.2)  # sampling memory, not synchronising
        timed_out = self.server.wait_for_msg("Player timed out", 1)
        timed_out_at = time.monotonic()
        self.assertEqual(timed_out["conn_id"], slow_conn)
        self.assertGreaterEqual(timed_out["stalled_seconds"], 5)
        self.server.wait_for_msg("Slow subscriber dropping frames", 1, conn_id=slow_conn)
        self.assertIn(slow.wait_closed(10), ("EOF", "ConnectionResetError"))

        # The normal player decoded media at the wall clock's pace while the other one stalled.
        playing_for = timed_out_at - normal.started
        self.assertGreater(playing_for, 6)
        self.assertGreaterEqual(normal.media_seconds, playing_for - 1.5)
        self.assertLessEqual(normal.media_seconds, playing_for + 0.5)
        self.assertLess(rss_peak - rss_before, 50 * 1024)

        self.assertEqual(publisher.wait(30), 0)
        self.assertCleanFfmpeg(normal, min_seconds=11)
        self.assertEqual([e["conn_id"] for e in self.server.messages("Player timed out")], [slow_conn])
