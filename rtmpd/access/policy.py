"""``AccessPolicy``: the one object the server asks, which turns decisions into answers and refusals.

For each request it

1. refuses at once a connect from an address the throttle has locked out;
2. asks the ``Chain`` of authorisers (all must allow);
3. counts and logs the decision (action, key, address, authoriser,
   outcome, reason, latency) and remembers refusals for the manhole;
4. on a refusal, tells the throttle and fails the Deferred with the
   action's ``AccessDenied`` after the throttle's random delay; on an allow,
   fires it with the merged ``Allow``.

With no authoriser the policy is open: every request is allowed at once,
nothing is logged or counted (``enabled`` is False), as before access
control existed.

Wiring, in a command responder (the dispatcher answers ``AccessDenied`` with
its status code and closes the connection)::

    d = policy.publish(Request(Action.PUBLISH, app, name, query, addr, conn_id, tc_url, flash_ver))
    d.addCallback(lambda allow: start_publishing(allow.name or name, record=allow.record,
                                                 expiry=policy.schedule_expiry(allow, end_stream)))
    return d

The returned Deferred may be cancelled (the client went away): the
callback's request and the refusal delay are cancelled with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from rtmpd.access.counters import AccessCounters, Refusal
from rtmpd.access.decision import ALLOW, Action, Allow, Authoriser, Chain, Decision, Deny, Request
from rtmpd.access.errors import AccessDenied, ConfigFileError
from rtmpd.access.throttle import FailureThrottle

__all__ = ["AccessPolicy", "ReloadResult"]

LOCKED_OUT = "too many failed attempts; try again later"


@dataclass(frozen=True)
class ReloadResult:
    """One authoriser's reload: its summary, or the error that kept its old state."""

    authoriser: str
    ok: bool
    summary: str
    revoked_streams: frozenset[str] = frozenset()


