"""The HTTP callback: an operator's web service decides, per request, with one JSON POST.

rtmpd POSTs ``Request.as_json()`` (``{"action", "app", "name", "query",
"addr", "conn_id", "tcUrl", "flashVer"}``) to the URL and reads the answer:

============================  =====================================================
answer                        decision
============================  =====================================================
2xx, empty body               allow
2xx, JSON object              ``allow`` (bool, default true) allows or denies;
                              ``name`` (str) renames the stream (publish, play);
                              ``record`` (bool) turns recording on or off
2xx, anything else in body    garbage: the failure policy decides
3xx, 4xx (and 1xx)            deny (redirects are not followed)
5xx                           the service failed: the failure policy decides
no answer in ``timeout``      the failure policy decides
connection refused, reset...  the failure policy decides
body over ``max_body`` bytes  garbage: the failure policy decides
============================  =====================================================

The failure policy is ``closed`` (deny; the default) or ``open`` (allow).
A 5xx is treated as the service failing rather than as a "no": behind a
proxy, a crashed service answers 502/503, and an operator who chose
``open`` chose to stay up in exactly that case.

Definite answers (allow, deny) may be cached per (action, app, name, query)
for ``cache_ttl`` seconds in a bounded LRU table; failures are never cached.
The client's address and connection id are not part of the cache key: a
callback that decides by address should not be cached.

The refusal reason a client sees is fixed text ("refused by the
authorisation service", "authorisation service unavailable"): never the
URL, the status code or the service's body. Those go to the log, with the
URL's credentials and query removed.

Connections are not kept alive: a kept-alive connection that the service
closed while idle fails the next POST (Twisted does not retry a POST), which
would refuse a good client. The timeout and the body bound run on the
injected clock; the whole exchange (connect, send, headers, body) is
cancelled at the timeout.
"""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hyperlink import URL
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from rtmpd.access.counters import AccessCounters
from rtmpd.access.decision import ALLOW, Action, Allow, Authoriser, Decision, Deny, Request
from rtmpd.access.errors import CallbackConfigError
from rtmpd.relay.names import IllegalName, split_stream_name

__all__ = ["FailurePolicy", "HTTPCallback"]

#: Public reasons: what a refused client reads. Fixed text, nothing from the service.
REFUSED = "refused by the authorisation service"
UNAVAILABLE = "authorisation service unavailable"


class FailurePolicy(enum.StrEnum):
    """What the callback decides when the service cannot answer: ``closed`` denies, ``open`` allows."""

    CLOSED = "closed"
    OPEN = "open"


class _Garbage(Exception):
    """The service answered 2xx with something that is not a decision."""


class _ServiceFailed(Exception):
    """The service answered 5xx."""


@dataclass(frozen=True)
class _Answer:
    decision: Decision
    result: str  # allow | deny


