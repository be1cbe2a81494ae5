"""The cluster's options and wiring, and what the API, the manhole and the metrics show of it."""

from __future__ import annotations

import os
import socket
import tempfile

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.admin.cluster import cluster_streams, cluster_table, cluster_view
from rtmpd.admin.namespace import make_namespace
from rtmpd.admin.views import ServerViews
from rtmpd.cluster.access import ClusterAccess
from rtmpd.cluster.directory import ClaimTable, LocalDirectory, Node
from rtmpd.cluster.service import ClusterService
from rtmpd.metrics.cluster import ClusterCollector
from rtmpd.tap import Options, makeService
from rtmpd.tap.cluster import listener_address, node_identity
from rtmpd.testing import MemoryServer, result_of


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionTests(SynchronousTestCase):
    def test_defaults_come_from_the_listener(self) -> None:
        options = parse("--port", "tcp:1936:interface=127.0.0.2", "--cluster", "redis://127.0.0.1:6379/0")
        self.assertEqual(options["cluster-ttl"], 5.0)
        self.assertEqual(node_identity(options), (f"{socket.gethostname()}:1936", "rtmp://127.0.0.2:1936"))
        options = parse("--port", "1937", "--node-id", "n1", "--advertise", "rtmp://10.0.0.2:1937/")
        self.assertEqual(node_identity(options), ("n1", "rtmp://10.0.0.2:1937"))
        self.assertEqual(node_identity(parse("--port", "1938"))[1], f"rtmp://{socket.gethostname()}:1938")

    def test_bad_values(self) -> None:
        for args in (["--advertise", "http://x:1"], ["--advertise", "rtmp://x:1/live"], ["--node-id", "a b"]):
            with self.assertRaises(ValueError):
                node_identity(parse(*args))
        with self.assertRaises(ValueError):
            node_identity(parse("--port", "unix:/tmp/x.sock"))
        with self.assertRaises(SystemExit):
            parse("--cluster-ttl", "0.1")
        self.assertEqual(listener_address("tcp6:1935:interface=\\:\\:1"), ("::1", 1935))
        self.assertEqual(listener_address("tcp:1935:interface=0.0.0.0"), (None, 1935))

    def test_without_cluster_nothing_is_built(self) -> None:
        top = makeService(parse("--port", "tcp:0:interface=127.0.0.1"))
        self.assertRaises(KeyError, top.getServiceNamed, "cluster")
        self.assertIsNone(top.factory.access)

    def test_with_cluster_and_access_control_the_secret_wraps_the_policy(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            secret = os.path.join(tmp, "secret")
            with open(secret, "w") as f:
                f.write("0123456789abcdef0123\n")
            top = makeService(
                parse(
                    "--port",
                    "tcp:0:interface=127.0.0.1",
                    "--cluster",
                    "redis://127.0.0.1:1/0",
                    "--node-id",
                    "n1",
                    "--advertise",
                    "rtmp://127.0.0.1:1935",
                    "--cluster-secret",
                    secret,
                    "--auth-allow",
                    "publish:127.0.0.0/8",
                )
            )
            cluster = top.getServiceNamed("cluster")
            self.assertEqual(cluster.node, Node("n1", "rtmp://127.0.0.1:1935"))
            self.assertIsInstance(top.factory.access, ClusterAccess)
            with open(secret, "w") as f:
                f.write("short")
            with self.assertRaises(SystemExit) as raised:
                makeService(parse("--cluster", "redis://127.0.0.1:1/0", "--cluster-secret", secret))
            self.assertIn("--cluster-secret", str(raised.exception.code))


class OperationsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer()
        self.clock: Clock = self.server.clock
        self.table = ClaimTable(self.clock.seconds, 5.0)
        self.node = Node("n1", "rtmp://127.0.0.2:1935")
        directory = LocalDirectory(self.table, self.node)
        self.cluster = ClusterService(
            self.server.registry, directory, self.clock, lambda upstream: None, description="redis://r/0"
        )
        self.cluster.setServiceParent(self.server.service)
        self.addCleanup(self.cluster.disownServiceParent)

    def test_views_show_the_node_its_claims_and_origins(self) -> None:
        self.server.publisher("here")
        self.table.claim("live/there", Node("n2", "rtmp://127.0.0.3:1935"))
        view = cluster_view(self.server.service)
        self.assertEqual(
            (
                view["node_id"],
                view["pull_url"],
                view["directory"],
                view["claims"],
                view["directory_available"],
            ),
            ("n1", "rtmp://127.0.0.2:1935", "redis://r/0", ["live/here"], True),
        )
        views = ServerViews(self.server.service)
        (row,) = views.streams()
        self.assertEqual(row["origin"], "n1")
        self.assertEqual(views.server_info()["cluster"]["node_id"], "n1")
        rows = result_of(cluster_streams(self.server.service))
        self.assertEqual(
            [(r["key"], r["node_id"], r["here"]) for r in rows],
            [("live/here", "n1", True), ("live/there", "n2", False)],
        )
        table = result_of(make_namespace(self.server.service, "op", reactor=self.clock)["cluster_streams"]())
        self.assertIn("live/there", repr(table))
        self.assertIn("rtmp://127.0.0.3:1935", repr(table))
        self.assertIn("live/here", repr(result_of(cluster_table(self.server.service))))

    def test_without_a_cluster_the_views_are_empty(self) -> None:
        other = MemoryServer()
        self.assertIsNone(cluster_view(other.service))
        self.assertEqual(result_of(cluster_streams(other.service)), [])
        other.publisher("x")
        self.assertIsNone(ServerViews(other.service).streams()[0]["origin"])

    def test_metrics(self) -> None:
        self.server.publisher("here")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ClusterCollector(lambda: self.cluster))
        text = generate_latest(registry).decode()
        self.assertIn('rtmpd_cluster_node_info{node_id="n1",pull_url="rtmp://127.0.0.2:1935"} 1.0', text)
        self.assertIn("rtmpd_cluster_claims 1.0", text)
        self.assertIn("rtmpd_cluster_directory_up 1.0", text)
        self.assertIn("rtmpd_cluster_internal_pulls_started_total 0.0", text)
        empty = CollectorRegistry(auto_describe=False)
        empty.register(ClusterCollector(lambda: None))
        self.assertNotIn("rtmpd_cluster", generate_latest(empty).decode())


class APITests(SynchronousTestCase):
    def test_cluster_streams_answer_503_while_the_directory_is_down(self) -> None:
        from twisted.internet.defer import fail

        from rtmpd.cluster.directory import DirectoryUnavailable
        from rtmpd.http.api.endpoints import ROUTES, Call
        from rtmpd.http.jsonio import HTTPError

        server = MemoryServer()
        directory = LocalDirectory(ClaimTable(server.clock.seconds, 5.0), Node("n1", "rtmp://h:1935"))
        cluster = ClusterService(server.registry, directory, server.clock, lambda upstream: None)
        cluster.setServiceParent(server.service)
        self.addCleanup(cluster.disownServiceParent)
        (route,) = [r for r in ROUTES if r.pattern == ("cluster", "streams")]
        call = Call({}, {}, ServerViews(server.service), None)
        directory.table.claim("live/a", directory.node)
        self.assertEqual(result_of(route.handler(call))["streams"][0]["key"], "live/a")
        directory.claims = lambda: fail(DirectoryUnavailable("redis claims: refused"))
        failure = self.failureResultOf(route.handler(call), HTTPError)
        self.assertEqual(failure.value.status, 503)
        self.assertIn("refused", failure.value.message)
