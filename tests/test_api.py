"""The JSON API (``/api/v1/``) in one process: an in-memory RTMP server, the API on a real loopback
listener (port 0), requests by treq and by a raw TCP client for what treq would not send."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import treq
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.test.requesthelper import DummyRequest

from rtmpd.access.policy import ReloadResult
from rtmpd.admin.namespace import make_namespace
from rtmpd.admin.rates import RateSampler
from rtmpd.admin.views import ServerViews
from rtmpd.core.messages import MessageType
from rtmpd.http.api.auth import TokenAuth, TokenFileError, read_token_file
from rtmpd.http.api.errors import APIError
from rtmpd.http.api.routes import Route, Router, match
from rtmpd.http.root import HTTPRoot
from rtmpd.http.site import HTTPSite
from rtmpd.tap.api import install_api
from rtmpd.testing import MemoryServer, result_of
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V = MessageType.AUDIO, MessageType.VIDEO
TOKEN = "api-test-token-0123456789"
MAX_BODY = 4096


def status_codes(client) -> list[str]:
    return [c.args[0]["code"] for c in client.commands if c.name == "onStatus"]


class _Raw(protocol.Protocol):
    """Writes ``data`` on connect, collects everything until the server closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.closed: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.received)


class FakeRecorder:
    """What the actions ask of a recorder: a recording per key, start and stop."""

    class Recording:
        def __init__(self, file: str) -> None:
            self.file, self.state = file, "recording"

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir
        self.current: dict[str, FakeRecorder.Recording] = {}
        self.stopping: list[defer.Deferred] = []
        self.asked: defer.Deferred = defer.Deferred()
        self.files = 0

    def recording_for(self, key: str):
        return self.current.get(key)

    def start_recording(self, key: str):
        recording = self.current.get(key)
        if recording is not None and recording.state == "recording":
            return None
        self.files += 1
        self.current[key] = self.Recording(os.path.join(self.record_dir, f"{key}-{self.files}.flv"))
        return self.current[key]

    def stop_recording(self, key: str):
        recording = self.current.get(key)
        if recording is None or recording.state != "recording":
            return False
        recording.state = "finalizing"
        d: defer.Deferred = defer.Deferred()
        self.stopping.append(d)
        if not self.asked.called:
            self.asked.callback(key)

        def finished(_):
            recording.state = "finished"
            return recording

        return d.addCallback(finished)


class APITestCase(TestCase):
    """live/test published with H.264/AAC 640x360 at 30 fps by one client, played by two; the API on a
    loopback listener with a token file."""

    token_file: str | None = "set"
    token_always = False

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-api-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.server = MemoryServer()
        self.top = self.server.service
        self.reloads: list[str] = []
        token_file = None
        if self.token_file is not None:
            token_file = os.path.join(self.tmp, "token")
            with open(token_file, "w") as f:
                f.write(TOKEN + "\n")
            os.chmod(token_file, 0o600)
        self.root = HTTPRoot()
        install_api(self.top, self.root, token_file, self.token_always, self.reload)
        self.site = HTTPSite(self.root, max_body=MAX_BODY, request_timeout=0.5)
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"
        self.port = port.getHost().port
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

        self.publisher, self.pub_sid = self.server.session()
        result_of(self.settle(self.publisher.publish(self.pub_sid, "test")))
        self.publisher.send_metadata(self.pub_sid, {"width": 640.0, "height": 360.0, "framerate": 30.0})
        self.publisher.send_media(A, self.pub_sid, 0, AAC_SEQUENCE_HEADER)
        self.publisher.send_media(V, self.pub_sid, 0, AVC_SEQUENCE_HEADER)
        self.send_gop(0)
        self.players = []
        for _ in range(2):
            player, sid = self.server.session()
            result_of(self.settle(player.play(sid, "test")))
            self.players.append(player)

    def reload(self) -> list[ReloadResult]:
        self.reloads.append("reload")
        return [ReloadResult("keyfile", True, "3 keys")]

    def settle(self, d):
        self.server.flush()
        return d

    def send_gop(self, start: int) -> None:
        self.publisher.send_media(V, self.pub_sid, start, avc_keyframe(start))
        for i in range(1, 5):
            self.publisher.send_media(V, self.pub_sid, start + i * 33, avc_interframe(i))
            self.publisher.send_media(A, self.pub_sid, start + i * 33, aac_frame(i))
        self.server.flush()

    def conn_id(self, client) -> str:
        return client.server_protocol.conn_id

    async def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = None, **headers: str
    ) -> tuple[int, Any, dict[str, Any]]:
        """(status, headers, JSON body) of one request to /api/v1/<path>."""
        sent = {k.replace("_", "-"): [v] for k, v in headers.items()}
        if token is not None:
            sent["Authorization"] = [f"Bearer {token}"]
        response = await treq.request(method, self.base + path, data=body, headers=sent, pool=self.pool)
        content = await response.content()
        return response.code, response.headers, json.loads(content) if content else None

    async def get(self, path: str, **kwargs) -> dict[str, Any]:
        status, _, body = await self.request("GET", path, **kwargs)
        self.assertEqual(status, 200, body)
        return body

    async def post(self, path: str, body: bytes | None = None, token: str | None = TOKEN):
        return await self.request("POST", path, body, token)

    async def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Everything the server answers to ``data`` written on a fresh connection, until it closes."""
        client = _Raw(data)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        await endpoints.connectProtocol(endpoint, client)
        return await client.closed.addTimeout(timeout, reactor)

    def assertRTMPGoesOn(self) -> None:
        """The publisher's next GOP reaches both players."""
        before = [len(p.media()) for p in self.players]
        self.send_gop(1000)
        for player, count in zip(self.players, before, strict=True):
            self.assertGreater(len(player.media()), count)


