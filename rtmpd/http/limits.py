"""The limits every HTTP request of rtmpd is held to: the size of its body and the time it takes to arrive.

``BoundedRequest`` is the Site's request class. twisted.web reads a whole
body before a resource sees the request, so the limits are kept here, while
the bytes arrive:

- a ``Content-Length`` over the limit is refused with 413 before any of the
  body is read (and without a ``100 Continue``);
- a chunked body is counted as it is decoded and refused with 413 the moment
  it passes the limit; it is held in memory, never in a temporary file;
- a request whose line, headers and body have not all arrived within
  ``request_timeout`` seconds is answered 408 and its connection closed
  (a client dribbling one byte a minute cannot hold a connection forever).

A refusal is a JSON body (``rtmpd.http.jsonio``'s shape), then the
connection is closed: the unread rest of the body is never parsed.

``ConnectionCap`` wraps the Site: past ``max_connections`` open HTTP
connections, a new one is answered 503 and closed at once, so HTTP clients
can never take the file descriptors the RTMP listeners need.
"""

from __future__ import annotations

import io
import json

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.server import Request
from zope.interface import provider

__all__ = ["MAX_BODY_BYTES", "MAX_CONNECTIONS", "REQUEST_TIMEOUT", "BoundedRequest", "ConnectionCap"]

#: Largest request body accepted (bytes): the JSON API's bodies are tiny.
MAX_BODY_BYTES = 64 * 1024
#: Seconds a request has to arrive in full, from its first line to the end of its body.
REQUEST_TIMEOUT = 30.0
#: Most HTTP connections open at once.
MAX_CONNECTIONS = 256

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large", 503: b"Service Unavailable"}


def _error_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": {"status": status, "message": message}}).encode() + b"\n"
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    )
    return head + body


class _Busy(Protocol):
    """Answers 503 and closes: the connection cap is reached."""

    def makeConnection(self, transport) -> None:
        transport.write(_error_response(503, "too many HTTP connections; try again later"))
        transport.loseConnection()


class ConnectionCap(policies.WrappingFactory):
    """Serves ``site`` on at most ``limit`` connections at once; the next ones get 503 and are closed
    (one WARN line a minute while that happens)."""

    log = Logger()

    def __init__(self, site, limit: int = MAX_CONNECTIONS, clock=None) -> None:
        super().__init__(site)
        self.limit = limit
        self.refused = 0
        self._clock = clock if clock is not None else getattr(site, "reactor", None)
        self._warned_at: float | None = None

    def buildProtocol(self, addr):
        if len(self.protocols) < self.limit:
            return super().buildProtocol(addr)
        self.refused += 1
        now = self._clock.seconds() if self._clock is not None else 0.0
        if self._warned_at is None or now - self._warned_at >= 60:
            self._warned_at = now
            self.log.warn(
                "HTTP connection limit reached; refusing new ones", limit=self.limit, refused=self.refused
            )
        return _Busy()


@provider(INonQueuedRequestFactory)
class BoundedRequest(Request):
    """A ``twisted.web`` request whose body is at most ``max_body`` bytes and which must arrive within
    ``request_timeout`` seconds (both read from the Site, else the module defaults)."""

    log = Logger()

    def __init__(self, channel) -> None:
        super().__init__(channel)
        site = getattr(channel, "site", None)
        self.max_body = getattr(site, "max_body", MAX_BODY_BYTES)
        timeout = getattr(site, "request_timeout", REQUEST_TIMEOUT)
        self.body_bytes = 0
        self.refused = False
        call_later = getattr(channel, "callLater", None)
        self._deadline = call_later(timeout, self._too_slow) if call_later is not None else None

    def gotLength(self, length: int | None) -> None:
        # Never a temporary file: a body is at most max_body bytes, kept in memory.
        self.content = io.BytesIO()
        if length is not None and length > self.max_body:
            # Answered before the body is read; no "100 Continue" may follow the answer.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse(413, f"request body of {length} bytes is over the limit of {self.max_body} bytes")

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.max_body:
            self._refuse(413, f"request body is over the limit of {self.max_body} bytes")
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._cancel_deadline()
        if self.refused:
            return  # answered already; the connection is closing
        if not path.isascii():
            # RFC 9112 wants such bytes percent-encoded; twisted.web would fail to render an error page
            # for it (a 500 and a logged traceback, e.g. for a POST of a GET-only resource).
            self._refuse(400, "the request target is not ASCII")
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.refused and not self.finished:
            self._refuse(408, "the request did not arrive in time")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error on the raw connection and close it: the request is
        still arriving, so twisted.web's response machinery cannot be used yet."""
        self.refused = True
        self._cancel_deadline()
        self.log.info("HTTP request refused", status=status, reason=message, client=_client(self))
        channel = self.channel
        if channel is None or not channel.connected:
            return
        channel.write(_error_response(status, message))
        channel.loseConnection()


def _client(request: Request) -> str | None:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return None if host is None else f"{host}:{getattr(address, 'port', '')}"
