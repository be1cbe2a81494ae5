"""Workers' in-host directory over AMP (both ends over a loopback link) and the supervisor's policy."""

from __future__ import annotations

import os
import signal
import socket

from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogPublisher
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.cluster import amp as directory_amp
from rtmpd.cluster.amp import BadArgument, ClaimTableLocator, DirectoryServerFactory
from rtmpd.cluster.amp_client import AMPDirectory, DirectoryLinkProtocol
from rtmpd.cluster.directory import ClaimTable, DirectoryUnavailable, Node
from rtmpd.cluster.supervisor import FIRST_DELAY, MAX_DELAY, STABLE_UPTIME, WorkerSupervisor, restart_delay
from rtmpd.cluster.workers import WorkerSpec, WorkersService
from rtmpd.cluster.workers_sockets import open_listener
from rtmpd.tap import Options
from rtmpd.tap.workers import (
    WorkerTag,
    parent_service,
    rtmpd_arguments,
    shared_listeners,
    tag_logs,
    wants_workers,
    worker_argv,
)

W1 = Node("worker-1", "rtmp://127.0.0.1:40001")
W2 = Node("worker-2", "rtmp://127.0.0.1:40002")


class AMPDirectoryTests(SynchronousTestCase):
    """Two workers' AMPDirectory against one parent table, each over its own loopback AMP link."""

    def setUp(self) -> None:
        self.now = 1000.0
        self.table = ClaimTable(lambda: self.now, ttl=5.0)
        self.one, self.pump1, self.server1 = self.link(W1)
        self.two, self.pump2, self.server2 = self.link(W2)

    def link(self, node: Node):
        directory = AMPDirectory(node, ttl=5.0)
        factory = DirectoryServerFactory(self.table)
        client, server, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None), lambda: DirectoryLinkProtocol(directory)
        )
        return directory, pump, server

    def answer(self, d, *pumps):
        for pump in pumps or (self.pump1, self.pump2):
            pump.flush()
        return self.successResultOf(d)

    def test_claim_lookup_refresh_release_reach_the_one_table(self) -> None:
        self.assertTrue(self.one.connected)
        self.assertEqual(self.answer(self.one.claim("live/a")), W1)
        self.assertEqual(self.answer(self.two.claim("live/a")), W1, "a live claim of another worker stands")
        self.assertEqual(self.answer(self.two.lookup("live/a")), W1)
        self.assertEqual(self.table.lookup("live/a"), W1)
        self.assertTrue(self.answer(self.one.refresh("live/a")))
        self.assertFalse(self.answer(self.two.refresh("live/a")))
        self.answer(self.two.release("live/a"))
        self.assertEqual(self.table.lookup("live/a"), W1, "another worker's release leaves the claim")
        self.answer(self.one.release("live/a"))
        self.assertIsNone(self.answer(self.two.lookup("live/a")))

    def test_takeover_moves_the_claim(self) -> None:
        self.answer(self.one.claim("live/a"))
        self.assertEqual(self.answer(self.two.claim("live/a", takeover=True)), W2)
        self.assertFalse(self.answer(self.one.refresh("live/a")))

    def test_claims_expire_on_the_parents_clock(self) -> None:
        self.answer(self.one.claim("live/a"))
        self.now += 5.0
        self.assertIsNone(self.answer(self.two.lookup("live/a")))
        self.assertEqual(self.answer(self.two.claim("live/a")), W2)

    def test_claims_lists_every_page(self) -> None:
        # Enough long keys that the answer spans several AMP pages.
        keys = {f"live/{i:05d}-" + "k" * 200 for i in range(600)}
        for key in keys:
            self.table.claim(key, W1 if len(key) % 2 else W2)
        self.assertGreater(len(keys) * 200, directory_amp.PAGE_BYTES * 2)
        claims = self.answer(self.two.claims())
        self.assertEqual(set(claims), keys)
        self.assertEqual(claims, self.table.claims())

    def test_bad_key_is_refused_and_the_link_stays(self) -> None:
        failure = self.failureResultOf(self.answer_failure(self.one.claim("")), BadArgument)
        self.assertIn("key", failure.getErrorMessage())
        self.failureResultOf(
            self.answer_failure(self.one.claim("x" * (directory_amp.MAX_KEY_CHARS + 1))), BadArgument
        )
        self.assertEqual(self.answer(self.one.claim("live/ok")), W1)

    def test_bad_node_is_refused(self) -> None:
        locator = ClaimTableLocator(self.table)
        self.assertRaises(BadArgument, locator.claim, "live/a", "no-space", False)
        self.assertRaises(BadArgument, locator.refresh, "live/a", "n " + "u" * directory_amp.MAX_NODE_CHARS)
        self.assertEqual(self.table.claims(), {})

    def answer_failure(self, d):
        self.pump1.flush()
        self.pump2.flush()
        return d

    def test_without_a_link_every_call_is_unavailable(self) -> None:
        lone = AMPDirectory(W1, ttl=5.0)
        for d in (
            lone.claim("live/a"),
            lone.refresh("live/a"),
            lone.release("live/a"),
            lone.lookup("live/a"),
        ):
            self.failureResultOf(d, DirectoryUnavailable)
        self.failureResultOf(lone.claims(), DirectoryUnavailable)

    def test_link_lost_mid_call_is_unavailable_and_detaches(self) -> None:
        pending = self.one.lookup("live/a")
        client = self.pump1.client
        client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(pending, DirectoryUnavailable)
        self.assertFalse(self.one.connected)
        self.failureResultOf(self.one.claim("live/a"), DirectoryUnavailable)
        # The other worker's link is untouched.
        self.assertEqual(self.answer(self.two.claim("live/a"), self.pump2), W2)

    def test_link_lost_calls_on_lost_once(self) -> None:
        lost = []
        directory = AMPDirectory(W1, ttl=5.0)
        link = DirectoryLinkProtocol(directory, on_lost=lambda: lost.append(True))
        client, server, pump = connectedServerAndClient(
            lambda: DirectoryServerFactory(self.table).buildProtocol(None), lambda: link
        )
        self.assertTrue(directory.connected)
        client.transport.loseConnection()
        pump.flush()
        self.assertEqual(lost, [True])
        self.assertFalse(directory.connected)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class SupervisorTests(SynchronousTestCase):
    """The restart and stop policy over a fake spawner and a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.spawned: list[tuple[int, object, FakeProcess]] = []
        self.deaths: list[int] = []
        self.supervisor = WorkerSupervisor(
            2, self.spawn, self.clock, on_death=self.deaths.append, stop_timeout=30
        )

    def spawn(self, worker_id: int, protocol) -> FakeProcess:
        process = FakeProcess(100 + len(self.spawned))
        self.spawned.append((worker_id, protocol, process))
        return process

    def die(self, index: int, reason=None) -> None:
        _, protocol, _ = self.spawned[index]
        protocol.processEnded(Failure(reason or ProcessTerminated(signal=signal.SIGKILL)))

    def test_starts_every_worker(self) -> None:
        self.supervisor.start()
        self.assertEqual([w for w, _, _ in self.spawned], [1, 2])
        self.assertEqual(self.supervisor.pids(), {1: 100, 2: 101})

    def test_a_healthy_worker_that_dies_is_restarted_at_once_and_its_claims_released(self) -> None:
        self.supervisor.start()
        self.clock.advance(STABLE_UPTIME + 1)
        self.die(0)
        self.assertEqual(self.deaths, [1], "the dead worker's claims are released as it is reaped")
        self.assertEqual(self.supervisor.pids()[1], None)
        self.clock.advance(0)
        self.assertEqual([w for w, _, _ in self.spawned], [1, 2, 1])
        self.assertEqual(self.supervisor.pids(), {1: 102, 2: 101})
        self.assertEqual(self.supervisor.restarts, 1)

    def test_young_deaths_back_off_and_a_stable_run_resets(self) -> None:
        self.supervisor.start()
        delays = []
        for _ in range(4):
            self.die(len(self.spawned) - 1 if self.spawned[-1][0] == 1 else 0)
            before = len(self.spawned)
            waited = 0
            while len(self.spawned) == before:
                self.clock.advance(0.125)
                waited += 1
            delays.append(waited * 0.125)
        self.assertEqual(delays, [0.25, 0.5, 1.0, 2.0])
        self.clock.advance(STABLE_UPTIME)
        self.die(len(self.spawned) - 1)
        self.clock.advance(0)
        self.assertEqual(len(self.spawned), 7, "a death after a stable run restarts at once")

    def test_restart_delay_is_bounded(self) -> None:
        self.assertEqual(restart_delay(0), 0.0)
        self.assertEqual(restart_delay(1), FIRST_DELAY)
        self.assertEqual(restart_delay(50), MAX_DELAY)

    def test_stop_terms_every_worker_and_fires_when_all_exited(self) -> None:
        self.supervisor.start()
        done = self.supervisor.stop()
        self.assertEqual([p.signals for _, _, p in self.spawned], [[signal.SIGTERM], [signal.SIGTERM]])
        self.die(0, ProcessDone(0))
        self.assertNoResult(done)
        self.die(1, ProcessDone(0))
        self.successResultOf(done)
        self.clock.advance(60)
        self.assertEqual(len(self.spawned), 2, "no restart while stopping")
        self.assertEqual([p.signals for _, _, p in self.spawned], [[signal.SIGTERM], [signal.SIGTERM]])

    def test_stop_kills_a_worker_that_does_not_exit(self) -> None:
        self.supervisor.start()
        done = self.supervisor.stop()
        self.die(0, ProcessDone(0))
        self.clock.advance(30)
        self.assertEqual(self.spawned[1][2].signals, [signal.SIGTERM, signal.SIGKILL])
        self.die(1)
        self.successResultOf(done)

    def test_stop_cancels_a_pending_restart(self) -> None:
        self.supervisor.start()
        self.die(0)
        done = self.supervisor.stop()
        self.die(1, ProcessDone(0))
        self.successResultOf(done)
        self.clock.advance(MAX_DELAY)
        self.assertEqual(len(self.spawned), 2)


class WorkersParentTests(SynchronousTestCase):
    """The parent's wiring: options, the worker command line, the sockets and fds it passes."""

    def options(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_workers_option(self) -> None:
        self.assertFalse(wants_workers(self.options()))
        self.assertEqual(self.options("--workers", "2")["workers"], 2)
        self.assertTrue(wants_workers(self.options("--workers", "2")))
        self.assertGreaterEqual(self.options("--workers", "auto")["workers"], 1)
        self.assertRaises(SystemExit, self.options, "--workers", "0")

    def test_rtmpd_arguments_drop_workers(self) -> None:
        argv = [
            "twistd",
            "-n",
            "--pidfile=",
            "rtmpd",
            "--port",
            "tcp:0",
            "--workers",
            "2",
            "--workers=3",
            "-x",
        ]
        self.assertEqual(rtmpd_arguments(argv), ["--port", "tcp:0", "-x"])
        self.assertRaises(ValueError, rtmpd_arguments, ["twistd", "-n"])

    def test_worker_command_line(self) -> None:
        options = self.options("--workers", "2")
        options.parent = {"nodaemon": True, "logfile": None}
        command = worker_argv(options, ["twistd", "-n", "rtmpd", "--workers", "2", "--port", "tcp:0"])
        spec = WorkerSpec(1, "/run/x.sock", 5.0, {"tcp:0": (3, socket.AF_INET)}, (4, 4321))
        argv = command(spec)
        self.assertEqual(argv[1:3], ["-m", "rtmpd.cluster.worker"])
        self.assertEqual(argv[3:9], ["-n", "--pidfile=", "rtmpd", "--port", "tcp:0", "--worker-spec"])
        self.assertEqual(WorkerSpec.from_json(argv[9]), spec)

    def test_worker_spec_rejects_junk(self) -> None:
        for text in ("", "{}", '{"id": 1}', "[1]"):
            self.assertRaises(ValueError, WorkerSpec.from_json, text)

    def test_shared_listeners_cover_every_listener(self) -> None:
        options = self.options("--port", "1935", "--listen", "tcp6:1936", "--http", "tcp:8080")
        self.assertEqual(
            shared_listeners(options),
            [("tcp:1935", "RTMP server"), ("tcp6:1936", "RTMP server"), ("tcp:8080", "HTTP server")],
        )

    def test_parent_opens_sockets_and_passes_them_as_fds(self) -> None:
        reactor = MemoryReactorClock()
        reactor.spawnProcess = self.record_spawn
        self.spawns: list = []
        parent = WorkersService(
            2,
            [("tcp:0:interface=127.0.0.1", "RTMP server")],
            lambda spec: ["python", spec.to_json()],
            reactor,
            ttl=5.0,
        )
        self.patch_listen(reactor)
        parent.startService()
        self.addCleanup(parent._close)
        self.assertEqual(len(self.spawns), 2)
        seen_ports = set()
        for argv, child_fds in self.spawns:
            spec = WorkerSpec.from_json(argv[1])
            fd, _ = spec.sockets["tcp:0:interface=127.0.0.1"]
            self.assertEqual(
                child_fds[fd], 70 + spec.worker_id, "each worker gets its own socket of the port"
            )
            internal_fd, internal_port = spec.internal
            self.assertEqual(child_fds[internal_fd], parent.internal[spec.worker_id].fileno())
            seen_ports.add(internal_port)
            self.assertEqual(spec.link, parent.link_path)
        self.assertEqual(len(seen_ports), 2, "each worker has its own internal listener")

    def record_spawn(self, protocol, executable, argv, env=None, childFDs=None):
        self.spawns.append((argv, childFDs))
        return FakeProcess(200 + len(self.spawns))

    def patch_listen(self, reactor) -> None:
        import rtmpd.cluster.workers as workers

        class Listener:
            family = socket.AF_INET
            addr = "127.0.0.1:1935"
            per_worker = True

            def fileno(self, worker_id):
                return 70 + worker_id

            def close(self):
                return None

        self.patch(workers, "open_listener", lambda reactor, description, count: Listener())

    def test_dead_workers_claims_are_released(self) -> None:
        reactor = MemoryReactorClock()
        parent = WorkersService(2, [], lambda spec: [], reactor, ttl=5.0)
        parent.table.claim("live/a", W1)
        parent.table.claim("live/b", W2)
        parent._release(1)
        self.assertEqual(parent.table.claims(), {"live/b": W2})

    def test_tls_listeners_cannot_be_shared(self) -> None:
        self.assertRaises(
            ValueError, open_listener, MemoryReactorClock(), "ssl:1936:privateKey=k:certKey=c", 2
        )

    def test_parent_without_subcommand_exits_with_one_line(self) -> None:
        options = self.options("--workers", "2")
        self.assertRaises(SystemExit, parent_service, options, ["python", "-c"])


class WorkerTagTests(SynchronousTestCase):
    def test_every_event_carries_the_worker_id(self) -> None:
        publisher = LogPublisher()
        tag_logs(3, publisher)
        seen: list[dict] = []
        publisher.addObserver(seen.append)
        publisher({"log_format": "x"})
        publisher({"log_format": "y", "worker": "own"})
        self.assertEqual([e["worker"] for e in seen], [3, "own"])
        self.assertIsInstance(WorkerTag(1), WorkerTag)


class SharedListenerTests(SynchronousTestCase):
    """The kernel spreads connections over the workers' SO_REUSEPORT sockets of one port."""

    def test_each_worker_has_a_socket_of_the_same_port_and_connections_spread(self) -> None:
        listener = open_listener(MemoryReactorClock(), "tcp:0:interface=127.0.0.1", 2)
        self.addCleanup(listener.close)
        self.assertTrue(listener.per_worker)
        first, second = (socket.socket(fileno=os.dup(listener.fileno(i))) for i in (1, 2))
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        self.assertNotEqual(listener.fileno(1), listener.fileno(2))
        self.assertEqual(first.getsockname(), second.getsockname())
        host, port = listener.addr.rsplit(":", 1)
        self.assertEqual((host, int(port)), first.getsockname())
        clients = [socket.create_connection((host, int(port)), timeout=5) for _ in range(24)]
        for client in clients:
            self.addCleanup(client.close)
        accepted = {1: 0, 2: 0}
        for worker, sock in ((1, first), (2, second)):
            sock.setblocking(False)
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted[worker] += 1
        self.assertEqual(sum(accepted.values()), 24)
        self.assertGreater(min(accepted.values()), 0, accepted)

    def test_interface_and_backlog_only(self) -> None:
        self.assertRaises(ValueError, open_listener, MemoryReactorClock(), "tcp:0:reuse=1", 2)


class AdoptTests(SynchronousTestCase):
    """A worker swaps each listener its parent shared for the inherited socket, nested ones too."""

    def test_shared_listeners_are_swapped_and_others_kept(self) -> None:
        from twisted.application import service

        from rtmpd.server.listening import ListeningService
        from rtmpd.tap.workers import AdoptedListeningService, adopt_listeners

        top = service.MultiService()
        factory, ssh = object(), object()
        ListeningService("tcp:1935", factory).setServiceParent(top)
        ListeningService("tcp:8080", factory, what="HTTP server").setServiceParent(top)
        manhole = service.MultiService()
        manhole.setServiceParent(top)
        ListeningService("tcp:2222:interface=127.0.0.1", ssh, what="Manhole").setServiceParent(manhole)
        spec = WorkerSpec(
            1,
            "/x",
            5.0,
            {"tcp:1935": (3, socket.AF_INET), "tcp:2222:interface=127.0.0.1": (4, socket.AF_INET)},
            (5, 4000),
        )
        adopt_listeners(top, spec)
        listeners = [s for s in top if isinstance(s, ListeningService)]
        adopted = {s.description: s for s in [*listeners, *manhole] if isinstance(s, AdoptedListeningService)}
        self.assertEqual(sorted(adopted), ["tcp:1935", "tcp:2222:interface=127.0.0.1"])
        self.assertEqual((adopted["tcp:1935"].fd, adopted["tcp:1935"].factory), (3, factory))
        manhole_listener = adopted["tcp:2222:interface=127.0.0.1"]
        self.assertEqual(
            (manhole_listener.fd, manhole_listener.factory, manhole_listener.what), (4, ssh, "Manhole")
        )
        self.assertIs(manhole_listener.parent, manhole)
        kept = [s for s in listeners if not isinstance(s, AdoptedListeningService)]
        self.assertEqual([s.description for s in kept], ["tcp:8080"])

    def test_adopted_listener_accepts_on_the_inherited_socket(self) -> None:
        from twisted.internet.protocol import Factory, Protocol

        from rtmpd.tap.workers import AdoptedListeningService

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        port = sock.getsockname()[1]
        fd = os.dup(sock.fileno())
        sock.close()
        listener = AdoptedListeningService(
            fd, socket.AF_INET, f"tcp:{port}", Factory.forProtocol(Protocol), "X"
        )
        listener.startService()
        self.addCleanup(listener.stopService)
        self.assertEqual(listener.port.getHost().port, port)
        self.assertFalse(os.get_blocking(listener.port.fileno()), "an adopted socket must not block accept()")


class BenchmarkWorkersAxisTests(SynchronousTestCase):
    """The benchmark's workers axis: server names, the expansion of --rtmpd-workers, the process tree."""

    def test_server_names(self) -> None:
        from benchmarks.servers import split_name

        self.assertEqual(split_name("rtmpd"), ("rtmpd", 1, None, False))
        self.assertEqual(split_name("rtmpd@abc+p2+metrics"), ("rtmpd@abc", 2, None, True))
        self.assertEqual(split_name("rtmpd+p2+w10"), ("rtmpd", 2, "10", False))
        for bad in ("nginx+p2", "nginx+w10", "rtmpd+p0", "rtmpd+x", "rtmpd+p", "rtmpd+w"):
            self.assertRaises(ValueError, split_name, bad)

    def test_rtmpd_workers_expands_every_rtmpd_server(self) -> None:
        from benchmarks.run import parse_args

        args = parse_args(["--servers", "rtmpd,rtmpd+metrics", "--rtmpd-workers", "1,2", "--scenarios", "B"])
        self.assertEqual(args.servers, ["rtmpd", "rtmpd+p2", "rtmpd+metrics", "rtmpd+metrics+p2"])

    def test_process_tree_counts_children(self) -> None:
        import subprocess
        import sys
        import time

        from benchmarks.procs import cpu_times, process_tree, tree_cpu_times

        code = (
            "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import sys; sys.stdin.read()'])"
        )
        parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        self.addCleanup(parent.wait, 10)
        self.addCleanup(parent.stdin.close)
        deadline = time.monotonic() + 10
        while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the grandchild's start is not an event this process can wait for
        tree = process_tree(parent.pid)
        self.assertEqual(len(tree), 2, tree)
        self.assertEqual(tree[0], parent.pid)
        self.assertGreaterEqual(sum(tree_cpu_times(parent.pid)), sum(cpu_times(parent.pid)))
