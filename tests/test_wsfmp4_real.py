"""WebSocket-fMP4 with real clients: ffmpeg publishes, a WebSocket client collects the init segment and
10 s of fragments, and ffprobe and PyAV decode the concatenation; refusals and plain GETs get clean errors."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.http.fmp4.source import starts_with_sync_sample
from tests.support import ServerProcess, ffmpeg_publish, require
from tests.test_access_real import SECRET
from tests.test_api_real import TOKEN
from tests.test_httpflv_real import WebSocketClient, open_fds
from tests.test_relay_real import rss_kib

#: Seconds of fragments collected.
SECONDS = 10.0


def _kill(process) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def top_boxes(data: bytes) -> list[bytes]:
    kinds, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kinds.append(data[at + 4 : at + 8])
        if size < 8:
            break
        at += size
    return kinds


def tfdt(fragment: bytes, track_id: int) -> int | None:
    """The base media decode time of ``track_id`` in a fragment (a plain scan; the test's own reader)."""
    at = fragment.find(b"tfhd")
    while at >= 0:
        if int.from_bytes(fragment[at + 8 : at + 12], "big") == track_id:
            t = fragment.find(b"tfdt", at)
            version = fragment[t + 4]
            size = 8 if version == 1 else 4
            return int.from_bytes(fragment[t + 8 : t + 8 + size], "big")
        at = fragment.find(b"tfhd", at + 4)
    return None


class WebSocketFMP4Tests(SynchronousTestCase):
    def setUp(self) -> None:
        require("ffmpeg")
        self.server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", log_level="info").start()
        self.addCleanup(self.server.stop)
        self.http = self.server.port_of("HTTP server")

    def publish(self, key: str, seconds: float, gop_seconds: int = 1):
        process = ffmpeg_publish(self.server.url(key), seconds, size="320x240", gop_seconds=gop_seconds)
        self.addCleanup(_kill, process)
        self.server.wait_for_msg("Codecs detected", 30, stream_key=f"live/{key}")
        return process

    def collect(self, key: str, seconds: float) -> list[bytes]:
        client = WebSocketClient(self.http, f"/live/{key}.mp4")
        self.addCleanup(client.close)
        self.assertEqual(client.status, 101)
        messages: list[bytes] = []
        end = None
        # Until ``seconds`` of video (90 kHz) after the first fragment that has video.
        while True:
            frames = client.messages(1)
            self.assertEqual(len(frames), 1, "the connection ended early")
            opcode, payload = frames[0]
            self.assertEqual(opcode, 2, "binary messages only")
            messages.append(payload)
            start = tfdt(payload, 1) if len(messages) > 1 else None
            if start is not None:
                if end is None:
                    end = start + int(seconds * 90000)
                elif start >= end:
                    break
        client.close()
        return messages

    def test_init_then_fragments_decode_cleanly(self) -> None:
        self.publish("mp4", 40)
        messages = self.collect("mp4", SECONDS)
        self.assertEqual(top_boxes(messages[0]), [b"ftyp", b"moov"], "the init segment first, alone")
        for payload in messages[1:]:
            self.assertEqual(top_boxes(payload), [b"moof", b"mdat"], "one fragment per message")
        self.assertTrue(starts_with_sync_sample(messages[1]), "the first fragment starts at a keyframe")
        video = [m for m in messages[1:] if tfdt(m, 1) is not None]
        self.assertGreaterEqual(len(video), int(SECONDS * 30 * 0.95), "a fragment per video frame")
        path = os.path.join(self.mktemp() + ".mp4")
        with open(path, "wb") as f:
            f.write(b"".join(messages))
        self.assert_decodes(path, min_frames=int(SECONDS * 30))
        started = self.server.wait_for_msg("WebSocket-fMP4 player started", 5, stream_key="live/mp4")
        self.server.wait_for_msg("WebSocket-fMP4 player ended", 10, conn_id=started["conn_id"])
        self.assertEqual(self.server.errors(), [])

    def test_hevc_and_opus_from_enhanced_rtmp(self) -> None:
        from tests.test_ertmp_real import publish9

        process = publish9(self.server.url("hevc"), "hevc", ["opus"], seconds=40)
        self.addCleanup(_kill, process)
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/hevc")
        messages = self.collect("hevc", 5.0)
        self.assertEqual(top_boxes(messages[0]), [b"ftyp", b"moov"])
        self.assertTrue(starts_with_sync_sample(messages[1]))
        path = self.mktemp() + ".mp4"
        with open(path, "wb") as f:
            f.write(b"".join(messages))
        import av

        with av.open(path) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            self.assertEqual((video.codec_context.name, audio.codec_context.name), ("hevc", "opus"))
            frames = list(container.decode(video=0))
        self.assertGreaterEqual(len(frames), 5 * 25)
        self.assertEqual((frames[0].width, frames[0].height), (320, 240))
        self.assertTrue(frames[0].key_frame)

    def assert_decodes(self, path: str, min_frames: int) -> None:
        ffprobe = require("ffprobe")
        probe = subprocess.run(
            [ffprobe, "-v", "error", "-show_streams", "-of", "json", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(probe.stderr, "")
        streams = {s["codec_type"]: s for s in json.loads(probe.stdout)["streams"]}
        self.assertEqual(streams["video"]["codec_name"], "h264")
        self.assertEqual((streams["video"]["width"], streams["video"]["height"]), (320, 240))
        self.assertEqual(streams["audio"]["codec_name"], "aac")
        ffmpeg = require("ffmpeg")
        decoded = subprocess.run(
            [ffmpeg, "-v", "error", "-nostdin", "-i", path, "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(decoded.returncode, 0)
        self.assertEqual(decoded.stderr, "", "ffmpeg decodes every frame without an error")
        import av

        with av.open(path) as container:
            frames = [f for f in container.decode(video=0)]
        self.assertGreaterEqual(len(frames), min_frames)
        self.assertEqual((frames[0].width, frames[0].height), (320, 240))
        self.assertTrue(frames[0].key_frame)
        seconds = [float(f.time) for f in frames]
        self.assertEqual(seconds, sorted(seconds), "presentation times grow")
        self.assertGreaterEqual(seconds[-1] - seconds[0], SECONDS - 0.1)

    def test_late_joiner_starts_at_once_from_the_gop(self) -> None:
        self.publish("late", 40, gop_seconds=4)
        first = WebSocketClient(self.http, "/live/late.mp4")  # the stream's source now exists
        self.addCleanup(first.close)
        keyframe = None
        while keyframe is None:  # a keyframe fragment of the live stream (not of the first's own burst)
            got = first.messages(1)
            self.assertEqual(len(got), 1)
            if starts_with_sync_sample(got[0][1]) and len(first.messages(30)) == 30:
                keyframe = got[0][1]
        # One second into a four-second GOP: a late joiner that had to wait would get the next keyframe.
        late = WebSocketClient(self.http, "/live/late.mp4")
        self.addCleanup(late.close)
        messages = [payload for _, payload in late.messages(3)]
        self.assertEqual(top_boxes(messages[0]), [b"ftyp", b"moov"])
        self.assertEqual(messages[1], keyframe, "the late joiner starts from the cached keyframe fragment")

    def test_stalled_client_is_dropped_and_others_play_on(self) -> None:
        self.server.stop()
        self.server = ServerProcess(
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--play-timeout",
            "2",
            "--max-queue-bytes",
            "200000",
            log_level="info",
        ).start()
        self.addCleanup(self.server.stop)
        self.http = self.server.port_of("HTTP server")
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
        process = ffmpeg_publish(self.server.url("busy"), 40, size="320x240", gop_seconds=1, extra=cbr)
        self.addCleanup(_kill, process)
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/busy")
        stalled = socket.socket()
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", self.http))
        key = base64.b64encode(os.urandom(16)).decode()
        stalled.sendall(
            f"GET /live/busy.mp4 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )  # and never reads
        started = self.server.wait_for_msg("WebSocket-fMP4 player started", 10, stream_key="live/busy")
        reader = WebSocketClient(self.http, "/live/busy.mp4")
        self.addCleanup(reader.close)
        frames: list[tuple[int, bytes]] = []
        reading = threading.Thread(target=lambda: frames.extend(reader.messages(400)), daemon=True)
        reading.start()  # a reader that keeps up, while the other stalls
        self.server.wait_for_msg("Slow subscriber dropping frames", 30, conn_id=started["conn_id"])
        timed_out = self.server.wait_for_msg("Player timed out", 30, conn_id=started["conn_id"])
        self.assertGreaterEqual(timed_out["stalled_seconds"], 2)
        self.server.wait_for_msg("WebSocket-fMP4 player ended", 10, conn_id=started["conn_id"])
        # The reader got a fragment per frame all along: 4 s of video after the init and its GOP burst.
        reading.join(60)
        self.assertEqual(len(frames), 400)
        times = [tfdt(payload, 1) for _, payload in frames[1:]]
        times = [t for t in times if t is not None]
        self.assertEqual(times, sorted(times), "no fragment reordered or repeated")
        steps = {b - a for a, b in zip(times, times[1:], strict=False)}
        self.assertLessEqual(max(steps), 90000 // 10, "no gap: the reader dropped nothing")

    def test_signed_url_required_and_accepted(self) -> None:
        from rtmpd.access.signed import signed_query

        secrets = self.mktemp()
        os.makedirs(secrets)
        path = os.path.join(secrets, "secrets.txt")
        with open(path, "w") as f:
            f.write(f"live {SECRET}\n")
        self.server.stop()
        self.server = ServerProcess(
            "--http", "tcp:0:interface=127.0.0.1", "--auth-secrets", path, log_level="info"
        ).start()
        self.addCleanup(self.server.stop)
        self.http = self.server.port_of("HTTP server")
        exp = int(time.time()) + 120
        publish_query = signed_query(SECRET.encode(), "publish", "live", "cam", exp)
        process = ffmpeg_publish(f"{self.server.url('cam')}?{publish_query}", 30, size="320x240")
        self.addCleanup(_kill, process)
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/cam")
        self.assertEqual(WebSocketClient(self.http, "/live/cam.mp4").status, 403)
        play_query = signed_query(SECRET.encode(), "play", "live", "cam", exp)
        allowed = WebSocketClient(self.http, f"/live/cam.mp4?{play_query}")
        self.addCleanup(allowed.close)
        self.assertEqual(allowed.status, 101)
        self.assertEqual(top_boxes(allowed.messages(1)[0][1]), [b"ftyp", b"moov"])

    def test_connect_disconnect_cycles_leak_no_descriptors_and_free_the_muxer(self) -> None:
        self.publish("cycle", 90)
        pid = self.server.process.pid
        for _ in range(5):  # warm up: lazily created descriptors and objects
            warm = WebSocketClient(self.http, "/live/cycle.mp4")
            warm.messages(3)
            warm.close()
        self.server.wait_for(lambda e: len(self.server.messages("WebSocket-fMP4 player ended")) >= 5, 20)
        before, rss_before = open_fds(pid), rss_kib(pid)
        for _ in range(200):
            client = WebSocketClient(self.http, "/live/cycle.mp4")
            self.assertEqual(client.status, 101)
            self.assertEqual(len(client.messages(2)), 2, "the init segment and a first fragment")
            client.close()
        deadline = time.monotonic() + 30
        while len(self.server.messages("WebSocket-fMP4 player ended")) < 205 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server logs each end; there is no event to await from here
        self.assertEqual(len(self.server.messages("WebSocket-fMP4 player ended")), 205)
        self.assertEqual(
            len(self.server.messages("WebSocket-fMP4 muxer stopped")),
            len(self.server.messages("WebSocket-fMP4 muxer started")),
            "every stream's muxer is freed with its last player",
        )
        self.assertLessEqual(open_fds(pid), before)
        self.assertLess(rss_kib(pid) - rss_before, 8 * 1024, "RSS grew by more than 8 MiB over 200 players")

    def test_plain_get_refused_and_unknown_paths(self) -> None:
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{self.http}/live/x.mp4", timeout=10)
        self.assertEqual(caught.exception.code, 426)
        self.assertEqual(caught.exception.headers["Upgrade"], "websocket")
        self.assertEqual(WebSocketClient(self.http, "/live/a/b.mp4").status, 404)
        self.assertEqual(self.server.errors(), [])

    def test_unpublish_ends_the_connection(self) -> None:
        publisher = self.publish("end", 3)
        client = WebSocketClient(self.http, "/live/end.mp4")
        self.addCleanup(client.close)
        publisher.wait(30)
        frames = []
        while not frames or frames[-1][0] == 2:
            got = client.messages(1)
            self.assertEqual(len(got), 1, "the connection ended without a close frame")
            frames += got
        self.assertEqual(frames[-1][0], 8, "a close frame ends the fragments")
        self.assertEqual(int.from_bytes(frames[-1][1][:2], "big"), 1000)
        self.server.wait_for_msg("WebSocket-fMP4 player ended", 10, reason="stream unpublished")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of the Prometheus text ``text``."""
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{labels}")


class HTTPPlayersCountedTests(SynchronousTestCase):
    """HTTP-FLV, WebSocket-FLV and WebSocket-fMP4 players in the API's connections and stream detail, and
    in the metrics' connection, player and byte counts, as RTMP players are."""

    def setUp(self) -> None:
        require("ffmpeg")
        token_file = os.path.join(self.mktemp())
        with open(token_file, "w") as f:
            f.write(TOKEN)
        os.chmod(token_file, 0o600)
        self.server = ServerProcess(
            "--http", "tcp:0:interface=127.0.0.1", "--api-token-file", token_file, log_level="info"
        ).start()
        self.addCleanup(self.server.stop)
        self.http = self.server.port_of("HTTP server")
        self.base = f"http://127.0.0.1:{self.http}"

    def test_api_and_metrics_count_http_players(self) -> None:
        publisher = ffmpeg_publish(self.server.url("count"), 40, size="320x240", gop_seconds=1)
        self.addCleanup(_kill, publisher)
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/count")
        fmp4 = WebSocketClient(self.http, "/live/count.mp4")
        self.addCleanup(fmp4.close)
        wsflv = WebSocketClient(self.http, "/live/count.flv")
        self.addCleanup(wsflv.close)
        flv = urllib.request.urlopen(f"{self.base}/live/count.flv", timeout=10)
        self.addCleanup(flv.close)
        self.assertEqual(flv.read(3), b"FLV")
        self.assertEqual(len(fmp4.messages(20)), 20)
        self.assertEqual(len(wsflv.messages(20)), 20)
        kinds = {"WebSocket-fMP4", "WebSocket-FLV", "HTTP-FLV"}
        conn_ids = {
            kind: self.server.wait_for_msg(f"{kind} player started", 10, stream_key="live/count")["conn_id"]
            for kind in kinds
        }
        rows = {row["conn_id"]: row for row in get_json(f"{self.base}/api/v1/connections")["connections"]}
        for kind, conn_id in conn_ids.items():
            self.assertEqual(rows[conn_id]["roles"], [f"play live/count ({kind})"])
            self.assertEqual(rows[conn_id]["app"], "live")
            self.assertGreater(rows[conn_id]["bytes_out"], 0)
        detail = get_json(f"{self.base}/api/v1/streams/live/count")["stream"]
        self.assertEqual(detail["subscribers"], 3)
        self.assertEqual({p["conn_id"] for p in detail["players"]}, set(conn_ids.values()))
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:
            text = response.read().decode()
        self.assertEqual(metric(text, "rtmpd_players", '{app="live"}'), 3)
        self.assertEqual(metric(text, "rtmpd_connections"), 4, "the publisher and three players")
        sent = metric(text, "rtmpd_sent_bytes_total", '{app="live"}')
        self.assertGreaterEqual(sent, sum(rows[c]["bytes_out"] for c in conn_ids.values()))
        # The API drops one like any connection.
        drop = urllib.request.Request(
            f"{self.base}/api/v1/connections/{conn_ids['WebSocket-fMP4']}/drop",
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(drop, timeout=10) as response:
            self.assertEqual(response.status, 200)
        ended = self.server.wait_for_msg(
            "WebSocket-fMP4 player ended", 10, conn_id=conn_ids["WebSocket-fMP4"]
        )
        self.assertIn("dropped", ended["reason"])
        # Once they leave, their bytes stay counted and their connections count as closed.
        fmp4.close()
        wsflv.close()
        flv.close()
        for conn_id in conn_ids.values():
            self.server.wait_for(
                lambda e, c=conn_id: e.get("msg", "").endswith("player ended") and e.get("conn_id") == c, 15
            )
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:
            after = response.read().decode()
        self.assertEqual(metric(after, "rtmpd_players", '{app="live"}'), 0)
        self.assertEqual(metric(after, "rtmpd_connections"), 1)
        self.assertGreaterEqual(metric(after, "rtmpd_sent_bytes_total", '{app="live"}'), sent)
        self.assertGreaterEqual(metric(after, "rtmpd_connections_accepted_total"), 4)
