"""The SSH manhole: admin helpers in memory, credentials, the session glue, and OpenSSH for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile

import bcrypt
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.service import MultiService
from twisted.conch.checkers import SSHPublicKeyChecker
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.manhole_ssh import ConchFactory
from twisted.conch.ssh import session as ssh_session
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword, SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rtmpd.admin.actions import Actions, AdminError, NotFound, Report
from rtmpd.admin.auth import (
    AuditedPortal,
    AuthorizedKeys,
    HostKeyFile,
    ManholeError,
    PasswordFile,
    fingerprint,
)
from rtmpd.admin.format import Table
from rtmpd.admin.manhole import (
    ManholeFactory,
    ManholeRealm,
    ManholeSession,
    ManholeUser,
    loopback_default,
)
from rtmpd.admin.namespace import make_namespace
from rtmpd.admin.rates import RateSampler
from rtmpd.admin.views import ServerViews
from rtmpd.config import ServerConfig
from rtmpd.core.commands import Command
from rtmpd.core.messages import MessageType
from rtmpd.relay.registry import StreamRegistry
from rtmpd.server.listening import ListeningService
from rtmpd.tap import Options, makeService, manhole_service
from rtmpd.testing import MemoryServer, result_of
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)
from tests.support import ServerProcess, ffmpeg_publish, require, twistd

A, V = MessageType.AUDIO, MessageType.VIDEO
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[A-Za-z]")


def new_key() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


def public_line(key: Key) -> str:
    return key.public().toString("OPENSSH").decode() + "\n"


def temp_path(case, name: str = "file") -> str:
    """A path in a fresh directory that is removed after the test (pytest runs in the checkout)."""
    directory = tempfile.mkdtemp(prefix="rtmpd-manhole-")
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def events(logs, msg: str) -> list[dict]:
    return [e for e in logs if e.get("log_format") == msg]


# -- admin helpers on an in-memory server ---------------------------------------


class AdminTestCase(SynchronousTestCase):
    """A stream live/test published with H.264/AAC 640x360 and played by two players."""

    def setUp(self) -> None:
        self.server = MemoryServer(self.config())
        self.top = self.server.service
        self.sampler = RateSampler(self.server.factory.connections, self.server.clock)
        self.namespace = make_namespace(self.top, "alice", self.sampler, reactor=self.server.clock)
        self.publisher, self.pub_sid = self.client()
        result_of(self.settle(self.publisher.publish(self.pub_sid, "test")))
        self.publisher.send_metadata(self.pub_sid, {"width": 640.0, "height": 360.0})
        self.publisher.send_media(A, self.pub_sid, 0, AAC_SEQUENCE_HEADER)
        self.publisher.send_media(V, self.pub_sid, 0, AVC_SEQUENCE_HEADER)
        self.send_gop(0)
        self.players = []
        for _ in range(2):
            player, sid = self.client()
            result_of(self.settle(player.play(sid, "test")))
            self.players.append(player)

    def config(self) -> ServerConfig:
        return ServerConfig()

    def settle(self, d):
        self.server.flush()
        return d

    def client(self):
        return self.server.session()

    def send_gop(self, start: int) -> None:
        self.publisher.send_media(V, self.pub_sid, start, avc_keyframe(start))
        for i in range(1, 5):
            self.publisher.send_media(V, self.pub_sid, start + i * 33, avc_interframe(i))
            self.publisher.send_media(A, self.pub_sid, start + i * 33, aac_frame(i))
        self.server.flush()

    def call(self, name: str, *args):
        return self.namespace[name](*args)


class AdminViewTests(AdminTestCase):
    def test_streams_shows_key_codecs_size_and_subscribers(self) -> None:
        table = self.call("streams")
        self.assertIsInstance(table, Table)
        [row] = table
        self.assertEqual(row["key"], "live/test")
        self.assertEqual(row["codecs"], "H264/AAC")
        self.assertEqual(row["resolution"], "640x360")
        self.assertEqual(row["subscribers"], 2)
        self.assertEqual(row["publisher"], self.publisher.server_protocol.peer_addr)
        self.assertEqual(row["gop_cache_bytes"], self.top.registry.get("live/test").cache.gop_bytes)
        self.assertGreater(row["gop_cache_bytes"], 0)
        self.assertIsNone(row["recording"])
        text = repr(table)
        header, line = text.splitlines()
        self.assertEqual(re.split(r"\s{2,}", header)[:4], ["key", "publisher", "codecs", "size"])
        self.assertIn("subs", header)
        self.assertTrue(line.startswith("live/test "), line)
        self.assertIn("H264/AAC", line)
        self.assertIn("640x360", line)

    def test_streams_uptime_follows_the_clock(self) -> None:
        self.server.advance(7)  # within the publisher timeout
        [row] = self.call("streams")
        self.assertEqual(row["uptime"], 7)
        self.assertIn("0:00:07", repr(self.call("streams")))

    def test_bit_rates_are_differences_over_the_sampling_interval(self) -> None:
        pub_conn = self.publisher.server_protocol
        self.sampler.sample()
        [row] = self.call("streams")
        self.assertIsNone(row["bitrate_in"], "one sample is not a rate")
        before_in = pub_conn.bytes_in
        before_out = [p.server_protocol.bytes_out for p in self.players]
        self.send_gop(200)
        self.server.clock.advance(2)
        self.sampler.sample()
        [row] = self.call("streams")
        self.assertEqual(row["bitrate_in"], (pub_conn.bytes_in - before_in) * 8 / 2)
        sent = sum(p.server_protocol.bytes_out - b for p, b in zip(self.players, before_out, strict=True))
        self.assertGreater(sent, 0)
        self.assertEqual(row["bitrate_out"], sent * 8 / 2)

    def test_sampler_forgets_closed_connections(self) -> None:
        self.sampler.sample()
        self.server.clock.advance(2)
        self.sampler.sample()
        gone = self.players[0].server_protocol.conn_id
        self.assertIsNotNone(self.sampler.rates(gone))
        self.players[0].transport.loseConnection()
        self.server.flush()
        self.sampler.sample()
        self.assertIsNone(self.sampler.rates(gone))

    def test_subscribers_lists_each_player(self) -> None:
        table = self.call("subscribers", "live/test")
        expected = sorted(p.server_protocol.conn_id for p in self.players)
        self.assertEqual(sorted(row["conn_id"] for row in table), expected)
        for row in table:
            self.assertGreater(row["bytes_sent"], 0)
            self.assertEqual(row["dropped_frames"], 0)
            self.assertIn("buffered_bytes", row)
        for conn_id in expected:
            self.assertIn(conn_id, repr(table))

    def test_subscribers_of_an_unknown_stream_names_the_known_ones(self) -> None:
        with self.assertRaises(AdminError) as raised:
            self.call("subscribers", "live/nope")
        self.assertIn("live/test", str(raised.exception))

    def test_conns_says_who_publishes_and_who_plays(self) -> None:
        roles = {row["conn_id"]: row["role"] for row in self.call("conns")}
        self.assertEqual(roles[self.publisher.server_protocol.conn_id], "publish live/test")
        for player in self.players:
            self.assertEqual(roles[player.server_protocol.conn_id], "play live/test")

    def test_recording_file_is_shown_relative_to_the_record_dir(self) -> None:
        class Recording:
            file = "/var/rec/live/test-1.flv"
            state = "recording"

        recording = Recording()

        class Recorder:
            def recording_for(self, key):
                return recording if key == "live/test" else None

        self.top.recorder = Recorder()
        self.top.config = ServerConfig(record_dir="/var/rec")
        [row] = self.call("streams")
        self.assertEqual(row["recording"], "live/test-1.flv")
        recording.state = "failed"
        [row] = self.call("streams")
        self.assertEqual(row["recording"], "live/test-1.flv (failed)")
        recording.file, recording.state = "/elsewhere/test.flv", "recording"
        [row] = self.call("streams")
        self.assertEqual(row["recording"], "/elsewhere/test.flv")

    def test_empty_views_say_so(self) -> None:
        server = MemoryServer()
        namespace = make_namespace(server.service, "alice", reactor=server.clock)
        self.assertEqual(repr(namespace["streams"]()), "(no streams)")
        self.assertEqual(repr(namespace["conns"]()), "(no connections)")

    def test_help_lists_the_namespace(self) -> None:
        text = repr(self.call("help"))
        for name in (
            "registry",
            "service",
            "recorder",
            "reactor",
            "streams()",
            "subscribers(key)",
            "conns()",
            "kick(key)",
            "drop(conn_id)",
            "stop_recording(key)",
        ):
            self.assertIn(name, text)
        self.assertIn("Stream", self.call("help", type(self.top.registry)))

    def test_namespace_holds_the_servers_objects(self) -> None:
        self.assertIs(self.namespace["registry"], self.top.registry)
        self.assertIs(self.namespace["service"], self.top)
        self.assertIs(self.namespace["recorder"], self.top.recorder)
        self.assertIs(self.namespace["reactor"], self.server.clock)


class AdminActionTests(AdminTestCase):
    def test_kick_disconnects_the_publisher_and_players_get_unpublish_notify(self) -> None:
        notified = [p.wait_for_status("NetStream.Play.UnpublishNotify") for p in self.players]
        with capturedLogs() as logs:
            report = self.call("kick", "live/test")
            self.server.flush()
        self.assertIsInstance(report, Report)
        self.assertIn(self.publisher.server_protocol.conn_id, report)
        self.assertTrue(self.publisher.disconnected.called)
        for d in notified:
            self.assertIsInstance(result_of(d), Command)
        [kick] = events(logs, "Manhole kick")
        self.assertEqual((kick["user"], kick["stream_key"]), ("alice", "live/test"))
        [closed] = [
            e
            for e in events(logs, "Connection closed")
            if e["conn_id"] == self.publisher.server_protocol.conn_id
        ]
        self.assertEqual(closed["reason"], "kicked by alice")
        self.assertIsNone(self.top.registry.get("live/test").publisher)

    def test_kick_without_a_publisher_changes_nothing(self) -> None:
        self.call("kick", "live/test")
        self.server.flush()
        with self.assertRaises(AdminError):
            self.call("kick", "live/test")
        with self.assertRaises(AdminError):
            self.call("kick", "live/unknown")

    def test_drop_by_conn_id_or_number(self) -> None:
        first, second = self.players
        with capturedLogs() as logs:
            self.call("drop", first.server_protocol.conn_id)
            self.call("drop", int(second.server_protocol.conn_id[1:]))
            self.server.flush()
        self.assertTrue(first.disconnected.called)
        self.assertTrue(second.disconnected.called)
        self.assertFalse(self.publisher.disconnected.called)
        drops = events(logs, "Manhole drop")
        self.assertEqual([e["user"] for e in drops], ["alice", "alice"])
        self.assertEqual(drops[0]["role"], "play live/test")
        self.assertEqual(self.call("subscribers", "live/test"), [])

    def test_drop_of_an_unknown_connection(self) -> None:
        with self.assertRaises(AdminError):
            self.call("drop", "c999999")

    def test_stop_recording_without_a_recorder(self) -> None:
        self.assertIsNone(self.top.recorder)
        with self.assertRaises(AdminError) as raised:
            self.call("stop_recording", "live/test")
        self.assertIn("--record-dir", str(raised.exception))

    def test_stop_recording_asks_the_recorder(self) -> None:
        stopped = []

        class Recorder:
            def recording_for(self, key):
                return None

            def stop_recording(self, key):
                stopped.append(key)
                return key == "live/test"

        self.top.recorder = Recorder()
        with capturedLogs() as logs:
            report = self.call("stop_recording", "live/test")
        self.assertEqual(stopped, ["live/test"])
        self.assertIn("stopped recording live/test", report)
        self.assertEqual(events(logs, "Manhole stop recording")[0]["user"], "alice")
        with self.assertRaises(AdminError):
            self.call("stop_recording", "live/other")


class ViewsAsDataTests(AdminTestCase):
    """The views an HTTP API can serve as is: raw values, no text made for a person."""

    def test_views_are_plain_values_that_survive_json(self) -> None:
        self.sampler.sample()
        self.send_gop(200)
        self.server.clock.advance(2)
        self.sampler.sample()
        views = ServerViews(self.top, self.sampler)
        for rows in (views.streams(), views.players("live/test"), views.connections()):
            self.assertTrue(rows)
            self.assertEqual(json.loads(json.dumps(rows)), rows)
        [stream] = views.streams()
        self.assertEqual(
            (stream["video_codec"], stream["audio_codec"], stream["width"], stream["height"]),
            ("H264", "AAC", 640, 360),
        )
        self.assertGreater(stream["bitrate_in"], 0)
        for label in ("codecs", "resolution", "recording"):
            self.assertNotIn(label, stream)
        roles = {row["conn_id"]: row["roles"] for row in views.connections()}
        self.assertEqual(roles[self.publisher.server_protocol.conn_id], ["publish live/test"])

    def test_an_unknown_stream_is_not_found(self) -> None:
        with self.assertRaises(NotFound) as raised:
            ServerViews(self.top).players("live/nope")
        self.assertIn("live/test", str(raised.exception))


class _BarePeer:
    """A connection with exactly what ``rtmpd.relay.peer.Peer`` offers the views and actions."""

    conn_id, peer_addr, app = "c000007", "192.0.2.1:4000", "live"
    bytes_in, bytes_out, buffered_bytes = 1000, 2000, 30

    def __init__(self) -> None:
        self.aborted: list[str] = []

    def roles(self) -> list[str]:
        return ["play live/x"]

    def abort(self, reason: str) -> None:
        self.aborted.append(reason)


class _BareServer:
    def __init__(self, peer: _BarePeer) -> None:
        self.clock = Clock()
        self.config = ServerConfig()
        self.registry = StreamRegistry(self.config, self.clock.seconds)
        self.recorder = None
        self.connections = {peer.conn_id: peer}


class PeerOnlyTests(SynchronousTestCase):
    def test_connections_are_read_and_dropped_through_peer_alone(self) -> None:
        peer = _BarePeer()
        server = _BareServer(peer)
        [row] = ServerViews(server).connections()
        self.assertEqual(
            row,
            {
                "conn_id": "c000007",
                "peer": "192.0.2.1:4000",
                "app": "live",
                "roles": ["play live/x"],
                "bytes_in": 1000,
                "bytes_out": 2000,
                "bitrate_in": None,
                "bitrate_out": None,
                "buffered_bytes": 30,
            },
        )
        with capturedLogs() as logs:
            report = Actions(server, "bob").drop(7)
        self.assertEqual(report, "dropped c000007 (192.0.2.1:4000, play live/x)")
        self.assertEqual(peer.aborted, ["dropped by bob"])
        self.assertEqual(events(logs, "Manhole drop")[0]["role"], "play live/x")


# -- endpoint, host key, credentials ----------------------------------------------


class LoopbackDefaultTests(SynchronousTestCase):
    def test_no_interface_means_loopback(self) -> None:
        self.assertEqual(loopback_default("2222"), "tcp:2222:interface=127.0.0.1")
        self.assertEqual(loopback_default("tcp:2222"), "tcp:2222:interface=127.0.0.1")
        self.assertEqual(
            loopback_default("tcp:port=2222:backlog=5"), "tcp:port=2222:backlog=5:interface=127.0.0.1"
        )
        self.assertEqual(loopback_default("tcp6:2222"), "tcp6:2222:interface=\\:\\:1")

    def test_an_explicit_interface_is_kept(self) -> None:
        for description in (
            "tcp:2222:interface=0.0.0.0",
            "tcp6:2222:interface=\\:\\:",
            "unix:/run/rtmpd.sock",
        ):
            self.assertEqual(loopback_default(description), description)


class HostKeyTests(SynchronousTestCase):
    def test_missing_key_is_created_ed25519_private_to_the_owner(self) -> None:
        path = temp_path(self)
        with capturedLogs() as logs:
            key = HostKeyFile(path).load()
        self.assertEqual(key.sshType(), b"ssh-ed25519")
        self.assertFalse(key.isPublic())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(events(logs, "Manhole host key created")[0]["fingerprint"], fingerprint(key))
        self.assertEqual(HostKeyFile(path).load(), key)

    def test_unusable_key_files_stop_startup(self) -> None:
        garbage = write(temp_path(self), "not a key\n")
        public = write(temp_path(self), public_line(new_key()))
        for path, expected in (
            (garbage, "not an SSH private key"),
            (public, "a public key"),
            (os.path.join(temp_path(self), "missing-dir", "key"), "No such file"),
        ):
            with self.assertRaises(ManholeError) as raised:
                HostKeyFile(path).load()
            self.assertIn(expected, str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))

    def test_host_keys_belong_to_each_factory(self) -> None:
        first, second = new_key(), new_key()
        portal = Portal(ManholeRealm(lambda user: {}))
        a, b = ManholeFactory(portal, first), ManholeFactory(portal, second)
        self.assertEqual(a.privateKeys, {b"ssh-ed25519": first})
        self.assertEqual(b.privateKeys, {b"ssh-ed25519": second})
        self.assertEqual(b.publicKeys, {b"ssh-ed25519": second.public()})
        self.assertEqual(ConchFactory.publicKeys, {})
        self.assertEqual(ConchFactory.privateKeys, {})


def signed_credentials(user: bytes, key: Key, data: bytes = b"session data") -> SSHPrivateKey:
    blob = key.public().blob()
    return SSHPrivateKey(user, key.sshType(), blob, data, key.sign(data))


class AuthorizedKeysTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key, self.other = new_key(), new_key()
        self.path = write(temp_path(self), "# operators\n\n" + public_line(self.key))
        self.checker = SSHPublicKeyChecker(AuthorizedKeys(self.path))

    def test_a_listed_key_logs_in_under_any_name(self) -> None:
        for user in (b"alice", b"root", b"whoever"):
            credentials = signed_credentials(user, self.key)
            self.assertEqual(result_of(self.checker.requestAvatarId(credentials)), user)

    def test_an_unlisted_key_or_a_bad_signature_is_refused(self) -> None:
        self.failureResultOf(
            self.checker.requestAvatarId(signed_credentials(b"alice", self.other)), UnauthorizedLogin
        )
        blob = self.key.public().blob()
        forged = SSHPrivateKey(b"alice", b"ssh-ed25519", blob, b"data", self.other.sign(b"data"))
        self.failureResultOf(self.checker.requestAvatarId(forged), UnauthorizedLogin)

    def test_keys_are_read_at_every_login(self) -> None:
        write(self.path, self.other.public().toString("OPENSSH").decode() + "\n")
        self.failureResultOf(
            self.checker.requestAvatarId(signed_credentials(b"alice", self.key)), UnauthorizedLogin
        )
        self.assertEqual(result_of(self.checker.requestAvatarId(signed_credentials(b"a", self.other))), b"a")

    def test_startup_check(self) -> None:
        self.assertEqual(AuthorizedKeys(self.path).check(), [self.key.public()])
        with_options = write(temp_path(self), 'from="10.0.0.1" ' + public_line(self.key))
        for path, expected in (
            (write(temp_path(self), "# nothing\n"), "no public keys"),
            (with_options, "no public keys"),
            (temp_path(self), "No such file"),
        ):
            with capturedLogs():
                with self.assertRaises(ManholeError) as raised:
                    AuthorizedKeys(path).check()
            self.assertIn(expected, str(raised.exception))


class PasswordFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
        self.path = write(temp_path(self), f"# manhole users\nalice:{hashed}\nbob:plain pw\n")
        # bcrypt runs in a thread in the server; here, in line.
        self.checker = PasswordFile(self.path, defer_to_thread=defer.maybeDeferred)

    def login(self, user: bytes, password: bytes):
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def test_bcrypt_and_plain_passwords(self) -> None:
        self.assertEqual(result_of(self.login(b"alice", b"s3cret")), b"alice")
        self.assertEqual(result_of(self.login(b"bob", b"plain pw")), b"bob")

    def test_wrong_password_or_unknown_user_is_refused(self) -> None:
        for user, password in (
            (b"alice", b"wrong"),
            (b"bob", b"plain"),
            (b"carol", b"s3cret"),
            (b"alice", b"x" * 100),
        ):
            self.failureResultOf(self.login(user, password), UnauthorizedLogin)

    def test_startup_check(self) -> None:
        with capturedLogs() as logs:
            self.assertEqual(self.checker.check(), 2)
        [plain] = events(logs, "Manhole password file holds plain-text passwords")
        self.assertEqual(plain["users"], ["bob"])
        for text, expected in (
            ("# nobody\n", "no users"),
            ("alice\n", "line 1 is not user:password"),
            ("alice:$6$salt$hash\n", "unsupported hash $6$"),
        ):
            with self.assertRaises(ManholeError) as raised:
                PasswordFile(write(temp_path(self), text)).check()
            self.assertIn(expected, str(raised.exception))


class _Checker:
    """A checker that answers what it is told to."""

    def __init__(self, credentialInterfaces, outcome) -> None:
        self.credentialInterfaces = credentialInterfaces
        self.outcome = outcome

    def requestAvatarId(self, credentials):
        if isinstance(self.outcome, Exception):
            return defer.fail(self.outcome)
        return defer.succeed(self.outcome)


class AuditedPortalTests(SynchronousTestCase):
    def portal(self, outcome, interface=ISSHPrivateKey) -> AuditedPortal:
        return AuditedPortal(
            Portal(ManholeRealm(lambda user: {}), [_Checker((interface,), outcome)]), "127.0.0.1:5555"
        )

    def test_login_is_logged_with_user_method_fingerprint_and_peer(self) -> None:
        key = new_key()
        with capturedLogs() as logs:
            d = self.portal(b"alice").login(signed_credentials(b"alice", key), None, IConchUser)
            _, user, _ = result_of(d)
        self.assertEqual((user.name, user.peer), ("alice", "127.0.0.1:5555"))
        [login] = events(logs, "Manhole login")
        self.assertEqual(
            (login["user"], login["method"], login["peer"]), ("alice", "publickey", "127.0.0.1:5555")
        )
        self.assertEqual(login["fingerprint"], fingerprint(key))

    def test_failed_logins_are_logged_and_key_queries_are_not(self) -> None:
        with capturedLogs() as logs:
            self.failureResultOf(
                self.portal(UnauthorizedLogin("wrong password"), IUsernamePassword).login(
                    UsernamePassword(b"bob", b"x"), None, IConchUser
                ),
                UnauthorizedLogin,
            )
            query = SSHPrivateKey(b"carol", b"ssh-ed25519", new_key().public().blob(), None, None)
            self.failureResultOf(self.portal(ValidPublicKey()).login(query, None, IConchUser), ValidPublicKey)
        [failed] = events(logs, "Manhole login failed")
        self.assertEqual(
            (failed["user"], failed["method"], failed["reason"]), ("bob", "password", "wrong password")
        )
        self.assertEqual(events(logs, "Manhole login"), [])

    def test_a_checker_error_is_logged_once_and_refused(self) -> None:
        with capturedLogs() as logs:
            self.failureResultOf(
                self.portal(RuntimeError("boom"), IUsernamePassword).login(
                    UsernamePassword(b"bob", b"x"), None, IConchUser
                ),
                UnauthorizedLogin,
            )
        [error] = events(logs, "Manhole login failed with an error")
        self.assertEqual(error["log_failure"].value.args, ("boom",))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


# -- the session glue ---------------------------------------------------------------


class _Conn:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes]] = []

    def sendRequest(self, channel, name: bytes, data: bytes) -> None:
        self.requests.append((name, data))


class _Channel:
    """What ManholeSession sees of conch's SSHSession channel."""

    def __init__(self) -> None:
        self.buf = b""
        self.output = b""
        self.conn = _Conn()
        self.lost = False

    def write(self, data: bytes) -> None:
        self.output += data

    def loseConnection(self) -> None:
        self.lost = True

    def text(self) -> str:
        return _ANSI.sub("", self.output.decode()).replace("\r", "")


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer()
        user = ManholeUser(
            "alice",
            "127.0.0.1:5555",
            lambda name: make_namespace(self.server.service, name, reactor=self.server.clock),
        )
        self.session = ManholeSession(user)
        self.channel = _Channel()
        self.proto = ssh_session.SSHSessionProcessProtocol(self.channel)

    def open(self, rows: int = 0, cols: int = 0) -> None:
        self.session.getPty(b"xterm", (rows, cols, 0, 0), [])
        self.session.openShell(self.proto)

    def type(self, text: str) -> None:
        # What conch's SSHSession does with channel data: hand it to its client's transport.
        self.proto.transport.write(text.encode())

    def test_piped_input_then_eof_ends_the_session_with_status_0(self) -> None:
        self.open()
        self.type("6*7\nstreams()\n")
        with capturedLogs() as logs:
            self.session.eofReceived()
            self.session.closed()
        text = self.channel.text()
        self.assertIn("42\n", text)
        self.assertIn("(no streams)", text)
        self.assertEqual(self.channel.conn.requests, [(b"exit-status", b"\0\0\0\0")])
        self.assertTrue(self.channel.lost)
        self.assertEqual(events(logs, "Manhole session closed")[0]["user"], "alice")

    def test_a_zero_pty_size_means_80_by_24(self) -> None:
        self.open()
        self.assertEqual((self.session.shell.width, self.session.shell.height), (80, 24))

    def test_window_changes_before_and_after_the_shell_opens(self) -> None:
        self.session.windowChanged((30, 90, 0, 0))
        self.assertEqual((self.session.width, self.session.height), (90, 30))
        self.open(50, 132)
        shell = self.session.shell
        self.assertEqual((shell.width, shell.height), (132, 50))
        self.type("1+1\n")
        self.session.windowChanged((40, 100, 0, 0))
        self.assertEqual((shell.width, shell.height), (100, 40))
        self.assertIn("2\n", self.channel.text())

    def test_a_deferred_firing_after_the_session_closed_writes_nothing(self) -> None:
        self.open()
        shell = self.session.shell
        self.type("from twisted.internet import defer\nd = defer.Deferred()\nd\n")
        self.assertIn("<Deferred #0>", self.channel.text())
        self.session.eofReceived()
        self.session.closed()
        before = self.channel.output
        shell.namespace["d"].callback(42)
        self.assertEqual(self.channel.output, before)

    def test_eof_before_a_shell_does_not_raise(self) -> None:
        self.session.eofReceived()
        self.session.closed()
        self.assertEqual(self.channel.conn.requests, [])

    def test_exit_ends_the_session_not_the_server(self) -> None:
        self.open()
        self.type("exit()\nprint('after exit')\n")
        self.assertEqual(self.channel.conn.requests, [(b"exit-status", b"\0\0\0\0")])
        self.assertTrue(self.channel.lost)
        self.assertNotIn("after exit", self.channel.text())
        self.session.eofReceived()  # the client's EOF may still follow
        self.assertEqual(len(self.channel.conn.requests), 1)

    def test_a_refused_action_is_one_line_and_other_errors_a_traceback(self) -> None:
        self.open()
        self.type("kick('live/nope')\n1/0\n")
        text = self.channel.text()
        self.assertIn("\nAdminError: no stream 'live/nope' (streams: none)\n", text)
        self.assertEqual(text.count("Traceback"), 1)
        self.assertIn("ZeroDivisionError", text)

    def test_commands_are_logged_with_the_user(self) -> None:
        self.open()
        with capturedLogs() as logs:
            self.type("1+1\n\n")
        [entered] = events(logs, "Manhole input")
        self.assertEqual((entered["user"], entered["source"]), ("alice", "1+1"))

    def test_exec_is_refused_with_a_message(self) -> None:
        self.session.execCommand(self.proto, b"streams()")
        self.assertIn("open a session", self.channel.text())
        self.assertEqual(self.channel.conn.requests, [(b"exit-status", b"\0\0\0\1")])
        self.assertTrue(self.channel.lost)


