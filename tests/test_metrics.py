"""``/metrics`` on in-memory servers: every metric moves as the server does, counters never go down."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from rtmpd.access.counters import AccessCounters
from rtmpd.config import ServerConfig
from rtmpd.core.messages import MessageType
from rtmpd.http.metrics import MetricsResource
from rtmpd.metrics.labels import CLOSE_REASONS, NO_APP, OTHER, AppLabels, close_reason
from rtmpd.tap.metrics import metrics_registry
from rtmpd.testing import MemoryServer
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)
from tests.test_recorder import RecorderTestCase

V, A = MessageType.VIDEO, MessageType.AUDIO


def scrape(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a text-format scrape: (name, sorted labels) -> value."""
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class MetricsTestCase(SynchronousTestCase):
    config = ServerConfig()
    registry_options: dict[str, Any] = {}

    def setUp(self) -> None:
        self.server = MemoryServer(self.config)
        self.registry = metrics_registry(self.server.service, **self.registry_options)

    def scrape(self) -> dict:
        return scrape(self.registry)

    def publish_gop(self, pub, sid: int, start: int = 0, frames: int = 10) -> int:
        pub.send_media(A, sid, start, AAC_SEQUENCE_HEADER)
        pub.send_media(V, sid, start, AVC_SEQUENCE_HEADER)
        for i in range(frames):
            ts = start + i * 100
            pub.send_media(V, sid, ts, avc_keyframe(i) if i == 0 else avc_interframe(i))
            pub.send_media(A, sid, ts, aac_frame(i))
        self.server.flush()
        return start + frames * 100


class ConnectionAndStreamMetricsTests(MetricsTestCase):
    def test_players_and_publishers_gauges_go_up_and_down(self) -> None:
        pub, sid = self.server.publisher("a")
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_publishers", app="live"), 1)
        self.assertEqual(value(s, "rtmpd_players", app="live"), 0)
        players = [self.server.player("a")[0] for _ in range(3)]
        self.assertEqual(value(self.scrape(), "rtmpd_players", app="live"), 3)
        players[0].transport.loseConnection()
        self.server.flush()
        self.assertEqual(value(self.scrape(), "rtmpd_players", app="live"), 2)
        pub.transport.loseConnection()
        for p in players[1:]:
            p.transport.loseConnection()
        self.server.flush()
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_players", app="live"), 0)
        self.assertEqual(value(s, "rtmpd_publishers", app="live"), 0)
        self.assertEqual(value(s, "rtmpd_plays_total", app="live"), 3)
        self.assertEqual(value(s, "rtmpd_publishes_total", app="live"), 1)

    def test_connections_accepted_open_and_closed_by_reason(self) -> None:
        pub, _ = self.server.publisher("a")
        player, _ = self.server.player("a")
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_connections"), 2)
        self.assertEqual(value(s, "rtmpd_connections_accepted_total"), 2)
        self.assertEqual({value(s, "rtmpd_connections_closed_total", reason=r) for r in CLOSE_REASONS}, {0})
        player.transport.loseConnection()
        self.server.flush()
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_connections"), 1)
        self.assertEqual(value(s, "rtmpd_connections_accepted_total"), 2)
        self.assertEqual(value(s, "rtmpd_connections_closed_total", reason="client_closed"), 1)

    def test_a_stalled_player_is_counted_as_timed_out(self) -> None:
        pub, sid = self.server.publisher("a")
        player, _ = self.server.player("a")
        player.server_protocol.pauseProducing()  # its socket is full and stays so
        self.server.advance(self.config.play_timeout + 1.5)
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_players_timed_out_total"), 1)
        self.assertEqual(value(s, "rtmpd_connections_closed_total", reason="play_timeout"), 1)
        self.assertEqual(value(s, "rtmpd_players", app="live"), 0)

    def test_bytes_counters_are_the_connections_bytes_and_never_go_down(self) -> None:
        pub, sid = self.server.publisher("a")
        player, _ = self.server.player("a")
        self.publish_gop(pub, sid)
        conns = self.server.service.connections
        s = self.scrape()
        self.assertEqual(
            value(s, "rtmpd_sent_bytes_total", app="live"), sum(c.bytes_out for c in conns.values())
        )
        self.assertEqual(
            value(s, "rtmpd_received_bytes_total", app="live"), sum(c.bytes_in for c in conns.values())
        )
        sent_before = value(s, "rtmpd_sent_bytes_total", app="live")
        player_out = player.server_protocol.bytes_out
        self.assertGreater(player_out, 1000)
        player.transport.loseConnection()
        self.server.flush()
        s = self.scrape()
        # The player's bytes stay in the total after it left.
        self.assertEqual(value(s, "rtmpd_sent_bytes_total", app="live"), sent_before)
        self.publish_gop(pub, sid, start=1000)
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_sent_bytes_total", app="live"), sent_before + 0)
        # The publisher's input since goes into the received total, the player's left in it.
        self.assertEqual(
            value(s, "rtmpd_received_bytes_total", app="live"),
            pub.server_protocol.bytes_in + player.server_protocol.bytes_in,
        )

    def test_gop_cache_bytes_is_the_caches_size(self) -> None:
        pub, sid = self.server.publisher("a")
        self.publish_gop(pub, sid, frames=5)
        stream = self.server.registry.get("live/a")
        self.assertGreater(stream.cache.gop_bytes, 0)
        self.assertEqual(value(self.scrape(), "rtmpd_gop_cache_bytes", app="live"), stream.cache.gop_bytes)

    def test_dropped_frames_of_slow_players_count_and_stay_counted(self) -> None:
        pub, sid = self.server.publisher("a")
        player, _ = self.server.player("a")
        ts = self.publish_gop(pub, sid, frames=2)
        player.server_protocol.pauseProducing()
        for i in range(4):
            pub.send_media(V, sid, ts + i * 100, avc_interframe(i))
        self.server.flush()
        self.assertEqual(value(self.scrape(), "rtmpd_dropped_frames_total", app="live"), 4)
        player.transport.loseConnection()
        self.server.flush()
        self.assertEqual(value(self.scrape(), "rtmpd_dropped_frames_total", app="live"), 4)

    def test_build_info_and_process_metrics(self) -> None:
        import rtmpd

        s = self.scrape()
        build = [k for k in s if k[0] == "rtmpd_build_info"]
        self.assertEqual(len(build), 1)
        self.assertIn(("version", rtmpd.__version__), build[0][1])
        self.assertIn(("process_resident_memory_bytes", ()), s)
        self.assertTrue(any(k[0] == "python_gc_objects_collected_total" for k in s))


