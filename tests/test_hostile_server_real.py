"""Hostile clients against a live ``twistd -n rtmpd``: the server's and the relay's limits (issue 11).

Each attack runs over loopback while an ffmpeg publisher streams and an
ffmpeg player plays. Each test asserts, while the attack runs, that an
honest client completes handshake + connect in under a second and that the
player keeps real time; after it, that the attacker got a typed error or a
clean close, that the server's RSS grew by less than ``RSS_BOUND_KIB``, and
that the attack left a bounded number of warning lines, not one per message.

The late-joiner acceptance test is here too: on a 6 Mb/s 720p stream with
a 4 s GOP, a player that reads at full speed gets every frame from its
first keyframe on.
"""

from __future__ import annotations

import math
import re
import resource
import socket
import subprocess
import threading
import time
from typing import Any

from rtmpd.core.chunks import ChunkWriter
from rtmpd.core.commands import encode_command
from rtmpd.core.handshake import ClientHandshake
from rtmpd.core.messages import Message, MessageType
from rtmpd.testing import CommandFailed, status_code
from tests.support import require
from tests.test_relay_real import (
    FPS,
    ConnectionClosed,
    RealClientTestCase,
    SocketRTMPClient,
    rss_kib,
)

#: How much the server may grow while an attack runs.
RSS_BOUND_KIB = 64 * 1024
#: The honest client's budget for handshake + connect while an attack runs.
HONEST_CONNECT_SECONDS = 1.0
#: Where attackers come from (Linux routes all of 127/8 to loopback); honest clients use 127.0.0.1.
ATTACKER_ADDRESS = "127.0.0.2"


def kernel_send_buffer_max() -> int:
    """The most a TCP socket's send buffer may grow to (the third value of net.ipv4.tcp_wmem)."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


def raw_connection(port: int, source: str = ATTACKER_ADDRESS) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def handshake(sock: socket.socket) -> None:
    """The client side of the RTMP handshake over a blocking socket."""
    hs = ClientHandshake()
    sock.sendall(hs.initial())
    reply = b""
    while len(reply) < 1 + 2 * 1536:
        data = sock.recv(65536)
        if not data:
            raise ConnectionClosed("EOF during the handshake")
        reply += data
    sock.sendall(hs.receive(reply[: 1 + 2 * 1536]))


def closed_by_server(sock: socket.socket, timeout: float) -> str:
    """Read until the server closes ``sock``: "EOF" or the error's name. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the server did not close the connection within {timeout}s")
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return "EOF"
        except TimeoutError:
            continue
        except OSError as e:
            return type(e).__name__