# -- building the service --------------------------------------------------------


class ManholeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer()
        self.keys = write(temp_path(self), public_line(new_key()))

    def test_no_credential_source_stops_startup(self) -> None:
        with self.assertRaises(ManholeError) as raised:
            manhole_service("tcp:0", self.server.service, host_key_file=temp_path(self))
        self.assertIn("--manhole-keys or --manhole-passwd", str(raised.exception))

    def test_service_listens_on_loopback_with_the_sampler(self) -> None:
        with capturedLogs():
            manhole = manhole_service(
                "2222", self.server.service, keys_file=self.keys, host_key_file=temp_path(self)
            )
        self.assertIsInstance(manhole, MultiService)
        [listener] = [s for s in manhole if isinstance(s, ListeningService)]
        self.assertEqual(listener.description, "tcp:2222:interface=127.0.0.1")
        self.assertEqual(listener.what, "Manhole")
        self.assertEqual(len([s for s in manhole if isinstance(s, RateSampler)]), 1)

    def test_make_service_exits_with_one_line_on_a_bad_keys_file(self) -> None:
        options = Options()
        options.parseOptions(
            [
                "--port",
                "0",
                "--manhole",
                "0",
                "--manhole-keys",
                write(temp_path(self), "\n"),
                "--manhole-host-key",
                temp_path(self),
            ]
        )
        with self.assertRaises(SystemExit) as raised:
            makeService(options)
        message = str(raised.exception.code)
        self.assertTrue(message.startswith("rtmpd: error: --manhole-keys "), message)
        self.assertIn("no public keys", message)