class FirstKeyframeTests(MetricsTestCase):
    config = ServerConfig(gop_cache=False)

    def histogram(self) -> tuple[float, float]:
        s = self.scrape()
        return value(s, "rtmpd_play_first_keyframe_seconds_count"), value(
            s, "rtmpd_play_first_keyframe_seconds_sum"
        )

    def test_a_player_waits_for_the_next_keyframe(self) -> None:
        pub, sid = self.server.publisher("a")
        ts = self.publish_gop(pub, sid, frames=3)
        self.server.player("a")
        self.assertEqual(self.histogram(), (0, 0))
        self.server.advance(2.5)
        pub.send_media(V, sid, ts, avc_interframe(1))
        self.server.flush()
        self.server.clock.advance(0)
        self.assertEqual(self.histogram(), (0, 0))
        pub.send_media(V, sid, ts + 100, avc_keyframe(2))
        self.server.flush()
        self.server.clock.advance(0)
        self.assertEqual(self.histogram(), (1, 2.5))
        # Nobody waits any more: the timer no longer follows the streams.
        self.assertNotIn(self._timer(), self.server.registry.listeners)

    def _timer(self):
        from rtmpd.metrics.events import FirstKeyframeTimer

        found = [
            x
            for x in self.server.registry.notifier._subscribers
            if isinstance(getattr(x, "__self__", None), FirstKeyframeTimer)
        ]
        return found[0].__self__

    def test_players_waiting_for_a_publisher_are_timed_from_the_publish(self) -> None:
        self.server.player("a")
        self.server.advance(5)
        pub, sid = self.server.publisher("a")
        self.server.advance(1)
        pub.send_media(V, sid, 0, AVC_SEQUENCE_HEADER)
        pub.send_media(V, sid, 0, avc_keyframe(0))
        self.server.flush()
        self.server.clock.advance(0)
        self.assertEqual(self.histogram(), (1, 1.0))

    def test_audio_only_players_are_given_up(self) -> None:
        pub, sid = self.server.publisher("a")
        clock = [0]

        def audio_for(seconds: int) -> None:
            for _ in range(seconds):
                pub.send_media(A, sid, clock[0] * 1000, aac_frame(clock[0]))
                self.server.advance(1)
                clock[0] += 1

        self.server.player("a")
        audio_for(20)
        self.server.player("a")
        audio_for(11)
        # The first player is given up after 30 s, the second one still waits.
        self.assertEqual([len(w) for w in self._timer().waiting.values()], [1])
        self.assertIn(self._timer(), self.server.registry.listeners)
        audio_for(20)
        self.assertEqual(self.histogram(), (0, 0))
        self.assertEqual(self._timer().waiting, {})
        self.assertNotIn(self._timer(), self.server.registry.listeners)
        self.assertEqual(value(self.scrape(), "rtmpd_players", app="live"), 2)


