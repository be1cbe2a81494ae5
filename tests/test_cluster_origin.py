"""A cluster in memory: nodes (``MemoryServer``s on one clock) over one ``ClaimTable``.

Each node has a ``ClusterOrigin`` (claims) and ``ClusterPulls`` (internal
pulls); an internal pull is an ``RTMPClientProtocol`` in play mode joined by
iosim to the origin node's server factory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.access.decision import Action, Deny, Request
from rtmpd.access.errors import PlayDenied
from rtmpd.cluster.access import ClusterAccess, cluster_query
from rtmpd.cluster.directory import ClaimTable, DirectoryUnavailable, LocalDirectory, Node
from rtmpd.cluster.origin import ClusterOrigin
from rtmpd.cluster.pulls import ClusterPulls, pull_url_of
from rtmpd.config import ServerConfig
from rtmpd.core.client import ClientSession
from rtmpd.core.messages import MessageType
from rtmpd.remote.backoff import Backoff
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.push import RELAY_FLASH_VER
from rtmpd.server.service import RTMPService
from rtmpd.testing import CommandFailed, MemoryServer, RTMPTestClient, result_of, status_code
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
TTL = 3.0


class _NodeServer(MemoryServer):
    """A ``MemoryServer`` on a clock and a pump list shared with the other nodes."""

    def __init__(self, config: ServerConfig, clock: Clock, pumps: list) -> None:
        self.clock = clock
        self.service = RTMPService(config, clock)
        self.service.startService()
        self.factory = self.service.factory
        self.pumps = pumps


class FlakyDirectory:
    """A directory that fails with ``DirectoryUnavailable`` while ``down`` (Redis stopped)."""

    def __init__(self, inner: LocalDirectory) -> None:
        self.inner = inner
        self.node = inner.node
        self.ttl = inner.ttl
        self.down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                return fail(DirectoryUnavailable("connection refused"))
            return method(*args, **kwargs)

        return call


class Cluster:
    def __init__(self, test: SynchronousTestCase, *names: str, **config: Any) -> None:
        self.clock = Clock()
        self.table = ClaimTable(self.clock.seconds, TTL)
        self.pumps: list = []
        self.nodes: dict[str, ClusterNode] = {}
        for name in names:
            self.nodes[name] = ClusterNode(test, self, name, ServerConfig(**config))

    def flush(self) -> None:
        next(iter(self.nodes.values())).server.flush()

    def advance(self, seconds: float, step: float = 0.5) -> None:
        while seconds > 1e-9:
            self.clock.advance(min(step, seconds))
            self.flush()
            seconds -= step

    def gop(self, client: RTMPTestClient, sid: int, start: int, config: bool = True) -> None:
        if config:
            client.send_metadata(sid, {"width": 320.0})
            client.send_media(VIDEO, sid, start, AVC_SEQUENCE_HEADER)
            client.send_media(AUDIO, sid, start, AAC_SEQUENCE_HEADER)
        client.send_media(VIDEO, sid, start, avc_keyframe(start))
        for i in range(1, 5):
            client.send_media(AUDIO, sid, start + i * 20, aac_frame(i))
            client.send_media(VIDEO, sid, start + i * 33, avc_interframe(i))
        self.flush()


class ClusterNode:
    def __init__(self, test: SynchronousTestCase, cluster: Cluster, name: str, config: ServerConfig) -> None:
        self.cluster = cluster
        self.name = name
        self.server = _NodeServer(config, cluster.clock, cluster.pumps)
        self.node = Node(name, f"rtmp://{name}:1935")
        self.directory = FlakyDirectory(LocalDirectory(cluster.table, self.node))
        self.connections: list[RTMPClientProtocol] = []
        self.pulls = ClusterPulls(
            self.server.registry,
            self.directory,
            cluster.clock,
            self.connect,
            idle=5.0,
            backoff=lambda: Backoff(uniform=lambda low, high: high),
        )
        self.origin = ClusterOrigin(
            self.server.registry, self.directory, cluster.clock, is_copy=self.pulls.is_copy
        )
        self.origin.on_claimed.append(self.pulls.give_way)
        for child in (self.origin, self.pulls):
            child.startService()
            test.addCleanup(child.stopService)

    def connect(self, upstream: Any):
        url = upstream.url
        target = self.cluster.nodes.get(url.host)
        if target is None or not target.server.service.running:
            return fail(ConnectionRefusedError(f"{url.host} down"))
        session = ClientSession(
            mode="play", app=url.app, tc_url=url.tc_url, stream_name=url.name, flash_ver=RELAY_FLASH_VER
        )
        client = RTMPClientProtocol(session, upstream, self.cluster.clock, 10.0)
        self.connections.append(client)
        server_protocol = target.server.factory.buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server_protocol, lambda: client, clock=self.cluster.clock, greet=False
        )
        self.cluster.pumps.append(pump)
        return succeed(client)

    def publish(self, name: str) -> tuple[RTMPTestClient, int]:
        return self.server.publisher(name)

    def try_publish(self, name: str) -> tuple[RTMPTestClient, Any]:
        client, sid = self.server.session()
        outcome: list = []
        client.publish(sid, name).addBoth(outcome.append)
        self.server.flush()
        return client, outcome[0] if outcome else None


def kinds(client: RTMPTestClient) -> list[str]:
    return [k for _, _, k in media_summary(client)]


class CrossNodePlayTests(SynchronousTestCase):
    def test_play_on_another_node_pulls_once_from_the_origin(self) -> None:
        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        publisher, sid = a.publish("k")
        self.assertEqual(cluster.table.claims(), {"live/k": a.node})
        cluster.gop(publisher, sid, 0)
        players = [b.server.player("k") for _ in range(3)]
        cluster.flush()
        cluster.gop(publisher, sid, 1000, config=False)
        self.assertEqual(len(b.connections), 1, "one internal pull however many players")
        for player, _ in players:
            self.assertEqual(kinds(player)[:4], ["data", "aheader", "header", "key"])
        copy = b.server.registry.get("live/k").publisher
        self.assertTrue(b.pulls.is_copy(copy))
        self.assertIs(copy.record, False, "a pulled copy is never recorded")
        self.assertEqual(b.pulls.origin_of("live/k"), "a")
        self.assertEqual([row["origin"] for row in b.pulls.upstreams()], ["a"])
        self.assertEqual(len(a.server.registry.get("live/k").players), 1, "the origin serves one pull")
        self.assertEqual(cluster.table.claims(), {"live/k": a.node}, "a copy is never claimed")
        # A late joiner on the edge starts from the edge's own cache.
        late, _ = b.server.player("k")
        self.assertEqual(kinds(late)[:4], ["data", "aheader", "header", "key"])
        self.assertEqual(len(b.connections), 1)

    def test_claim_refreshed_while_live_released_on_unpublish(self) -> None:
        cluster = Cluster(self, "a")
        a = cluster.nodes["a"]
        publisher, sid = a.publish("k")
        for second in range(int(TTL * 3)):
            cluster.gop(publisher, sid, second * 1000, config=second == 0)
            cluster.advance(1.0)
        self.assertEqual(cluster.table.lookup("live/k"), a.node, "refreshed past several TTLs")
        publisher.transport.loseConnection()
        cluster.flush()
        cluster.advance(0.1)
        self.assertIsNone(cluster.table.lookup("live/k"))
        self.assertEqual(a.origin.claimed, {})

    def test_player_waiting_before_the_publish_gets_the_stream_from_the_new_origin(self) -> None:
        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        player, psid = b.server.session()
        player.play(psid, "k")
        cluster.flush()
        cluster.advance(1.0)
        self.assertEqual(b.connections, [], "nobody publishes: the player waits")
        publisher, sid = a.publish("k")
        cluster.gop(publisher, sid, 0)
        cluster.advance(1.0)
        cluster.gop(publisher, sid, 1000, config=False)
        self.assertIn("key", kinds(player))


class DuplicatePublishTests(SynchronousTestCase):
    def test_a_second_publisher_on_another_node_is_refused(self) -> None:
        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        a.publish("k")
        client, outcome = b.try_publish("k")
        self.assertIsInstance(outcome.value, CommandFailed)
        self.assertEqual(outcome.value.info["code"], "NetStream.Publish.BadName")
        self.assertIn("on a", outcome.value.info["description"])
        self.assertEqual(cluster.table.lookup("live/k"), a.node)
        # The refused client's NetStream is free again: it may publish another key.
        client.publish(1, "other")
        cluster.flush()
        self.assertEqual(cluster.table.lookup("live/other"), b.node)

    def test_a_local_duplicate_is_still_refused_by_the_registry(self) -> None:
        cluster = Cluster(self, "a")
        a = cluster.nodes["a"]
        a.publish("k")
        _, outcome = a.try_publish("k")
        self.assertEqual(outcome.value.info["code"], "NetStream.Publish.BadName")
        self.assertEqual(cluster.table.lookup("live/k"), a.node)

    def test_takeover_across_nodes_closes_the_old_publisher(self) -> None:
        cluster = Cluster(self, "a", "b", publish_takeover=True)
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        old, sid = a.publish("k")
        cluster.gop(old, sid, 0)
        new, nsid = b.publish("k")
        self.assertEqual(cluster.table.lookup("live/k"), b.node)
        self.assertTrue(old.connected_transport)
        cluster.advance(TTL / 3 + 0.1)
        self.assertFalse(old.connected_transport, "the old origin closed its publisher (claim lost)")
        self.assertEqual(a.origin.claimed, {})
        self.assertEqual(cluster.table.lookup("live/k"), b.node)

    def test_idle_publisher_leaves_its_key_to_another_node(self) -> None:
        cluster = Cluster(self, "a", "b", publisher_timeout=4.0)
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        old, sid = a.publish("k")
        cluster.gop(old, sid, 0)
        _, outcome = b.try_publish("k")
        self.assertEqual(outcome.value.info["code"], "NetStream.Publish.BadName")
        cluster.advance(4.0 + TTL + 1.5)
        self.assertIsNone(cluster.table.lookup("live/k"), "silent past the timeout: the claim is gone")
        new, nsid = b.publish("k")
        self.assertEqual(cluster.table.lookup("live/k"), b.node)

    def test_the_key_moves_and_players_on_both_nodes_resume(self) -> None:
        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        first, sid = a.publish("k")
        cluster.gop(first, sid, 0)
        on_a, _ = a.server.player("k")
        on_b, _ = b.server.player("k")
        cluster.flush()
        cluster.gop(first, sid, 1000, config=False)
        first.transport.loseConnection()  # the publisher died
        cluster.flush()
        cluster.advance(0.1)
        self.assertIsNone(cluster.table.lookup("live/k"))
        second, sid2 = b.publish("k")
        self.assertEqual(cluster.table.lookup("live/k"), b.node)
        self.assertNotIn("live/k", [row["stream_key"] for row in b.pulls.upstreams()], "b's copy gave way")
        cluster.gop(second, sid2, 0)
        cluster.advance(1.5)
        cluster.gop(second, sid2, 1000, config=False)
        self.assertEqual(a.pulls.origin_of("live/k"), "b", "a now pulls from b")
        for player in (on_a, on_b):
            self.assertGreaterEqual(kinds(player).count("key"), 3, "the player resumed after the move")

    def test_a_clean_stop_releases_the_claims_at_once(self) -> None:
        cluster = Cluster(self, "a")
        a = cluster.nodes["a"]
        a.publish("k")
        self.assertEqual(cluster.table.lookup("live/k"), a.node)
        a.origin.stopService()
        self.assertIsNone(cluster.table.lookup("live/k"))

    def test_a_claim_whose_publish_never_happened_is_released(self) -> None:
        cluster = Cluster(self, "a")
        a = cluster.nodes["a"]
        a.directory.inner.claim("live/k")  # as if the client left between the claim and the publish
        a.origin.claimed["live/k"] = 0.0
        cluster.advance(TTL / 3 + 0.1)
        self.assertIsNone(cluster.table.lookup("live/k"))


class DirectoryDownTests(SynchronousTestCase):
    def test_live_streams_go_on_new_remote_plays_fail_then_recover(self) -> None:
        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        live, sid = a.publish("live1")
        cluster.gop(live, sid, 0)
        remote_player, _ = b.server.player("live1")
        cluster.flush()
        for node in (a, b):
            node.directory.down = True
        cluster.advance(TTL * 2)
        cluster.gop(live, sid, 5000, config=False)
        self.assertGreaterEqual(kinds(remote_player).count("key"), 2, "a live pull goes on")
        local_player, _ = a.server.player("live1")
        self.assertIn("key", kinds(local_player), "local plays are unaffected")
        # A publish while the directory is down is accepted (claimed when it returns).
        unclaimed, usid = a.publish("new")
        cluster.gop(unclaimed, usid, 0)
        waiting, wsid = b.server.session()
        waiting.play(wsid, "new")
        cluster.flush()
        cluster.advance(0.1)
        failed = [c for c in waiting.commands if status_code(c) == "NetStream.Play.Failed"]
        self.assertEqual(len(failed), 1)
        self.assertIn("cluster directory unavailable", failed[0].args[0]["description"])
        cluster.advance(2.0)
        self.assertEqual(
            len([c for c in waiting.commands if status_code(c) == "NetStream.Play.Failed"]), 1, "told once"
        )
        for node in (a, b):
            node.directory.down = False
        cluster.advance(TTL / 3 + 1.0)
        self.assertEqual(cluster.table.lookup("live/new"), a.node, "claimed once it returned")
        self.assertEqual(cluster.table.lookup("live/live1"), a.node, "the live key claimed again")
        cluster.gop(unclaimed, usid, 1000)
        self.assertIn("key", kinds(waiting), "the waiting player got the stream once the directory returned")

    def test_a_duplicate_accepted_while_down_is_closed_on_recovery(self) -> None:
        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        first, _ = a.publish("k")
        b.directory.down = True
        second, _ = b.publish("k")
        b.directory.down = False
        cluster.advance(TTL / 3 + 0.1)
        self.assertFalse(second.connected_transport, "b found a's claim and closed its publisher")
        self.assertTrue(first.connected_transport)


class ClusterAccessTests(SynchronousTestCase):
    def setUp(self) -> None:
        class Refuse:
            def authorise(self, request: Request):
                return fail(PlayDenied(Deny("no")))

            def describe(self) -> list[str]:
                return ["refuse"]

        self.access = ClusterAccess(Refuse(), b"s" * 32)

    def _query(self, action: str, key: str, secret: bytes = b"s" * 32) -> str:
        return cluster_query(secret, action, key)

    def test_signed_internal_play_and_connect_pass(self) -> None:
        play = Request(Action.PLAY, "live", "k", self._query("play", "live/k"))
        self.assertEqual(result_of(self.access.authorise(play)).authoriser, "cluster")
        connect = Request(Action.CONNECT, "live", "", self._query("connect", "live/k"))
        self.assertEqual(result_of(self.access.authorise(connect)).authoriser, "cluster")
        self.assertEqual(self.access.describe(), ["refuse"], "the rest is the policy's")

    def test_anything_else_goes_to_the_policy(self) -> None:
        cases = [
            Request(Action.PUBLISH, "live", "k", self._query("play", "live/k")),
            Request(Action.PLAY, "live", "other", self._query("play", "live/k")),
            Request(Action.PLAY, "live", "k", self._query("play", "live/k", b"t" * 32)),
            Request(Action.PLAY, "live", "k", self._query("connect", "live/k")),
            Request(Action.PLAY, "live", "k", ""),
            Request(Action.PLAY, "live", "k", self._query("play", "live/k") + "&cluster=x"),
        ]
        for request in cases:
            self.failureResultOf(self.access.authorise(request), PlayDenied)

    def test_pull_url_carries_the_signatures(self) -> None:
        url = pull_url_of(Node("a", "rtmp://10.0.0.1:1936/"), "live/k", "cluster=c", "cluster=p")
        self.assertEqual(
            (url.host, url.port, url.app, url.name), ("10.0.0.1", 1936, "live?cluster=c", "k?cluster=p")
        )
        self.assertEqual(url.tc_url, "rtmp://10.0.0.1:1936/live?cluster=c")


class InternalPullAccessTests(SynchronousTestCase):
    """An origin whose access control refuses every play still serves the nodes' signed pulls."""

    def _cluster(self, pull_secret: bytes) -> tuple[Cluster, ClusterNode, ClusterNode]:
        from rtmpd.access.decision import Allow, Authoriser
        from rtmpd.access.policy import AccessPolicy

        class NoPlayers(Authoriser):
            name = "no-players"

            def check(self, request: Request):
                return Deny("no plays here") if request.action is Action.PLAY else Allow()

        cluster = Cluster(self, "a", "b")
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        policy = AccessPolicy([NoPlayers()], clock=cluster.clock)
        a.server.factory.access = ClusterAccess(policy, SECRET)
        b.pulls._sign = lambda action, key: cluster_query(pull_secret, action, key)
        return cluster, a, b

    def test_signed_internal_pull_passes_a_player_does_not(self) -> None:
        cluster, a, b = self._cluster(SECRET)
        publisher, sid = a.publish("k")
        cluster.gop(publisher, sid, 0)
        player, _ = b.server.player("k")
        cluster.advance(0.5)
        cluster.gop(publisher, sid, 1000, config=False)
        self.assertIn("key", kinds(player), "the pull passed a's access control")
        direct, dsid = a.server.session()
        outcome: list = []
        direct.play(dsid, "k").addBoth(outcome.append)
        cluster.advance(5.0)
        self.assertEqual(
            outcome[0].value.info["code"], "NetStream.Play.Failed", "a's own players are refused"
        )

    def test_a_wrong_secret_is_refused(self) -> None:
        cluster, a, b = self._cluster(b"w" * 32)
        publisher, sid = a.publish("k")
        cluster.gop(publisher, sid, 0)
        player, _ = b.server.player("k")
        cluster.advance(5.0)
        cluster.gop(publisher, sid, 1000, config=False)
        self.assertNotIn("key", kinds(player))
        self.assertIsNotNone(b.pulls.upstreams()[0]["last_error"])


SECRET = b"s" * 32
