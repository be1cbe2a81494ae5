"""Lifecycle events (``rtmpd.notify``): what a publish/play/stop in memory tells the subscribers."""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.access.decision import ALLOW, Authoriser, Deny, Request
from rtmpd.access.policy import AccessPolicy
from rtmpd.notify import EVENT_NAMES, Notifier, ServerEvent
from rtmpd.testing import MemoryServer
from tests.media_samples import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, avc_keyframe

VIDEO, AUDIO = 9, 8


class NotifierTests(SynchronousTestCase):
    def test_no_subscriber_means_no_work(self) -> None:
        notifier = Notifier(lambda: 1.0)
        self.assertFalse(notifier.active)
        notifier.emit("not-an-event")  # nobody listens: not even checked

    def test_subscribers_told_in_order_and_unsubscribe(self) -> None:
        notifier = Notifier(lambda: 7.5)
        seen: list[tuple[str, ServerEvent]] = []
        stop_a = notifier.subscribe(lambda e: seen.append(("a", e)))
        notifier.subscribe(lambda e: seen.append(("b", e)))
        notifier.emit("connect", conn_id="c1")
        stop_a()
        notifier.emit("disconnect", conn_id="c1")
        self.assertEqual(
            [(who, e.name) for who, e in seen], [("a", "connect"), ("b", "connect"), ("b", "disconnect")]
        )
        self.assertEqual(seen[0][1].as_dict(), {"event": "connect", "time": 7.5, "conn_id": "c1"})

    def test_failing_subscriber_is_isolated_and_logged_once(self) -> None:
        notifier = Notifier(lambda: 0.0)
        seen: list[str] = []

        def broken(event: ServerEvent) -> None:
            raise RuntimeError("boom")

        notifier.subscribe(broken)
        notifier.subscribe(lambda e: seen.append(e.name))
        with capturedLogs() as logs:
            notifier.emit("connect")
            notifier.emit("connect")
        self.assertEqual(seen, ["connect", "connect"])
        failures = [e for e in logs if "Event subscriber failed" in e.get("log_format", "")]
        self.assertEqual(len(failures), 1)
        self.flushLoggedErrors(RuntimeError)

    def test_unknown_event_name_is_a_programming_error(self) -> None:
        notifier = Notifier(lambda: 0.0)
        notifier.subscribe(lambda e: None)
        self.assertRaises(ValueError, notifier.emit, "publish_begin")


class ServerEventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer()
        self.events: list[ServerEvent] = []
        self.server.registry.notifier.subscribe(self.events.append)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def test_publish_play_stop_in_order_with_fields(self) -> None:
        publisher, psid = self.server.publisher("cam")
        publisher.send_media(VIDEO, psid, 0, AVC_SEQUENCE_HEADER)
        publisher.send_media(AUDIO, psid, 0, AAC_SEQUENCE_HEADER)
        publisher.send_media(VIDEO, psid, 0, avc_keyframe())
        self.server.flush()
        player, _ = self.server.player("cam")
        player.transport.loseConnection()
        self.server.flush()
        publisher.transport.loseConnection()
        self.server.flush()
        self.assertEqual(
            self.names(),
            [
                "connect",
                "publish_start",
                "codec_detected",
                "connect",
                "play_start",
                "play_stop",
                "disconnect",
                "publish_stop",
                "disconnect",
            ],
        )
        by_name = {e.name: e.fields for e in self.events}
        pub_conn = self.events[0].fields["conn_id"]
        self.assertEqual(by_name["publish_start"]["conn_id"], pub_conn)
        self.assertEqual(
            {k: by_name["publish_start"][k] for k in ("stream_key", "app", "name")},
            {"stream_key": "live/cam", "app": "live", "name": "cam"},
        )
        self.assertEqual(by_name["codec_detected"]["video_codec"], "H264")
        self.assertEqual(by_name["codec_detected"]["audio_codec"], "AAC")
        self.assertNotEqual(by_name["play_start"]["conn_id"], pub_conn)
        self.assertGreater(by_name["publish_stop"]["bytes_in"], 0)
        self.assertEqual(by_name["publish_stop"]["messages_in"], 3)
        last = self.events[-1].fields
        self.assertEqual((last["conn_id"], last["app"]), (pub_conn, "live"))
        self.assertGreater(last["bytes_in"], 0)
        self.assertGreater(last["bytes_out"], 0)
        self.assertTrue(all(e.name in EVENT_NAMES for e in self.events))

    def test_bare_tcp_connection_tells_nothing(self) -> None:
        client, _ = self.server.connect_client()
        self.server.flush()
        client.transport.loseConnection()
        self.server.flush()
        self.assertEqual(self.events, [])

    def test_refused_publish_is_auth_denied(self) -> None:
        class RefusePublish(Authoriser):
            name = "test-refuser"

            def check(self, request: Request):
                return Deny("not today") if str(request.action) == "publish" else ALLOW

        server = self.server
        server.factory.access = AccessPolicy([RefusePublish()], clock=server.clock, now=server.clock.seconds)
        client, sid = server.session()
        client.publish(sid, "cam?k=1").addErrback(lambda f: None)
        server.flush()
        denied = [e.fields for e in self.events if e.name == "auth_denied"]
        self.assertEqual(len(denied), 1)
        self.assertEqual(
            {k: denied[0][k] for k in ("action", "app", "name", "reason", "authoriser")},
            {
                "action": "publish",
                "app": "live",
                "name": "cam",
                "reason": "not today",
                "authoriser": "test-refuser",
            },
        )
        self.assertNotIn("publish_start", self.names())