class FirstKeyframeWithCacheTests(MetricsTestCase):
    def test_late_join_burst_starts_at_a_keyframe_at_once(self) -> None:
        pub, sid = self.server.publisher("a")
        self.publish_gop(pub, sid, frames=3)
        self.server.player("a")
        self.server.clock.advance(0)
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_play_first_keyframe_seconds_count"), 1)
        self.assertEqual(value(s, "rtmpd_play_first_keyframe_seconds_bucket", le="0.01"), 1)


class LabelTests(MetricsTestCase):
    registry_options = {"max_apps": 2}

    def test_applications_beyond_the_cap_share_one_label(self) -> None:
        for app in ("one", "two", "three", "four"):
            self.server.publisher("s", app=app)
        s = self.scrape()
        self.assertEqual(
            {k[1] for k in s if k[0] == "rtmpd_publishers"},
            {(("app", "one"),), (("app", "two"),), (("app", OTHER),)},
        )
        self.assertEqual(value(s, "rtmpd_publishers", app=OTHER), 2)

    def test_app_labels_are_stable_and_bounded(self) -> None:
        labels = AppLabels(2)
        self.assertEqual([labels(a) for a in ("x", "y", "z", "x", "y" * 100)], ["x", "y", OTHER, "x", OTHER])
        self.assertEqual(labels(OTHER), OTHER)
        self.assertEqual(labels(""), NO_APP)

    def test_close_reasons_are_bucketed(self) -> None:
        cases = {
            "play timeout": "play_timeout",
            "publisher timeout": "publisher_timeout",
            "handshake timeout": "handshake_timeout",
            "protocol error: ChunkTooLarge": "protocol_error",
            "kicked by admin": "admin",
            "dropped by alice": "admin",
            "publish refused: NetStream.Publish.BadName": "refused",
            "publish permission expired": "access",
            "publish key revoked": "access",
            "publisher replaced": "publisher_replaced",
            "Connection was closed cleanly.": "client_closed",
            "Connection to the other side was lost in a non-clean fashion.": "connection_lost",
            "something new": "other",
        }
        self.assertEqual({r: close_reason(r) for r in cases}, cases)
        self.assertTrue(set(cases.values()) <= set(CLOSE_REASONS))


class PerStreamTests(MetricsTestCase):
    registry_options = {"per_stream": True, "max_streams": 2}

    def test_per_stream_series_are_capped(self) -> None:
        for name in ("c", "a", "b"):
            pub, sid = self.server.publisher(name)
        self.server.player("a")
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_stream_players", stream="live/a"), 1)
        self.assertEqual(value(s, "rtmpd_stream_live", stream="live/b"), 1)
        self.assertNotIn(("rtmpd_stream_live", (("stream", "live/c"),)), s)
        self.assertEqual(value(s, "rtmpd_metrics_streams_omitted"), 1)

    def test_off_by_default(self) -> None:
        registry = metrics_registry(MemoryServer().service)
        self.assertFalse(any(k[0].startswith("rtmpd_stream_") for k in scrape(registry)))


class AccessAndHookMetricsTests(MetricsTestCase):
    def test_access_counters_are_exported(self) -> None:
        self.assertFalse(any(k[0].startswith("rtmpd_auth_") for k in self.scrape()))
        counters = AccessCounters()

        class Policy:
            pass

        policy = Policy()
        policy.counters = counters
        self.server.factory.access = policy
        counters.outcome("publish", True)
        counters.outcome("publish", False)
        counters.outcome("publish", False)
        counters.authoriser_decision("play", False, "keys")
        counters.callback("allow", 0.02)
        counters.callback("timeout", 7.0)
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_auth_decisions_total", action="publish", result="deny"), 2)
        self.assertEqual(value(s, "rtmpd_auth_decisions_total", action="publish", result="allow"), 1)
        self.assertEqual(
            value(
                s, "rtmpd_auth_authoriser_decisions_total", action="play", result="deny", authoriser="keys"
            ),
            1,
        )
        self.assertEqual(value(s, "rtmpd_auth_callback_requests_total", result="timeout"), 1)
        self.assertEqual(value(s, "rtmpd_auth_callback_duration_seconds_count"), 2)
        self.assertAlmostEqual(value(s, "rtmpd_auth_callback_duration_seconds_sum"), 7.02)
        self.assertEqual(value(s, "rtmpd_auth_callback_duration_seconds_bucket", le="0.025"), 1)
        self.assertEqual(value(s, "rtmpd_auth_callback_duration_seconds_bucket", le="10.0"), 2)
        self.assertEqual(value(s, "rtmpd_auth_callback_duration_seconds_bucket", le="+Inf"), 2)

    def test_hook_deliveries_are_exported(self) -> None:
        self.assertFalse(any(k[0].startswith("rtmpd_hook_") for k in self.scrape()))
        from twisted.application.service import Service

        class Hooks(Service):
            """Stands in for rtmpd.hooks.service.HookService: found by name, counts by kind and result."""

            name = "hooks"
            counts = {("webhook", "ok"): 0, ("webhook", "dropped"): 0, ("exec", "failed"): 0}

            def deliveries(self):
                return dict(self.counts)

        hooks = Hooks()
        hooks.setServiceParent(self.server.service)
        hooks.counts.update({("webhook", "ok"): 2, ("webhook", "dropped"): 3, ("exec", "failed"): 1})
        s = self.scrape()
        self.assertEqual(value(s, "rtmpd_hook_deliveries_total", kind="webhook", result="ok"), 2)
        self.assertEqual(value(s, "rtmpd_hook_deliveries_total", kind="webhook", result="dropped"), 3)
        self.assertEqual(value(s, "rtmpd_hook_deliveries_total", kind="exec", result="failed"), 1)


