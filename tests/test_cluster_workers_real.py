"""``twistd -n rtmpd --workers 2`` with real clients: kernel balancing, supervision, clean stop.

Every worker's log event carries ``worker``; the parent logs ``Worker started``
with each worker's pid, so a test knows where each connection landed and which
process to kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any

from tests.support import ServerProcess
from tests.test_relay_real import FfmpegPlayer, RealClientTestCase

WORKERS = 2


class WorkersTestCase(RealClientTestCase):
    def extra_args(self) -> list[str]:
        return []

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record_dir = os.path.join(self.tmp, "rec")
        args = ["--workers", str(WORKERS), "--record-dir", self.record_dir, *self.extra_args()]
        self.server = ServerProcess(*args).start()
        self.addCleanup(self._stop_server)
        for worker in range(1, WORKERS + 1):
            self.server.wait_for_msg("Directory link up", 30, worker=worker)

    def pid_of(self, worker: int) -> int:
        return [e["pid"] for e in self.server.messages("Worker started") if e["worker"] == worker][-1]

    def landed(self, msg: str, timeout: float = 20.0, start: int = 0, **fields: Any) -> int:
        """The worker that logged ``msg`` with ``fields`` (from event index ``start``)."""
        return self.server.wait_for_msg(msg, timeout, start, **fields)["worker"]

    def ffmpeg_port(self, player: FfmpegPlayer, timeout: float = 20.0) -> int:
        """The local port of ``player``'s connection, once it has one."""
        deadline = time.monotonic() + timeout
        while not (ports := local_tcp_ports(player.process.pid)):
            self.assertIsNone(player.process.poll(), "ffmpeg exited before it connected")
            self.assertLess(time.monotonic(), deadline, "ffmpeg made no connection")
            time.sleep(0.01)  # polling /proc: the kernel tells no one when ffmpeg connects
        (port,) = ports
        return port

    def player_on(self, worker: int, key: str, tries: int = 12) -> FfmpegPlayer:
        """An ffmpeg player of ``key`` that the kernel handed to ``worker`` (others are killed)."""
        for _ in range(tries):
            mark = len(self.server.events)
            player = self.ffmpeg_player(key)
            # Not the first "play command" after the mark: that may be another worker's internal pull for
            # this player (or an earlier one), logged through another pipe. The worker is the one that
            # accepted ffmpeg's own socket.
            port = self.ffmpeg_port(player)
            if self.landed("Connection accepted", start=mark, peer_addr=f"127.0.0.1:{port}") == worker:
                self.server.wait_for_msg("play command", 20, mark, stream_key=f"live/{key}", worker=worker)
                return player
            player.kill()
        self.fail(f"no player of {key} landed on worker {worker} in {tries} tries")


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class BalancingTests(WorkersTestCase):
    def test_connections_land_on_both_workers(self) -> None:
        workers = []
        conn_ids = []
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            self.addCleanup(sock.close)
            host, port = sock.getsockname()
            accepted = self.server.wait_for_msg("Connection accepted", 20, peer_addr=f"{host}:{port}")
            workers.append(accepted["worker"])
            conn_ids.append(accepted["conn_id"])
        self.assertEqual(set(workers), {1, 2}, workers)
        # Each worker numbers its own connections: the ids say which worker, and never collide.
        for worker, conn_id in zip(workers, conn_ids, strict=True):
            self.assertRegex(conn_id, rf"^w{worker}-c\d{{6}}$")
        self.assertEqual(len(set(conn_ids)), len(conn_ids), conn_ids)

    def test_publishers_spread_and_each_stream_is_recorded_once(self) -> None:
        # The kernel hashes each connection to a worker: six publishers all land on one worker 3 % of the
        # time, so publishers are added (up to 16) until both workers have some and there are six.
        keys: list[str] = []
        publishers = []
        origins: dict[str, int] = {}
        for i in range(16):
            key = f"spread{i}"
            keys.append(key)
            publishers.append(self.publish(key, 4))
            origins[key] = self.landed("publish command", stream_key=f"live/{key}")
            if len(keys) >= 6 and set(origins.values()) == {1, 2}:
                break
        self.assertEqual(set(origins.values()), {1, 2}, origins)
        for publisher in publishers:
            self.assertEqual(publisher.wait(60), 0)
        for key in keys:
            self.server.wait_for_msg("recording finalized", 20, stream_key=f"live/{key}")
        started = self.server.messages("recording started")
        self.assertEqual(sorted(e["stream_key"] for e in started), sorted(f"live/{k}" for k in keys))
        for event in started:
            self.assertEqual(event["worker"], origins[event["stream_key"].partition("/")[2]])