class ReadTests(APITestCase):
    async def test_streams_are_the_admin_views_as_json(self) -> None:
        self.server.clock.advance(4)
        body = await self.get("streams")
        views = ServerViews(self.top, self.sampler(), None)
        self.assertEqual(body["streams"], json.loads(json.dumps(views.streams())))
        [stream] = body["streams"]
        self.assertEqual(stream["key"], "live/test")
        self.assertEqual(stream["publisher"], self.publisher.server_protocol.peer_addr)
        self.assertEqual((stream["video_codec"], stream["audio_codec"]), ("H264", "AAC"))
        self.assertEqual((stream["width"], stream["height"], stream["framerate"]), (640, 360, 30.0))
        self.assertEqual(stream["subscribers"], 2)
        self.assertEqual(stream["uptime"], 4)
        self.assertEqual(sorted(stream["tracks"]), ["audio0", "video0"])

    def sampler(self) -> RateSampler:
        return self.top.getServiceNamed("api-rates")

    async def test_bit_rates_are_averaged_over_ten_seconds(self) -> None:
        pub = self.publisher.server_protocol
        start = pub.bytes_in  # the sampler took its first sample when the API was installed, at time 0
        sent = []
        for second in range(2, 13, 2):
            self.send_gop(second * 1000)
            self.server.clock.advance(2)  # the sampler's LoopingCall samples every 2 s
            sent.append(pub.bytes_in)
        [stream] = (await self.get("streams"))["streams"]
        # At 12 s the oldest sample kept is the one of 2 s: 10 s of input.
        self.assertEqual(stream["bitrate_in"], (sent[-1] - sent[0]) * 8 / 10)
        self.assertNotEqual(sent[0], start)
        self.assertGreater(stream["bitrate_out"], 0)

    async def test_one_stream_with_its_players(self) -> None:
        self.server.clock.advance(3)
        late, sid = self.server.session()
        result_of(self.settle(late.play(sid, "test")))
        self.server.clock.advance(2)
        body = (await self.get("streams/live/test"))["stream"]
        self.assertEqual(body["key"], "live/test")
        self.assertEqual(body["subscribers"], 3)
        players = {row["conn_id"]: row for row in body["players"]}
        self.assertEqual(set(players), {self.conn_id(p) for p in [*self.players, late]})
        for player in self.players:
            row = players[self.conn_id(player)]
            self.assertEqual(row["uptime"], 5)
            self.assertEqual(row["peer"], player.server_protocol.peer_addr)
            self.assertEqual(row["bytes_sent"], player.server_protocol.bytes_out)
            self.assertEqual(row["dropped_frames"], 0)
            self.assertIn("buffered_bytes", row)
        self.assertEqual(players[self.conn_id(late)]["uptime"], 2)

    async def test_an_unknown_stream_is_a_404_naming_the_known_ones(self) -> None:
        status, _, body = await self.request("GET", "streams/live/nope")
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["status"], 404)
        self.assertIn("live/test", body["error"]["message"])

    async def test_connections_with_roles_and_uptime(self) -> None:
        self.server.clock.advance(7)
        rows = {row["conn_id"]: row for row in (await self.get("connections"))["connections"]}
        self.assertEqual(rows[self.conn_id(self.publisher)]["roles"], ["publish live/test"])
        for player in self.players:
            self.assertEqual(rows[self.conn_id(player)]["roles"], ["play live/test"])
            self.assertEqual(rows[self.conn_id(player)]["uptime"], 7)
            self.assertEqual(rows[self.conn_id(player)]["bytes_out"], player.server_protocol.bytes_out)

    async def test_server_version_uptime_limits_listeners(self) -> None:
        import rtmpd

        self.server.clock.advance(5)
        body = (await self.get("server"))["server"]
        self.assertEqual(body["version"], str(rtmpd.__version__))
        self.assertEqual(body["uptime"], 5)
        self.assertEqual(
            body["limits"]["max_media_message_size"], self.top.config.limits.max_media_message_size
        )
        self.assertEqual(body["settings"]["play_timeout"], self.top.config.play_timeout)
        self.assertEqual((body["streams"], body["connections"]), (1, 3))

    async def test_index_and_trailing_slash_and_head(self) -> None:
        body = await self.get("")
        self.assertIn("GET /api/v1/streams/{app}/{name}", body["endpoints"])
        self.assertIn("POST /api/v1/connections/{conn_id}/drop", body["endpoints"])
        self.assertEqual(len((await self.get("streams/"))["streams"]), 1)
        with capturedLogs() as logs:
            status, headers, content = await self.request("HEAD", "streams")
        self.assertEqual((status, content), (200, None))
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"])
        length = len(json.dumps(await self.get("streams"), separators=(",", ":"), default=str)) + 1
        self.assertEqual(headers.getRawHeaders("content-length"), [str(length)])
        self.assertEqual([e for e in logs if "HEAD" in e.get("log_format", "")], [])

    async def test_stream_names_with_slashes_and_escapes(self) -> None:
        client, sid = self.server.session()
        result_of(self.settle(client.publish(sid, "a/b c")))
        body = (await self.get("streams/live/a/b%20c"))["stream"]
        self.assertEqual(body["key"], "live/a/b c")
        self.assertEqual((await self.get("streams/live/a%2Fb%20c"))["stream"]["key"], "live/a/b c")

    async def test_the_manhole_shows_the_same_rows(self) -> None:
        namespace = make_namespace(self.top, "alice", self.sampler(), reactor=self.server.clock)
        api = (await self.get("streams"))["streams"]
        manhole = namespace["streams"]()
        for key in api[0]:
            self.assertEqual(manhole[0][key], api[0][key], key)


