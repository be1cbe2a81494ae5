"""The web dashboard in headless Chromium against ``twistd -n rtmpd --http``, streams from real ffmpegs."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from twisted.trial.unittest import TestCase

from tests.browser import chromium, screenshot, wait_until
from tests.support import ServerProcess, ffmpeg_publish
from tests.test_ertmp_real import publish9

TOKEN = "dashboard-test-token-0123456789"
PREVIEW = """
const card = document.querySelector(`.card[data-key="${arguments[0]}"]`);
const video = card.querySelector('video'), q = video.getVideoPlaybackQuality();
const note = card.querySelector('.note');
return {time: video.currentTime, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
        note: note.hidden ? "" : note.textContent};
"""
CARDS = """
return Array.from(document.querySelectorAll('.card')).map(c => ({
  key: c.dataset.key, codecs: c.querySelector('.codecs').textContent,
  players: c.querySelector('.players').textContent, rec: !c.querySelector('.badge.rec').hidden}));
"""


class DashboardTests(TestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="rtmpd-dashboard-")
        token_file = os.path.join(directory, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.server = ServerProcess(
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--api-token-file",
            token_file,
            "--record-dir",
            os.path.join(directory, "recordings"),
        )
        self.server.start()
        self.addCleanup(self.server.stop)
        self.base = f"http://127.0.0.1:{self.server.port_of('HTTP server')}"
        self.driver = chromium(self)

    def publish(self, process: subprocess.Popen) -> subprocess.Popen:
        def kill() -> None:
            if process.poll() is None:
                process.kill()
            process.wait(10)

        self.addCleanup(kill)
        return process

    def cards(self) -> dict[str, dict]:
        return {card["key"]: card for card in self.driver.execute_script(CARDS)}

    def test_streams_appear_with_codecs_end_and_are_kicked(self) -> None:
        self.driver.get(self.base + "/")
        wait_until(
            lambda: self.driver.execute_script("return window.rtmpdDashboard.lastPoll > 0"),
            10,
            "the dashboard polls the API",
        )
        cam_a = self.publish(ffmpeg_publish(self.server.url("cam-a"), 60, size="640x360"))
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/cam-a")
        card = wait_until(lambda: self.cards().get("live/cam-a"), 2.0, "cam-a shown within 2 s")
        self.publish(publish9(self.server.url("cam-b"), "hevc", ["opus"], seconds=60))
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/cam-b")
        wait_until(lambda: "live/cam-b" in self.cards(), 2.0, "cam-b shown within 2 s")
        card = wait_until(
            lambda: "640×360" in self.cards()["live/cam-a"]["codecs"] and self.cards()["live/cam-a"],
            5,
            "cam-a's resolution",
        )
        self.assertIn("H264 640×360", card["codecs"])
        self.assertIn("AAC", card["codecs"])
        self.assertTrue(card["rec"], "recording badge")
        hevc = wait_until(
            lambda: "320×240" in self.cards()["live/cam-b"]["codecs"] and self.cards()["live/cam-b"],
            5,
            "cam-b's resolution",
        )
        self.assertIn("H265 320×240", hevc["codecs"])
        self.assertIn("Opus", hevc["codecs"])
        self.assertPreviewsPlay()
        screenshot(self.driver, "dashboard")

        # A publisher that goes away: its card goes too.
        cam_a.kill()
        wait_until(lambda: "live/cam-a" not in self.cards(), 10, "cam-a removed after its publisher left")

        # Kick from the page, with the token: the publisher is disconnected and the card removed.
        kicked = self.server.wait_for_msg("Codecs detected", 1, stream_key="live/cam-b")["conn_id"]
        self.driver.execute_script(f"localStorage.setItem('rtmpd.apiToken', '{TOKEN}')")
        self.driver.find_element("css selector", '.card[data-key="live/cam-b"] button.danger').click()
        self.server.wait_for_msg("Connection closed", 10, conn_id=kicked)
        wait_until(lambda: "live/cam-b" not in self.cards(), 10, "cam-b removed after the kick")

    def preview(self, key: str) -> dict:
        return self.driver.execute_script(PREVIEW, key)

    def assertPreviewsPlay(self) -> None:
        """The H.264 preview plays in step with the wall clock for 10 s; the HEVC one plays too where this
        Chromium decodes HEVC, and says plainly that it cannot where it does not."""
        wait_until(lambda: self.preview("live/cam-a")["time"] > 0.5, 15, "cam-a's preview starts")
        hevc_supported = self.driver.execute_script(
            "return MediaSource.isTypeSupported('video/mp4; codecs=\"hvc1.1.6.L93.B0\"')"
        )
        if hevc_supported:
            wait_until(lambda: self.preview("live/cam-b")["time"] > 0.5, 15, "cam-b's preview starts")
        else:
            note = wait_until(lambda: self.preview("live/cam-b")["note"], 10, "cam-b's preview note")
            self.assertIn("cannot decode H265", note)
        keys = ["live/cam-a", *(["live/cam-b"] if hevc_supported else [])]
        first = {key: (time.monotonic(), self.preview(key)) for key in keys}
        time.sleep(10)  # the wall clock is what a preview keeps step with
        for key in keys:
            t0, before = first[key]
            after, elapsed = self.preview(key), time.monotonic() - t0
            advanced = after["time"] - before["time"]
            self.assertLess(
                abs(advanced - elapsed), 1.5, f"{key}: {advanced:.2f} s of media in {elapsed:.2f} s"
            )
            self.assertGreater(after["frames"] - before["frames"], 20 * elapsed, key)
            self.assertLess(
                after["dropped"] - before["dropped"], 0.1 * (after["frames"] - before["frames"]), key
            )

    def test_kick_without_token_asks_for_it_and_changes_nothing(self) -> None:
        self.publish(ffmpeg_publish(self.server.url("cam-c"), 30))
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/cam-c")
        self.driver.get(self.base + "/")
        wait_until(lambda: "live/cam-c" in self.cards(), 5, "cam-c shown")
        self.driver.find_element("css selector", '.card[data-key="live/cam-c"] button.danger').click()
        wait_until(
            lambda: self.driver.execute_script("return document.getElementById('token-dialog').open"),
            5,
            "the token dialog opens",
        )
        self.assertEqual(self.server.messages("Connection closed"), [])
        self.assertIn("live/cam-c", self.cards())

    def test_phone_width_has_no_horizontal_scroll(self) -> None:
        self.publish(ffmpeg_publish(self.server.url("cam-d"), 30))
        self.server.wait_for_msg("Codecs detected", 30, stream_key="live/cam-d")
        self.driver.set_window_size(390, 844)
        self.driver.get(self.base + "/")
        wait_until(lambda: "live/cam-d" in self.cards(), 5, "cam-d shown")
        overflow = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        self.assertLessEqual(overflow, 0)
        screenshot(self.driver, "dashboard-phone")

    def test_files_and_errors(self) -> None:
        with urllib.request.urlopen(self.base + "/", timeout=5) as response:
            self.assertEqual(response.headers["Content-Type"], "text/html; charset=utf-8")
            self.assertIn(b"/dashboard/app.js", response.read())
        with urllib.request.urlopen(self.base + "/dashboard/app.js", timeout=5) as response:
            self.assertIn("javascript", response.headers["Content-Type"])
        for path in (
            "/dashboard/nope.js",
            "/dashboard/../tap.py",
            "/dashboard/vendor/other.js",
            "/index.html",
        ):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(self.base + path, timeout=5)
            self.assertEqual(caught.exception.code, 404, path)
            self.assertEqual(json.load(caught.exception)["error"]["status"], 404)
