"""Foundation acceptance: real clients complete the handshake and connect against twistd -n rtmpd."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.support import ServerProcess, require, run


class RealClientConnectTests(TestCase):
    def setUp(self) -> None:
        self.server = ServerProcess().start()
        self.addCleanup(self.server.stop)

    def test_ffprobe_completes_handshake_and_connect(self) -> None:
        # Nothing is published: ffprobe fails to find streams, but only after connect and play.
        run([require("ffprobe"), "-v", "error", "-rw_timeout", "3000000", self.server.url("x")], timeout=20)
        self.server.wait_for_msg("Handshake completed")
        connect = self.server.wait_for_msg("connect command")
        self.assertEqual(connect["app"], "live")
        self.assertTrue(connect["tcUrl"].endswith("/live"), connect)
        self.server.wait_for_msg("play command", stream_key="live/x")

    def test_rtmpdump_completes_handshake_and_connect(self) -> None:
        run(
            [
                require("rtmpdump"),
                "-r",
                self.server.url("x"),
                "--live",
                "--stop",
                "1",
                "-m",
                "3",
                "-o",
                "/dev/null",
            ],
            timeout=20,
        )
        self.server.wait_for_msg("Handshake completed")
        connect = self.server.wait_for_msg("connect command")
        self.assertEqual(connect["app"], "live")
        self.server.wait_for_msg("play command", stream_key="live/x")
