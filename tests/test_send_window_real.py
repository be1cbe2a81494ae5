"""Send windows with real players: ffmpeg, GStreamer and rtmpdump decode cleanly through the default window,
and a late joiner's first frame does not wait for a window.

The late-join test runs a server with a window far longer than the
default (200 ms) beside one without, so a burst that waited for the window
would show as a delay of 200 ms, far above the noise of a loaded machine.
"""

from __future__ import annotations

import time

from rtmpd.core.messages import MessageType
from rtmpd.server.options import DEFAULT_SEND_WINDOW_MS
from tests.support import ServerProcess, ffmpeg_publish
from tests.test_relay_real import FPS, RealClientTestCase, SocketRTMPClient, decode_file

#: A window long enough that waiting for it could not hide in the noise.
LONG_WINDOW_MS = 200


class DefaultWindowPlayTests(RealClientTestCase):
    """With the default window (what ``twistd -n rtmpd`` runs with; spelt out so a change shows here)."""

    server_args = ("--send-window-ms", f"{DEFAULT_SEND_WINDOW_MS:g}")

    def test_the_default_is_a_window(self) -> None:
        self.assertGreater(DEFAULT_SEND_WINDOW_MS, 0)

    def test_ffmpeg_rtmpdump_and_gstreamer_decode_cleanly(self) -> None:
        publisher = self.publish("window", 5)
        self.wait_live("window")
        ffmpeg = self.ffmpeg_player("window")
        rtmpdump = self.rtmpdump_player("window", "rtmpdump.flv")
        gst = self.gst_player("window")
        self.assertEqual(publisher.wait(30), 0, publisher.stderr.read())

        self.assertCleanFfmpeg(ffmpeg, min_seconds=4)

        self.assertEqual(rtmpdump.finish(), 0)
        self.assertGreaterEqual(len(rtmpdump.video), 4 * FPS)
        self.assertEqual(decode_file(rtmpdump.path), [])

        self.assertEqual(gst.finish(), 0, gst.stderr[-2000:])
        self.assertEqual(gst.errors(), [])
        self.assertGreaterEqual(gst.buffers("vsink"), 4 * FPS)
        self.assertGreaterEqual(gst.buffers("asink"), 4 * 46)


class LateJoinWindowTests(RealClientTestCase):
    server_args = ("--send-window-ms", str(LONG_WINDOW_MS))

    def first_frame_delay(self, server: ServerProcess, key: str) -> float:
        """Seconds from NetStream.Play.Start to the first video message of a player joining ``key`` now."""
        player = SocketRTMPClient(server.port)
        self.addCleanup(player.close)
        stream_id = player.start_playing(key)
        started = time.monotonic()
        player.pump_until(
            lambda: any(m.type_id == MessageType.VIDEO for m in player.protocol.media(stream_id))
        )
        return time.monotonic() - started

    def test_the_late_join_burst_does_not_wait_for_the_window(self) -> None:
        without = ServerProcess().start()
        self.addCleanup(without.stop)
        publishers = [
            self.publish("late", 8),
            self.cleanup_process(ffmpeg_publish(without.url("late"), 8)),
        ]
        self.wait_live("late")
        without.wait_for_msg("Codecs detected", 20, stream_key="live/late")
        delays = {"window": [], "none": []}
        for _ in range(3):
            delays["window"].append(self.first_frame_delay(self.server, "late"))
            delays["none"].append(self.first_frame_delay(without, "late"))
        for publisher in publishers:
            self.assertEqual(publisher.wait(30), 0)
        best_with, best_without = min(delays["window"]), min(delays["none"])
        # Waiting for the window would add LONG_WINDOW_MS to every join.
        self.assertLess(best_with, best_without + LONG_WINDOW_MS / 1000 / 4, delays)
        self.assertLess(best_with, LONG_WINDOW_MS / 1000 / 2, delays)
