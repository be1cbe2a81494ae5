"""The manhole against strangers: a private unix socket, equal-cost password failures, a per-address
lockout, a login grace time and a cap on connections waiting to log in; in memory, then as an attacker
over loopback against ``twistd -n rtmpd`` with OpenSSH and raw sockets."""

from __future__ import annotations

import os
import socket
import stat
import statistics
import subprocess
import time
from typing import Any

import bcrypt
from twisted.conch.interfaces import IConchUser
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword, SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rtmpd.access.throttle import FailureThrottle
from rtmpd.admin import auth
from rtmpd.admin.auth import AuditedPortal, PasswordFile
from rtmpd.admin.manhole import ManholeRealm, manhole_endpoint, manhole_factory
from rtmpd.admin.manhole_options import ManholeLimits
from rtmpd.server.listening import ListeningService
from rtmpd.tap import Options
from rtmpd.testing import result_of
from tests.support import ServerProcess, require
from tests.test_manhole import _Checker, events, new_key, public_line, temp_path, write


class EndpointTests(SynchronousTestCase):
    def test_a_unix_socket_is_private_unless_a_mode_is_given(self) -> None:
        self.assertEqual(manhole_endpoint("unix:/run/rtmpd.sock"), "unix:/run/rtmpd.sock:mode=600")
        self.assertEqual(manhole_endpoint("unix:/run/rtmpd.sock:mode=660"), "unix:/run/rtmpd.sock:mode=660")
        self.assertEqual(manhole_endpoint("2222"), "tcp:2222:interface=127.0.0.1")


class UnixSocketTests(TestCase):
    def test_the_unix_socket_is_created_mode_0600(self) -> None:
        path = temp_path(self, "manhole.sock")
        keys = write(temp_path(self, "keys"), public_line(new_key()))
        with capturedLogs():
            factory = manhole_factory(lambda user: {}, keys_file=keys, host_key_file=temp_path(self, "hk"))
            listener = ListeningService(manhole_endpoint(f"unix:{path}"), factory, what="Manhole")
            listener.startService()
        self.addCleanup(listener.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))


class EqualCostTests(SynchronousTestCase):
    def setUp(self) -> None:
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode()
        self.path = write(temp_path(self), f"alice:{hashed}\nbob:plain pw\n")
        self.checks: list[tuple[bytes, int]] = []
        real = auth._bcrypt_matches

        def counting(password: bytes, stored: bytes) -> bool:
            self.checks.append((stored, int(stored.split(b"$")[2])))
            return real(password, stored)

        self.patch(auth, "_bcrypt_matches", counting)
        self.checker = PasswordFile(self.path, defer_to_thread=defer.maybeDeferred)

    def login(self, user: bytes, password: bytes):
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def test_every_attempt_is_one_bcrypt_check_at_the_files_cost(self) -> None:
        for user, password in ((b"alice", b"wrong"), (b"bob", b"wrong"), (b"carol", b"wrong")):
            self.checks.clear()
            self.failureResultOf(self.login(user, password), UnauthorizedLogin)
            self.assertEqual([cost for _, cost in self.checks], [5], user)
        # Successes too: the plain-text user still pays for one check.
        self.checks.clear()
        self.assertEqual(result_of(self.login(b"bob", b"plain pw")), b"bob")
        self.assertEqual(len(self.checks), 1)
        self.checks.clear()
        self.assertEqual(result_of(self.login(b"alice", b"s3cret")), b"alice")
        self.assertEqual(len(self.checks), 1)

    def test_the_decoy_is_made_once_and_has_the_default_cost_without_hashes(self) -> None:
        checker = PasswordFile(write(temp_path(self), "bob:plain\n"), defer_to_thread=defer.maybeDeferred)
        self.patch(auth, "DEFAULT_BCRYPT_COST", 4)
        self.patch(auth.bcrypt, "hashpw", _counting_hashpw(made := []))
        with capturedLogs():
            checker.check()
        for _ in range(3):
            self.failureResultOf(checker.requestAvatarId(UsernamePassword(b"x", b"y")), UnauthorizedLogin)
        self.assertEqual(len(made), 1)

    def test_different_costs_are_warned_about(self) -> None:
        low = bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)).decode()
        high = bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=5)).decode()
        with capturedLogs() as logs:
            PasswordFile(write(temp_path(self), f"a:{low}\nb:{high}\n")).check()
        (warning,) = [e for e in logs if e["log_format"].startswith("Manhole bcrypt hashes have different")]
        self.assertEqual(warning["costs"], [4, 5])


def _counting_hashpw(made: list) -> Any:
    real = bcrypt.hashpw

    def hashpw(password: bytes, salt: bytes) -> bytes:
        made.append(salt)
        return real(password, salt)

    return hashpw


