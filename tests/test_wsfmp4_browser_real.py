"""WebSocket-fMP4 in a real browser: headless Chromium plays ``ws://.../live/KEY.mp4`` with the MSE snippet
of docs/http-players.md (no library): playback keeps step with the wall clock, frames are decoded, and the
latency, read off the picture as in tests/test_browser_latency_real.py, is under a second at the p95."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer

from twisted.trial.unittest import SynchronousTestCase

from tests.browser import ARTIFACTS, chromium, screenshot, wait_until
from tests.support import ServerProcess, require
from tests.test_browser_latency_real import _STAMP, WINDOW, _Page, percentile

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "http-players.md")

#: Reads the stamp off the playing picture every 50 ms, as tests/test_browser_latency_real.py's page does.
STAMP_READER = """<canvas id="c" width="480" height="32"></canvas>
<script>
window.samples = [];
const playing = document.getElementById("v"), canvas = document.getElementById("c");
const ctx = canvas.getContext("2d", {willReadFrequently: true});
window.progress = () => {
  const q = playing.getVideoPlaybackQuality();
  const b = playing.buffered, end = b.length ? b.end(b.length - 1) : 0;
  return [playing.currentTime, performance.now() / 1000, q.totalVideoFrames, q.droppedVideoFrames, end,
          b.length];
};
setInterval(() => {
  if (playing.readyState < 2 || playing.paused) return;
  ctx.drawImage(playing, 0, 0, 480, 32);
  const row = ctx.getImageData(0, 16, 480, 1).data;
  let stamp = 0;
  for (let n = 0; n < 24; n++) if (row[(n * 20 + 10) * 4] > 128) stamp += 2 ** n;
  const now = Date.now() % 16777216;
  window.samples.push((now - stamp + 16777216) % 16777216);
}, 50);
</script>"""


def documented_player() -> str:
    """The ``html`` code block of docs/http-players.md's WebSocket-fMP4 section."""
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## WebSocket-fMP4") :]
    return re.search(r"```html\n(.*?)```", section, re.S).group(1)


class WebSocketFMP4BrowserTests(SynchronousTestCase):
    def setUp(self) -> None:
        ffmpeg = require("ffmpeg")
        self.server = ServerProcess("--http", "tcp:0:interface=127.0.0.1", log_level="info").start()
        self.addCleanup(self.server.stop)
        self.http = self.server.port_of("HTTP server")
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

    def serve_page(self) -> str:
        player = documented_player().replace(
            "ws://HOST:8080/live/cam.mp4", f"ws://127.0.0.1:{self.http}/live/clock.mp4"
        )
        self.assertIn(f":{self.http}/live/clock.mp4", player, "the snippet's URL is the one documented")
        body = f'<!doctype html><meta charset="utf-8"><title>wsfmp4</title>\n{player}\n{STAMP_READER}'
        handler = type("Page", (_Page,), {"body": body.encode()})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    def test_mse_plays_in_step_with_the_wall_clock_under_a_second_at_p95(self) -> None:
        driver = self.driver
        driver.get(self.serve_page())
        wait_until(
            lambda: driver.execute_script("return window.samples.length") > 20, 20, "the page reads stamps"
        )
        # currentTime advances with wall time for 10 s.
        start = driver.execute_script("return window.progress()")
        time.sleep(10)  # a span of wall time is what is measured: there is no event to await
        end = driver.execute_script("return window.progress()")
        played, wall = end[0] - start[0], end[1] - start[1]
        self.assertGreater(wall, 9.5)
        self.assertLess(abs(played - wall), 1.0, (start, end))
        decoded, dropped = end[2] - start[2], end[3] - start[3]
        self.assertGreater(decoded, 250, "about 30 frames a second decoded")
        self.assertLess(dropped, decoded * 0.05, "few frames dropped")
        # Latency over the window, as tests/test_browser_latency_real.py takes it.
        driver.execute_script("window.samples = []")
        wait_until(
            lambda: driver.execute_script("return window.samples.length") >= int(WINDOW / 0.05 * 0.8),
            WINDOW + 15,
            f"{WINDOW} s of samples",
        )
        samples = driver.execute_script("return window.samples")
        screenshot(driver, "latency-websocket-fmp4")
        result = {
            "samples": len(samples),
            "p50_ms": percentile(samples, 0.5),
            "p95_ms": percentile(samples, 0.95),
            "max_ms": max(samples),
        }
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, "latency-websocket-fmp4.json"), "w") as f:
            json.dump(result, f)
        self.assertGreater(result["p50_ms"], 0)
        self.assertLess(result["p95_ms"], 1000, result)
        started = self.server.wait_for_msg("WebSocket-fMP4 player started", 5, stream_key="live/clock")
        self.assertTrue(started["conn_id"])
        self.assertEqual(self.server.errors(), [])