class SupervisionTests(WorkersTestCase):
    def test_killed_worker_restarts_within_2s_and_the_other_worker_goes_on(self) -> None:
        publisher = self.publish("steady", 14)
        origin = self.landed("publish command", stream_key="live/steady")
        self.wait_live("steady")
        player = self.player_on(origin, "steady")
        player.wait_frames(30)
        other = 3 - origin
        victim = self.pid_of(other)
        mark = len(self.server.events)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        died = self.server.wait_for_msg("Worker died; restarting it", 5, mark, worker=other)
        self.assertEqual((died["pid"], died["signal"]), (victim, signal.SIGKILL))
        restarted = self.server.wait_for_msg("Worker started", 2.0, mark, worker=other)
        self.assertLess(time.monotonic() - killed_at, 2.0)
        self.assertNotEqual(restarted["pid"], victim)
        self.server.wait_for_msg("Directory link up", 30, mark, worker=other)
        # The restarted worker accepts again on the shared socket.
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            self.addCleanup(sock.close)
            host, port = sock.getsockname()
            if self.landed("Connection accepted", peer_addr=f"{host}:{port}") == other:
                break
        else:
            self.fail("the restarted worker accepted none of 40 connections")
        # The origin's publisher and player never noticed.
        self.assertEqual(publisher.wait(60), 0)
        self.assertCleanFfmpeg(player, 10)

    def test_workers_stop_when_their_parent_is_killed(self) -> None:
        pids = [self.pid_of(w) for w in (1, 2)]
        self.server.process.kill()
        for worker in (1, 2):
            self.server.wait_for_msg("Directory link to the parent lost", 20, worker=worker)
            self.server.wait_for_msg("Server Shut Down.", 20, worker=worker)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in pids):
            self.assertLess(time.monotonic(), deadline, "a worker outlived its parent")
            time.sleep(0.1)  # an orphan's exit is not an event this process can wait for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class StopTests(WorkersTestCase):
    def test_sigterm_stops_every_worker_and_finalises_recordings(self) -> None:
        publishers = [self.publish(f"term{i}", 30) for i in range(4)]
        for i in range(4):
            self.server.wait_for_msg("recording started", 20, stream_key=f"live/term{i}")
        pids = [self.pid_of(w) for w in (1, 2)]
        self.server.signal(signal.SIGTERM)
        self.assertIn(self.server.process.wait(60), (0, -signal.SIGTERM))
        for i in range(4):
            self.server.wait_for_msg("recording finalized", 1, stream_key=f"live/term{i}")
        self.assertEqual({e["worker"] for e in self.server.messages("Worker stopped")}, {1, 2})
        self.server.wait_for_msg("Workers stopped", 1)
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        for publisher in publishers:
            publisher.kill()
            publisher.wait(10)


class CrossWorkerTests(WorkersTestCase):
    """Each worker's streams are played from the other worker through one internal pull per key."""

    def refusals(self, conn_id: str, worker: int) -> list[dict[str, Any]]:
        return [
            e
            for e in self.server.messages("Command refused")
            if e.get("conn_id") == conn_id and e.get("worker") == worker
        ]

    def test_players_on_either_worker_decode_a_key_published_on_one(self) -> None:
        publisher = self.publish("cross", 12)
        origin = self.landed("publish command", stream_key="live/cross")
        self.wait_live("cross")
        edge = 3 - origin
        remote = self.player_on(edge, "cross")
        local = self.player_on(origin, "cross")
        remote.wait_frames(30)
        self.assertEqual(publisher.wait(60), 0)
        # Both decoded cleanly from their first frame (ffmpeg logs a warning for anything else).
        self.assertCleanFfmpeg(remote, 6)
        self.assertCleanFfmpeg(local, 6)
        self.server.wait_for_msg("recording finalized", 20, stream_key="live/cross")
        recordings = self.server.messages("recording started")
        self.assertEqual([(e["stream_key"], e["worker"]) for e in recordings], [("live/cross", origin)])

    def test_second_publisher_on_the_other_worker_is_refused_and_a_dead_workers_key_is_free_at_once(
        self,
    ) -> None:
        first = self.publish("dup", 40)
        origin = self.landed("publish command", stream_key="live/dup")
        self.wait_live("dup")
        for _ in range(12):
            mark = len(self.server.events)
            second = self.publish("dup", 3, size="320x240")
            event = self.server.wait_for_msg("publish command", 20, mark, stream_key="live/dup")
            self.assertNotEqual(second.wait(20), 0, "the second publisher was not refused")
            if event["worker"] != origin:
                break
        else:
            self.fail("no second publisher landed on the other worker in 12 tries")
        codes = [e["code"] for e in self.refusals(event["conn_id"], event["worker"])]
        self.assertEqual(codes, ["NetStream.Publish.BadName"])
        self.assertIsNone(first.poll(), "the first publisher did not survive the refusal")

        # kill -9 the origin worker: the parent releases its claims as it reaps it.
        mark = len(self.server.events)
        os.kill(self.pid_of(origin), signal.SIGKILL)
        released = self.server.wait_for_msg("Released a dead worker's claims", 5, mark, worker=origin)
        self.assertIn("live/dup", released["keys"])
        again = self.publish("dup", 4, size="320x240")
        event = self.server.wait_for_msg("publish command", 20, mark, stream_key="live/dup")
        self.wait_live("dup", 20, mark)
        self.assertEqual(self.refusals(event["conn_id"], event["worker"]), [])
        self.assertEqual(again.wait(30), 0)
        first.kill()