class ActionTests(APITestCase):
    async def test_kick_ends_the_publisher_and_players_get_unpublish_notify(self) -> None:
        notified = [p.wait_for_status("NetStream.Play.UnpublishNotify") for p in self.players]
        with capturedLogs() as logs:
            status, _, body = await self.post("streams/live/test/kick", b'{"reason": "spam"}')
            self.server.flush()
        self.assertEqual(status, 200, body)
        self.assertEqual(body["ok"], True)
        self.assertEqual(body["conn_id"], self.conn_id(self.publisher))
        self.assertTrue(self.publisher.disconnected.called)
        for d in notified:
            result_of(d)
        for player in self.players:
            self.assertFalse(player.disconnected.called)
        [kick] = [e for e in logs if e.get("log_format") == "API kick"]
        self.assertEqual((kick["user"], kick["reason"]), ("api@127.0.0.1", "spam"))
        self.assertIsNone(self.top.registry.get("live/test").publisher)
        status, _, body = await self.post("streams/live/test/kick")
        self.assertEqual(status, 409)
        self.assertIn("no publisher", body["error"]["message"])

    async def test_drop_ends_one_connection(self) -> None:
        first, second = self.players
        status, _, body = await self.post(f"connections/{self.conn_id(first)}/drop")
        self.server.flush()
        self.assertEqual(status, 200, body)
        self.assertEqual(body["roles"], ["play live/test"])
        self.assertTrue(first.disconnected.called)
        self.assertFalse(second.disconnected.called)
        self.assertFalse(self.publisher.disconnected.called)
        status, _, body = await self.post("connections/c999999/drop")
        self.assertEqual(status, 404)
        self.assertIn("c999999", body["error"]["message"])

    async def test_record_stop_then_start_makes_a_new_file(self) -> None:
        recorder = self.top.recorder = FakeRecorder(self.tmp)
        self.top.config = type(self.top.config)(record_dir=self.tmp)
        recorder.start_recording("live/test")
        stopping = self.post("streams/live/test/record/stop")
        answered = defer.ensureDeferred(stopping)
        self.assertEqual(await recorder.asked, "live/test")
        self.assertNoResult(answered)  # answered when the file is finalized, not before
        [d] = recorder.stopping
        d.callback(None)
        status, _, body = await answered
        self.assertEqual(status, 200, body)
        self.assertEqual(body["file"], "live/test-1.flv")
        status, _, body = await self.post("streams/live/test/record/stop")
        self.assertEqual(status, 409)
        status, _, body = await self.post("streams/live/test/record/start")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["file"], "live/test-2.flv")
        [stream] = (await self.get("streams"))["streams"]
        self.assertEqual(
            (stream["recording_file"], stream["recording_state"]), ("live/test-2.flv", "recording")
        )
        status, _, body = await self.post("streams/live/test/record/start")
        self.assertEqual(status, 409)
        self.assertIn("already", body["error"]["message"])

    async def test_record_without_a_recorder_is_a_conflict(self) -> None:
        status, _, body = await self.post("streams/live/test/record/start")
        self.assertEqual(status, 409)
        self.assertIn("--record-dir", body["error"]["message"])

    async def test_auth_reload(self) -> None:
        status, _, body = await self.post("auth/reload")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["results"], [{"authoriser": "keyfile", "ok": True, "summary": "3 keys"}])
        self.assertEqual(self.reloads, ["reload"])

    async def test_mutations_without_the_right_token_get_401_and_change_nothing(self) -> None:
        cases = [
            ("streams/live/test/kick", None, 'Bearer realm="rtmpd"'),
            (
                "streams/live/test/kick",
                "wrong-token-0123456789",
                'Bearer realm="rtmpd", error="invalid_token"',
            ),
            (f"connections/{self.conn_id(self.players[0])}/drop", None, 'Bearer realm="rtmpd"'),
            ("streams/live/test/record/stop", TOKEN[:-1], 'Bearer realm="rtmpd", error="invalid_token"'),
            ("auth/reload", "", 'Bearer realm="rtmpd"'),
        ]
        for path, token, challenge in cases:
            status, headers, body = await self.request("POST", path, None, token)
            self.assertEqual(status, 401, path)
            self.assertEqual(headers.getRawHeaders("www-authenticate"), [challenge])
            self.assertEqual(body["error"]["status"], 401)
        status, headers, body = await self.request("POST", "auth/reload", Authorization=f"Basic {TOKEN}")
        self.assertEqual(status, 401)
        self.server.flush()
        self.assertFalse(self.publisher.disconnected.called)
        self.assertFalse(self.players[0].disconnected.called)
        self.assertEqual(self.reloads, [])
        self.assertRTMPGoesOn()


