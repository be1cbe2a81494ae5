"""LL-HLS of a real ``twistd -n rtmpd --http ... --hls`` fed by ffmpeg: read by ffmpeg, ffprobe and PyAV.

Also blocking playlist reload (waits, then answers; far ahead: 400),
preload hints, caching and CORS headers, and signed URLs (403 without,
carried to every URL with).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request

from twisted.trial.unittest import TestCase

from rtmpd.access.signed import sign
from rtmpd.core.fmp4 import AUDIO_TRACK_ID, VIDEO_TRACK_ID
from rtmpd.core.fmp4_boxes import FLAGS_SYNC
from tests.support import ServerProcess, ffmpeg_publish, ffprobe_streams, require, run
from tests.test_fmp4 import all_samples

SECRET = "hls-test-secret-0123456789"


def fetch(url: str, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body), errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def parts_of(playlist: str) -> list[tuple[int, int, str]]:
    """(msn, part, uri) of every EXT-X-PART, from the part URIs ``EPOCH.MSN.PART.m4s``."""
    out = []
    for uri in re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', playlist):
        _, msn, part = uri.split("?")[0].removesuffix(".m4s").split(".")
        out.append((int(msn), int(part), uri))
    return out


def segments_of(playlist: str) -> list[str]:
    """The URIs of the complete segments (the lines after EXTINF)."""
    lines = playlist.splitlines()
    return [lines[i + 1] for i, line in enumerate(lines) if line.startswith("#EXTINF:")]


class HLSServer:
    """A server with ``--hls`` and a publishing ffmpeg; ``base`` is the stream's HLS directory URL."""

    def __init__(
        self,
        test: TestCase,
        *args: str,
        key: str = "cam",
        seconds: float = 30,
        part_duration: str | None = "0.25",
    ) -> None:
        """``part_duration`` None: the server's default."""
        parts = ("--hls-part-duration", part_duration) if part_duration else ()
        self.server = ServerProcess(
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--hls",
            "--hls-segment-duration",
            "1",
            *parts,
            *args,
            log_level="info",
        ).start()
        test.addCleanup(self.server.stop)
        self.http = f"http://127.0.0.1:{self.server.port_of('HTTP server')}"
        self.base = f"{self.http}/hls/live/{key}/"
        self.key = key
        self.seconds = seconds
        self.publisher = None
        self.test = test

    def publish(self, url: str | None = None, **kw):
        self.publish_started = time.time()
        self.publisher = ffmpeg_publish(url or self.server.url(self.key), self.seconds, gop_seconds=1, **kw)
        self.test.addCleanup(self._end_publisher)
        self.server.wait_for_msg("Codecs detected", stream_key=f"live/{self.key}", timeout=30)
        return self.publisher

    def _end_publisher(self) -> None:
        if self.publisher is not None and self.publisher.poll() is None:
            self.publisher.kill()
            self.publisher.wait(10)


class HLSPlaybackTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.hls = HLSServer(self)
        self.hls.publish()

    def test_ffmpeg_decodes_the_live_playlist(self) -> None:
        ffmpeg = require("ffmpeg")
        url = self.hls.base + "index.m3u8"
        result = run(
            [
                ffmpeg,
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-i",
                url,
                "-t",
                "11",
                "-f",
                "null",
                "-",
                "-progress",
                "pipe:1",
            ],
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr.strip(), "", "ffmpeg reported errors")
        progress = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        self.assertGreaterEqual(int(progress["out_time_ms"]), 10_000_000)
        self.assertGreaterEqual(int(progress["frame"]), 300)
        streams = {s["codec_type"]: s for s in ffprobe_streams(url, timeout=30)}
        video, audio = streams["video"], streams["audio"]
        self.assertEqual((video["codec_name"], video["width"], video["height"]), ("h264", 640, 360))
        self.assertEqual(
            (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]), ("aac", 48000, 1)
        )
        self.assertEqual(self.hls.server.errors(), [])

    def test_init_segment_and_fragments_are_clean(self) -> None:
        status, headers, body = fetch(self.hls.base + "index.m3u8")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/vnd.apple.mpegurl")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertEqual(headers["access-control-allow-origin"], "*")
        playlist = body.decode()
        init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist)[1]
        status, headers, init = fetch(self.hls.base + init_uri)
        self.assertEqual(status, 200)
        self.assertEqual(headers["cache-control"], "public, max-age=31536000, immutable")
        segment_uri = segments_of(playlist)[-1]
        status, _, segment = fetch(self.hls.base + segment_uri)
        self.assertEqual(status, 200)
        msn = int(segment_uri.split(".")[1])
        parts = [fetch(self.hls.base + uri)[2] for m, _, uri in parts_of(playlist) if m == msn]
        self.assertTrue(parts, "the last complete segment lists its parts")
        self.assertEqual(b"".join(parts), segment, "a segment is its parts, joined")

        samples = all_samples(segment)
        sent_video, sent_audio = samples[VIDEO_TRACK_ID], samples[AUDIO_TRACK_ID]
        self.assertEqual(sent_video[0][3], FLAGS_SYNC, "a segment starts at a keyframe")
        # 1 s GOPs at 30 fps, 1 s target: each segment is one GOP.
        self.assertEqual(len(sent_video), 30)

        tmp = tempfile.mkdtemp(prefix="rtmpd-hls-")
        path = os.path.join(tmp, "segment.mp4")
        with open(path, "wb") as f:
            f.write(init + segment)
        ffprobe = require("ffprobe")
        result = run([ffprobe, "-v", "error", "-count_packets", "-show_streams", "-of", "json", path], 30)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        probed = {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}
        self.assertEqual(int(probed["video"]["nb_read_packets"]), len(sent_video))
        self.assertEqual(int(probed["audio"]["nb_read_packets"]), len(sent_audio))
        ffmpeg = require("ffmpeg")
        decoded = run([ffmpeg, "-v", "error", "-i", path, "-f", "null", "-"], 30)
        self.assertEqual((decoded.returncode, decoded.stderr), (0, ""))

        import av

        for i, data in enumerate([init + segment] + [init + p for p in parts]):
            expected = all_samples(data[len(init) :])
            path = os.path.join(tmp, f"fragment{i}.mp4")
            with open(path, "wb") as f:
                f.write(data)
            video, audio = [], []
            with av.logging.Capture() as logs, av.open(path) as container:
                for packet in container.demux():
                    if packet.size:
                        kind = packet.stream.type
                        (video if kind == "video" else audio).append((packet.is_keyframe, packet.duration))
            self.assertEqual([entry for entry in logs if entry[0] <= av.logging.ERROR], [])
            self.assertEqual(len(video), len(expected.get(VIDEO_TRACK_ID, [])))
            self.assertEqual(len(audio), len(expected.get(AUDIO_TRACK_ID, [])))
            self.assertEqual(video, [(s[3] == FLAGS_SYNC, s[1]) for s in expected.get(VIDEO_TRACK_ID, [])])

    def test_blocking_reload_waits_for_the_part_then_answers(self) -> None:
        _, _, body = fetch(self.hls.base + "index.m3u8")
        before = body.decode()
        hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[0-9a-f]+\.(\d+)\.(\d+)\.m4s"', before)
        # The hinted part is the next one, not made yet; ask for the one after it.
        msn, part = int(hint[1]), int(hint[2]) + 1
        # It is part+1 of that segment or, when a keyframe ends the segment first, part 0 of the next
        # (the spec: a part index past a segment's last part means part 0 of the following segment).
        wanted = {(msn, part), (msn + 1, 0)}
        self.assertFalse(wanted & {(m, p) for m, p, _ in parts_of(before)})
        start = time.monotonic()
        status, headers, body = fetch(self.hls.base + f"index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        waited = time.monotonic() - start
        self.assertEqual(status, 200)
        playlist = body.decode()
        made = {(m, p) for m, p, _ in parts_of(playlist)}
        self.assertTrue(wanted & made, (wanted, sorted(made)[-3:]))
        # Parts are about 0.23 s: the answer waited for two of them to be made.
        self.assertGreater(waited, 0.1)
        self.assertLess(waited, 3.0)

        hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', playlist)[1]
        status, headers, part_bytes = fetch(self.hls.base + hint)
        self.assertIn(status, (200, 404))  # 404 only when a keyframe started a new segment instead
        if status == 200:
            self.assertEqual(part_bytes[4:8], b"moof")
            self.assertEqual(headers["cache-control"], "public, max-age=31536000, immutable")

    def test_too_far_ahead_is_400_and_bad_requests_are_json(self) -> None:
        _, _, body = fetch(self.hls.base + "index.m3u8")
        hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[0-9a-f]+\.(\d+)\.(\d+)\.m4s"', body.decode())
        msn, part = int(hint[1]), int(hint[2])
        for query in (
            f"_HLS_msn={msn + 3}",
            f"_HLS_msn={msn}&_HLS_part={part + 4}",
            "_HLS_part=1",
            "_HLS_msn=abc",
        ):
            start = time.monotonic()
            status, headers, body = fetch(self.hls.base + "index.m3u8?" + query)
            self.assertEqual(status, 400, query)
            self.assertLess(time.monotonic() - start, 1.0, "refused at once")
            self.assertEqual(json.loads(body)["error"]["status"], 400)
        status, _, body = fetch(f"{self.hls.http}/hls/live/nobody/index.m3u8")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["message"], "stream is not live")
        for path in ("x.7.m4s", "../../healthz", "zz.mp4", "abc"):
            self.assertEqual(fetch(self.hls.base + path)[0], 404, path)
        # A CORS preflight, and HEAD: headers without a body.
        port = int(self.hls.http.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("OPTIONS", "/hls/live/cam/index.m3u8", headers={"Origin": "http://example.org"})
        response = conn.getresponse()
        response.read()
        self.assertEqual(response.status, 204)
        self.assertEqual(response.getheader("access-control-allow-origin"), "*")
        self.assertIn("GET", response.getheader("access-control-allow-methods"))
        conn.request("HEAD", "/hls/live/cam/index.m3u8")
        response = conn.getresponse()
        self.assertEqual((response.status, response.read()), (200, b""))
        self.assertGreater(int(response.getheader("content-length")), 0)

    def test_one_connection_serves_hls_then_other_paths_and_hls_again(self) -> None:
        # HLS requests take the lean path until another path comes; twisted.web then serves the
        # connection, HLS included, with the same answers.
        port = int(self.hls.http.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.addCleanup(conn.close)
        seen, served_by = [], []
        for path in (
            "/hls/live/cam/index.m3u8",
            "/healthz",
            "/hls/live/cam/index.m3u8",
            "/hls/live/x/index.m3u8",
        ):
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            seen.append((response.status, headers["content-type"], headers.get("cache-control")))
            # Only twisted.web names itself: the first HLS request was answered on the lean path.
            served_by.append(headers.get("server", "lean").split("/")[0])
            if path == "/healthz":
                self.assertEqual(json.loads(body), {"status": "ok"})
            else:
                self.assertEqual(headers["access-control-allow-origin"], "*")
                self.assertEqual(int(headers["content-length"]), len(body))
        playlist = ("application/vnd.apple.mpegurl", "no-cache")
        json_type = "application/json; charset=utf-8"
        self.assertEqual(
            seen,
            [(200, *playlist), (200, json_type, "no-store"), (200, *playlist), (404, json_type, "no-store")],
        )
        self.assertEqual(served_by, ["lean", "TwistedWeb", "TwistedWeb", "TwistedWeb"])
        self.assertEqual(self.hls.server.errors(), [])

    def test_viewers_share_one_muxer_and_concurrent_waits(self) -> None:
        _, _, body = fetch(self.hls.base + "index.m3u8")
        msn, part, _ = parts_of(body.decode())[-1]
        results: list[bytes] = []

        def wait() -> None:
            results.append(fetch(self.hls.base + f"index.m3u8?_HLS_msn={msn + 1}")[2])

        threads = [threading.Thread(target=wait) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        self.assertEqual(len(results), 10)
        self.assertTrue(all(f"{msn + 1}.m4s" in r.decode() for r in results))
        self.assertEqual(len(self.hls.server.messages("HLS muxer started")), 1)


class HLSAccessTests(TestCase):
    timeout = 90

    def test_signed_url_on_the_playlist_is_carried_to_every_uri(self) -> None:
        tmp = tempfile.mkdtemp(prefix="rtmpd-hls-")
        secrets = os.path.join(tmp, "secrets")
        with open(secrets, "w") as f:
            f.write(f"live {SECRET}\n")
        hls = HLSServer(self, "--auth-secrets", secrets)
        exp = int(time.time()) + 300
        publish_sig = sign(SECRET.encode(), "publish", "live", "cam", exp)
        hls.publish(hls.server.url(f"cam?exp={exp}&sig={publish_sig}"))
        status, headers, body = fetch(hls.base + "index.m3u8")
        self.assertEqual(status, 403)
        self.assertEqual(json.loads(body)["error"]["status"], 403)
        bad = sign(SECRET.encode(), "publish", "live", "cam", exp)  # a publish signature cannot play
        self.assertEqual(fetch(hls.base + f"index.m3u8?exp={exp}&sig={bad}")[0], 403)
        credential = f"exp={exp}&sig={sign(SECRET.encode(), 'play', 'live', 'cam', exp)}"
        status, headers, body = fetch(hls.base + "index.m3u8?" + credential)
        self.assertEqual(status, 200, body)
        playlist = body.decode()
        uris = re.findall(r'URI="([^"]+)"', playlist) + segments_of(playlist)
        self.assertTrue(uris)
        for uri in uris:
            self.assertTrue(uri.endswith("?" + credential), uri)
        init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', playlist)[1]
        status, headers, _ = fetch(hls.base + init_uri)
        self.assertEqual(status, 200)
        self.assertEqual(headers["cache-control"], "private, max-age=31536000, immutable")
        self.assertEqual(fetch(hls.base + init_uri.split("?")[0])[0], 403)
        self.assertEqual(fetch(hls.base + segments_of(playlist)[-1])[0], 200)
