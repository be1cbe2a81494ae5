"""Access control wired into the server, in memory: connect, publish and play wait on the policy."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, succeed
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.access.decision import ALLOW, Action, Allow, Authoriser, Deny, Request
from rtmpd.access.policy import AccessPolicy
from rtmpd.config import ServerConfig
from rtmpd.testing import CommandFailed, MemoryServer, result_of


class Scripted(Authoriser):
    """Answers by (action, name): a Decision, or a Deferred the test fires (or never)."""

    name = "scripted"

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], object] = {}
        self.requests: list[Request] = []

    def check(self, request: Request):
        self.requests.append(request)
        return self.answers.get((str(request.action), request.name), ALLOW)


class WiringTests(SynchronousTestCase):
    def server(self, config: ServerConfig | None = None) -> tuple[MemoryServer, Scripted]:
        server = MemoryServer(config)
        authoriser = Scripted()
        server.factory.access = AccessPolicy([authoriser], clock=server.clock, now=server.clock.seconds)
        return server, authoriser

    def failure_of(self, d: Deferred) -> CommandFailed:
        box: list = []
        d.addErrback(box.append)
        self.assertTrue(box, "expected a refusal")
        return box[0].value

    def test_request_carries_client_fields(self) -> None:
        server, auth = self.server()
        server.publisher("cam?token=abc")
        connect, publish = auth.requests
        self.assertEqual(connect.action, Action.CONNECT)
        self.assertEqual(connect.tc_url, "rtmp://localhost/live")
        self.assertIn("rtmpd.testing", connect.flash_ver)
        self.assertEqual(
            (publish.action, publish.app, publish.name, publish.query),
            (Action.PUBLISH, "live", "cam", "token=abc"),
        )
        self.assertEqual(publish.conn_id, connect.conn_id)

    def test_refused_connect_is_rejected_and_closed(self) -> None:
        server, auth = self.server()
        auth.answers[("connect", "")] = Deny("not on the list")
        client, _ = server.connect_client()
        server.flush()
        d = client.connect("live")
        server.flush()
        error = self.failure_of(d)
        self.assertEqual(error.info["code"], "NetConnection.Connect.Rejected")
        self.assertIn("not on the list", error.info["description"])
        self.assertTrue(client.server_protocol._closing)

    def test_refused_publish_is_badname_nothing_published(self) -> None:
        server, auth = self.server()
        auth.answers[("publish", "cam")] = Deny("invalid signature")
        client, sid = server.session()
        d = client.publish(sid, "cam")
        server.flush()
        error = self.failure_of(d)
        self.assertEqual(error.info["code"], "NetStream.Publish.BadName")
        self.assertEqual(error.info["description"], "Publish refused: invalid signature")
        self.assertNotIn("live/cam", server.registry.streams)
        self.assertTrue(client.server_protocol._closing)

    def test_refused_play_is_play_failed(self) -> None:
        server, auth = self.server()
        auth.answers[("play", "cam")] = Deny("no play key")
        client, sid = server.session()
        d = client.play(sid, "cam")
        server.flush()
        self.assertEqual(self.failure_of(d).info["code"], "NetStream.Play.Failed")

    def test_rename_and_record_flag(self) -> None:
        server, auth = self.server()
        auth.answers[("publish", "secret-key")] = Allow(name="alice", record=False)
        server.publisher("secret-key")
        stream = server.registry.streams["live/alice"]
        self.assertIs(stream.publisher.record, False)
        self.assertNotIn("live/secret-key", server.registry.streams)
        auth.answers[("play", "viewer")] = Allow(name="alice")
        client, sid = server.session()
        server.settle(client.play(sid, "viewer"))
        self.assertEqual(len(stream.players), 1)

    def test_pending_decision_cancelled_when_client_leaves(self) -> None:
        server, auth = self.server()
        pending: Deferred = Deferred()
        auth.answers[("publish", "cam")] = pending
        client, sid = server.session()
        client.publish(sid, "cam")
        server.flush()
        client.transport.loseConnection()
        server.flush()
        self.assertTrue(pending.called, "the authoriser's Deferred was cancelled")
        self.assertNotIn("live/cam", server.registry.streams)

    def test_unauthorised_takeover_refused_live_publisher_continues(self) -> None:
        server, auth = self.server(ServerConfig(publish_takeover=True))
        first, _ = server.publisher("cam")
        auth.answers[("publish", "cam")] = Deny("invalid signature")
        intruder, sid = server.session()
        d = intruder.publish(sid, "cam")
        server.flush()
        self.assertEqual(self.failure_of(d).info["code"], "NetStream.Publish.BadName")
        self.assertIs(server.registry.streams["live/cam"].publisher.peer, first.server_protocol)
        self.assertFalse(first.server_protocol._closing)

    def test_authorised_takeover_replaces(self) -> None:
        server, auth = self.server(ServerConfig(publish_takeover=True))
        first, _ = server.publisher("cam")
        second, _ = server.publisher("cam")
        self.assertIs(server.registry.streams["live/cam"].publisher.peer, second.server_protocol)

    def test_expiry_closes_the_publisher(self) -> None:
        server, auth = self.server(ServerConfig(publisher_timeout=3600.0))
        auth.answers[("publish", "cam")] = Allow(expires=server.clock.seconds() + 30)
        client, _ = server.publisher("cam")
        server.advance(29.5)
        self.assertIn("live/cam", server.registry.streams)
        server.advance(0.5)
        self.assertNotIn("live/cam", server.registry.streams)

    def test_no_policy_is_open(self) -> None:
        server = MemoryServer()
        client, sid = server.session()
        self.assertEqual(result_of(succeed(1)), 1)
        server.settle(client.publish(sid, "cam"))
        self.assertIn("live/cam", server.registry.streams)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str):
        from rtmpd.tap import Options

        options = Options()
        options.parseOptions(list(args))
        return options

    def files(self) -> tuple[str, str]:
        base = self.mktemp()
        os.makedirs(base)
        secrets, keys = os.path.join(base, "secrets"), os.path.join(base, "keys")
        with open(secrets, "w") as f:
            f.write("live " + "s" * 32 + "\n")
        with open(keys, "w") as f:
            f.write("live key1 name=alice\n")
        return secrets, keys

    def test_auth_options_become_settings(self) -> None:
        secrets, keys = self.files()
        options = self.parse(
            "--auth-secrets", secrets, "--auth-keys", keys, "--auth-callback", "http://127.0.0.1:9/x",
            "--auth-callback-timeout", "2", "--auth-failure-policy", "open", "--auth-callback-cache", "5",
            "--auth-allow", "publish:127.0.0.0/8", "--auth-deny", "all:10.0.0.0/8",
            "--auth-allow", "play:::1/128", "--auth-expiry-grace", "never", "--auth-revoke-live",
        )  # fmt: skip
        settings = options.access_settings
        self.assertEqual((settings.secrets, settings.keys), (secrets, keys))
        self.assertEqual(settings.callback_timeout, 2.0)
        self.assertEqual(settings.failure_policy, "open")
        self.assertEqual(settings.callback_cache, 5.0)
        self.assertEqual(settings.allow, ("publish:127.0.0.0/8", "play:::1/128"))
        self.assertEqual(settings.deny, ("all:10.0.0.0/8",))
        self.assertIsNone(settings.expiry_grace)
        self.assertTrue(settings.revoke_live)
        self.assertEqual(self.parse("--auth-expiry-grace", "2.5").access_settings.expiry_grace, 2.5)
        self.assertFalse(self.parse().access_settings.enabled)

    def test_bad_values_exit_with_one_line(self) -> None:
        missing = os.path.join(self.mktemp(), "nope")
        bad_keys = self.mktemp()
        with open(bad_keys, "w") as f:
            f.write("live\n")
        for args in (
            ["--auth-secrets", missing],
            ["--auth-keys", bad_keys],
            ["--auth-callback", "ftp://x/"],
            ["--auth-callback-timeout", "0"],
            ["--auth-failure-policy", "maybe"],
            ["--auth-allow", "publish"],
            ["--auth-deny", "fly:10.0.0.0/8"],
            ["--auth-allow", "play:10.0.0.1/8"],
            ["--auth-expiry-grace", "-1"],
            ["--auth-callback-cache", "x"],
        ):
            with self.assertRaises(SystemExit, msg=args) as raised:
                self.parse(*args)
            message = str(raised.exception.code)
            self.assertTrue(message.startswith("rtmpd: error: "), message)
            self.assertNotIn("\n", message)

    def test_open_server_warns_once_beyond_loopback(self) -> None:
        from rtmpd.tap import makeService

        def warnings(*args: str) -> list[dict]:
            with capturedLogs() as events:
                makeService(self.parse("--port", "0", *args))
            return [e for e in events if "Access control is off" in e.get("log_format", "")]

        self.assertEqual(len(warnings("--listen", "tcp6:0")), 1)
        self.assertEqual(warnings("--port", "tcp:0:interface=127.0.0.1"), [])
        secrets, _ = self.files()
        self.assertEqual(warnings("--auth-secrets", secrets), [])

    def test_make_service_gives_the_factory_a_policy_and_a_reloader(self) -> None:
        from rtmpd.access.reloading import ReloadOnHangup
        from rtmpd.tap import makeService

        self.assertIsNone(makeService(self.parse("--port", "0")).factory.access)
        secrets, keys = self.files()
        with capturedLogs():
            top = makeService(self.parse("--port", "0", "--auth-keys", keys))
        self.assertTrue(top.factory.access.enabled)
        self.assertEqual(len([s for s in top if isinstance(s, ReloadOnHangup)]), 1)


class ManholeTests(SynchronousTestCase):
    def test_auth_shows_configuration_and_refusals_and_reload_auth_reloads(self) -> None:
        from rtmpd.access.keyfile import KeyFile, StreamKeys
        from rtmpd.access.reloading import reload_policy
        from rtmpd.admin.namespace import make_namespace

        keys = self.mktemp()
        with open(keys, "w") as f:
            f.write("live key1\n")
        server = MemoryServer()
        policy = AccessPolicy([StreamKeys(KeyFile(keys))], clock=server.clock, now=server.clock.seconds)
        server.factory.access = policy
        names = make_namespace(
            server.service, "ops", None, server.clock, policy, lambda: reload_policy(policy)
        )
        client, sid = server.session()
        d = client.publish(sid, "guess")
        server.flush()
        self.assertEqual(
            self.failureResultOf(d, CommandFailed).value.info["code"], "NetStream.Publish.BadName"
        )
        shown = str(names["auth"]())
        self.assertIn("authorisers: key-file", shown)
        self.assertIn("live/guess", shown)
        self.assertIn("unknown stream key", shown)
        self.assertNotIn("key1", shown)
        with open(keys, "w") as f:
            f.write("live key1\nlive key2\n")
        with capturedLogs():
            report = str(names["reload_auth"]())
        self.assertIn("reloaded", report)
        server.publisher("key2")
        self.assertIn("live/key2", server.registry.streams)

    def test_open_server(self) -> None:
        from rtmpd.admin.errors import AdminError
        from rtmpd.admin.namespace import make_namespace

        server = MemoryServer()
        names = make_namespace(server.service, "ops", None, server.clock)
        self.assertIn("open", str(names["auth"]()))
        self.assertRaises(AdminError, names["reload_auth"])


class ThrottleWiringTests(SynchronousTestCase):
    def test_guesser_reconnecting_for_each_try_is_locked_out_at_connect(self) -> None:
        from rtmpd.access.throttle import FailureThrottle

        server = MemoryServer()
        auth = Scripted()
        auth.answers[("publish", "cam")] = Deny("invalid signature")
        throttle = FailureThrottle(server.clock, max_failures=3, delay=(0.0, 0.0))
        server.factory.access = AccessPolicy(
            [auth], clock=server.clock, now=server.clock.seconds, throttle=throttle
        )
        for _ in range(3):
            client, sid = server.session()
            d = client.publish(sid, "cam")
            server.flush()
            self.assertEqual(
                self.failureResultOf(d, CommandFailed).value.info["code"], "NetStream.Publish.BadName"
            )
        client, _ = server.connect_client()
        server.flush()
        d = client.connect("live")
        server.flush()
        refused = self.failureResultOf(d, CommandFailed).value.info
        self.assertEqual(refused["code"], "NetConnection.Connect.Rejected")
        self.assertIn("too many failed attempts", refused["description"])


class RecheckTests(SynchronousTestCase):
    """``--auth-recheck``: live publishers are asked about again; a refusal ends the stream."""

    def test_publisher_refused_at_a_recheck_is_ended_players_told(self) -> None:
        from rtmpd.access.recheck import PublisherRecheck

        server = MemoryServer()
        auth = Scripted()
        policy = AccessPolicy([auth], clock=server.clock, now=server.clock.seconds)
        server.factory.access = policy
        pub, _ = server.publisher("cam")
        player, _ = server.player("cam")

        def publications() -> list:
            return [s.publisher for s in server.registry if s.publisher is not None]

        # Within the publisher timeout (10 s): the silent test publisher is not dropped for idling.
        recheck = PublisherRecheck(policy, publications, 4.0, server.clock)
        recheck.startService()
        self.addCleanup(recheck.stopService)
        publishes = len([r for r in auth.requests if r.action is Action.PUBLISH])
        server.advance(4)
        asked = [r for r in auth.requests if r.action is Action.PUBLISH]
        self.assertEqual(len(asked), publishes + 1)
        self.assertEqual(asked[-1].name, "cam")
        self.assertTrue(pub.connected_transport)
        self.assertIsNotNone(server.registry.get("live/cam").publisher)

        auth.answers[("publish", "cam")] = Deny("key withdrawn")
        with capturedLogs() as logs:
            server.advance(4)
        self.assertFalse(pub.connected_transport)
        self.assertIsNone(server.registry.get("live/cam").publisher)
        codes = [c.args[0]["code"] for c in player.commands if c.name == "onStatus"]
        self.assertIn("NetStream.Play.UnpublishNotify", codes)
        ended = [
            e for e in logs if e.get("log_format") == "Publisher no longer authorised; ending its stream"
        ]
        self.assertEqual(len(ended), 1)
        self.assertEqual(ended[0]["stream_key"], "live/cam")

    def test_the_option_adds_the_service(self) -> None:
        from rtmpd.access.recheck import PublisherRecheck
        from rtmpd.tap import Options, makeService

        def services(*args: str) -> list:
            options = Options()
            options.parseOptions(["--port", "0", "--auth-allow", "publish:127.0.0.0/8", *args])
            return [s for s in makeService(options) if isinstance(s, PublisherRecheck)]

        self.assertEqual(services(), [])
        (recheck,) = services("--auth-recheck", "45")
        self.assertEqual(recheck.interval, 45.0)