class RecordingMetricsTests(RecorderTestCase):
    record_config = {"record_max_size": 3000}

    def test_active_bytes_and_totals_across_files(self) -> None:
        self.server.service.recorder = self.recorder
        registry = metrics_registry(self.server.service)
        self.assertEqual(value(scrape(registry), "rtmpd_recordings_active"), 0)
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=6, gop_ms=500, key_size=1000)
        recording = self.recording()
        s = scrape(registry)
        self.assertEqual(value(s, "rtmpd_recordings_active"), 1)
        self.assertGreater(len(recording.files or [recording.file]), 0)
        self.assertEqual(value(s, "rtmpd_recording_bytes_total"), recording.bytes_before + recording.bytes)
        self.assertGreater(recording.bytes_before, 0)  # several files: the earlier ones still count
        recording = self.unpublish(pub)
        files = sum(len(self.data(p)) for p in recording.files)
        s = scrape(registry)
        self.assertEqual(value(s, "rtmpd_recordings_active"), 0)
        # Bytes queued to the files are the files' bytes (the index is rewritten in place).
        self.assertEqual(value(s, "rtmpd_recording_bytes_total"), files)
        self.assertEqual(value(s, "rtmpd_recording_failures_total"), 0)


class MetricsResourceTests(MetricsTestCase):
    def render(self, method: bytes = b"GET", accept: str | None = None) -> tuple[DummyRequest, bytes]:
        request = DummyRequest([b""])
        request.method = method
        if accept is not None:
            request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
        body = MetricsResource(self.registry).render(request)
        return request, body

    def test_text_format_by_default(self) -> None:
        request, body = self.render()
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )
        self.assertIn(b"rtmpd_connections 0.0", body)

    def test_openmetrics_when_asked(self) -> None:
        request, body = self.render(accept="application/openmetrics-text; version=1.0.0")
        [content_type] = request.responseHeaders.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"application/openmetrics-text; version=1.0.0"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_other_methods_get_a_json_405(self) -> None:
        request, body = self.render(b"POST")
        self.assertEqual(request.responseCode, 405)
        self.assertIn(b'"status":405', body)

    def test_a_failing_collector_is_a_json_500(self) -> None:
        class Broken:
            def describe(self):
                return []

            def collect(self):
                raise RuntimeError("boom")

        self.registry.register(Broken())
        request, body = self.render()
        self.assertEqual(request.responseCode, 500)
        self.assertIn(b"metrics collection failed", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class TapTests(SynchronousTestCase):
    def test_http_mounts_metrics_unless_no_metrics(self) -> None:
        from rtmpd.http.root import HTTPRoot
        from rtmpd.tap import Options, makeService
        from rtmpd.tap.http import install_http

        mounted = {}

        def spy(top, description, *limits):
            root = mounted["root"] = install_http(top, description, *limits)
            return root

        import rtmpd.tap.http as tap_http

        self.patch(tap_http, "install_http", spy)
        for extra, expected in (([], True), (["--no-metrics"], False)):
            options = Options()
            options.parseOptions(["--http", "tcp:0:interface=127.0.0.1", "--metrics-per-stream", *extra])
            makeService(options)
            self.assertIsInstance(mounted["root"], HTTPRoot)
            self.assertEqual("metrics" in mounted["root"].mounted, expected)
