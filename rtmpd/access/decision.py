"""What an authoriser is asked and answers: ``Request``, ``Allow``/``Deny``, ``Authoriser``, ``Chain``.

An authoriser has one method per action (``connect``, ``publish``,
``play``), each taking a ``Request`` and returning a Deferred that fires
with a decision: ``Allow`` (optionally renaming the stream, setting
recording on or off, and saying when the permission expires) or ``Deny``
(with a public reason and a private detail). An authoriser never fails its
Deferred on purpose; ``Chain`` turns an unexpected failure into a ``Deny``
(fail closed).

``Chain`` asks its authorisers in order and stops at the first ``Deny``, so
a cheap local check (addresses, signatures, keys) spares the HTTP round
trip. Every authoriser sees the client's own request, not a renamed one:
each checks what the client presented. The allows are merged (``merge``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from rtmpd.access.counters import AccessCounters

__all__ = [
    "ALLOW",
    "Action",
    "Allow",
    "Authoriser",
    "Chain",
    "Decision",
    "Deny",
    "Reloaded",
    "Request",
    "merge",
]


class Action(enum.StrEnum):
    """The three things a client may be allowed to do."""

    CONNECT = "connect"
    PUBLISH = "publish"
    PLAY = "play"


@dataclass(frozen=True)
class Request:
    """What a client asks for, as the server saw it.

    ``name`` is the stream name without its query (empty for connect);
    ``query`` is what followed ``?`` in the name (for connect, what followed
    ``?`` in the app or tcUrl); ``addr`` is the client's IP address as text
    (empty when the transport has none, e.g. a UNIX socket).
    """

    action: Action
    app: str
    name: str = ""
    query: str = ""
    addr: str = ""
    conn_id: str = ""
    tc_url: str = ""
    flash_ver: str = ""

    @property
    def key(self) -> str:
        """``app/name`` (or ``app`` for connect), as logs show stream keys."""
        return f"{self.app}/{self.name}" if self.name else self.app

    def as_json(self) -> dict[str, str]:
        """The JSON object an HTTP callback receives (docs/access.md)."""
        return {
            "action": str(self.action),
            "app": self.app,
            "name": self.name,
            "query": self.query,
            "addr": self.addr,
            "conn_id": self.conn_id,
            "tcUrl": self.tc_url,
            "flashVer": self.flash_ver,
        }


@dataclass(frozen=True)
class Allow:
    """Permission, with what the authoriser wants done with it.

    ``name``: publish or play this stream name instead of the requested one
    (None: keep it). ``record``: False turns recording off for this stream,
    True asks for it, None leaves the server's setting. ``expires``: Unix
    time at which the permission ends (signed URLs); the server ends the
    stream then, plus its grace (``AccessPolicy.expiry_delay``).
    ``authoriser`` and ``detail`` are for logs.
    """

    name: str | None = None
    record: bool | None = None
    expires: float | None = None
    authoriser: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Deny:
    """Refusal. ``reason`` is public (it reaches the client); ``detail`` is logged only."""

    reason: str
    authoriser: str = ""
    detail: str = ""


Decision = Allow | Deny


@dataclass(frozen=True)
class Reloaded:
    """What an authoriser's optional ``reload()`` did: a summary for the log (counts, never a secret) and
    the stream keys whose permission to publish was withdrawn (``--auth-revoke-live`` ends them)."""

    summary: str
    revoked_streams: frozenset[str] = frozenset()


#: Allow, changing nothing.
ALLOW = Allow()


def merge(allows: Sequence[Allow]) -> Allow:
    """One Allow from several: the last rename wins, any ``record=False`` wins over True, the earliest
    expiry wins; ``authoriser`` lists who allowed."""
    name: str | None = None
    record: bool | None = None
    expires: float | None = None
    for allow in allows:
        if allow.name is not None:
            name = allow.name
        if allow.record is not None:
            record = allow.record if record is None else (record and allow.record)
        if allow.expires is not None:
            expires = allow.expires if expires is None else min(expires, allow.expires)
    who = ",".join(a.authoriser for a in allows if a.authoriser)
    details = "; ".join(a.detail for a in allows if a.detail)
    return Allow(name=name, record=record, expires=expires, authoriser=who, detail=details)


class Authoriser:
    """The interface: ``connect``, ``publish`` and ``play`` each return a Deferred of a ``Decision``.

    The base class answers every action with ``check(request)``, which
    allows; a synchronous authoriser overrides ``check``, an asynchronous one
    the action methods. ``name`` appears in logs and counters;
    ``describe()`` is one line for the manhole and never shows a secret.
    An authoriser with a file may also have ``reload() -> Reloaded``, which
    raises a ``ConfigFileError`` and keeps its old state when the file is bad.
    """

    name = "authoriser"

    def check(self, request: Request) -> Decision | Deferred[Decision]:
        return ALLOW

    def connect(self, request: Request) -> Deferred[Decision]:
        return maybeDeferred(self.check, request)

    def publish(self, request: Request) -> Deferred[Decision]:
        return maybeDeferred(self.check, request)

    def play(self, request: Request) -> Deferred[Decision]:
        return maybeDeferred(self.check, request)

    def authorise(self, request: Request) -> Deferred[Decision]:
        """The method of ``request.action``."""
        method: Callable[[Request], Deferred[Decision]] = getattr(self, str(request.action))
        return method(request)

    def describe(self) -> str:
        return self.name


@dataclass
class _Run:
    request: Request
    allows: list[Allow] = field(default_factory=list)


class Chain(Authoriser):
    """All must allow: asks each authoriser in order, stops at the first ``Deny``.

    An authoriser whose Deferred fails (a bug) counts as a ``Deny`` with the
    public reason "authorisation failed"; the failure is logged. Cancelling
    the returned Deferred cancels the authoriser being asked. With no
    authorisers, everything is allowed. ``counters`` (optional) counts each
    authoriser's decisions by action and result.
    """

    name = "chain"
    log = Logger()

    def __init__(self, authorisers: Sequence[Authoriser], counters: AccessCounters | None = None) -> None:
        self.authorisers = tuple(authorisers)
        self._counters = counters

    def connect(self, request: Request) -> Deferred[Decision]:
        return self._ask(_Run(request), 0)

    def publish(self, request: Request) -> Deferred[Decision]:
        return self._ask(_Run(request), 0)

    def play(self, request: Request) -> Deferred[Decision]:
        return self._ask(_Run(request), 0)

    def _ask(self, run: _Run, index: int) -> Deferred[Decision]:
        if index == len(self.authorisers):
            return succeed(merge(run.allows))
        authoriser = self.authorisers[index]
        d = maybeDeferred(authoriser.authorise, run.request)
        d.addErrback(self._failed, authoriser, run.request)
        d.addCallback(self._decided, authoriser, run, index)
        return d

    def _failed(self, failure: Failure, authoriser: Authoriser, request: Request) -> Deny | Failure:
        if failure.check(CancelledError):
            return failure  # the caller gave up (the client left): nothing to decide, nothing wrong
        self.log.failure(
            "Authoriser failed; refusing",
            failure,
            authoriser=authoriser.name,
            action=str(request.action),
            conn_id=request.conn_id,
        )
        return Deny("authorisation failed", authoriser.name, f"{failure.type.__name__} in {authoriser.name}")

    def _decided(self, decision: Any, authoriser: Authoriser, run: _Run, index: int) -> Any:
        if not isinstance(decision, (Allow, Deny)):
            decision = Deny(
                "authorisation failed", authoriser.name, f"{authoriser.name} answered {decision!r}"
            )
        if not decision.authoriser:
            decision = _with_authoriser(decision, authoriser.name)
        if self._counters is not None:
            self._counters.authoriser_decision(
                run.request.action, isinstance(decision, Allow), decision.authoriser
            )
        if isinstance(decision, Deny):
            return decision
        run.allows.append(decision)
        return self._ask(run, index + 1)

    def describe(self) -> str:
        return " -> ".join(a.describe() for a in self.authorisers) or "open (no authorisers)"


def _with_authoriser(decision: Decision, name: str) -> Decision:
    if isinstance(decision, Allow):
        return Allow(decision.name, decision.record, decision.expires, name, decision.detail)
    return Deny(decision.reason, name, decision.detail)
