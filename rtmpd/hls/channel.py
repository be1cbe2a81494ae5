"""A lean HTTP/1.1 path for the plain requests of ``/hls/``, in front of twisted.web's on the same listener.

An LL-HLS viewer makes about two requests per part (a blocking playlist
reload, then the part): six a second with the default 1/3 s parts. Through
twisted.web a request costs about 0.1 ms of CPU before rtmpd sees it
(header objects, resource traversal, a Request and its Deferreds) and its
answer a reactor write cycle; see docs/hls.md "Cost". ``HLSChannel`` is the
connection's protocol until it meets a request it does not serve:

- it serves ``GET``, ``HEAD`` and ``OPTIONS`` of ``/hls/...`` over
  HTTP/1.0 and 1.1 without a body: the request head is parsed by
  ``httptools`` (llhttp, the parser of Node.js), answered from
  ``HLSAnswers``, and the answer is written with one ``sendmsg`` when the
  socket has room (``rtmpd.fastwrite``);
- anything else (another path or method, a body, a head over ``MAX_HEAD``
  bytes, bytes that do not parse) hands the connection, from the first byte
  of that request on, to the twisted.web channel the Site built, which
  answers it and every later request with all its limits (body size,
  ``408``, ``400``; ``rtmpd.http.limits``).

Requests are answered one at a time, in order (pipelined ones wait in a
buffer of at most ``MAX_HEAD`` bytes; reading stops past it). A blocking
request waits without a timer of its own (``HLSAnswers`` bounds it). A
head must arrive within ``REQUEST_TIMEOUT`` seconds (else 408 and close),
an idle connection is closed after ``IDLE_TIMEOUT``. The channel is its
transport's push producer: while the client does not read its answers, no
further request is answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import unquote_to_bytes

import httptools
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, datetimeToString
from zope.interface import implementer

from rtmpd.access.errors import AccessDenied
from rtmpd.fastwrite import write_chunks
from rtmpd.hls.answers import Answer, HLSAnswers, error_answer
from rtmpd.hls.resource import CORS_PREFLIGHT
from rtmpd.http.jsonio import HTTPError
from rtmpd.http.limits import REQUEST_TIMEOUT
from rtmpd.http.site import IDLE_TIMEOUT

__all__ = ["MAX_HEAD", "HLSChannel", "lean_channel"]

#: Longest request head served here (twisted.web's own limit on a line and on the headers).
MAX_HEAD = 16384
_PREFIX = b"/hls/"
_LEAN_LINES = (b"GET /hls/", b"HEAD /hls/", b"OPTIONS /hls/")
_VERSIONS = (b" HTTP/1.1", b" HTTP/1.0")
#: An HTTP/1.0 client keeps the connection only when told so.
_KEEP_ALIVE_10 = b"connection: keep-alive\r\n"
_CLOSE = b"connection: close\r\n"
#: An answer's head (one formatting per answer).
_HEAD = (
    b"HTTP/1.1 %d %s\r\ndate: %s\r\naccess-control-allow-origin: *\r\n"
    b"content-type: %s\r\ncache-control: %s\r\ncontent-length: %d\r\n%s\r\n"
)
_PREFLIGHT = b"".join(b"%s: %s\r\n" % header for header in CORS_PREFLIGHT)

_date: tuple[int, bytes] = (0, b"")

#: A parsed request head: method, path, query, keep-alive, HTTP/1.0.
_Head = tuple[bytes, bytes, bytes, bool, bool]
#: Parsed request heads remembered (all the connections' together), by their bytes.
_REMEMBERED_HEADS = 1024
#: Longer heads are parsed every time (so the memory held is bounded: at most 1 MB).
_REMEMBERED_HEAD_SIZE = 1024
_parsed_heads: dict[bytes, _Head] = {}


def _http_date() -> bytes:
    """The ``Date`` header's value, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, datetimeToString(now))
    return _date[1]


@lru_cache(maxsize=512)
def _path_segments(path: bytes) -> tuple[str, ...]:
    """The URL-decoded segments of ``path`` below ``/hls/`` (as twisted.web's ``postpath``)."""
    segments = path[len(_PREFIX) :].split(b"/")
    return tuple((unquote_to_bytes(s) if b"%" in s else s).decode("utf-8", "replace") for s in segments)


def lean_channel(answers: HLSAnswers, clock: IReactorTime) -> Callable[[Protocol, IAddress], Protocol]:
    """The ``HTTPRoot.lean_channel`` of a server with HLS: (twisted.web channel, address) -> protocol."""

    def build(fallback: Protocol, addr: IAddress) -> Protocol:
        return HLSChannel(answers, clock, fallback, getattr(addr, "host", "") or "")

    return build


