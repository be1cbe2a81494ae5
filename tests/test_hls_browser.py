"""hls.js in a real headless Chromium (driven by selenium) plays rtmpd's LL-HLS and classic HLS.

The page (served by the test on its own loopback port, so every HLS request
is cross-origin and needs rtmpd's CORS headers) loads hls.js from npm
(``scripts/install-test-deps`` installs it into the git-ignored
``tests/browser/node_modules``) and plays ``/hls/live/KEY/index.m3u8``
muted. For 10 s the test samples ``video.currentTime``,
``getVideoPlaybackQuality().totalVideoFrames`` and the latency.

Latency, measured end to end: ffmpeg ``-re`` publishes media time t at wall
time ``publish_start + t`` (``publish_start`` is read just before ffmpeg
starts, so its start-up only adds to the figure). rtmpd stamps each segment
with ``EXT-X-PROGRAM-DATE-TIME`` = its anchor + the segment's first decode
time; the test reads both from a segment (``tfdt``) to learn the anchor,
then turns hls.js's ``playingDate`` (the date of the frame on screen) back
into the media time t on screen. Latency = the browser's ``Date.now()`` -
(``publish_start`` + t). A screenshot of the playing page is kept in the
git-ignored ``tests/artifacts/``.
"""

from __future__ import annotations

import datetime
import http.server
import os
import re
import threading
import time

from twisted.trial.unittest import SkipTest, TestCase

from rtmpd.core.fmp4 import VIDEO_TIMESCALE, VIDEO_TRACK_ID
from tests.browser import chromium
from tests.support import IN_CI, require
from tests.test_fmp4 import all_samples
from tests.test_hls_real import HLSServer, fetch, segments_of

HERE = os.path.dirname(os.path.abspath(__file__))
HLS_JS = os.path.join(HERE, "browser", "node_modules", "hls.js", "dist", "hls.min.js")
ARTIFACTS = os.path.join(HERE, "artifacts")

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>rtmpd HLS</title></head>
<body style="margin:0;background:#000">
<video id="v" muted autoplay playsinline width="640" height="360"></video>
<script src="/hls.min.js"></script>
<script>
const params = new URLSearchParams(location.search);
const video = document.getElementById("v");
window.fatal = [];
window.errors = [];
const hls = new Hls({lowLatencyMode: params.get("ll") === "1"});
window.hls = hls;
hls.on(Hls.Events.ERROR, (event, data) => {
  if (data.fatal) window.fatal.push(data.type + ":" + data.details);
  // The others (a buffer stall, a part fetched late) explain a failure; kept for its message.
  else window.errors.push(data.details + "@" + video.currentTime.toFixed(2));
});
hls.loadSource(params.get("src"));
hls.attachMedia(video);
video.play().catch((e) => window.fatal.push("play: " + e));
</script></body></html>
"""

SAMPLE = """
const v = document.getElementById("v");
const q = v.getVideoPlaybackQuality();
const date = window.hls.playingDate;
const b = v.buffered;
return [Date.now() / 1000, v.currentTime, q.totalVideoFrames, q.droppedVideoFrames,
        date ? date.getTime() / 1000 : null, window.fatal, v.paused, window.errors.slice(-10),
        b.length ? b.end(b.length - 1) - v.currentTime : 0];
