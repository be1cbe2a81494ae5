"""Access control wired into the server, in memory: connect, publish and play wait on the policy."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
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