class AccessAcrossWorkersTests(WorkersTestCase):
    """With access control on, internal pulls carry the host's signature; clients still need their keys."""

    def extra_args(self) -> list[str]:
        keys = os.path.join(self.tmp, "keys.txt")
        with open(keys, "w") as f:
            f.write("live pub-key-1 name=show\nlive view-key-1 play name=show\n")
        return ["--auth-keys", keys]

    def test_player_with_its_key_on_the_other_worker_decodes_and_a_wrong_key_is_refused(self) -> None:
        publisher = self.publish("pub-key-1", 12)
        origin = self.landed("Access decision", action="publish", outcome="allow")
        self.server.wait_for_msg("Codecs detected", 20, stream_key="live/show")
        for _ in range(12):
            mark = len(self.server.events)
            player = self.ffmpeg_player("view-key-1")
            event = self.server.wait_for_msg("Access decision", 20, mark, action="play", outcome="allow")
            if event["worker"] != origin:
                break
            player.kill()
        else:
            self.fail("no player landed on the other worker in 12 tries")
        pulled = self.server.wait_for_msg("Internal pull started", 20, mark, stream_key="live/show")
        self.assertEqual(pulled["worker"], 3 - origin)
        # The pull plays "show", which no key grants: only the host's signature let it in.
        denied = [e for e in self.server.messages("Access decision") if e.get("outcome") == "deny"]
        self.assertEqual(denied, [])
        self.assertEqual(publisher.wait(60), 0)
        self.assertCleanFfmpeg(player, 6)
        for _ in range(4):
            mark = len(self.server.events)
            wrong = self.ffmpeg_player("wrong-key")
            self.assertNotEqual(wrong.finish(), 0)
            self.server.wait_for_msg("Access decision", 20, mark, action="play", outcome="deny")


class RedisAcrossWorkersTests(WorkersTestCase):
    """With --cluster, each worker is a node of the Redis directory, named after the host."""

    def extra_args(self) -> list[str]:
        from tests.test_cluster_redis import RedisServer

        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        return ["--cluster", self.redis.url, "--node-id", "hostx", "--cluster-ttl", "3"]

    def test_each_worker_is_a_node_and_plays_the_others_keys(self) -> None:
        from rtmpd.cluster.redis import PREFIX, redis_client

        publisher = self.publish("redis", 12)
        origin = self.landed("publish command", stream_key="live/redis")
        self.wait_live("redis")
        client = redis_client(self.redis.url)
        self.addCleanup(client.close)
        owner = client.get(PREFIX + "live/redis")
        self.assertEqual(owner.split(" ")[0], f"hostx/worker-{origin}")
        self.assertTrue(owner.split(" ")[1].startswith("rtmp://127.0.0.1:"), owner)
        player = self.player_on(3 - origin, "redis")
        pulled = self.server.wait_for_msg("Internal pull started", 20, stream_key="live/redis")
        self.assertEqual((pulled["worker"], pulled["origin"]), (3 - origin, f"hostx/worker-{origin}"))
        self.assertEqual(publisher.wait(60), 0)
        self.assertCleanFfmpeg(player, 6)
