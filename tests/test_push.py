"""Push relays in memory: ``rtmpd.remote`` pushing from an rtmpd server to an rtmpd server on a fake clock.

The source and the destination are apps of one ``MemoryServer`` (``live`` and
``out``); each push connection is an ``RTMPClientProtocol`` joined to a
server connection by ``iosim``, so the whole exchange is the real code on
both ends, without sockets and without sleeping.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.classify import classify
from rtmpd.core.client import ClientSession
from rtmpd.core.messages import MessageType
from rtmpd.remote.backoff import Backoff
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.destination import DestinationState, PushDestination
from rtmpd.remote.push import RELAY_FLASH_VER, PushRule, PushService
from rtmpd.remote.timeline import Timeline
from rtmpd.remote.urls import RemoteURL, URLError, render
from rtmpd.testing import MemoryServer, RTMPTestClient
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

VIDEO = int(MessageType.VIDEO)
AUDIO = int(MessageType.AUDIO)


class Harness:
    """A MemoryServer with a push service whose connections go back into the same server."""

    def __init__(self, test: SynchronousTestCase, *, grace: float = 10.0, max_queue_bytes: int = 1 << 20):
        self.server = MemoryServer(ServerConfig())
        self.clock = self.server.clock
        self.up = True
        #: What a connection attempt does when up: "serve" (a real server end), or "silent" (TCP, no bytes).
        self.mode = "serve"
        self.clients: list[RTMPClientProtocol] = []
        self.server_protocols: list[Any] = []
        self.push = PushService(
            self.server.registry,
            self.clock,
            self.connect,
            grace=grace,
            max_queue_bytes=max_queue_bytes,
            stall_timeout=5.0,
            backoff=lambda: Backoff(uniform=lambda low, high: high),
        )
        self.push.startService()
        test.addCleanup(self.push.stopService)

    def connect(self, destination: PushDestination, rule: PushRule):
        if not self.up:
            return fail(ConnectionRefusedError("down"))
        url = destination.url
        session = ClientSession(
            mode="publish",
            app=url.app,
            tc_url=url.tc_url,
            stream_name=url.name,
            flash_ver=RELAY_FLASH_VER,
        )
        client = RTMPClientProtocol(session, destination, self.clock, 10.0)
        self.clients.append(client)
        server_protocol = Protocol() if self.mode == "silent" else self.server.factory.buildProtocol(None)
        self.server_protocols.append(server_protocol)
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server_protocol, lambda: client, clock=self.clock, greet=False
        )
        self.server.pumps.append(pump)
        return succeed(client)

    def publisher(self, name: str = "a") -> tuple[RTMPTestClient, int]:
        return self.server.publisher(name)

    def send_gop(
        self, client: RTMPTestClient, sid: int, start: int, frames: int = 5, config: bool = True
    ) -> None:
        if config:
            client.send_metadata(sid, {"width": 640.0, "height": 360.0})
            client.send_media(VIDEO, sid, start, AVC_SEQUENCE_HEADER)
            client.send_media(AUDIO, sid, start, AAC_SEQUENCE_HEADER)
        client.send_media(VIDEO, sid, start, avc_keyframe(start))
        for i in range(1, frames):
            client.send_media(AUDIO, sid, start + i * 20, aac_frame(i))
            client.send_media(VIDEO, sid, start + i * 33, avc_interframe(i))
        self.server.flush()


def media_summary(client: RTMPTestClient) -> list[tuple[int, int, str]]:
    """(type, timestamp, kind) of what a player received: kind is header/key/inter/audio/data."""
    out = []
    for m in client.media():
        if m.type_id == VIDEO:
            info = classify(m)
            kind = "header" if info.config_slot else ("key" if info.is_keyframe else "inter")
        elif m.type_id == AUDIO:
            kind = "aheader" if classify(m).config_slot else "audio"
        else:
            kind = "data"
        out.append((m.type_id, m.timestamp, kind))
    return out


class UrlTests(SynchronousTestCase):
    def test_parse(self) -> None:
        url = RemoteURL.parse("rtmps://live-api.example.com/rtmp/KEY123?s=1")
        self.assertEqual(
            (url.scheme, url.host, url.port, url.app, url.name),
            ("rtmps", "live-api.example.com", 443, "rtmp", "KEY123?s=1"),
        )
        self.assertEqual(url.tc_url, "rtmps://live-api.example.com:443/rtmp")
        self.assertEqual(url.redacted(), "rtmps://live-api.example.com:443/rtmp/KEY1***")
        self.assertEqual(RemoteURL.parse("rtmp://h:1940/a/b/c").app, "a/b")

    def test_bad_urls(self) -> None:
        for bad in ("http://h/a/b", "rtmp:///a/b", "rtmp://h/onlyapp", "rtmp://h:99999/a/b"):
            self.assertRaises(URLError, RemoteURL.parse, bad)

    def test_template(self) -> None:
        self.assertEqual(render("rtmp://h/{app}-x/{name}", "live/k").key, "live-x/k")
        self.assertRaises(URLError, render, "rtmp://h/{key}/x", "live/k")


class BackoffTests(SynchronousTestCase):
    def test_doubles_to_the_maximum_and_resets_after_health(self) -> None:
        backoff = Backoff(uniform=lambda low, high: high)
        self.assertEqual([backoff.next_delay() for _ in range(7)], [1, 2, 4, 8, 16, 30, 30])
        backoff.connection_ended(59.0)
        self.assertEqual(backoff.next_delay(), 30)
        backoff.connection_ended(60.0)
        self.assertEqual(backoff.next_delay(), 1)

    def test_jitter_stays_within_the_step(self) -> None:
        draws: list[tuple[float, float]] = []
        backoff = Backoff(uniform=lambda low, high: draws.append((low, high)) or low)
        backoff.next_delay()
        backoff.next_delay()
        self.assertEqual(draws, [(0.8, 1.0), (1.6, 2.0)])


class TimelineTests(SynchronousTestCase):
    def test_new_connection_starts_at_zero_and_a_new_publisher_continues(self) -> None:
        now = [100.0]
        timeline = Timeline(lambda: now[0])
        self.assertEqual([timeline.stamp(t) for t in (5000, 5033, 5020, 6000)], [0, 33, 20, 1000])
        now[0] += 2.5
        timeline.continue_later()
        self.assertEqual([timeline.stamp(t) for t in (0, 0, 40)], [3500, 3500, 3540])
        timeline.restart()
        self.assertEqual(timeline.stamp(9), 0)


class PushTests(SynchronousTestCase):
    def test_push_publishes_at_the_destination_from_config_and_a_keyframe(self) -> None:
        h = Harness(self)
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 10_000)
        self.assertIn("out/a", h.server.registry.streams)
        self.assertEqual(h.push.destinations()[0]["state"], "publishing")
        player, psid = h.server.player("a", app="out")
        h.send_gop(pub, sid, 12_000, config=False)
        summary = media_summary(player)
        kinds = [k for _, _, k in summary]
        # Late join at the destination: metadata, config, then the keyframe the push started with.
        self.assertEqual(kinds[:4], ["data", "aheader", "header", "key"])
        video = [ts for t, ts, k in summary if t == VIDEO and k != "header"]
        self.assertEqual(video[0], 0, "timestamps start at 0 on a new connection")
        self.assertEqual(video, sorted(video))
        self.assertIn(2000, video)
        stats = h.push.destinations()[0]
        self.assertGreater(stats["bytes_sent"], 1000)
        self.assertEqual((stats["reconnects"], stats["last_error"]), (0, None))

    def test_late_start_sends_the_cached_gop(self) -> None:
        h = Harness(self)
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 500)
        h.push.add("live/a", "rtmp://127.0.0.1/out/copy")
        h.server.flush()
        player, _ = h.server.player("copy", app="out")
        kinds = [k for _, _, k in media_summary(player)]
        self.assertEqual(kinds[:4], ["data", "aheader", "header", "key"])
        self.assertEqual(kinds.count("inter"), 4)

    def test_down_destination_retried_with_growing_delays_then_resumes(self) -> None:
        h = Harness(self)
        h.up = False
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        with capturedLogs() as events:
            pub, sid = h.publisher("a")
            for second in range(40):
                # The publisher keeps sending (a silent one would be dropped after 10 s).
                pub.send_media(AUDIO, sid, second * 1000, aac_frame(second))
                h.server.advance(1)
        destination = h.push.destination("live/a", 1)
        times = list(destination.attempt_times)
        self.assertEqual([b - a for a, b in zip(times, times[1:], strict=False)], [1, 2, 4, 8, 16])
        failures = [e for e in events if e.get("log_format", "").startswith("Push destination failed")]
        self.assertEqual([e["delay"] for e in failures], [1, 2, 4, 8, 16, 30])
        self.assertTrue(all(e["error"].startswith("ConnectionRefusedError") for e in failures))
        self.assertEqual(destination.state, DestinationState.BACKING_OFF)
        self.assertEqual(h.push.destinations()[0]["reconnects"], 5)
        h.send_gop(pub, sid, 40_000)
        h.up = True
        for second in range(30):
            if destination.state is DestinationState.PUBLISHING:
                break
            pub.send_media(AUDIO, sid, 40_200 + second * 1000, aac_frame(second))
            h.server.advance(1)
        # Retried at 31 s + 30 s: it resumed within that backoff step.
        self.assertEqual(destination.attempt_times[-1], 61)
        self.assertEqual(destination.state, DestinationState.PUBLISHING)
        player, _ = h.server.player("a", app="out")
        self.assertEqual([k for _, _, k in media_summary(player)][:4], ["data", "aheader", "header", "key"])

    def test_grace_keeps_the_connection_and_timestamps_go_on(self) -> None:
        h = Harness(self, grace=10.0)
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 0)
        player, _ = h.server.player("a", app="out")
        h.send_gop(pub, sid, 2000, config=False)
        first_conn = h.server_protocols[0]
        pub.transport.loseConnection()
        h.server.flush()
        self.assertNotIn("live/a", [s.key for s in h.server.registry if s.live])
        h.server.advance(4)
        self.assertTrue(h.server.registry.get("out/a").live, "the destination stays published in the grace")
        pub2, sid2 = h.publisher("a")
        h.send_gop(pub2, sid2, 0)  # a new publisher, starting again at 0
        self.assertEqual(len(h.server_protocols), 1, "no new connection")
        self.assertIn(first_conn.conn_id, h.server.service.connections, "the same connection carries on")
        summary = media_summary(player)
        video = [ts for t, ts, k in summary if t == VIDEO and k in ("key", "inter")]
        self.assertEqual(video, sorted(video), "monotonic across the publishers")
        keys = [ts for _, ts, k in summary if k == "key"]
        # 0 and 2000 from the first publisher; the new one's keyframe 4 s (of clock) after the last frame.
        self.assertEqual(keys[:2], [0, 2000])
        self.assertGreaterEqual(keys[2], 2000 + 4 * 33 + 4000)
        kinds = [k for _, _, k in summary]
        # Its codec configuration came again, before its keyframe.
        last_key = len(kinds) - 1 - kinds[::-1].index("key")
        self.assertIn("header", kinds[last_key - 3 : last_key])

    def test_after_the_grace_fcunpublish_and_close(self) -> None:
        h = Harness(self, grace=10.0)
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 0)
        pub.transport.loseConnection()
        h.server.flush()
        with capturedLogs() as events:
            h.server.advance(9)
            self.assertTrue(h.server.registry.get("out/a").live)
            h.server.advance(2)
        messages = [e.get("log_format") for e in events]
        self.assertIn("Push destination stopped", messages)
        self.assertIsNone(h.server.registry.get("out/a"))
        self.assertEqual(h.push.destinations(), [])
        self.assertEqual([c.client.state.value for c in h.clients], ["closed"])

    def test_relayed_publish_is_not_pushed_again(self) -> None:
        h = Harness(self)
        h.push.add("*", "rtmp://127.0.0.1/other/{name}")
        client, _ = h.server.connect_client()
        h.server.flush()
        h.server.settle(client.connect("live", flashVer=RELAY_FLASH_VER))
        sid = h.server.settle(client.create_stream())
        h.server.settle(client.publish(sid, "a"))
        self.assertEqual(h.push.destinations(), [])

    def test_rule_pointing_at_itself_is_refused(self) -> None:
        h = Harness(self)
        h.push._is_self = lambda url: url.host == "127.0.0.1"
        self.assertRaises(URLError, h.push.add, "live/*", "rtmp://127.0.0.1/{app}/{name}")
        self.assertRaises(URLError, h.push.add, "live/*", "rtmp://127.0.0.1/live/x")
        h.push.add("live/a", "rtmp://127.0.0.1/backup/{name}")  # another key: allowed

    def test_refused_publish_is_retried(self) -> None:
        h = Harness(self)
        squatter, ssid = h.server.publisher("a", app="out")
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 0)
        stats = h.push.destinations()[0]
        self.assertEqual(stats["state"], "backing off")
        self.assertIn("publish refused: NetStream.Publish.BadName", stats["last_error"])
        squatter.transport.loseConnection()
        h.server.advance(1.5)
        self.assertEqual(h.push.destinations()[0]["state"], "publishing")

    def test_silent_destination_times_out_and_is_retried(self) -> None:
        h = Harness(self)
        h.mode = "silent"
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        h.server.advance(10.5)
        stats = h.push.destinations()[0]
        self.assertEqual(stats["state"], "backing off")
        self.assertIn("no started stream within 10 s (stuck at handshake)", stats["last_error"])
        h.server.advance(1.5)
        self.assertEqual(len(h.clients), 2)

    def test_slow_destination_bounded_and_drops_to_a_keyframe_and_stall_ends_it(self) -> None:
        h = Harness(self, max_queue_bytes=2_000)
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        local, _ = h.server.player("a")
        h.send_gop(pub, sid, 0)
        destination = h.push.destination("live/a", 1)
        client = h.clients[0]
        client.pauseProducing()
        for n in range(40):
            h.send_gop(pub, sid, 1000 + n * 200, frames=5, config=False)
            self.assertLessEqual(destination._queue_bytes, 2_000)
        self.assertGreater(destination.dropped_frames, 0)
        # The local player got everything meanwhile.
        self.assertEqual(sum(1 for _, _, k in media_summary(local) if k == "key"), 41)
        client.resumeProducing()
        h.server.flush()
        self.assertEqual(destination._queue_bytes, 0)
        client.pauseProducing()
        with capturedLogs() as events:
            h.server.advance(5.5)
        self.assertIn("destination stalled", destination.last_error)
        self.assertTrue(any(e.get("log_format", "").startswith("Push destination failed") for e in events))

    def test_runtime_remove_and_restart(self) -> None:
        h = Harness(self)
        rule = h.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 0)
        self.assertEqual(h.push.restart(rule), 1)
        h.server.flush()
        self.assertEqual(len(h.server_protocols), 2)
        self.assertEqual(h.push.destinations()[0]["state"], "publishing")
        self.assertEqual(
            h.push.rules(), [{"id": rule, "pattern": "live/*", "url": "rtmp://127.0.0.1/out/{name}"}]
        )
        h.push.remove(rule)
        h.server.flush()
        self.assertEqual(h.push.destinations(), [])
        self.assertIsNone(h.server.registry.get("out/a"))
        self.assertTrue(h.server.registry.get("live/a").live)


class Wiring(SynchronousTestCase):
    """``--push`` and friends through the tap: the service is built, bad settings stop start-up."""

    def parse(self, *args: str):
        from rtmpd.tap import Options

        options = Options()
        options.parseOptions(list(args))
        return options

    def test_push_service_is_a_named_child_with_the_rules(self) -> None:
        from rtmpd.tap import makeService

        top = makeService(
            self.parse("--port", "0", "--push", "live/*=rtmp://example.com/app/{name}", "--push-grace", "3")
        )
        push = top.getServiceNamed("push")
        self.assertEqual(
            push.rules(), [{"id": 1, "pattern": "live/*", "url": "rtmp://example.com/app/{name}"}]
        )
        self.assertEqual(push.grace, 3.0)
        self.assertIsInstance(makeService(self.parse("--port", "0")).getServiceNamed("push"), PushService)

    def test_bad_settings_stop_start_up_with_one_line(self) -> None:
        from rtmpd.tap import makeService

        cases = [
            (["--push", "live/*=http://x/a/b"], "the scheme must be rtmp or rtmps"),
            (["--push", "live/*=rtmp://127.0.0.1:1935/{app}/{name}"], "pushes every stream to itself"),
            (["--push", "live/a=rtmp://localhost:1935/live/a"], "pushes live/a to itself"),
            (["--push", "live/*=rtmp://x/a/b", "--push-ca", "/nonexistent/ca.pem"], "--push-ca"),
        ]
        for extra, message in cases:
            with self.assertRaises(SystemExit) as raised:
                makeService(self.parse("--port", "1935", *extra))
            self.assertIn(message, str(raised.exception))
        with self.assertRaises(SystemExit) as raised:
            self.parse("--push", "no-equals-sign")
        self.assertIn("PATTERN=URL", str(raised.exception))
        # Another port of this host, or another key here, is no loop.
        makeService(self.parse("--port", "1935", "--push", "live/*=rtmp://127.0.0.1:1936/live/{name}"))
        makeService(self.parse("--port", "1935", "--push", "live/*=rtmp://127.0.0.1:1935/backup/{name}"))

    def test_pull_rules_through_the_tap(self) -> None:
        from rtmpd.tap import makeService

        top = makeService(
            self.parse("--port", "1935", "--pull", "live=rtmp://origin/live", "--pull-idle", "4")
        )
        pull = top.getServiceNamed("pull")
        self.assertEqual((pull.rules(), pull.idle), ({"live": "rtmp://origin/live/{name}"}, 4.0))
        for extra, message in [
            (["--pull", "live=rtmp://127.0.0.1:1935/live"], "pulls live from itself"),
            (["--pull", "a/b=rtmp://o/live"], "names one local app"),
        ]:
            with self.assertRaises(SystemExit) as raised:
                makeService(self.parse("--port", "1935", *extra))
            self.assertIn(message, str(raised.exception))

    def test_manhole_namespace_has_the_push_service(self) -> None:
        from rtmpd.admin.namespace import make_namespace
        from rtmpd.tap import makeService

        top = makeService(self.parse("--port", "0"))
        self.assertIs(make_namespace(top, "op")["push"], top.getServiceNamed("push"))


class PushMetricsTests(SynchronousTestCase):
    """The push service's state and totals in /metrics; totals survive the destinations that made them."""

    def test_destination_states_bytes_and_reconnects(self) -> None:
        from rtmpd.tap.metrics import metrics_registry
        from tests.test_metrics import scrape, value

        harness = Harness(self, grace=5.0)
        harness.push.setServiceParent(harness.server.service)
        registry = metrics_registry(harness.server.service)
        harness.push.add("live/*", "rtmp://127.0.0.1/out/{name}")
        publisher, sid = harness.publisher("a")
        harness.send_gop(publisher, sid, 0)
        harness.clock.advance(0.1)
        harness.server.flush()
        s = scrape(registry)
        self.assertEqual(value(s, "rtmpd_push_destinations", state="publishing"), 1)
        sent = value(s, "rtmpd_push_sent_bytes_total")
        self.assertGreater(sent, 0)
        # The source leaves; after the grace the destination is gone, its bytes stay counted.
        publisher.transport.loseConnection()
        harness.server.flush()
        harness.server.advance(6.0)
        s = scrape(registry)
        self.assertNotIn(("rtmpd_push_destinations", (("state", "publishing"),)), s)
        self.assertGreaterEqual(value(s, "rtmpd_push_sent_bytes_total"), sent)
        self.assertEqual(value(s, "rtmpd_push_reconnects_total"), 0)