class _BoundedBody(Protocol):
    """Collects a response body up to ``limit`` bytes; past that, drops the connection and fails."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self.finished: Deferred[bytes] | None = Deferred(self._cancel)
        self._producer: Any = None

    def makeConnection(self, producer: Any) -> None:
        # The body's "transport" is a producer proxy: stopProducing() drops the HTTP connection.
        self._producer = producer

    def _cancel(self, d: Deferred[bytes]) -> None:
        self.finished = None
        if self._producer is not None:
            self._producer.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self.size += len(data)
        if self.size > self.limit:
            d, self.finished = self.finished, None
            self._producer.stopProducing()
            d.errback(_Garbage(f"body larger than {self.limit} bytes"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.finished is None:
            return
        d, self.finished = self.finished, None
        if reason.check(ResponseDone, PotentialDataLoss):
            d.callback(b"".join(self.chunks))
        else:
            d.errback(reason)


class _Discard(Protocol):
    """Reads no body: closes the connection at once (an answer whose body we do not need)."""

    def makeConnection(self, producer: Any) -> None:
        producer.stopProducing()


def _failure_text(failure: Failure) -> str:
    """A short text for a failed exchange (Twisted's client failures wrap a list of reasons)."""
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(_failure_text(r) if isinstance(r, Failure) else repr(r) for r in reasons)
    return f"{failure.type.__name__}: {failure.value}" if str(failure.value) else failure.type.__name__


class _Exchange:
    """One POST and its answer. ``decided`` fires once: with the answer, or with the failure policy's
    verdict at the timeout (the POST is then cancelled and its outcome ignored); a caller that cancels
    ``decided`` cancels the POST, and nothing is decided or counted."""

    def __init__(self, callback: HTTPCallback, request: Request, key: tuple[str, str, str, str]) -> None:
        self._callback = callback
        self._request = request
        self._key = key
        self._clock = callback._clock
        self._start = self._clock.seconds()
        self._over = False
        self.decided: Deferred[Decision] = Deferred(self._cancelled)
        url, auth = callback._target
        self._post = callback._client.post(
            url,
            json=request.as_json(),
            headers={"Accept": ["application/json"]},
            auth=auth,
            allow_redirects=False,
            unbuffered=True,
        )
        self._post.addCallback(callback._response, request)
        self._timer = self._clock.callLater(callback.timeout, self._timed_out)
        self._post.addBoth(self._answered)

    def _latency(self) -> float:
        return self._clock.seconds() - self._start

    def _answered(self, result: _Answer | Failure) -> None:
        if self._over:
            return None  # timed out or cancelled: already decided, or nobody is waiting
        self._over = True
        self._timer.cancel()
        self.decided.callback(self._callback._settle(result, self._latency(), self._request, self._key))
        return None

    def _timed_out(self) -> None:
        self._over = True
        detail = f"no answer within {self._callback.timeout:g} s"
        self.decided.callback(self._callback._failed("timeout", detail, self._latency(), self._request))
        self._post.cancel()

    def _cancelled(self, decided: Deferred[Decision]) -> None:
        self._over = True
        if self._timer.active():
            self._timer.cancel()
        self._post.cancel()


def _redacted(url: URL) -> str:
    """The URL without credentials, query or fragment: safe for logs and the manhole."""
    return url.replace(userinfo="", query=(), fragment="").to_text()


class HTTPCallback(Authoriser):
    """Asks an HTTP service (module doc). Never fails its Deferred except when the caller cancels it.

    ``reactor`` makes the connections; ``clock`` (default: the reactor)
    runs the timeout and measures latency. ``actions``: which actions are
    asked (all three by default); the others are allowed. Raises
    ``CallbackConfigError`` for a URL that is not http(s) or bad numbers.
    """

    name = "callback"
    log = Logger()

    def __init__(
        self,
        url: str,
        *,
        reactor: Any,
        clock: IReactorTime | None = None,
        timeout: float = 5.0,
        failure_policy: FailurePolicy | str = FailurePolicy.CLOSED,
        cache_ttl: float = 0.0,
        cache_size: int = 1024,
        max_body: int = 16 * 1024,
        actions: Iterable[Action] = tuple(Action),
        counters: AccessCounters | None = None,
    ) -> None:
        try:
            parsed = URL.from_text(url)
        except Exception as e:
            raise CallbackConfigError(f"callback URL does not parse: {e}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise CallbackConfigError("callback URL must be http:// or https:// with a host")
        if timeout <= 0 or cache_ttl < 0 or cache_size < 1 or max_body < 1:
            raise CallbackConfigError("timeout must be > 0, cache_ttl >= 0, cache_size and max_body >= 1")
        try:
            self.failure_policy = FailurePolicy(failure_policy)
        except ValueError:
            raise CallbackConfigError("failure policy must be 'closed' or 'open'") from None
        self.shown_url = _redacted(parsed)
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.max_body = max_body
        self.actions = frozenset(actions)
        self.counters = counters if counters is not None else AccessCounters()
        self._clock: IReactorTime = clock if clock is not None else reactor
        user, _, password = parsed.userinfo.partition(":")
        # Credentials in the URL become HTTP basic auth: the Agent does not take them in the URL.
        self._target = (
            parsed.replace(userinfo="").to_text(),
            (user, password) if parsed.userinfo else None,
        )
        self._client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        self._cache: OrderedDict[tuple[str, str, str, str], tuple[float, Decision]] = OrderedDict()

    # -- the interface --------------------------------------------------------

    def connect(self, request: Request) -> Deferred[Decision]:
        return self._ask(request)

    def publish(self, request: Request) -> Deferred[Decision]:
        return self._ask(request)

    def play(self, request: Request) -> Deferred[Decision]:
        return self._ask(request)

    def describe(self) -> str:
        cache = (
            f"cache {self.cache_ttl:g} s, {len(self._cache)}/{self.cache_size}"
            if self.cache_ttl
            else "no cache"
        )
        return (
            f"{self.name} ({self.shown_url}; timeout {self.timeout:g} s; failure policy "
            f"{self.failure_policy}; {cache})"
        )

    # -- one exchange -------------------------------------------------------------

    def _ask(self, request: Request) -> Deferred[Decision]:
        if request.action not in self.actions:
            return succeed(ALLOW)
        key = (str(request.action), request.app, request.name, request.query)
        cached = self._cached(key)
        if cached is not None:
            self.counters.callback("cached")
            return succeed(cached)
        return _Exchange(self, request, key).decided

    def _response(self, response: IResponse, request: Request) -> Deferred[_Answer] | _Answer:
        code = response.code
        if 200 <= code < 300:
            if response.length is not UNKNOWN_LENGTH and response.length > self.max_body:
                response.deliverBody(_Discard())
                raise _Garbage(f"HTTP {code} with a {response.length}-byte body (limit {self.max_body})")
            body = _BoundedBody(self.max_body)
            finished = body.finished  # an empty body fires it inside deliverBody
            assert finished is not None
            response.deliverBody(body)
            return finished.addCallback(self._interpret, code, request)
        response.deliverBody(_Discard())
        if code >= 500:
            raise _ServiceFailed(f"HTTP {code}")
        return _Answer(Deny(REFUSED, self.name, f"HTTP {code}"), "deny")

    def _interpret(self, body: bytes, code: int, request: Request) -> _Answer:
        if not body.strip():
            return _Answer(Allow(authoriser=self.name, detail=f"HTTP {code}"), "allow")
        try:
            answer = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _Garbage(f"HTTP {code} with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise _Garbage(f"HTTP {code} with JSON that is not an object")
        allow, name, record = answer.get("allow", True), answer.get("name"), answer.get("record")
        if not isinstance(allow, bool) or not isinstance(record, (bool, type(None))):
            raise _Garbage(f"HTTP {code}: 'allow' and 'record' must be true or false")
        if not allow:
            return _Answer(Deny(REFUSED, self.name, f"HTTP {code}, allow false"), "deny")
        if name is not None and request.action is not Action.CONNECT:
            if not isinstance(name, str):
                raise _Garbage(f"HTTP {code}: 'name' must be a string")
            try:
                name, query = split_stream_name(name)
            except IllegalName as e:
                raise _Garbage(f"HTTP {code}: 'name' is not a legal stream name ({e})") from None
            if query:
                raise _Garbage(f"HTTP {code}: 'name' must not carry a query")
        else:
            name = None
        return _Answer(Allow(name=name, record=record, authoriser=self.name, detail=f"HTTP {code}"), "allow")

    def _settle(self, result: _Answer | Failure, latency: float, request: Request, key: Any) -> Decision:
        """The decision for one finished exchange: the answer, or the failure policy's verdict."""
        if isinstance(result, _Answer):
            self.counters.callback(result.result, latency)
            self._remember(key, result.decision)
            return result.decision
        if result.check(_Garbage):
            return self._failed("garbage", str(result.value), latency, request)
        return self._failed("error", _failure_text(result), latency, request)

    def _failed(self, kind: str, detail: str, latency: float, request: Request) -> Decision:
        self.counters.callback(kind, latency)
        self.log.warn(
            "Authorisation callback failed",
            url=self.shown_url,
            outcome=kind,
            detail=detail,
            failure_policy=str(self.failure_policy),
            action=str(request.action),
            conn_id=request.conn_id,
        )
        detail = f"callback {kind}: {detail}; failure policy {self.failure_policy}"
        if self.failure_policy is FailurePolicy.OPEN:
            return Allow(authoriser=self.name, detail=detail)
        return Deny(UNAVAILABLE, self.name, detail)

    # -- the cache ----------------------------------------------------------------

    def _cached(self, key: tuple[str, str, str, str]) -> Decision | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, decision = entry
        if expires <= self._clock.seconds():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return decision

    def _remember(self, key: tuple[str, str, str, str], decision: Decision) -> None:
        if self.cache_ttl <= 0:
            return
        self._cache[key] = (self._clock.seconds() + self.cache_ttl, decision)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