"""


def _missing(message: str):
    if IN_CI:
        raise AssertionError(message)
    raise SkipTest(message)


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/":
            body, kind = PAGE, "text/html"
        elif path == "/hls.min.js":
            with open(HLS_JS, "rb") as f:
                body, kind = f.read(), "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def pdt_anchor(base: str) -> float:
    """The Unix time of the stream's media time 0, from a segment's PROGRAM-DATE-TIME and its tfdt."""
    playlist = fetch(base + "index.m3u8")[2].decode()
    uri = segments_of(playlist)[-1]
    dates = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)\n(?:#EXT-X-PART:.*\n)*#EXTINF:.*\n(\S+)", playlist)
    date = dict((u, d) for d, u in dates)[uri]
    start = datetime.datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
    tfdt = all_samples(fetch(base + uri)[2])[VIDEO_TRACK_ID][0][0]
    return start - tfdt / VIDEO_TIMESCALE


class HLSBrowserTests(TestCase):
    timeout = 150

    def setUp(self) -> None:
        self.chromium = require("chromium")
        self.chromedriver = require("chromedriver")
        if not os.path.exists(HLS_JS):
            _missing(
                "hls.js is not installed (scripts/install-test-deps runs npm install --prefix tests/browser)"
            )
        try:
            from selenium import webdriver  # noqa: F401
        except ImportError:
            _missing("selenium is not installed (pip install -e '.[test]')")
        # The server's default part duration: the latency asserted is the one operators get.
        self.hls = HLSServer(self, key="browser", seconds=60, part_duration=None)
        self.hls.publish()
        page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
        threading.Thread(target=page.serve_forever, daemon=True).start()
        self.addCleanup(page.server_close)
        self.addCleanup(page.shutdown)
        self.page = f"http://127.0.0.1:{page.server_address[1]}/"

    def browser(self):
        return chromium(self)

    def play(self, low_latency: bool, max_latency: float, artifact: str) -> None:
        from urllib.parse import urlencode

        from selenium.webdriver.support.ui import WebDriverWait

        driver = self.browser()
        src = self.hls.base + "index.m3u8"
        driver.get(self.page + "?" + urlencode({"src": src, "ll": "1" if low_latency else "0"}))
        # The 10 s measured start once 2 s have played: what is asserted is steady playback, not the
        # start-up (the first parts are fetched while the buffer fills).
        WebDriverWait(driver, 30, poll_frequency=0.1).until(
            lambda d: d.execute_script(SAMPLE)[1] > 2.0 or d.execute_script(SAMPLE)[5],
            "the video never started",
        )
        anchor = pdt_anchor(self.hls.base)
        samples = []
        end = time.monotonic() + 10
        while time.monotonic() < end:
            samples.append(driver.execute_script(SAMPLE))
            # Sampling over wall time is what is measured: a fixed interval, not a wait for an event.
            time.sleep(0.5)
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, artifact))
        first, last = samples[0], samples[-1]
        # Played seconds, seconds buffered ahead and hls.js's non-fatal errors, for a failure's message.
        trace = [(round(s[1], 2), round(s[8], 2)) for s in samples], last[7]
        self.assertEqual(last[5], [], "hls.js reported fatal errors")
        self.assertFalse(last[6], "the video is paused")
        wall = last[0] - first[0]
        self.assertGreaterEqual(wall, 9.0)
        advanced = last[1] - first[1]
        self.assertGreater(advanced / wall, 0.9, (advanced, wall, trace))
        self.assertLess(advanced / wall, 1.1, (advanced, wall, trace))
        for a, b in zip(samples, samples[1:], strict=False):
            self.assertGreater(b[1], a[1], ("currentTime stalled", trace))
        frames = last[2] - first[2]
        self.assertGreater(frames, 0.8 * 30 * wall, "totalVideoFrames did not grow with the video")
        latencies = [
            now - (self.hls.publish_started + (date - anchor)) for now, _, _, _, date, *_ in samples if date
        ]
        self.assertEqual(len(latencies), len(samples), "hls.playingDate is missing")
        self.latencies = latencies
        print(f"\n{artifact}: latency min {min(latencies):.2f} s, max {max(latencies):.2f} s, trace {trace}")
        self.assertGreater(min(latencies), 0.0, "a latency below zero means the measure is wrong")
        self.assertLess(max(latencies), max_latency, (latencies, trace))

    def test_low_latency_hls(self) -> None:
        self.play(low_latency=True, max_latency=3.0, artifact="hls-ll-chromium.png")

    def test_classic_hls(self) -> None:
        self.play(low_latency=False, max_latency=8.0, artifact="hls-classic-chromium.png")