class AccessPolicy:
    """Authorises connect, publish and play (module doc).

    ``clock`` runs the refusal delay and measures latency; ``now`` is Unix
    time, for signed URLs' expiry. ``expiry_grace``: seconds a stream may
    outlive its permission's ``expires`` (None: never end a live stream for
    it). ``throttle``: optional ``FailureThrottle``.
    """

    log = Logger()

    def __init__(
        self,
        authorisers: Sequence[Authoriser],
        *,
        clock: IReactorTime,
        now: Callable[[], float] = time.time,
        throttle: FailureThrottle | None = None,
        expiry_grace: float | None = 0.0,
        counters: AccessCounters | None = None,
    ) -> None:
        if expiry_grace is not None and expiry_grace < 0:
            raise ValueError("expiry_grace must be >= 0 or None")
        self.counters = counters if counters is not None else AccessCounters()
        self.chain = Chain(authorisers, self.counters)
        self.throttle = throttle
        self.expiry_grace = expiry_grace
        self._clock = clock
        self._now = now

    @property
    def enabled(self) -> bool:
        """False when there is no authoriser: the server is open."""
        return bool(self.chain.authorisers)

    # -- the three actions ---------------------------------------------------------

    def connect(self, request: Request) -> Deferred[Allow]:
        """Fires with the ``Allow``, or fails with ``ConnectDenied``."""
        return self.authorise(request)

    def publish(self, request: Request) -> Deferred[Allow]:
        """Fires with the ``Allow`` (its ``name`` may rename the stream), or fails with ``PublishDenied``."""
        return self.authorise(request)

    def play(self, request: Request) -> Deferred[Allow]:
        """Fires with the ``Allow``, or fails with ``PlayDenied``."""
        return self.authorise(request)

    def authorise(self, request: Request) -> Deferred[Allow]:
        if not self.enabled:
            return succeed(ALLOW)
        start = self._clock.seconds()
        if request.action is Action.CONNECT and self.throttle is not None:
            left = self.throttle.locked_for(request.addr)
            if left > 0:
                deny = Deny(LOCKED_OUT, "throttle", f"locked out for {left:.0f} more s")
                self.counters.authoriser_decision(request.action, False, deny.authoriser)
                # No delay: the address is already refused wholesale; holding its sockets helps nobody.
                return fail(self._refused(request, deny, start))
        d = self.chain.authorise(request)
        d.addCallback(self._decided, request, start)
        return d

    def _decided(self, decision: Decision, request: Request, start: float) -> Any:
        if isinstance(decision, Allow):
            self._log(request, decision, start)
            self.counters.outcome(request.action, True)
            # Not for connect: signed URLs and keys let every client connect, and a guesser that
            # reconnects for each try would wipe its own failures.
            if self.throttle is not None and request.action is not Action.CONNECT:
                self.throttle.record_success(request.addr)
            return decision
        error = self._refused(request, decision, start)
        if self.throttle is None:
            raise error
        locked = self.throttle.record_failure(request.addr)
        if locked:
            self.log.warn(
                "Address locked out after repeated authorisation failures",
                addr=request.addr,
                seconds=self.throttle.lockout,
            )
        delay = self.throttle.refusal_delay()

        def refuse() -> None:
            raise error

        return deferLater(self._clock, delay, refuse) if delay > 0 else refuse()

    def _refused(self, request: Request, deny: Deny, start: float) -> AccessDenied:
        self._log(request, deny, start)
        self.counters.outcome(request.action, False)
        self.counters.refused(
            Refusal(self._now(), str(request.action), request.key, request.addr, deny.authoriser, deny.reason)
        )
        return AccessDenied.for_action(
            request.action, deny.reason, authoriser=deny.authoriser, detail=deny.detail
        )

    def _log(self, request: Request, decision: Decision, start: float) -> None:
        allowed = isinstance(decision, Allow)
        fields: dict[str, Any] = {
            "action": str(request.action),
            "stream_key": request.key,
            "addr": request.addr,
            "conn_id": request.conn_id,
            "authoriser": decision.authoriser,
            "outcome": "allow" if allowed else "deny",
            "latency_ms": round((self._clock.seconds() - start) * 1000, 1),
        }
        if isinstance(decision, Allow):
            if decision.name is not None:
                fields["renamed_to"] = decision.name
            if decision.expires is not None:
                fields["expires"] = decision.expires
        else:
            fields["reason"] = decision.reason
        if decision.detail:
            fields["detail"] = decision.detail
        (self.log.info if allowed else self.log.warn)("Access decision", **fields)

    # -- expiry -------------------------------------------------------------------------

    def expiry_delay(self, allow: Allow) -> float | None:
        """Seconds from now until a stream allowed by ``allow`` must end (its expiry plus the grace), or
        None if it never has to."""
        if allow.expires is None or self.expiry_grace is None:
            return None
        return max(0.0, allow.expires + self.expiry_grace - self._now())

    def schedule_expiry(self, allow: Allow, end: Callable[..., object], *args: Any) -> IDelayedCall | None:
        """Call ``end(*args)`` when the permission runs out; the caller cancels the returned call if the
        stream ends first. None when nothing needs to be scheduled."""
        delay = self.expiry_delay(allow)
        return self._clock.callLater(delay, end, *args) if delay is not None else None

    # -- operations ---------------------------------------------------------------------

    def reload(self) -> list[ReloadResult]:
        """Reload every authoriser that has files (SIGHUP, the manhole). One that fails keeps its old
        state and reports the error (file and line, never a secret); the others still reload."""
        results = []
        for authoriser in self.chain.authorisers:
            reload = getattr(authoriser, "reload", None)
            if reload is None:
                continue
            try:
                reloaded = reload()
            except ConfigFileError as e:
                results.append(ReloadResult(authoriser.name, False, str(e)))
                self.log.error(
                    "Access reload failed; keeping the old table", authoriser=authoriser.name, error=str(e)
                )
                continue
            results.append(ReloadResult(authoriser.name, True, reloaded.summary, reloaded.revoked_streams))
            self.log.info("Access reloaded", authoriser=authoriser.name, summary=reloaded.summary)
        return results

    def describe(self) -> list[str]:
        """The configuration, one line each, for the manhole and the start-up log (no secrets)."""
        if not self.enabled:
            return ["open: no authoriser, anyone may connect, publish and play"]
        lines = [f"authorisers: {self.chain.describe()}"]
        if self.throttle is not None:
            lines.append(self.throttle.describe())
        grace = "never ends a live stream" if self.expiry_grace is None else f"{self.expiry_grace:g} s"
        lines.append(f"expiry grace: {grace}")
        return lines
