"""Latency in a real browser: a publisher stamps its wall clock into every frame, headless Chromium plays the
stream with mpegts.js (HTTP-FLV and WebSocket-FLV) and reads the stamp back off the picture.

The publisher's video is a 480x32 strip of 24 black-or-white blocks: bit n of (wall-clock ms mod 2**24)
at the moment ffmpeg produced the frame (``setpts=RTCTIME`` then ``geq``). The page draws the playing
video into a canvas every 50 ms, reads the bits, and compares them with its own ``Date.now()``: same
machine, same clock. That is glass-to-glass minus the screen: capture, encode, publish, relay, fetch,
demux, decode and present.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.browser import chromium, screenshot, wait_until
from tests.support import IN_CI, ServerProcess, require

#: Seconds of latency samples taken per run.
WINDOW = 20.0

_STAMP = (
    "setpts=RTCTIME/(1000000*TB),"
    "geq=lum='255*mod(floor(mod(floor(T*1000)\\,16777216)/pow(2\\,floor(X/20)))\\,2)':cb=128:cr=128,"
    "setpts=N/(30*TB)"
)

PAGE = """<!doctype html><meta charset="utf-8"><title>latency</title>
<video id="v" muted autoplay playsinline width="480" height="32"></video>
<canvas id="c" width="480" height="32"></canvas>
<script src="__ORIGIN__/dashboard/vendor/mpegts.js"></script>
<script>
window.samples = [];
const video = document.getElementById("v"), canvas = document.getElementById("c");
const ctx = canvas.getContext("2d", {willReadFrequently: true});
const player = mpegts.createPlayer({type: "flv", isLive: true, hasAudio: true, url: "__URL__"},
  {enableStashBuffer: false, liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 0.8,
   liveBufferLatencyMinRemain: 0.2});
player.attachMediaElement(video);
player.load();
video.play();
setInterval(() => {
  if (video.readyState < 2 || video.paused) return;
  ctx.drawImage(video, 0, 0, 480, 32);
  const row = ctx.getImageData(0, 16, 480, 1).data;
  let stamp = 0;
  for (let n = 0; n < 24; n++) if (row[(n * 20 + 10) * 4] > 128) stamp += 2 ** n;
  const now = Date.now() % 16777216;
  window.samples.push((now - stamp + 16777216) % 16777216);
}, 50);
</script>"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class _Page(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


class BrowserLatencyTests(SynchronousTestCase):
    def setUp(self) -> None:
        ffmpeg = require("ffmpeg")
        self.server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", log_level="info").start()
        self.addCleanup(self.server.stop)
        self.origin = f"http://127.0.0.1:{self.server.port_of('HTTP server')}"
        try:
            urllib.request.urlopen(f"{self.origin}/dashboard/vendor/mpegts.js", timeout=10).close()
        except urllib.error.HTTPError as e:
            message = "mpegts.js is not installed (scripts/install-dashboard-vendor)"
            if IN_CI:
                raise AssertionError(message) from e
            raise SkipTest(message) from e
        cmd = [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=480x32:r=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "90",
            "-vf",
            _STAMP,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "flv",
            self.server.url("clock"),
        ]
        self.publisher = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.addCleanup(self._stop_publisher)
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/clock")
        self.driver = chromium(self)

    def _stop_publisher(self) -> None:
        if self.publisher.poll() is None:
            self.publisher.kill()
        self.publisher.wait(10)

    def page(self, url: str) -> str:
        handler = type(
            "Page",
            (_Page,),
            {"body": PAGE.replace("__ORIGIN__", self.origin).replace("__URL__", url).encode()},
        )
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    def measure(self, url: str, name: str) -> dict:
        self.driver.get(self.page(url))
        wait_until(
            lambda: self.driver.execute_script("return window.samples.length") > 20,
            20,
            f"{name}: the page reads stamps",
        )
        self.driver.execute_script("window.samples = []")
        samples: list[float] = []
        deadline_samples = int(WINDOW / 0.05 * 0.8)  # timers may fire late on a busy machine
        wait_until(
            lambda: self.driver.execute_script("return window.samples.length") >= deadline_samples,
            WINDOW + 15,
            f"{name}: {WINDOW} s of samples",
        )
        samples = self.driver.execute_script("return window.samples")
        screenshot(self.driver, f"latency-{name}")
        result = {
            "samples": len(samples),
            "p50_ms": percentile(samples, 0.5),
            "p95_ms": percentile(samples, 0.95),
            "max_ms": max(samples),
        }
        os.makedirs(os.path.join(os.path.dirname(__file__), "artifacts"), exist_ok=True)
        with open(os.path.join(os.path.dirname(__file__), "artifacts", f"latency-{name}.json"), "w") as f:
            json.dump(result, f)
        return result

    def test_http_flv_under_a_second_at_p95(self) -> None:
        result = self.measure(f"{self.origin}/live/clock.flv", "http-flv")
        self.assertGreater(result["p50_ms"], 0)
        self.assertLess(result["p95_ms"], 1000, result)

    def test_websocket_flv_under_a_second_at_p95(self) -> None:
        ws = self.origin.replace("http://", "ws://")
        result = self.measure(f"{ws}/live/clock.flv", "websocket-flv")
        self.assertGreater(result["p50_ms"], 0)
        self.assertLess(result["p95_ms"], 1000, result)