class AttackTestCase(RealClientTestCase):
    """A stream published by ffmpeg and played by ffmpeg while each test attacks the server."""

    server_args: tuple[str, ...] = ("--play-timeout", "5")
    #: More ffmpeg options for the publisher.
    publisher_options: tuple[str, ...] = ()

    def setUp(self) -> None:
        super().setUp()
        self.publisher = self.publish("live", 90, extra=list(self.publisher_options))
        self.wait_live("live")
        self.player = self.ffmpeg_player("live")
        self.player.wait_frames(FPS // 2)
        self.pid = self.server.process.pid
        self.rss_before = rss_kib(self.pid)
        self.rss_peak = self.rss_before
        self.log_mark = len(self.server.events)

    # -- what every attack asserts ------------------------------------------------

    def honest_connect(self) -> float:
        """Seconds an honest client from 127.0.0.1 takes for handshake + connect."""
        started = time.monotonic()
        client = SocketRTMPClient(self.server.port)
        try:
            client.handshake(5)
            result = client.wait(client.protocol.connect("live"), 5)
        finally:
            client.close()
        self.assertEqual(status_code(result), "NetConnection.Connect.Success")
        return time.monotonic() - started

    def assertHonestClientServed(self) -> None:
        self.assertLess(self.honest_connect(), HONEST_CONNECT_SECONDS)
        self.sample_rss()

    def start_real_time(self) -> tuple[float, float]:
        return time.monotonic(), self.player.media_seconds

    def assertKeptRealTime(self, start: tuple[float, float]) -> None:
        """The player decoded media at the wall clock's pace since ``start`` (at least 1 s of it)."""
        wall_since, media_since = start
        self.player.wait_frames(self.player.frames + FPS // 2, timeout=10)
        elapsed = time.monotonic() - wall_since
        decoded = self.player.media_seconds - media_since
        self.assertGreaterEqual(decoded, elapsed - 1.5, f"{decoded:.2f}s of media in {elapsed:.2f}s")
        self.assertIsNone(self.publisher.poll(), "the publisher was disconnected")
        self.assertEqual(self.player.errors(), [])

    def sample_rss(self) -> None:
        self.rss_peak = max(self.rss_peak, rss_kib(self.pid))

    def assertRSSBounded(self) -> None:
        self.sample_rss()
        self.assertLess(self.rss_peak - self.rss_before, RSS_BOUND_KIB)

    def warnings_since_setup(self) -> list[dict[str, Any]]:
        return [e for e in self.server.events[self.log_mark :] if e.get("level") in ("warn", "error")]

    def wait_for_messages(self, msg: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """The server's ``msg`` events, once there are ``count`` of them: the server may close a socket
        before the test's log reader has the line it logged just before."""
        messages = self.server.messages
        self.server.wait_for(lambda e: e.get("msg") == msg and len(messages(msg)) >= count, timeout)
        return messages(msg)

    def conn_id_of(self, local_port: int, source: str = ATTACKER_ADDRESS) -> str:
        peer = f"{source}:{local_port}"
        return self.server.wait_for_msg("Connection accepted", 10, peer_addr=peer)["conn_id"]


class ConnectionLimitTests(AttackTestCase):
    """54 connections that never connect, against 64 descriptors: the limits keep the server open."""

    server_args = (
        "--play-timeout",
        "5",
        "--max-connections",
        "40",
        "--max-connections-per-address",
        "8",
        "--connect-timeout",
        "3",
    )

    def test_idle_connections_do_not_lock_out_new_clients(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (64, 64))
        start = self.start_real_time()
        attackers = []
        for _ in range(54):
            try:
                attackers.append(raw_connection(self.server.port))
            except OSError:
                break  # the kernel's accept backlog is full: a refusal all the same
        for sock in attackers[:8]:
            handshake(sock)
        self.assertGreaterEqual(len(attackers), 20)
        self.server.wait_for(lambda e: e.get("msg", "").startswith("Connection refused"), 10, self.log_mark)
        # While the attackers hold their connections:
        for _ in range(3):
            self.assertHonestClientServed()
        self.assertKeptRealTime(start)
        # The admitted attackers are dropped at the connect deadline; the others were closed at accept.
        endings = [closed_by_server(sock, 10) for sock in attackers]
        self.assertEqual(set(endings) - {"EOF", "ConnectionResetError"}, set())
        timed_out = self.wait_for_messages("Connect timed out", 8, 10)
        self.assertEqual(len(timed_out), 8)
        self.assertTrue(all(e["timeout"] == 3 for e in timed_out))
        self.assertHonestClientServed()
        refusals = [e for e in self.warnings_since_setup() if e["msg"].startswith("Connection refused")]
        self.assertEqual(len(refusals), 1, refusals)
        self.assertEqual(refusals[0]["peer_host"], ATTACKER_ADDRESS)
        self.assertEqual(refusals[0]["limit"], "max-connections-per-address")
        self.assertRSSBounded()
        for sock in attackers:
            sock.close()


class IdleTimeoutTests(AttackTestCase):
    server_args = ("--play-timeout", "5", "--idle-timeout", "2")

    def test_a_connected_client_that_neither_publishes_nor_plays_is_dropped(self) -> None:
        start = self.start_real_time()
        sock = raw_connection(self.server.port)
        self.addCleanup(sock.close)
        conn_id = self.conn_id_of(sock.getsockname()[1])
        handshake(sock)
        writer = ChunkWriter()
        sock.sendall(writer.write(3, encode_command("connect", 1, {"app": "live"})))
        for i in range(40):  # commands that are no publish or play do not keep it alive
            sock.sendall(writer.write(3, encode_command("_checkbw", 2 + i, None)))
        self.assertHonestClientServed()
        self.assertIn(closed_by_server(sock, 10), ("EOF", "ConnectionResetError"))
        event = self.server.wait_for_msg("Idle connection timed out", 5, conn_id=conn_id)
        self.assertEqual(event["timeout"], 2)
        self.assertKeptRealTime(start)
        self.assertEqual([e["msg"] for e in self.warnings_since_setup()], ["Idle connection timed out"])
        self.assertRSSBounded()


class RepeatedPlayTests(AttackTestCase):
    """``play`` over and over from a client that never reads, on an 8 Mb/s stream (GOPs of about 2 MB)."""

    publisher_options = ("-b:v", "8M", "-minrate", "8M", "-maxrate", "8M", "-bufsize", "2M",
                         "-x264-params", "nal-hrd=cbr")  # fmt: skip
    # The core's command budget (docs/security.md) would end this client before its 128th request: that
    # budget has its own attack test (tests/test_hostile_core_real.py); here the request bound is tested.
    server_args = ("--play-timeout", "5", "--command-rate", "0", "--command-byte-rate", "0")

    def test_repeated_play_neither_requeues_the_cache_nor_lasts(self) -> None:
        start = self.start_real_time()
        attacker = SocketRTMPClient(self.server.port, rcvbuf=4096)
        self.addCleanup(attacker.close)
        conn_id = self.conn_id_of(attacker.local_port, "127.0.0.1")
        stream_id = attacker.start_playing("live")
        attacker.sock.setblocking(True)
        plays = b"".join(
            attacker.protocol.writer.write(8, encode_command("play", 0, None, "live", stream_id=stream_id))
            for _ in range(200)
        )
        sender = threading.Thread(target=self._send_quietly, args=(attacker.sock, plays), daemon=True)
        sender.start()
        self.assertHonestClientServed()
        refused = self.server.wait_for_msg("Command refused", 20, conn_id=conn_id)
        self.assertEqual(refused["code"], "NetStream.Play.Failed")
        self.server.wait_for_msg("Connection closed", 20, conn_id=conn_id)
        plays_taken = [e for e in self.server.messages("play command") if e["conn_id"] == conn_id]
        # The default --max-stream-requests is 128, and createStream was one of them.
        self.assertEqual(len(plays_taken), 127)
        # Bursts of the cache only while they fit in --max-queue-bytes (4 MiB) with the unsent backlog;
        # the other plays got only the configuration.
        skipped = [
            e
            for e in self.server.messages("Late-join burst skipped: output backlog")
            if e["conn_id"] == conn_id
        ]
        self.assertTrue(skipped)
        for event in skipped:
            self.assertGreater(event["buffered_bytes"] + event["gop_bytes"], 4 * 1024 * 1024)
        # What was not skipped went to the server's buffer (at most 4 MiB) or the kernel's.
        smallest_gop = min(e["gop_bytes"] for e in skipped)
        self.assertGreater(smallest_gop, 1024 * 1024)
        bursts = len(plays_taken) - len(skipped)
        self.assertLessEqual(bursts, (4 * 1024 * 1024 + kernel_send_buffer_max()) // smallest_gop + 2)
        self.assertHonestClientServed()
        self.assertKeptRealTime(start)
        self.assertRSSBounded()
        mine = [e for e in self.warnings_since_setup() if e.get("conn_id") == conn_id]
        self.assertLessEqual(len(mine), 3, [e["msg"] for e in mine])

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # closed by the server under us: what the test waits for


class GopCacheTests(AttackTestCase):
    """A publisher that sends what would bypass the GOP cache's bounds."""

    # The media rate budget would end the flood first (it has its own test in test_hostile_core_real.py);
    # lifted here so that the GOP cache's own bounds are what is tested.
    server_args = ("--play-timeout", "5", "--gop-cache-bytes", str(2 * 1024 * 1024), "--media-rate", "0",
                   "--media-byte-rate", "0")  # fmt: skip

    def attacking_publisher(self, key: str) -> tuple[SocketRTMPClient, int]:
        attacker = SocketRTMPClient(self.server.port)
        self.addCleanup(attacker.close)
        attacker.handshake()
        attacker.wait(attacker.protocol.connect("live"))
        stream_id = attacker.wait(attacker.protocol.create_stream())
        attacker.wait(attacker.protocol.publish(stream_id, key))
        attacker.protocol.set_chunk_size(65536)
        return attacker, stream_id

    def late_join_bytes(self, key: str) -> int:
        """Media payload bytes a late joiner of ``key`` is sent in its burst."""
        joiner = SocketRTMPClient(self.server.port)
        self.addCleanup(joiner.close)
        stream_id = joiner.start_playing(key)
        received = 0
        deadline = time.monotonic() + 5
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
            before = len(joiner.protocol.messages)
            try:
                joiner._receive(0.2)
            except ConnectionClosed:
                break
            if len(joiner.protocol.messages) != before:
                quiet_since = time.monotonic()
        for message in joiner.protocol.media(stream_id):
            received += len(message.payload)
        return received

    def test_equal_timestamp_keyframes_and_empty_frames_stay_within_the_bounds(self) -> None:
        start = self.start_real_time()
        attacker, stream_id = self.attacking_publisher("gop")
        keyframe = bytes([0x17, 0x01, 0, 0, 0]) + bytes(1000)
        empty = bytes([0x27, 0x01, 0, 0, 0])
        writer = attacker.protocol.writer
        sent_at = time.monotonic()
        # 5,000 keyframes at one timestamp (5 MB: each once walked the whole cache and skipped the byte
        # bound), then 30,000 nearly empty frames (past the 20,000-message cap; once nearly free).
        flood = [writer.write(6, Message(MessageType.VIDEO, 0, stream_id, keyframe)) for _ in range(5_000)]
        flood += [writer.write(6, Message(MessageType.VIDEO, 40, stream_id, empty)) for _ in range(30_000)]
        attacker.sock.sendall(b"".join(flood))
        # A command after the flood: once it is answered, the server has handled everything before it.
        # (How fast a flood of messages is taken is the core's rate budget, not the cache's business.)
        attacker.wait(attacker.protocol.call("_checkbw"), 30)
        self.assertLess(time.monotonic() - sent_at, 10)
        # While the attacker holds its stream with the cache as it left it:
        self.assertHonestClientServed()
        self.assertLess(self.late_join_bytes("gop"), 2 * 1024 * 1024)
        self.assertKeptRealTime(start)
        self.assertRSSBounded()
        self.assertEqual(self.warnings_since_setup(), [])


class UntypedInputTests(AttackTestCase):
    """Values that once raised untyped exceptions: each gets a typed answer, the connection lives."""

    def test_bad_arguments_and_metadata_get_typed_answers(self) -> None:
        start = self.start_real_time()
        attacker = SocketRTMPClient(self.server.port)
        self.addCleanup(attacker.close)
        attacker.handshake()
        attacker.wait(attacker.protocol.connect("live"))
        for name, argument in (("FCUnpublish", ""), ("deleteStream", math.nan), ("deleteStream", math.inf)):
            with self.assertRaises(CommandFailed) as refused:
                attacker.wait(attacker.protocol.call(name, None, argument))
            self.assertEqual(refused.exception.info["code"], "NetConnection.Call.Failed")
        stream_id = attacker.wait(attacker.protocol.create_stream())
        attacker.wait(attacker.protocol.publish(stream_id, "weird"))
        # onMetaData whose sizes are not finite numbers.
        attacker.protocol.send_metadata(stream_id, {"width": math.nan, "height": math.inf, "fps": -math.inf})
        self.server.wait_for_msg("Metadata received", 10, stream_key="live/weird")
        self.assertHonestClientServed()
        # Still connected and answered.
        self.assertEqual(attacker.wait(attacker.protocol.create_stream()), stream_id + 1)
        self.assertKeptRealTime(start)
        self.assertEqual(self.warnings_since_setup(), [])


# -- late joiners ------------------------------------------------------------------------------

#: The acceptance stream: 720p30, 6 Mb/s constant bitrate, a keyframe every 4 s.
HD_SIZE, HD_BITRATE, HD_GOP_SECONDS = "1280x720", "6M", 4
FRAME_MS = 1000 / FPS


def publish_hd(url: str, seconds: float) -> subprocess.Popen:
    ffmpeg = require("ffmpeg")
    cmd = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={HD_SIZE}:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-b:v", HD_BITRATE, "-minrate", HD_BITRATE, "-maxrate", HD_BITRATE, "-bufsize", "3M",
        "-x264-params", "nal-hrd=cbr",
        "-g", str(FPS * HD_GOP_SECONDS), "-keyint_min", str(FPS * HD_GOP_SECONDS),
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
        "-f", "flv", url,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class LateJoinAtFullSpeedTests(RealClientTestCase):
    """A late joiner on a 6 Mb/s 720p stream with a 4 s GOP, reading at full speed, misses no frame.

    The joiners start when an observer (rtmpdump, playing from the start) has
    seen media time ``JOIN_AT``: 3 s into the second GOP, so the burst is about
    2.3 MB and a client that takes up to a second to send ``play`` still joins
    in that GOP.
    """

    JOIN_AT = HD_GOP_SECONDS + 3.0
    SECONDS = 18.0

    def test_late_joiner_reading_at_full_speed_gets_every_frame_from_its_first_keyframe(self) -> None:
        publisher = self.cleanup_process(publish_hd(self.server.url("hd"), self.SECONDS))
        self.wait_live("hd")
        observer = self.rtmpdump_player("hd", "observer.flv")
        deadline = time.monotonic() + 30
        while not (observer.video and observer.video[-1][1] >= self.JOIN_AT * 1000):
            self.assertLess(time.monotonic(), deadline, "the observer saw no media")
            time.sleep(0.02)  # polling the observer's reader thread, which has no event to wait on
        rtmpdump = self.rtmpdump_player("hd", "hd.flv")
        ffmpeg = self.ffmpeg_player("hd", showinfo=True)
        self.assertEqual(publisher.wait(60), 0, publisher.stderr.read() if publisher.stderr else "")
        self.assertEqual(rtmpdump.finish(), 0)
        self.assertEqual(observer.finish(), 0)
        ffmpeg.finish()
        # No late joiner was taken for a slow one (which loses frames until the next keyframe).
        self.assertEqual(self.server.messages("Slow subscriber dropping frames"), [])

        video = rtmpdump.video
        self.assertTrue(video, "rtmpdump got no video")
        self.assertTrue(video[0][2], "rtmpdump's first frame is not a keyframe")
        timestamps = [ts for _, ts, _ in video]
        # Its burst started at the GOP of 4 s: 3 s of 6 Mb/s video at once, then live.
        self.assertLessEqual(abs(timestamps[0] - HD_GOP_SECONDS * 1000), 2 * FRAME_MS, timestamps[0])
        self.assertLessEqual(max_gap(timestamps), 3 * FRAME_MS)
        self.assertGreaterEqual(timestamps[-1], (self.SECONDS - 1) * 1000, f"{len(video)} frames")

        frames = ffmpeg.showinfo_frames()
        self.assertIn("iskey:1", frames[0])
        pts = [float(re.search(r"pts_time:(-?[\d.]+)", line).group(1)) for line in frames]
        self.assertLessEqual(max_gap(pts) * 1000, 3 * FRAME_MS + 1e-3)
        # From the GOP of 4 s (or 8 s, if ffmpeg was slow to start) to the end.
        self.assertGreaterEqual(len(frames), (self.SECONDS - 2 * HD_GOP_SECONDS - 0.5) * FPS)


def max_gap(times: list[float] | list[int]) -> float:
    """The largest step between consecutive values (frame timestamps)."""
    return max(b - a for a, b in zip(times, times[1:], strict=False))