@implementer(IPushProducer)
class HLSChannel(Protocol):
    """Serves the plain ``/hls/`` requests of one connection, then hands it to ``fallback`` (module doc)."""

    log = Logger()

    def __init__(self, answers: HLSAnswers, clock: IReactorTime, fallback: Protocol, host: str) -> None:
        self.answers = answers
        self.clock = clock
        self.fallback = fallback
        self.host = host
        self.handed_off = False
        self._buffer = b""
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._method = b""
        self._keep_alive = True
        self._http10 = False
        self._complete = False
        self._waiting: Deferred | None = None
        self._serving = False
        self._closing = False
        self._output_paused = False
        self._reading_paused = False
        self._raw = None
        self._deadline: float | None = None
        self._timing_head = False
        self._timer = None

    # -- connection --------------------------------------------------------------------

    def connectionMade(self) -> None:
        raw = self.transport
        # The connection cap's wrapper only passes writes on: answers go to the socket's own transport.
        while type(raw) is policies.ProtocolWrapper:
            raw = raw.transport
        self._raw = raw
        self.transport.registerProducer(self, True)
        self._set_deadline(IDLE_TIMEOUT)

    def dataReceived(self, data: bytes) -> None:
        if self.handed_off:
            self.fallback.dataReceived(data)
            return
        if self._closing:
            return
        self._buffer += data
        if self._waiting is None and not self._output_paused and not self._serving:
            self._serve()
        if len(self._buffer) > MAX_HEAD and not self._reading_paused and not self.handed_off:
            self._reading_paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.handed_off:
            self.fallback.connectionLost(reason)
            return
        self._closing = True
        self._cancel_timer()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()  # the client left: stop waiting for it

    # -- IPushProducer: the transport's calls when the client does not read its answers ----

    def pauseProducing(self) -> None:
        self._output_paused = True

    def resumeProducing(self) -> None:
        self._output_paused = False
        if not self.handed_off and not self._closing and self._waiting is None and not self._serving:
            self._serve()

    def stopProducing(self) -> None:
        pass

    # -- requests ----------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer the complete requests buffered, in order, until one must wait."""
        self._serving = True
        try:
            while self._buffer and self._waiting is None and not self._output_paused and not self._closing:
                if not self._next_request():
                    break
        finally:
            self._serving = False
        if self.handed_off or self._closing:
            return
        if self._reading_paused and len(self._buffer) <= MAX_HEAD:
            self._reading_paused = False
            self.transport.resumeProducing()
        if self._waiting is None and self._buffer:
            self._head_arriving()

    def _next_request(self) -> bool:
        """Answer (or start answering) the buffered request; False when it has not all arrived yet,
        or the connection was handed off."""
        buffer = self._buffer
        line_end = buffer.find(b"\r\n", 0, MAX_HEAD)
        if line_end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_off()
            return False
        line = buffer[:line_end]
        if not line.startswith(_LEAN_LINES) or not line.endswith(_VERSIONS):
            self._hand_off()
            return False
        end = buffer.find(b"\r\n\r\n", line_end - 2 if line_end >= 2 else 0, MAX_HEAD)
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_off()
            else:
                self._head_arriving()
            return False
        head = buffer[: end + 4]
        parsed = _parsed_heads.get(head)
        if parsed is None:
            parsed = self._parse(head)
            if parsed is None:
                return False
        self._buffer = buffer[end + 4 :]
        self._deadline = None
        self._timing_head = False
        method, path, query, self._keep_alive, self._http10 = parsed
        self._answer(method, path, query, self._keep_alive)
        return True

    def _parse(self, head: bytes) -> _Head | None:
        """Parse a whole request head with httptools (and remember it); None when the connection was
        handed off: a head that does not parse, or a body follows (twisted.web reads it within its limits)."""
        self._complete = False
        try:
            self._parser.feed_data(head)
            url = httptools.parse_url(self._url)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._hand_off()
            return None
        if not self._complete:
            self._hand_off()
            return None
        parsed = (self._method, url.path, url.query or b"", self._keep_alive, self._http10)
        # The viewers of a stream at its live edge send the same few heads: each is parsed once. A
        # parse depends on the head's bytes alone (the parser starts each request afresh).
        if len(head) <= _REMEMBERED_HEAD_SIZE:
            if len(_parsed_heads) >= _REMEMBERED_HEADS:
                _parsed_heads.clear()
            _parsed_heads[head] = parsed
        return parsed

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        self._method = self._parser.get_method()
        self._keep_alive = self._parser.should_keep_alive()
        self._http10 = self._parser.get_http_version() == "1.0"

    def on_message_complete(self) -> None:
        self._complete = True

    def _answer(self, method: bytes, path: bytes, query: bytes, keep_alive: bool) -> None:
        if method == b"OPTIONS":
            self._write(204, _PREFLIGHT, None, keep_alive)
            return
        parts = _path_segments(path)
        head_only = method == b"HEAD"
        try:
            answer = self.answers.answer(parts, query.decode("latin-1"), self.host)
        except (HTTPError, AccessDenied) as e:
            answer = error_answer(e)
        except Exception:
            self.log.failure("HLS request failed", path=path.decode("latin-1")[:200])
            answer = error_answer(HTTPError(500, "internal error"))
        if not isinstance(answer, Deferred):
            self._send(answer, head_only, keep_alive)
            return
        self._waiting = answer
        answer.addCallbacks(
            self._answered, self._failed, (head_only, keep_alive), None, (head_only, keep_alive, path), None
        )

    def _answered(self, answer: Answer, head_only: bool, keep_alive: bool) -> None:
        if self._waiting is None:
            return  # the connection was lost meanwhile
        self._waiting = None
        self._send(answer, head_only, keep_alive)
        if self._buffer and not self._serving and not self._closing and not self._output_paused:
            self._serve()

    def _failed(self, failure: Failure, head_only: bool, keep_alive: bool, path: bytes) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(HTTPError, AccessDenied):
            answer = error_answer(failure.value)
        else:
            self.log.failure("HLS request failed", failure, path=path.decode("latin-1")[:200])
            answer = error_answer(HTTPError(500, "internal error"))
        self._answered(answer, head_only, keep_alive)

    # -- answers -----------------------------------------------------------------------

    def _send(self, answer: Answer, head_only: bool, keep_alive: bool) -> None:
        body = answer.body
        head = _HEAD % (
            answer.status,
            RESPONSES.get(answer.status, b"Unknown"),
            _http_date(),
            answer.content_type,
            answer.cache,
            len(body),
            (_KEEP_ALIVE_10 if self._http10 else b"") if keep_alive else _CLOSE,
        )
        self._written(head, None if head_only else body, keep_alive)

    def _write(self, status: int, headers: bytes, body: bytes | None, keep_alive: bool) -> None:
        head = b"HTTP/1.1 %d %s\r\ndate: %s\r\naccess-control-allow-origin: *\r\n%s%s\r\n" % (
            status,
            RESPONSES.get(status, b"Unknown"),
            _http_date(),
            headers,
            (_KEEP_ALIVE_10 if self._http10 else b"") if keep_alive else _CLOSE,
        )
        self._written(head, body, keep_alive)

    def _written(self, head: bytes, body: bytes | None, keep_alive: bool) -> None:
        write_chunks(self._raw, [head, body] if body else [head])
        if not keep_alive:
            self._close()
        elif not self._buffer and self._waiting is None:
            self._set_deadline(IDLE_TIMEOUT)

    def _close(self) -> None:
        self._closing = True
        self._cancel_timer()
        self.transport.loseConnection()

    def _hand_off(self) -> None:
        """From the buffered request on, the connection is twisted.web's."""
        self.handed_off = True
        self._cancel_timer()
        self.transport.unregisterProducer()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()
        data, self._buffer = self._buffer, b""
        self.fallback.makeConnection(self.transport)
        if data:
            self.fallback.dataReceived(data)

    # -- timeouts: one timer, moved lazily (most requests only change a float) -----------------

    def _set_deadline(self, seconds: float) -> None:
        now = self.clock.seconds()
        self._deadline = deadline = now + seconds
        timer = self._timer
        if timer is None:
            self._timer = self.clock.callLater(seconds, self._timed_out)
        elif timer.getTime() > deadline:
            timer.reset(seconds)

    def _head_arriving(self) -> None:
        """A request's head has begun to arrive (most come whole in one read: they never get here)."""
        if not self._timing_head:
            self._timing_head = True
            self._set_deadline(REQUEST_TIMEOUT)

    def _cancel_timer(self) -> None:
        self._deadline = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._deadline is None or self.handed_off or self._closing:
            return
        remaining = self._deadline - self.clock.seconds()
        if remaining > 0:
            self._timer = self.clock.callLater(remaining, self._timed_out)
            return
        if self._buffer:
            self._send(error_answer(HTTPError(408, "the request did not arrive in time")), False, False)
        else:
            self._close()