# -- OpenSSH against twistd -n rtmpd --------------------------------------------------


class OpenSSHTests(TestCase):
    """A real ``ssh -tt`` client against a real server."""

    timeout = 90

    def setUp(self) -> None:
        self.ssh = require("ssh")
        keygen = require("ssh-keygen")
        self.dir = os.path.dirname(temp_path(self))
        self.key = os.path.join(self.dir, "operator_key")
        self.other_key = os.path.join(self.dir, "stranger_key")
        for path in (self.key, self.other_key):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", path], check=True, timeout=30)
        with open(self.key + ".pub", "rb") as f:
            self.fingerprint = fingerprint(Key.fromString(f.read()))
        os.rename(self.key + ".pub", os.path.join(self.dir, "authorized_keys"))
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
        write(os.path.join(self.dir, "passwd"), f"alice:{hashed}\n")
        os.chmod(os.path.join(self.dir, "passwd"), 0o600)
        self.server = ServerProcess(
            "--manhole",
            "tcp:0",
            "--manhole-keys",
            "authorized_keys",
            "--manhole-passwd",
            "passwd",
            "--manhole-host-key",
            "host_key",
            cwd=self.dir,
        )
        self.server.start()
        self.addCleanup(self.server.stop)
        listening = self.server.wait_for_msg("Manhole listening")
        self.assertTrue(listening["addr"].startswith("127.0.0.1:"), listening)
        self.port = listening["addr"].rsplit(":", 1)[1]

    def run_ssh(
        self, user: str, text: str, *options: str, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        cmd = [
            self.ssh,
            "-tt",
            "-p",
            self.port,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            *options,
            f"{user}@127.0.0.1",
        ]
        return subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=30, env=env)

    def run_with_key(self, key: str, text: str) -> subprocess.CompletedProcess:
        return self.run_ssh("operator", text, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", key)

    def run_with_password(self, password: str, text: str) -> subprocess.CompletedProcess:
        # OpenSSH reads the password from SSH_ASKPASS when told to, even without a terminal.
        askpass = write(os.path.join(self.dir, "askpass"), '#!/bin/sh\necho "$MANHOLE_TEST_PASSWORD"\n')
        os.chmod(askpass, 0o700)
        env = dict(
            os.environ, SSH_ASKPASS=askpass, SSH_ASKPASS_REQUIRE="force", MANHOLE_TEST_PASSWORD=password
        )
        env.pop("DISPLAY", None)
        return self.run_ssh(
            "alice",
            text,
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "PreferredAuthentications=password",
            env=env,
        )

    def test_streams_and_kick_with_ffmpeg_and_two_players(self) -> None:
        rtmpdump = require("rtmpdump")
        publisher = ffmpeg_publish(self.server.url("test"), 60, size="320x240", rate=15, gop_seconds=1)
        self.addCleanup(publisher.kill)
        self.server.wait_for_msg("Codecs detected", stream_key="live/test")
        players, logs = [], []
        for i in range(2):
            log_path = os.path.join(self.dir, f"player{i}.log")
            log_file = open(log_path, "w")
            self.addCleanup(log_file.close)
            # -V logs each onStatus code the player receives.
            player = subprocess.Popen(
                [rtmpdump, "-V", "-r", self.server.url("test"), "--live", "-o", os.devnull],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            self.addCleanup(player.kill)
            players.append(player)
            logs.append(log_path)
        self.server.wait_for_msg("Subscriber added", stream_key="live/test", total_subscribers=2)

        result = self.run_with_key(self.key, "streams()\nkick('live/test')\n")

        self.assertEqual(result.returncode, 0, result.stderr)
        lines = _ANSI.sub("", result.stdout).replace("\r", "").splitlines()
        [header] = [line for line in lines if line.startswith("key ")]
        [row] = [line for line in lines if line.startswith("live/test ")]
        columns = dict(zip(re.split(r"\s{2,}", header), re.split(r"\s{2,}", row), strict=True))
        self.assertEqual(columns["codecs"], "H264/AAC")
        self.assertEqual(columns["size"], "320x240")
        self.assertEqual(columns["subs"], "2")
        self.assertTrue(any(line.startswith("kicked c") and "live/test" in line for line in lines), lines)

        for player, log_path in zip(players, logs, strict=True):
            # rtmpdump leaves on UnpublishNotify; it exits 2 ("may be incomplete") as the
            # metadata announced a longer stream.
            self.assertIn(player.wait(30), (0, 2))
            with open(log_path) as f:
                self.assertIn("onStatus: NetStream.Play.UnpublishNotify", f.read())
        login = self.server.wait_for_msg("Manhole login", user="operator")
        self.assertEqual((login["method"], login["fingerprint"]), ("publickey", self.fingerprint))
        kick = self.server.wait_for_msg("Manhole kick", user="operator", stream_key="live/test")
        self.server.wait_for_msg("Connection closed", conn_id=kick["conn_id"], reason="kicked by operator")
        self.server.wait_for_msg("Manhole logout", user="operator")
        self.assertEqual(self.server.errors(), [])

    def test_piped_session_ending_with_eof_leaves_no_error(self) -> None:
        result = self.run_with_key(self.key, "6*7\nconns()\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        text = _ANSI.sub("", result.stdout).replace("\r", "")
        self.assertIn("\n42\n", text)
        self.assertIn("(no connections)", text)
        self.server.wait_for_msg("Manhole session closed", user="operator")
        self.server.wait_for_msg("Manhole logout", user="operator")
        self.assertEqual(self.server.errors(), [])

    def test_wrong_key_is_refused(self) -> None:
        result = self.run_with_key(self.other_key, "6*7\n")
        self.assertEqual(result.returncode, 255)
        self.assertIn("Permission denied", result.stderr)
        self.assertNotIn("42", result.stdout)
        failed = self.server.wait_for_msg("Manhole login failed", user="operator")
        self.assertEqual(failed["method"], "publickey")
        self.assertEqual(self.server.messages("Manhole login"), [])

    def test_password_login_and_wrong_password(self) -> None:
        refused = self.run_with_password("wrong", "6*7\n")
        self.assertEqual(refused.returncode, 255)
        self.assertIn("Permission denied", refused.stderr)
        self.server.wait_for_msg("Manhole login failed", user="alice", method="password")
        accepted = self.run_with_password("s3cret", "6*7\n")
        self.assertEqual(accepted.returncode, 0, accepted.stderr)
        self.assertIn("\n42\n", _ANSI.sub("", accepted.stdout).replace("\r", ""))
        self.server.wait_for_msg("Manhole login", user="alice", method="password")
        self.assertEqual(self.server.errors(), [])


class StartupTests(SynchronousTestCase):
    def run_twistd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [twistd(), "-n", "--pidfile=", "rtmpd", "--port", "tcp:0:interface=127.0.0.1", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.dirname(temp_path(self)),
        )

    def test_manhole_without_credentials_fails_with_one_line(self) -> None:
        result = self.run_twistd("--manhole", "tcp:0")
        self.assertNotEqual(result.returncode, 0)
        [line] = result.stderr.strip().splitlines()
        self.assertEqual(
            line, "rtmpd: error: --manhole needs --manhole-keys or --manhole-passwd (it is a Python shell)"
        )

    def test_manhole_with_an_empty_keys_file_fails_with_one_line(self) -> None:
        empty = write(temp_path(self), "")
        result = self.run_twistd("--manhole", "tcp:0", "--manhole-keys", empty, "--log-format", "text")
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(result.stderr.strip(), f"rtmpd: error: --manhole-keys {empty}: no public keys in it")


class AdminReconnectTests(AdminTestCase):
    def test_reconnect_asks_only_capable_publishers_unless_forced(self) -> None:
        with self.assertRaises(AdminError):
            self.call("reconnect", "live/test")
        asked = self.publisher.wait_for_status("NetConnection.Connect.ReconnectRequest")
        with capturedLogs() as logs:
            report = self.call("reconnect", "live/test", "rtmp://other.example/live", True)
            self.server.flush()
        self.assertIn(self.publisher.server_protocol.conn_id, report)
        info = result_of(asked).args[0]
        self.assertEqual(info["tcUrl"], "rtmp://other.example/live")
        self.assertIn("alice", info["description"])
        [logged] = events(logs, "Manhole reconnect request")
        self.assertEqual((logged["user"], logged["stream_key"]), ("alice", "live/test"))

    def test_streams_lists_tracks(self) -> None:
        [row] = self.call("streams")
        self.assertEqual(row["tracks"], dict(self.top.registry.get("live/test").stats.tracks))
