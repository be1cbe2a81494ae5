"""The webhook sink: each event POSTed as signed JSON, one at a time and in order, retried with backoff.

The head of the queue is sent; the next waits until it is delivered or
given up, so a receiver sees one sink's events in the order they happened.
An attempt fails on a connection error, on the timeout, or on a 408, 429 or
5xx answer; it is retried after ``Backoff.delay`` up to ``retries`` times,
then given up (``failed``). Any other non-2xx answer is given up at once:
the receiver has refused the event. HTTP is done by ``TreqPoster`` (treq),
or by a test's fake with the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

import rtmpd
from rtmpd.hooks.backoff import Backoff
from rtmpd.hooks.signature import SIGNATURE_HEADER, sign
from rtmpd.hooks.sink import HookEvent, Sink
from rtmpd.hooks.spec import HookSpec

__all__ = ["MAX_RESPONSE_BYTES", "Post", "TreqPoster", "WebhookSink", "WebhookTimeout", "describe_failure"]

#: Bytes of a receiver's answer read (and thrown away) before the connection is closed.
MAX_RESPONSE_BYTES = 64 * 1024

#: ``post(url, body, headers, timeout)``: a Deferred firing with the HTTP status, failing on a
#: connection error or the timeout.
Post = Callable[[str, bytes, Mapping[str, str], float], defer.Deferred]


class WebhookTimeout(Exception):
    """The receiver did not answer within the request timeout."""


def describe_failure(failure: Failure) -> str:
    """One line saying why an attempt failed (Twisted's HTTP client wraps the cause in a list)."""
    if failure.check(WebhookTimeout, defer.CancelledError):
        return str(failure.value) or "cancelled"
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(describe_failure(r) if isinstance(r, Failure) else str(r) for r in reasons)
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}".rstrip(": ")


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class WebhookSink(Sink):
    """POSTs its events to ``spec.target`` (see the module doc); ``counts`` says how it went."""

    kind = "webhook"

    def __init__(
        self,
        spec: HookSpec,
        *,
        secret: bytes,
        post: Post,
        clock: IReactorTime,
        queue_size: int,
        retries: int,
        backoff: Backoff,
        timeout: float,
    ) -> None:
        super().__init__(spec, queue_size=queue_size, clock=clock)
        self.secret = secret
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._post = post
        self._attempts = 0
        self._in_flight: defer.Deferred | None = None
        self._retry_timer: IDelayedCall | None = None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None or self._retry_timer is not None

    def headers_for(self, event: HookEvent) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": f"rtmpd/{rtmpd.__version__}",
            "X-Rtmpd-Event": event.name,
            "X-Rtmpd-Delivery": str(event.payload["id"]),
            "X-Rtmpd-Attempt": str(self._attempts + 1),
            SIGNATURE_HEADER: sign(event.body, self.secret),
        }

    def _work(self) -> None:
        if not self.busy and self.queue:
            self._attempt()

    def _attempt(self) -> None:
        self._retry_timer = None
        event = self.queue[0]
        try:
            d = self._post(self.spec.target, event.body, self.headers_for(event), self.timeout)
        except Exception:
            d = defer.fail()
        self._in_flight = d
        d.addCallbacks(self._answered, self._not_answered, callbackArgs=(event,), errbackArgs=(event,))

    def _answered(self, status: int, event: HookEvent) -> None:
        self._in_flight = None
        if self.stopped:
            return
        if 200 <= status < 300:
            self._finish(event, "ok")
        elif _retryable(status):
            self._again(event, f"HTTP {status}")
        else:
            self._finish(event, "failed", f"HTTP {status} (not retried)")

    def _not_answered(self, failure: Failure, event: HookEvent) -> None:
        self._in_flight = None
        if self.stopped:
            return
        if not failure.check(WebhookTimeout, OSError) and "twisted" not in failure.type.__module__:
            self.log.failure("Webhook post raised", failure, hook=self.name)
        self._again(event, describe_failure(failure))

    def _again(self, event: HookEvent, reason: str) -> None:
        if self._attempts >= self.retries:
            self._finish(event, "failed", f"{reason} after {self._attempts + 1} attempts")
            return
        self._attempts += 1
        self.counts.retry += 1
        delay = self.backoff.delay(self._attempts)
        self.log.info(
            "Webhook attempt failed; retrying",
            hook=self.name,
            event_name=event.name,
            reason=reason,
            retry=self._attempts,
            delay=round(delay, 3),
        )
        self._retry_timer = self.clock.callLater(delay, self._attempt)

    def _finish(self, event: HookEvent, result: str, reason: str | None = None) -> None:
        self.queue.popleft()
        self._attempts = 0
        if result == "ok":
            self.counts.ok += 1
        else:
            self.counts.failed += 1
            self.log.warn(
                "Webhook delivery failed; event given up",
                hook=self.name,
                event_name=event.name,
                reason=reason,
            )
        self._schedule()
        self._check_idle()

    def _abort(self) -> None:
        if self._retry_timer is not None and self._retry_timer.active():
            self._retry_timer.cancel()
        self._retry_timer = None
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None


class _Discard(Protocol):
    """Reads a response body into nothing, at most ``limit`` bytes; then or on ``abort`` the connection is
    closed. ``done`` fires once the body ended or was cut off."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0
        self.done: defer.Deferred = defer.Deferred()
        self._producer: Any = None

    def makeConnection(self, producer: Any) -> None:
        self._producer = producer
        super().makeConnection(producer)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            self.abort()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(None)

    def abort(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()
        if not self.done.called:
            self.done.callback(None)


class TreqPoster:
    """``Post`` done with a treq ``HTTPClient``: no redirects, the answer's body read and thrown away
    (at most ``MAX_RESPONSE_BYTES``), everything within ``timeout`` seconds of the clock."""

    def __init__(
        self, client: Any, clock: IReactorTime, max_response_bytes: int = MAX_RESPONSE_BYTES
    ) -> None:
        self._client = client
        self._clock = clock
        self._max_response_bytes = max_response_bytes

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> defer.Deferred:
        d = self._client.request(
            "POST",
            url,
            data=body,
            headers={k: [v] for k, v in headers.items()},
            allow_redirects=False,
            unbuffered=True,
        )
        d.addCallback(self._read_answer)
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._clock.callLater(timeout, expire)

        def settled(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if expired and isinstance(result, Failure):
                raise WebhookTimeout(f"no answer within {timeout:g} s")
            return result

        return d.addBoth(settled)

    def _read_answer(self, response: Any) -> defer.Deferred:
        discard = _Discard(self._max_response_bytes)
        response.deliverBody(discard)
        # Cancelled (the timeout) while the body comes: the status is known, so the answer stands.
        answer: defer.Deferred = defer.Deferred(lambda _: discard.abort())
        discard.done.addCallback(lambda _: answer.called or answer.callback(response.code))
        return answer


def treq_poster(reactor: Any, timeout: float) -> tuple[TreqPoster, Callable[[], defer.Deferred]]:
    """A ``TreqPoster`` on its own connection pool, and the call that closes the pool's connections.

    A connection per event: events are rare, and a kept-alive connection that the receiver closes
    while idle would fail the next POST (which, not being idempotent, Twisted does not resend)."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool, connectTimeout=timeout)
    return TreqPoster(HTTPClient(agent), reactor), pool.closeCachedConnections