class NoTokenTests(APITestCase):
    token_file = None

    async def test_mutations_are_refused_with_how_to_enable_them(self) -> None:
        status, _, body = await self.post("streams/live/test/kick", token=TOKEN)
        self.assertEqual(status, 403)
        self.assertIn("--api-token-file", body["error"]["message"])
        self.assertFalse(self.publisher.disconnected.called)
        self.assertEqual(len((await self.get("streams"))["streams"]), 1)


class TokenAlwaysTests(APITestCase):
    token_always = True

    async def test_reads_need_the_token_even_on_loopback(self) -> None:
        status, headers, _ = await self.request("GET", "streams")
        self.assertEqual(status, 401)
        self.assertEqual(headers.getRawHeaders("www-authenticate"), ['Bearer realm="rtmpd"'])
        self.assertEqual(len((await self.get("streams", token=TOKEN))["streams"]), 1)


class BadInputTests(APITestCase):
    async def assertError(self, status: int, method: str, path: str, body: bytes | None = None, **headers):
        got, response_headers, answer = await self.request(method, path, body, TOKEN, **headers)
        self.assertEqual(got, status, answer)
        self.assertEqual(answer["error"]["status"], status)
        self.assertTrue(answer["error"]["message"])
        return response_headers, answer

    async def test_malformed_bodies_are_400(self) -> None:
        for body, words in (
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe", "not valid JSON"),
            (b"[1, 2]", "must be a JSON object"),
            (b'"reason"', "must be a JSON object"),
            (b'{"reason": "x", "force": true}', "unknown field(s) force"),
            (b'{"reason": 42}', "reason must be a string"),
            (b'{"reason": "' + b"x" * 300 + b'"}', "at most 200"),
        ):
            _, answer = await self.assertError(400, "POST", "streams/live/test/kick", body)
            self.assertIn(words, answer["error"]["message"])
        self.assertFalse(self.publisher.disconnected.called)
        self.assertRTMPGoesOn()

    async def test_unknown_paths_are_404(self) -> None:
        for path in ("nope", "streams/live", "connections/c000001", "streams/live/test/record", "auth"):
            await self.assertError(404, "GET", path)
        got, _, answer = await self.request("GET", "../v2/streams")
        self.assertEqual(got, 404)
        response = await treq.get(self.base.replace("/v1/", "/v9/") + "streams", pool=self.pool)
        self.assertEqual(response.code, 404)
        self.assertIn("/api/v1/", (await response.json())["error"]["message"])

    async def test_wrong_methods_are_405_with_allow(self) -> None:
        for method, path, allow in (
            ("POST", "streams", "GET, HEAD"),
            ("DELETE", "streams/live/test", "GET, HEAD"),
            ("GET", "auth/reload", "POST"),
            ("PUT", "connections/c000001/drop", "POST"),
        ):
            headers, answer = await self.assertError(405, method, path)
            self.assertEqual(headers.getRawHeaders("allow"), [allow])
            self.assertEqual(answer["error"]["allowed"], allow.split(", "))

    async def test_a_body_at_the_limit_is_read_one_byte_over_is_413(self) -> None:
        reason = b'{"reason": "at the limit"}'
        body = reason + b" " * (MAX_BODY - len(reason))
        status, _, answer = await self.post(f"connections/{self.conn_id(self.players[0])}/drop", body)
        self.assertEqual(status, 200, answer)
        status, _, answer = await self.post(f"connections/{self.conn_id(self.players[1])}/drop", body + b" ")
        self.assertEqual(status, 413)
        self.assertIn(str(MAX_BODY), answer["error"]["message"])
        self.server.flush()
        self.assertFalse(self.players[1].disconnected.called)

    async def test_a_huge_content_length_is_refused_before_the_body(self) -> None:
        head = (
            b"POST /api/v1/auth/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = await self.raw(head)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertNotIn(b"100 Continue", answer)
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"], 413)
        self.assertEqual(self.reloads, [])

    async def test_a_chunked_body_is_counted_as_it_arrives(self) -> None:
        head = (
            b"POST /api/v1/auth/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (1000, b" " * 1000)
        # Five chunks pass the limit in the middle of the fifth; nothing is sent after it.
        answer = await self.raw(head + chunk * 4 + b"%x\r\n" % 1000 + b" " * (MAX_BODY - 4000 + 1))
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertEqual(self.reloads, [])

    async def test_a_chunked_body_under_the_limit_is_read(self) -> None:
        head = (
            b"POST /api/v1/auth/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
        )
        answer = await self.raw(head + b"2\r\n{}\r\n0\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertEqual(self.reloads, ["reload"])

    async def test_a_request_that_arrives_too_slowly_is_408(self) -> None:
        partial = b"POST /api/v1/auth/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}"
        answer = await self.raw(partial)  # the site under test waits 0.5 s for a whole request
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer[:100])
        self.assertEqual(self.reloads, [])
        self.assertRTMPGoesOn()

    async def test_an_unexpected_failure_is_500_and_logged(self) -> None:
        def broken() -> None:
            raise RuntimeError("boom")

        api = self.root.children[b"api"]
        api.views.server_info = broken
        with capturedLogs() as logs:
            status, _, body = await self.request("GET", "server")
        self.assertEqual(status, 500)
        self.assertNotIn("boom", json.dumps(body))
        [failure] = [e for e in logs if e.get("log_format") == "API request failed"]
        self.assertIn("boom", str(failure["log_failure"].value))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len((await self.get("streams"))["streams"]), 1)


class ConnectionCapTests(APITestCase):
    async def test_connections_past_the_cap_get_503_and_the_others_are_served(self) -> None:
        from rtmpd.http.limits import ConnectionCap

        capped = ConnectionCap(self.site, 2)
        port = reactor.listenTCP(0, capped, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        holders = [_Raw(b"") for _ in range(2)]
        for holder in holders:
            await endpoints.connectProtocol(endpoint, holder)
        with capturedLogs() as logs:
            refused = _Raw(b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\n")
            await endpoints.connectProtocol(endpoint, refused)
            answer = await refused.closed.addTimeout(10, reactor)
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer[:100])
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"], 503)
        self.assertEqual(
            len([e for e in logs if e.get("log_format", "").startswith("HTTP connection limit")]), 1
        )
        # A held connection is still served.
        holders[0].transport.write(b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await holders[0].closed.addTimeout(10, reactor)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        holders[1].transport.loseConnection()
        await holders[1].closed


# -- pieces -------------------------------------------------------------------------


class RouteTests(SynchronousTestCase):
    def test_match(self) -> None:
        self.assertEqual(match(("streams",), ["streams"]), {})
        self.assertEqual(
            match(("streams", "{app}", "{name+}"), ["streams", "live", "a", "b"]),
            {"app": "live", "name": "a/b"},
        )
        self.assertEqual(match(("s", "{name+}", "kick"), ["s", "a", "kick"]), {"name": "a"})
        self.assertIsNone(match(("s", "{name+}", "kick"), ["s", "kick"]))
        self.assertIsNone(match(("s", "{app}"), ["s", ""]))
        self.assertIsNone(match(("s", "{app}"), ["s", "a", "b"]))
        self.assertIsNone(match(("s",), []))

    def test_405_lists_every_method_of_the_path(self) -> None:
        router = Router(
            [Route("GET", ("x",), print), Route("POST", ("x",), print), Route("GET", ("y",), print)]
        )
        self.assertEqual(router.resolve("HEAD", ["y"])[0].pattern, ("y",))
        with self.assertRaises(APIError) as raised:
            router.resolve("PUT", ["x"])
        self.assertEqual(
            (raised.exception.status, raised.exception.headers[b"allow"]), (405, b"GET, HEAD, POST")
        )
        with self.assertRaises(APIError) as raised:
            router.resolve("GET", ["z"])
        self.assertEqual(raised.exception.status, 404)


def request_from(host: str | None, authorization: bytes | None = None) -> DummyRequest:
    request = DummyRequest([b""])
    request.client = UNIXAddress(None) if host is None else IPv4Address("TCP", host, 4000)
    if authorization is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [authorization])
    return request


class TokenAuthTests(SynchronousTestCase):
    token = TOKEN.encode()

    def test_reads_are_open_on_loopback_only(self) -> None:
        auth = TokenAuth(self.token)
        for host in ("127.0.0.1", "127.9.9.9", None):
            auth.check(request_from(host), mutation=False)
        with self.assertRaises(APIError) as raised:
            auth.check(request_from("192.0.2.7"), mutation=False)
        self.assertEqual(raised.exception.status, 401)
        auth.check(request_from("192.0.2.7", b"Bearer " + self.token), mutation=False)
        auth.check(request_from("192.0.2.7", b"bearer  " + self.token + b" "), mutation=False)

    def test_ipv6_loopback_and_mapped_addresses(self) -> None:
        from twisted.internet.address import IPv6Address

        auth = TokenAuth(self.token)
        for host in ("::1", "::ffff:127.0.0.1"):
            request = DummyRequest([b""])
            request.client = IPv6Address("TCP", host, 4000)
            auth.check(request, mutation=False)
        request = DummyRequest([b""])
        request.client = IPv6Address("TCP", "2001:db8::1", 4000)
        with self.assertRaises(APIError):
            auth.check(request, mutation=False)

    def test_mutations_need_the_token_from_everywhere(self) -> None:
        auth = TokenAuth(self.token)
        for host in ("127.0.0.1", None, "192.0.2.7"):
            with self.assertRaises(APIError) as raised:
                auth.check(request_from(host), mutation=True)
            self.assertEqual(raised.exception.status, 401)
            auth.check(request_from(host, b"Bearer " + self.token), mutation=True)

    def test_without_a_token_reads_from_elsewhere_and_mutations_are_403(self) -> None:
        auth = TokenAuth(None)
        auth.check(request_from("127.0.0.1"), mutation=False)
        for host, mutation in (("192.0.2.7", False), ("127.0.0.1", True)):
            with self.assertRaises(APIError) as raised:
                auth.check(request_from(host, b"Bearer anything-at-all-123"), mutation=mutation)
            self.assertEqual(raised.exception.status, 403)
            self.assertIn("--api-token-file", raised.exception.message)

    def test_token_file(self) -> None:
        directory = tempfile.mkdtemp(prefix="rtmpd-api-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "token")
        with open(path, "w") as f:
            f.write("  " + TOKEN + "\n")
        os.chmod(path, 0o644)
        self.assertEqual(read_token_file(path), (TOKEN.encode(), True))
        os.chmod(path, 0o600)
        self.assertEqual(read_token_file(path), (TOKEN.encode(), False))
        for bad in ("short", "has a space in it 0123456789", ""):
            with open(path, "w") as f:
                f.write(bad)
            with self.assertRaises(TokenFileError):
                read_token_file(path)
        with self.assertRaises(TokenFileError) as raised:
            read_token_file(os.path.join(directory, "missing"))
        self.assertIn("--api-token-file", str(raised.exception))


class WiringTests(SynchronousTestCase):
    def options(self, *args: str):
        from rtmpd.tap import Options

        options = Options()
        options.parseOptions(["--http", "tcp:0:interface=127.0.0.1", *args])
        return options

    def test_the_api_is_mounted_with_the_http_listener(self) -> None:
        from rtmpd.tap import makeService

        top = makeService(self.options("--http-max-body", "1000", "--http-max-connections", "7"))
        capped = [s for s in top if getattr(s, "what", None) == "HTTP server"][0].factory
        site = capped.wrappedFactory
        self.assertEqual((site.max_body, capped.limit), (1000, 7))
        self.assertIn("api", site.resource.mounted)
        self.assertIsNotNone(top.getServiceNamed("api-rates"))

    def test_unusable_token_settings_stop_startup_with_one_line(self) -> None:
        from rtmpd.tap import makeService

        directory = tempfile.mkdtemp(prefix="rtmpd-api-")
        self.addCleanup(shutil.rmtree, directory, True)
        short = os.path.join(directory, "short")
        with open(short, "w") as f:
            f.write("abc\n")
        for args in (
            ("--api-token-always",),
            ("--api-token-file", short),
            ("--api-token-file", os.path.join(directory, "missing")),
        ):
            with self.assertRaises(SystemExit) as raised:
                makeService(self.options(*args))
            message = str(raised.exception.code)
            self.assertTrue(message.startswith("rtmpd: error: "), message)
            self.assertNotIn("\n", message)


class StartTimesTests(SynchronousTestCase):
    def test_entries_come_and_go_with_the_events_and_stay_bounded(self) -> None:
        from twisted.internet.task import Clock

        from rtmpd.admin.uptimes import StartTimes
        from rtmpd.notify import Notifier

        clock, live = Clock(), {}
        notifier = Notifier(clock.seconds)
        times = StartTimes(clock.seconds, live)
        times.subscribe_to(notifier)
        live["c1"] = object()
        notifier.emit("connect", conn_id="c1")
        clock.advance(2)
        notifier.emit("play_start", conn_id="c1", stream_key="live/a")
        clock.advance(3)
        self.assertEqual((times.connection_uptime("c1"), times.play_uptime("c1", "live/a")), (5, 3))
        self.assertEqual(times.uptime(), 5)
        notifier.emit("play_stop", conn_id="c1", stream_key="live/a")
        self.assertIsNone(times.play_uptime("c1", "live/a"))
        notifier.emit("disconnect", conn_id="c1")
        self.assertIsNone(times.connection_uptime("c1"))
        # Connections that never tell of their end are forgotten once they are gone from ``live``.
        for i in range(1000):
            notifier.emit("connect", conn_id=f"x{i}")
            notifier.emit("play_start", conn_id=f"x{i}", stream_key="live/a")
        self.assertLessEqual(len(times._connected) + len(times._playing), 4 * len(live) + 64 + 2)
