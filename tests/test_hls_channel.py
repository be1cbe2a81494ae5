"""The lean HTTP path of ``/hls/`` (``rtmpd.hls.channel``): what it serves, what it hands to twisted.web."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.hls.answers import Answer
from rtmpd.hls.channel import MAX_HEAD, HLSChannel
from rtmpd.http.jsonio import HTTPError
from rtmpd.http.limits import REQUEST_TIMEOUT
from rtmpd.http.site import IDLE_TIMEOUT

PLAYLIST = Answer(200, b"application/vnd.apple.mpegurl", b"no-cache", b"#EXTM3U\n")


class FakeAnswers:
    """Answers every request with ``PLAYLIST`` or with the next Deferred of ``pending``; records requests."""

    class permissions:
        enabled = False

    def __init__(self) -> None:
        self.asked: list[tuple[list[str], str, str]] = []
        self.pending: list[Deferred] = []

    def answer(self, parts, raw_query, host):
        self.asked.append((parts, raw_query, host))
        if parts[-1] == "missing.m4s":
            raise HTTPError(404, "no such HLS file")
        if self.pending:
            return self.pending.pop(0)
        return PLAYLIST


class Recorder(Protocol):
    """The twisted.web channel stand-in: what it was handed."""

    def __init__(self) -> None:
        self.received = b""
        self.made = False
        self.lost = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost = True


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def responses(data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """(status line, headers, body) of each response in ``data`` (bodies by Content-Length)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
        length = int(headers.get("content-length", 0)) if not status.startswith("HEAD") else 0
        out.append((status, headers, data[:length]))
        data = data[length:]
    return out


class HLSChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.answers = FakeAnswers()
        self.clock = Clock()
        self.fallback = Recorder()
        self.channel = HLSChannel(self.answers, self.clock, self.fallback, "127.0.0.9")
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def test_a_plain_get_is_answered_here_with_cors_and_length(self) -> None:
        self.channel.dataReceived(get("/hls/live/cam%20a/index.m3u8?_HLS_msn=3&_HLS_part=1"))
        [(status, headers, body)] = responses(self.transport.value())
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertEqual(headers["content-type"], "application/vnd.apple.mpegurl")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertEqual(headers["access-control-allow-origin"], "*")
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertIn("date", headers)
        self.assertEqual(body, b"#EXTM3U\n")
        self.assertEqual(
            self.answers.asked, [(("live", "cam a", "index.m3u8"), "_HLS_msn=3&_HLS_part=1", "127.0.0.9")]
        )
        self.assertFalse(self.fallback.made)
        self.assertFalse(self.transport.disconnecting)

    def test_errors_are_json(self) -> None:
        self.channel.dataReceived(get("/hls/live/cam/missing.m4s"))
        [(status, headers, body)] = responses(self.transport.value())
        self.assertEqual(status, "HTTP/1.1 404 Not Found")
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertIn(b'"status":404', body)

    def test_head_has_the_length_and_no_body_and_options_is_a_preflight(self) -> None:
        self.channel.dataReceived(get("/hls/live/cam/index.m3u8", method="HEAD"))
        head = self.transport.value()
        self.assertTrue(head.endswith(b"content-length: 8\r\n\r\n"), head)
        self.transport.clear()
        self.channel.dataReceived(get("/hls/live/cam/index.m3u8", method="OPTIONS"))
        [(status, headers, body)] = responses(self.transport.value())
        self.assertEqual(status, "HTTP/1.1 204 No Content")
        self.assertIn("GET", headers["access-control-allow-methods"])
        self.assertEqual(headers["access-control-allow-origin"], "*")
        self.assertEqual(body, b"")

    def test_pipelined_requests_are_answered_in_order_one_at_a_time(self) -> None:
        waiting = Deferred()
        self.answers.pending.append(waiting)
        self.channel.dataReceived(get("/hls/a/b/index.m3u8?_HLS_msn=9") + get("/hls/a/b/0.m4s"))
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.answers.asked), 1)  # the second waits for the first's answer
        waiting.callback(Answer(200, b"video/mp4", b"public", b"first"))
        self.assertEqual([body for _, _, body in responses(self.transport.value())], [b"first", b"#EXTM3U\n"])

    def test_another_path_hands_the_connection_over_from_that_request_on(self) -> None:
        self.channel.dataReceived(get("/hls/a/b/index.m3u8"))
        later = get("/healthz") + get("/hls/a/b/index.m3u8")
        self.channel.dataReceived(later)
        self.assertTrue(self.fallback.made)
        self.assertIs(self.fallback.transport, self.transport)
        self.assertEqual(self.fallback.received, later)
        self.channel.dataReceived(b"more")
        self.assertEqual(self.fallback.received, later + b"more")
        self.assertEqual(len(responses(self.transport.value())), 1)
        self.channel.connectionLost(None)
        self.assertTrue(self.fallback.lost)

    def test_a_body_another_method_or_a_malformed_head_goes_to_twisted_web(self) -> None:
        for request in (
            get("/hls/a/b/index.m3u8", "Content-Length: 5") + b"12345",
            get("/hls/a/b/index.m3u8", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
            get("/hls/a/b/index.m3u8", method="POST"),
            get("http://x/hls/a/b/index.m3u8"),
            get("/hls/a/b/index.m3u8", "Bad Header\x00: y"),
            b"GET /hls/a/b/index.m3u8 HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        ):
            fallback = Recorder()
            channel = HLSChannel(self.answers, self.clock, fallback, "")
            transport = StringTransport()
            channel.makeConnection(transport)
            for i in range(0, len(request), 4096):
                channel.dataReceived(request[i : i + 4096])
            self.assertEqual(transport.value(), b"", request[:60])
            self.assertEqual(fallback.received, request, request[:60])

    def test_connection_close_and_http_1_0_close_after_the_answer(self) -> None:
        for request in (
            get("/hls/a/b/index.m3u8", "Connection: close"),
            get("/hls/a/b/x.mp4", version="1.0"),
        ):
            channel = HLSChannel(self.answers, self.clock, Recorder(), "")
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(request)
            [(_, headers, _)] = responses(transport.value())
            self.assertEqual(headers["connection"], "close")
            self.assertTrue(transport.disconnecting)

    def test_http_1_0_keep_alive_is_said_in_the_answer(self) -> None:
        self.channel.dataReceived(get("/hls/a/b/index.m3u8", "Connection: keep-alive", version="1.0"))
        [(_, headers, _)] = responses(self.transport.value())
        self.assertEqual(headers["connection"], "keep-alive")
        self.assertFalse(self.transport.disconnecting)
        self.transport.clear()
        self.channel.dataReceived(get("/hls/a/b/index.m3u8"))  # HTTP/1.1: keep-alive goes without saying
        [(_, headers, _)] = responses(self.transport.value())
        self.assertNotIn("connection", headers)

    def test_a_slow_head_gets_408_and_an_idle_connection_is_closed(self) -> None:
        self.channel.dataReceived(get("/hls/a/b/index.m3u8"))
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.channel.dataReceived(b"GET /hls/a/b/index.m3u8 HTTP/1.1\r\nHost")
        self.clock.advance(REQUEST_TIMEOUT - 0.5)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(responses(self.transport.value())[-1][0].startswith("HTTP/1.1 408 "))

        channel = HLSChannel(self.answers, self.clock, Recorder(), "")
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(get("/hls/a/b/index.m3u8"))
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_a_waiting_request_has_no_idle_timeout_and_is_cancelled_when_the_client_leaves(self) -> None:
        cancelled = []
        waiting = Deferred(cancelled.append)
        self.answers.pending.append(waiting)
        self.channel.dataReceived(get("/hls/a/b/index.m3u8?_HLS_msn=9"))
        self.clock.advance(IDLE_TIMEOUT + REQUEST_TIMEOUT)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(cancelled, [])
        self.channel.connectionLost(None)
        self.assertEqual(cancelled, [waiting])
        self.assertEqual(self.transport.value(), b"")

    def test_no_answers_while_the_client_does_not_read_and_reading_stops(self) -> None:
        self.channel.pauseProducing()  # what the transport does when its buffer is full
        self.channel.dataReceived(get("/hls/a/b/index.m3u8") * 2)
        self.assertEqual(self.transport.value(), b"")
        self.channel.dataReceived(get("/hls/a/b/index.m3u8") * (MAX_HEAD // 30))
        self.assertEqual(self.transport.producerState, "paused")
        self.channel.resumeProducing()
        self.assertEqual(len(responses(self.transport.value())), 2 + MAX_HEAD // 30)
        self.assertEqual(self.transport.producerState, "producing")


class SiteWiringTests(SynchronousTestCase):
    def test_the_site_starts_connections_on_the_lean_channel_and_twisted_web_answers_the_rest(self) -> None:
        from twisted.internet.address import IPv4Address

        from rtmpd.hls.channel import lean_channel
        from rtmpd.http.health import Healthz
        from rtmpd.http.root import HTTPRoot
        from rtmpd.http.site import HTTPSite

        root = HTTPRoot()
        root.mount("healthz", Healthz())
        addr = IPv4Address("TCP", "127.0.0.5", 5000)
        plain = HTTPSite(root).buildProtocol(addr)
        self.assertNotIsInstance(plain, HLSChannel)

        answers = FakeAnswers()
        clock = Clock()
        root.lean_channel = lean_channel(answers, clock)
        # twisted.web's channel takes its timers from the Site's reactor: a fake one, left clean.
        channel = HTTPSite(root, reactor=clock).buildProtocol(addr)
        self.assertIsInstance(channel, HLSChannel)
        self.assertEqual(type(channel.fallback), type(plain))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(get("/hls/live/cam/index.m3u8") + get("/healthz"))
        first, second = responses(transport.value())
        self.assertEqual((first[0], first[2]), ("HTTP/1.1 200 OK", b"#EXTM3U\n"))
        self.assertEqual(answers.asked, [(("live", "cam", "index.m3u8"), "", "127.0.0.5")])
        self.assertEqual(second[0], "HTTP/1.1 200 OK")
        self.assertIn(b'"status":"ok"', second[2])
        self.assertTrue(channel.handed_off)
        channel.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])


class HLSResourceTests(SynchronousTestCase):
    """The twisted.web path of the same answers (a connection twisted.web already serves)."""

    def request(self, path: bytes):
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest(path.split(b"?")[0].split(b"/")[2:])
        request.uri = path
        request.path = path.split(b"?")[0]
        return request

    def test_an_answer_later_is_written_then_and_a_departed_client_cancels_it(self) -> None:
        from twisted.web.server import NOT_DONE_YET

        from rtmpd.hls.resource import HLSResource

        answers = FakeAnswers()
        resource = HLSResource(answers)
        waiting = Deferred()
        answers.pending.append(waiting)
        request = self.request(b"/hls/live/cam/index.m3u8?_HLS_msn=4")
        self.assertEqual(resource.render_GET(request), NOT_DONE_YET)
        self.assertEqual(answers.asked, [(["live", "cam", "index.m3u8"], "_HLS_msn=4", "")])
        self.assertEqual(request.written, [])
        waiting.callback(PLAYLIST)
        self.assertEqual(request.written, [b"#EXTM3U\n"])
        self.assertEqual(request.finished, 1)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-cache"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"access-control-allow-origin"), [b"*"])

        cancelled = []
        answers.pending.append(Deferred(cancelled.append))
        request = self.request(b"/hls/live/cam/index.m3u8?_HLS_msn=5")
        resource.render_GET(request)
        request.processingFailed(Failure(ConnectionDone()))  # the client left
        self.assertEqual(len(cancelled), 1)

        request = self.request(b"/hls/live/cam/missing.m4s")
        resource.render_GET(request)
        self.assertEqual(request.responseCode, 404)
        self.assertIn(b'"status":404', b"".join(request.written))
