"""A stream listener that raises never costs the publisher, the players or the other listeners."""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.messages import MessageType
from rtmpd.relay.listener import StreamListener
from rtmpd.testing import MemoryServer
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V = MessageType.AUDIO, MessageType.VIDEO
FAILED = "Stream listener failed; detached from this stream"


class Broken(StreamListener):
    """Raises in the calls named in ``fail_on``; counts every call it gets."""

    def __init__(self, *fail_on: str) -> None:
        self.fail_on = fail_on
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail_on:
            raise RuntimeError(f"broken {name}")

    def stream_published(self, stream) -> None:
        self._call("stream_published")

    def stream_message(self, stream, message, info) -> None:
        self._call("stream_message")

    def stream_unpublished(self, stream) -> None:
        self._call("stream_unpublished")


class ListenerIsolationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer()

    def tearDown(self) -> None:
        # The failures are logged on purpose; what is asserted is how often.
        self.flushLoggedErrors(RuntimeError)

    def publish_gops(self, pub, sid, gops: int) -> int:
        sent = 0
        for g in range(gops):
            start = g * 1000
            pub.send_media(V, sid, start, avc_keyframe(g))
            pub.send_media(A, sid, start, aac_frame(g))
            for i in range(1, 10):
                pub.send_media(V, sid, start + i * 33, avc_interframe(i))
            sent += 11
            self.server.flush()
        return sent

    def test_listener_raising_on_every_message(self) -> None:
        broken, good = Broken("stream_message"), Broken()
        self.server.registry.listeners.extend([broken, good])
        pub, psid = self.server.publisher()
        player, _ = self.server.player()
        with capturedLogs() as logs:
            pub.send_media(A, psid, 0, AAC_SEQUENCE_HEADER)
            pub.send_media(V, psid, 0, AVC_SEQUENCE_HEADER)
            sent = 2 + self.publish_gops(pub, psid, 5)
        failures = [e for e in logs if e.get("log_format") == FAILED]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["log_level"].name, "error")
        self.assertIn("broken stream_message", str(failures[0]["log_failure"].value))
        self.assertEqual(failures[0]["listener"], "Broken")
        # Detached after its first failure, and told the stream ended (a recorder finalises its file).
        self.assertEqual(broken.calls, ["stream_published", "stream_message", "stream_unpublished"])
        self.assertEqual(good.calls.count("stream_message"), sent)
        self.assertEqual(len(player.media()), sent)
        self.assertTrue(pub.connected_transport)
        self.assertTrue(player.connected_transport)

    def test_listener_is_told_again_at_the_next_publish(self) -> None:
        broken = Broken("stream_message")
        self.server.registry.listeners.append(broken)
        pub, psid = self.server.publisher()
        self.publish_gops(pub, psid, 1)
        pub.transport.loseConnection()
        self.server.flush()
        pub2, psid2 = self.server.publisher()
        with capturedLogs() as logs:
            self.publish_gops(pub2, psid2, 2)
        self.assertEqual(len([e for e in logs if e.get("log_format") == FAILED]), 1)
        self.assertEqual(broken.calls.count("stream_published"), 2)

    def test_listener_raising_at_publish_is_detached_and_the_publish_succeeds(self) -> None:
        broken = Broken("stream_published", "stream_unpublished")
        self.server.registry.listeners.append(broken)
        with capturedLogs() as logs:
            pub, psid = self.server.publisher()
            player, _ = self.server.player()
            sent = self.publish_gops(pub, psid, 2)
        self.assertEqual(len(player.media()), sent)
        self.assertNotIn("stream_message", broken.calls)
        formats = [e.get("log_format") for e in logs]
        self.assertEqual(formats.count(FAILED), 1)
        self.assertEqual(formats.count("Stream listener failed to stop"), 1)
