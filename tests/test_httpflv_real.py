"""HTTP-FLV players (``GET /APP/NAME.flv``) of a real ``twistd -n rtmpd --http``, with real ffmpegs."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.flv import FLVReader, encode_header
from tests.support import ServerProcess, ffmpeg_publish, require
from tests.test_access_real import SECRET
from tests.test_relay_real import FfmpegPlayer, rss_kib

VIDEO = 9


def _kill(process) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class HTTPFLVTestCase(SynchronousTestCase):
    def start(self, *args: str) -> ServerProcess:
        require("ffmpeg")
        server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", *args, log_level="info").start()
        self.addCleanup(server.stop)
        self.server = server
        self.http = server.port_of("HTTP server")
        return server

    def flv_url(self, key: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.http}/live/{key}.flv" + (f"?{query}" if query else "")

    def publish(self, key: str, seconds: float, **kwargs):
        process = ffmpeg_publish(self.server.url(key), seconds, size="320x240", **kwargs)
        self.addCleanup(_kill, process)
        self.server.wait_for_msg("Codecs detected", 30, stream_key=f"live/{key}")
        return process


class HTTPFLVPlayTests(HTTPFLVTestCase):
    def test_ffmpeg_decodes_ten_seconds_cleanly(self) -> None:
        self.start()
        self.publish("cam", 30)
        player = FfmpegPlayer(self.flv_url("cam"))
        self.addCleanup(player.kill)
        player.wait_frames(300, 30)
        player.kill()
        self.assertEqual(player.errors(), [])
        started = self.server.wait_for_msg("HTTP-FLV player started", 5, stream_key="live/cam")
        self.assertTrue(started["conn_id"].startswith("c"))

    def test_late_joiner_starts_at_once_from_a_keyframe(self) -> None:
        self.start()
        self.publish("late", 30, gop_seconds=4)
        time.sleep(2.5)  # let the stream run into its GOP, so a late joiner needs the cache
        t0 = time.monotonic()
        with urllib.request.urlopen(self.flv_url("late"), timeout=10) as response:
            self.assertEqual(response.headers["Content-Type"], "video/x-flv")
            self.assertEqual(response.headers["Access-Control-Allow-Origin"], "*")
            reader = FLVReader()
            tags = []
            while not any(t.tag_type == VIDEO and t.payload[0] >> 4 == 1 and t.payload[1] == 1 for t in tags):
                tags += reader.feed(response.read1(65536))
            first_frame_after = time.monotonic() - t0
            video = [t for t in tags if t.tag_type == VIDEO]
        self.assertLess(first_frame_after, 1.0, "the first keyframe came from the GOP cache, not the encoder")
        self.assertEqual(video[0].payload[:2], b"\x17\x00", "AVC sequence header first")
        self.assertEqual(video[1].payload[:2], b"\x17\x01", "then a keyframe")
        self.assertEqual(tags[0].tag_type, 18, "onMetaData first")

    def test_unpublish_ends_the_flv(self) -> None:
        self.start()
        publisher = self.publish("short", 3)
        with urllib.request.urlopen(self.flv_url("short"), timeout=20) as response:
            received = response.read()  # returns once the server ends the response
        self.assertEqual(publisher.wait(30), 0)
        self.assertTrue(received.startswith(b"FLV\x01"))
        self.server.wait_for_msg("HTTP-FLV player ended", 10, reason="stream unpublished")


class HTTPFLVBadClientTests(HTTPFLVTestCase):
    def test_stalled_client_is_dropped_and_others_play_on(self) -> None:
        self.start("--play-timeout", "2", "--max-queue-bytes", "200000")
        # 8 Mb/s of constant bitrate (filler NALs) fills the stalled socket's buffers in a few seconds.
        cbr = [
            "-b:v",
            "8M",
            "-minrate",
            "8M",
            "-maxrate",
            "8M",
            "-bufsize",
            "2M",
            "-x264-params",
            "nal-hrd=cbr",
        ]
        self.publish("busy", 40, extra=cbr)
        stalled = socket.socket()
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", self.http))
        stalled.sendall(b"GET /live/busy.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        started = self.server.wait_for_msg("HTTP-FLV player started", 10, stream_key="live/busy")
        player = FfmpegPlayer(self.flv_url("busy"))
        self.addCleanup(player.kill)
        timed_out = self.server.wait_for_msg("Player timed out", 30, conn_id=started["conn_id"])
        self.assertGreaterEqual(timed_out["stalled_seconds"], 2)
        self.server.wait_for_msg("Slow subscriber dropping frames", 1, conn_id=started["conn_id"])
        player.wait_frames(180, 40)
        player.kill()
        self.assertEqual(player.errors(), [])

    def test_connect_disconnect_cycles_leak_no_descriptors(self) -> None:
        server = self.start()
        self.publish("cycle", 60)
        pid = server.process.pid
        for _ in range(5):  # warm up: lazily created descriptors
            with urllib.request.urlopen(self.flv_url("cycle"), timeout=10) as response:
                response.read(1000)
        before = open_fds(pid)
        rss_before = rss_kib(pid)
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", self.http)) as s:
                s.sendall(b"GET /live/cycle.flv HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(1000)
        # Every one of them ended (the server logs it), then the count is back where it was.
        deadline = time.monotonic() + 20
        while len(server.messages("HTTP-FLV player ended")) < 205 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(len(server.messages("HTTP-FLV player ended")), 205)
        self.assertLessEqual(open_fds(pid), before)
        self.assertLess(rss_kib(pid) - rss_before, 8 * 1024, "RSS grew by more than 8 MiB over 200 players")

    def test_bad_requests_get_clean_errors(self) -> None:
        self.start()
        for path, status in (
            ("/live/.flv", 404),
            ("/live/a/b.flv", 404),
            ("/live/x.mp3", 404),
            ("/live/" + "n" * 300 + ".flv", 404),
        ):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5)
            self.assertEqual(caught.exception.code, status, path)
            self.assertEqual(json.load(caught.exception)["error"]["status"], status)
        self.assertEqual(self.server.errors(), [])


class HTTPFLVAccessTests(HTTPFLVTestCase):
    def test_signed_url_required_and_accepted(self) -> None:
        secrets = os.path.join(self.mktemp())
        os.makedirs(secrets)
        path = os.path.join(secrets, "secrets.txt")
        with open(path, "w") as f:
            f.write(f"live {SECRET}\n")
        from rtmpd.access.signed import signed_query

        self.start("--auth-secrets", path)
        exp = int(time.time()) + 120
        publish_query = signed_query(SECRET.encode(), "publish", "live", "cam", exp)
        process = ffmpeg_publish(f"{self.server.url('cam')}?{publish_query}", 30, size="320x240")
        self.addCleanup(_kill, process)
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/cam")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(self.flv_url("cam"), timeout=5)
        self.assertEqual(caught.exception.code, 403)
        self.assertIn("signature", json.load(caught.exception)["error"]["message"])
        play_query = signed_query(SECRET.encode(), "play", "live", "cam", exp)
        with urllib.request.urlopen(self.flv_url("cam", play_query), timeout=10) as response:
            self.assertTrue(response.read(3) == b"FLV")


class WebSocketClient:
    """A minimal WebSocket client for the test: the opening handshake, then unmasked server frames."""

    def __init__(self, port: int, path: str) -> None:
        import base64

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0

    def messages(self, count: int) -> list[tuple[int, bytes]]:
        """The next ``count`` frames as (opcode, payload)."""
        out = []
        while len(out) < count:
            frame = self._frame()
            if frame is None:
                break
            out.append(frame)
        return out

    def _need(self, size: int) -> bool:
        while len(self.buffer) < size:
            data = self.sock.recv(65536)
            if not data:
                return False
            self.buffer += data
        return True

    def _frame(self) -> tuple[int, bytes] | None:
        if not self._need(2):
            return None
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        assert not self.buffer[1] & 0x80, "server frames are not masked"
        offset = 2
        if length == 126:
            self._need(4)
            length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
        elif length == 127:
            self._need(10)
            length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
        if not self._need(offset + length):
            return None
        payload, self.buffer = self.buffer[offset : offset + length], self.buffer[offset + length :]
        return opcode, payload

    def close(self) -> None:
        self.sock.close()


class WebSocketFLVTests(HTTPFLVTestCase):
    def test_websocket_flv_one_tag_per_message_from_a_keyframe(self) -> None:
        self.start()
        self.publish("ws", 30)
        client = WebSocketClient(self.http, "/live/ws.flv")
        self.addCleanup(client.close)
        self.assertEqual(client.status, 101)
        frames = client.messages(60)
        self.assertEqual({opcode for opcode, _ in frames}, {2}, "binary messages only")
        self.assertEqual(frames[0][1], encode_header(True, True), "the FLV header first, alone")
        reader = FLVReader()
        tags = []
        for _, payload in frames:
            got = reader.feed(payload)
            self.assertEqual(len(got), 0 if payload is frames[0][1] else 1, "one whole tag per message")
            tags += got
        video = [t for t in tags if t.tag_type == VIDEO]
        self.assertEqual(video[0].payload[:2], b"\x17\x00")
        self.assertEqual(video[1].payload[:2], b"\x17\x01")
        started = self.server.wait_for_msg("WebSocket-FLV player started", 5, stream_key="live/ws")
        client.close()
        self.server.wait_for_msg("WebSocket-FLV player ended", 10, conn_id=started["conn_id"])

    def test_refused_and_unknown_websocket_plays(self) -> None:
        self.start("--auth-keys", self._keys())  # a key file with play lines: plays need a viewer key
        self.assertEqual(WebSocketClient(self.http, "/live/ws.flv").status, 403)
        self.assertEqual(WebSocketClient(self.http, "/live/a/b/c.flv").status, 404)
        self.assertEqual(self.server.errors(), [])

    def _keys(self) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "keys.txt")
        with open(path, "w") as f:
            f.write("live pub-key-1 name=show\nlive view-key-1 play name=show\n")
        return path
