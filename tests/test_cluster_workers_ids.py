"""Connection ids with ``--workers N``: each worker's carry its number, so no two workers' ids collide.

Each worker process numbers its connections from 1; before, two workers both
logged ``c000001``, ``c000002``... and the JSON API or the manhole of one
worker could drop another connection than the one a listing showed. Here the
workers are simulated in one process, one after the other (``identify_worker``
is what a worker's wiring calls first); ``tests/test_cluster_workers_real.py``
checks the ids of two real workers.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogPublisher, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd import conn_ids
from rtmpd.config import ServerConfig
from rtmpd.relay.registry import StreamRegistry
from rtmpd.remote.upstream import Upstream
from rtmpd.remote.urls import RemoteURL
from rtmpd.tap.workers import identify_worker
from rtmpd.testing import MemoryServer
from tests.test_api import APITestCase
from tests.test_manhole import AdminTestCase


def as_worker(test: SynchronousTestCase, worker_id: int) -> LogPublisher:
    """Make this process worker ``worker_id`` for the rest of ``test`` (its log tag: a private publisher)."""
    publisher = LogPublisher()
    test.addCleanup(conn_ids.set_worker, None)
    identify_worker(worker_id, publisher)
    return publisher


def accepted_ids(server: MemoryServer, count: int) -> tuple[list[str], list[str]]:
    """The conn ids of ``count`` new clients of ``server``, and those its "Connection accepted" lines log."""
    with capturedLogs() as logs:
        ids = [server.session()[0].server_protocol.conn_id for _ in range(count)]
    logged = [e["conn_id"] for e in logs if e.get("log_format") == "Connection accepted"]
    return ids, logged


def upstream_id() -> str:
    url = RemoteURL.parse("rtmp://127.0.0.1:1935/live/x")
    registry = StreamRegistry(ServerConfig(), Clock().seconds)
    return Upstream("live/x", url, registry, connect=lambda upstream: None, clock=Clock()).conn_id


class ConnIdTests(SynchronousTestCase):
    def test_a_single_process_keeps_its_plain_ids(self) -> None:
        ids, logged = accepted_ids(MemoryServer(), 2)
        self.assertEqual(ids, ["c000001", "c000002"])
        self.assertEqual(logged, ids)
        self.assertEqual((conn_ids.conn_id(42), conn_ids.pull_id(42)), ("c000042", "pull00042"))
        self.assertRegex(upstream_id(), r"^pull\d{5}$")

    def test_two_workers_ids_never_collide_and_say_which_worker(self) -> None:
        seen = []
        for worker in (1, 2):
            as_worker(self, worker)
            ids, logged = accepted_ids(MemoryServer(), 2)
            self.assertEqual(ids, [f"w{worker}-c000001", f"w{worker}-c000002"])
            self.assertEqual(logged, ids)
            seen += ids
            self.assertRegex(upstream_id(), rf"^w{worker}-pull\d{{5}}$")
        self.assertEqual(len(set(seen)), 4, seen)

    def test_the_worker_tag_and_the_ids_come_together(self) -> None:
        publisher = as_worker(self, 3)
        events: list[dict] = []
        publisher.addObserver(events.append)
        publisher({"log_format": "x"})
        self.assertEqual((events[0]["worker"], conn_ids.worker_prefix()), (3, "w3-"))
        conn_ids.set_worker(None)
        self.assertEqual(conn_ids.conn_id(1), "c000001")


class WorkerAPITests(APITestCase):
    """The JSON API of worker 2 lists and drops connections by their worker ids."""

    def setUp(self) -> None:
        as_worker(self, 2)
        super().setUp()

    async def test_connections_are_listed_and_dropped_by_worker_ids(self) -> None:
        rows = (await self.get("connections"))["connections"]
        ids = sorted(row["conn_id"] for row in rows)
        self.assertEqual(ids, ["w2-c000001", "w2-c000002", "w2-c000003"])
        first, second = self.players
        # The same number in another worker's (or a single process's) numbering is not this connection.
        status, _, body = await self.post(f"connections/{self.conn_id(first).removeprefix('w2-')}/drop")
        self.assertEqual(status, 404, body)
        self.assertFalse(first.disconnected.called)
        status, _, body = await self.post(f"connections/{self.conn_id(first)}/drop")
        self.server.flush()
        self.assertEqual(status, 200, body)
        self.assertTrue(first.disconnected.called)
        self.assertFalse(second.disconnected.called)


class WorkerManholeTests(AdminTestCase):
    """In worker 2's manhole, ``drop(N)`` is this worker's connection N."""

    def setUp(self) -> None:
        as_worker(self, 2)
        super().setUp()

    def test_drop_by_number_is_this_workers_connection(self) -> None:
        first, second = self.players
        self.assertTrue(self.conn_id_of(second).startswith("w2-c"))
        self.call("drop", int(self.conn_id_of(second).removeprefix("w2-c")))
        self.server.flush()
        self.assertTrue(second.disconnected.called)
        self.assertFalse(first.disconnected.called)

    def conn_id_of(self, client) -> str:
        return client.server_protocol.conn_id
