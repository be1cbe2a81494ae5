"""Pull relays (edge) in memory: local players of ``edge/*`` make rtmpd play ``origin/*`` from an origin.

The origin and the edge are apps of one ``MemoryServer``; the upstream is an
``RTMPClientProtocol`` in play mode joined to a server connection by iosim.
"""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.client import ClientSession
from rtmpd.core.messages import MessageType
from rtmpd.remote.backoff import Backoff
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.pull import PullService
from rtmpd.remote.push import RELAY_FLASH_VER, PushService, is_relayed
from rtmpd.remote.upstream import Upstream
from rtmpd.remote.urls import URLError
from rtmpd.testing import MemoryServer
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)
from tests.test_push import media_summary

VIDEO = int(MessageType.VIDEO)
AUDIO = int(MessageType.AUDIO)


class Edge:
    def __init__(self, test: SynchronousTestCase, idle: float = 5.0) -> None:
        self.server = MemoryServer(ServerConfig())
        self.clock = self.server.clock
        self.up = True
        self.upstreams: list[RTMPClientProtocol] = []
        self.pull = PullService(
            self.server.registry,
            self.clock,
            self.connect,
            idle=idle,
            backoff=lambda: Backoff(uniform=lambda low, high: high),
        )
        self.pull.add("edge", "rtmp://127.0.0.1/origin")
        self.pull.startService()
        test.addCleanup(self.pull.stopService)

    def connect(self, upstream: Upstream):
        if not self.up:
            return fail(ConnectionRefusedError("origin down"))
        url = upstream.url
        session = ClientSession(
            mode="play", app=url.app, tc_url=url.tc_url, stream_name=url.name, flash_ver=RELAY_FLASH_VER
        )
        client = RTMPClientProtocol(session, upstream, self.clock, 10.0)
        self.upstreams.append(client)
        server_protocol = self.server.factory.buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server_protocol, lambda: client, clock=self.clock, greet=False
        )
        self.server.pumps.append(pump)
        return succeed(client)

    def origin_gop(self, client, sid: int, start: int, config: bool = True) -> None:
        if config:
            client.send_metadata(sid, {"width": 320.0})
            client.send_media(VIDEO, sid, start, AVC_SEQUENCE_HEADER)
            client.send_media(AUDIO, sid, start, AAC_SEQUENCE_HEADER)
        client.send_media(VIDEO, sid, start, avc_keyframe(start))
        for i in range(1, 5):
            client.send_media(AUDIO, sid, start + i * 20, aac_frame(i))
            client.send_media(VIDEO, sid, start + i * 33, avc_interframe(i))
        self.server.flush()


class PullTests(SynchronousTestCase):
    def test_many_players_one_upstream_late_join_and_idle_close(self) -> None:
        edge = Edge(self, idle=5.0)
        origin, osid = edge.server.publisher("a", app="origin")
        edge.origin_gop(origin, osid, 0)
        players = [edge.server.player("a", app="edge") for _ in range(20)]
        edge.origin_gop(origin, osid, 1000, config=False)
        self.assertEqual(len(edge.upstreams), 1, "one upstream however many players")
        stream = edge.server.registry.get("edge/a")
        self.assertTrue(stream.live)
        self.assertTrue(is_relayed(stream), "a pulled stream carries the relay mark")
        first, _ = players[0]
        kinds = [k for _, _, k in media_summary(first)]
        self.assertEqual(kinds[:4], ["data", "aheader", "header", "key"])
        # A late joiner starts at once from the edge's GOP cache.
        late, _ = edge.server.player("a", app="edge")
        self.assertEqual([k for _, _, k in media_summary(late)][:4], ["data", "aheader", "header", "key"])
        self.assertEqual(len(edge.upstreams), 1)
        for client, _ in [*players, (late, 0)]:
            client.transport.loseConnection()
        edge.server.flush()
        for second in range(5):
            edge.origin_gop(origin, osid, 2000 + second * 1000, config=False)
            edge.server.advance(1)
        # Idle from the first sweep after the last player left (t=1): open until t=6.
        self.assertEqual(edge.pull.upstreams()[0]["state"], "playing", "still open within the idle time")
        edge.origin_gop(origin, osid, 7000, config=False)
        edge.server.advance(1)
        self.assertEqual(edge.pull.upstreams(), [])
        self.assertIsNone(edge.server.registry.get("edge/a"))
        self.assertTrue(edge.upstreams[0].client.state.value == "closed")

    def test_origin_down_retried_while_players_remain(self) -> None:
        edge = Edge(self)
        edge.up = False
        player, _ = edge.server.player("b", app="edge")
        edge.server.advance(1.5)
        edge.server.advance(2.5)
        self.assertEqual(edge.pull.upstreams()[0]["attempts"], 3)
        self.assertIn("ConnectionRefusedError", edge.pull.upstreams()[0]["last_error"])
        origin, osid = edge.server.publisher("b", app="origin")
        edge.up = True
        edge.server.advance(4.5)
        edge.origin_gop(origin, osid, 0)
        self.assertTrue(edge.server.registry.get("edge/b").live)
        self.assertIn("key", [k for _, _, k in media_summary(player)])

    def test_origin_restart_players_get_the_stream_again(self) -> None:
        edge = Edge(self)
        origin, osid = edge.server.publisher("c", app="origin")
        edge.origin_gop(origin, osid, 0)
        player, _ = edge.server.player("c", app="edge")
        edge.origin_gop(origin, osid, 1000, config=False)
        origin.transport.loseConnection()
        edge.server.flush()
        self.assertFalse(edge.server.registry.get("edge/c").live, "unpublished at the edge too")
        origin2, osid2 = edge.server.publisher("c", app="origin")
        edge.origin_gop(origin2, osid2, 0)
        self.assertTrue(edge.server.registry.get("edge/c").live)
        keys = [k for _, _, k in media_summary(player)].count("key")
        self.assertEqual(keys, 3)

    def test_no_rule_no_pull_and_pulled_streams_are_not_pushed(self) -> None:
        edge = Edge(self)
        edge.server.player("x", app="live")
        self.assertEqual(edge.pull.upstreams(), [])
        pushed = []
        push = PushService(
            edge.server.registry, edge.clock, lambda d, r: pushed.append(d) or fail(Exception())
        )
        push.startService()
        self.addCleanup(push.stopService)
        push.add("*", "rtmp://elsewhere/x/{name}")
        origin, osid = edge.server.publisher("d", app="origin")
        edge.server.player("d", app="edge")
        edge.origin_gop(origin, osid, 0)
        self.assertEqual(
            [d.key for d in pushed], ["origin/d"], "the origin's own publish is pushed, not the pull"
        )

    def test_rules(self) -> None:
        edge = Edge(self)
        self.assertRaises(URLError, edge.pull.add, "a/b", "rtmp://o/live")
        self.assertRaises(URLError, edge.pull.add, "x", "http://o/live")
        edge.pull.add("x", "rtmp://o:1940/live/{name}_hd")
        self.assertEqual(edge.pull.rules()["x"], "rtmp://o:1940/live/{name}_hd")
        edge.pull._is_self = lambda url: True
        self.assertRaises(URLError, edge.pull.add, "live", "rtmp://127.0.0.1/live")
        edge.pull.remove("x")
        self.assertNotIn("x", edge.pull.rules())