class EqualTimeTests(SynchronousTestCase):
    def test_unknown_and_plain_users_fail_as_slowly_as_bcrypt_users(self) -> None:
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
        checker = PasswordFile(
            write(temp_path(self), f"alice:{hashed}\nbob:plain\n"), defer_to_thread=defer.maybeDeferred
        )
        with capturedLogs():
            checker.check()

        def median(user: bytes) -> float:
            times = []
            for _ in range(5):
                started = time.perf_counter()
                self.failureResultOf(checker.requestAvatarId(UsernamePassword(user, b"wrong")))
                times.append(time.perf_counter() - started)
            return statistics.median(times)

        bcrypt_user, plain_user, unknown = median(b"alice"), median(b"bob"), median(b"carol")
        # Before, the two others answered in microseconds; one bcrypt check at cost 10 takes tens of ms.
        self.assertGreater(plain_user, 0.5 * bcrypt_user)
        self.assertGreater(unknown, 0.5 * bcrypt_user)


class LockoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = FailureThrottle(self.clock, max_failures=3, window=600, lockout=600)

    def portal(self, outcome, host: str = "192.0.2.7", interface=IUsernamePassword) -> AuditedPortal:
        checker = _Checker((interface,), outcome)
        portal = Portal(ManholeRealm(lambda user: {}), [checker])
        return AuditedPortal(portal, f"{host}:5555", self.throttle, host)

    def fail(self, portal: AuditedPortal) -> None:
        self.failureResultOf(portal.login(UsernamePassword(b"x", b"y"), None, IConchUser), UnauthorizedLogin)

    def test_failures_lock_the_address_out_with_one_warn_line(self) -> None:
        portal = self.portal(UnauthorizedLogin("wrong password"))
        with capturedLogs() as logs:
            for _ in range(3):
                self.assertFalse(portal.locked)
                self.fail(portal)
        self.assertTrue(portal.locked)
        (locked,) = events(logs, "Manhole address locked out")
        self.assertEqual((locked["address"], locked["failures"]), ("192.0.2.7", 3))
        self.assertFalse(self.portal(UnauthorizedLogin("x"), "192.0.2.8").locked)
        self.clock.advance(600)
        self.assertFalse(portal.locked)

    def test_key_queries_do_not_count_and_a_login_clears_the_count(self) -> None:
        from twisted.conch.error import ValidPublicKey

        query = SSHPrivateKey(b"op", b"ssh-ed25519", new_key().public().blob(), None, None)
        with capturedLogs():
            for _ in range(5):
                self.failureResultOf(
                    self.portal(UnauthorizedLogin("no"), interface=ISSHPrivateKey).login(
                        query, None, IConchUser
                    ),
                    UnauthorizedLogin,
                )
                self.failureResultOf(
                    self.portal(ValidPublicKey(), interface=ISSHPrivateKey).login(query, None, IConchUser)
                )
            self.assertFalse(self.portal(None).locked)
            self.fail(self.portal(UnauthorizedLogin("wrong password")))
            self.fail(self.portal(UnauthorizedLogin("wrong password")))
            result_of(self.portal(b"alice").login(UsernamePassword(b"alice", b"pw"), None, IConchUser))
            self.fail(self.portal(UnauthorizedLogin("wrong password")))
            self.fail(self.portal(UnauthorizedLogin("wrong password")))
        self.assertFalse(self.portal(None).locked)


class FactoryLimitsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        keys = write(temp_path(self), public_line(new_key()))
        with capturedLogs():
            self.factory = manhole_factory(
                lambda user: {},
                keys_file=keys,
                host_key_file=temp_path(self),
                limits=ManholeLimits(login_grace=5.0, max_failures=2, lockout=60.0, max_unauthenticated=2),
                clock=self.clock,
            )
        self.factory.startFactory()

    def connect(self, host: str = "127.0.0.1"):
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        if proto is None:
            return None, None
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        proto.makeConnection(transport)
        return proto, transport

    def test_a_connection_not_logged_in_is_closed_after_the_grace_time(self) -> None:
        proto, transport = self.connect()
        # The server's version line went out at once.
        self.assertTrue(transport.value().startswith(b"SSH-2.0-"))
        with capturedLogs() as logs:
            self.clock.advance(4.9)
            self.assertFalse(transport.disconnecting)
            self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        (line,) = events(logs, "Manhole connection closed: not logged in within the grace time")
        self.assertEqual(line["grace"], 5.0)
        proto.connectionLost(None)
        self.assertEqual(self.factory.door.unauthenticated, 0)

    def test_a_logged_in_connection_has_no_grace_timer(self) -> None:
        proto, transport = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        proto.setService(_NamedService(b"ssh-connection"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.factory.door.unauthenticated, 0)
        self.clock.advance(10)
        self.assertFalse(transport.disconnecting)

    def test_connections_waiting_to_log_in_are_capped(self) -> None:
        first, _ = self.connect()
        self.connect()
        with capturedLogs() as logs:
            self.assertEqual(self.connect(), (None, None))
        self.assertEqual([e["log_level"].name for e in logs], ["debug"])
        first.connectionLost(None)
        self.assertIsNotNone(self.connect()[0])

    def test_a_locked_out_address_is_refused_at_connect(self) -> None:
        for _ in range(2):
            self.factory.door.throttle.record_failure("192.0.2.9")
        self.assertEqual(self.connect("192.0.2.9"), (None, None))
        self.assertIsNotNone(self.connect("192.0.2.10")[0])

    def test_options(self) -> None:
        options = Options()
        options.parseOptions(
            ["--manhole-login-grace", "7", "--manhole-max-failures", "4", "--manhole-lockout", "90"]
        )
        from rtmpd.admin.manhole_options import manhole_limits

        self.assertEqual(manhole_limits(options), ManholeLimits(7.0, 4, 90.0))


class _NamedService:
    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport = None

    def serviceStarted(self) -> None:
        pass

    def serviceStopped(self) -> None:
        pass


# -- as an attacker, against twistd -n rtmpd --------------------------------------------


class ManholeAttackTests(TestCase):
    """OpenSSH and raw sockets against a real server with a manhole; an honest client meanwhile."""

    timeout = 120

    def setUp(self) -> None:
        self.ssh = require("ssh")
        self.dir = os.path.dirname(temp_path(self))
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
        write(os.path.join(self.dir, "passwd"), f"alice:{hashed}\n")
        os.chmod(os.path.join(self.dir, "passwd"), 0o600)
        self.socket_path = os.path.join(self.dir, "admin.sock")
        self.server = ServerProcess(
            "--manhole",
            "tcp:0",
            "--manhole-passwd",
            "passwd",
            "--manhole-host-key",
            "host_key",
            "--manhole-max-failures",
            "3",
            "--manhole-login-grace",
            "2",
            cwd=self.dir,
            log_level="info",
        )
        self.server.start()
        self.addCleanup(self.server.stop)
        self.port = int(self.server.wait_for_msg("Manhole listening")["addr"].rsplit(":", 1)[1])

    def ssh_password(self, password: str, text: str = "6*7\n") -> subprocess.CompletedProcess:
        askpass = write(os.path.join(self.dir, "askpass"), '#!/bin/sh\necho "$MANHOLE_TEST_PASSWORD"\n')
        os.chmod(askpass, 0o700)
        env = dict(
            os.environ, SSH_ASKPASS=askpass, SSH_ASKPASS_REQUIRE="force", MANHOLE_TEST_PASSWORD=password
        )
        env.pop("DISPLAY", None)
        cmd = [
            self.ssh,
            "-tt",
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "PreferredAuthentications=password",
            "alice@127.0.0.1",
        ]
        return subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=30, env=env)

    def warn_lines(self) -> list[dict[str, Any]]:
        return [e for e in self.server.events if e.get("level") in ("warn", "error", "critical")]

    def test_a_guesser_is_locked_out_with_one_line_and_its_connections_closed(self) -> None:
        for _ in range(3):
            self.assertEqual(self.ssh_password("guess").returncode, 255)
        locked = self.server.wait_for_msg("Manhole address locked out", 10)
        self.assertEqual((locked["address"], locked["failures"]), ("127.0.0.1", 3))
        # The connection that locked it is disconnected (conch logs that itself, once).
        at = self.server.events.index(locked)
        self.server.wait_for(lambda e: e.get("msg") == "connection lost", 10, start=at)
        before = len(self.server.events)
        # Even the right password no longer gets in from this address: the connection is closed at once.
        for _ in range(5):
            refused = self.ssh_password("s3cret")
            self.assertEqual(refused.returncode, 255)
            self.assertNotIn("42", refused.stdout)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.assertEqual(raw.recv(100), b"")
        raw.close()
        self.assertEqual(self.server.messages("Manhole login"), [])
        # Three failure lines and the lockout line for the whole attack; nothing per refused connection.
        self.assertEqual(len([e for e in self.warn_lines() if e["msg"] == "Manhole login failed"]), 3)
        self.assertEqual([e for e in self.server.events[before:] if e.get("level") != "debug"], [])
        self.assertEqual(self.server.errors(), [])

    def test_connections_that_never_log_in_are_closed_after_the_grace_time(self) -> None:
        silent = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(silent.close)
        version_only = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(version_only.close)
        version_only.sendall(b"SSH-2.0-attacker\r\n")
        started = time.monotonic()
        for sock in (silent, version_only):
            received = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
            self.assertTrue(received.startswith(b"SSH-2.0-"))
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 6.0)
        # The server logs before it closes; its log is read by another thread, so wait for both lines.
        message = "Manhole connection closed: not logged in within the grace time"
        first = self.server.wait_for_msg(message, 10)
        self.server.wait_for(lambda e: e.get("msg") == message and e is not first, 10)
        self.assertEqual(len(self.server.messages(message)), 2)
        # An honest operator still gets in.
        accepted = self.ssh_password("s3cret")
        self.assertEqual(accepted.returncode, 0, accepted.stderr)
        self.assertEqual(self.server.errors(), [])


class UnixManholeTests(TestCase):
    timeout = 60

    def test_twistd_creates_the_manhole_socket_mode_0600(self) -> None:
        directory = os.path.dirname(temp_path(self))
        keys = write(os.path.join(directory, "keys"), public_line(new_key()))
        path = os.path.join(directory, "admin.sock")
        server = ServerProcess(
            "--manhole", f"unix:{path}", "--manhole-keys", keys, "--manhole-host-key", "hk", cwd=directory
        )
        server.start()
        self.addCleanup(server.stop)
        server.wait_for_msg("Manhole listening")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
