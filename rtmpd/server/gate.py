"""``AccessGate``: one connection's questions to the access policy (``rtmpd.access``).

It builds the ``Request`` from what the connection knows (address, conn id,
tcUrl, flashVer), keeps the pending decisions so that a connection that goes
away cancels them (nothing is then published or played), and schedules the
end of a stream whose permission expires (a signed URL's ``exp`` plus the
grace): the connection is closed, and the normal teardown unpublishes and
finalises the recording.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtmpd.access.decision import ALLOW, Action, Allow, Request
from rtmpd.access.errors import AccessDenied
from rtmpd.server.clienttext import client_text
from rtmpd.server.dispatch import MAX_STRING_ARGUMENT

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from rtmpd.access.policy import AccessPolicy


class _Connection(Protocol):
    """What the gate reads of its connection (the responders' ``CommandConnection`` has it)."""

    conn_id: str
    peer_host: str
    connect_params: dict
    factory: Any

    def close(self, reason: str) -> None: ...


class AccessGate:
    """Asks the factory's policy (None: everything allowed at once) on behalf of one connection."""

    log = Logger()

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self._pending: set[Deferred] = set()

    @property
    def policy(self) -> AccessPolicy | None:
        return getattr(self.conn.factory, "access", None)

    def request(
        self, action: Action, app: str, name: str = "", query: str = "", params: Any = None
    ) -> Request:
        conn = self.conn
        params = conn.connect_params if params is None else params
        return Request(
            action,
            app,
            name,
            query,
            getattr(conn, "peer_host", ""),
            conn.conn_id,
            client_text(params.get("tcUrl"), MAX_STRING_ARGUMENT),
            client_text(params.get("flashVer"), MAX_STRING_ARGUMENT),
        )

    def authorise(self, request: Request, allowed: Callable[..., Any], *args: Any) -> Deferred:
        """``allowed(allow, *args)`` once the policy allows; the Deferred fails with ``AccessDenied``
        when it refuses; a cancelled decision (the client left) ends quietly with None."""
        policy = self.policy
        d = succeed(ALLOW) if policy is None else policy.authorise(request)
        if not d.called:
            self._pending.add(d)
            d.addBoth(self._settled, d)
        d.addCallback(allowed, *args)
        d.addErrback(self._tell_denied, request)
        d.addErrback(_quiet_when_cancelled)
        return d

    def _tell_denied(self, failure: Failure, request: Request) -> Failure:
        denied = failure.check(AccessDenied)
        notifier = self.conn.factory.registry.notifier
        if denied and notifier.active:
            error = failure.value
            notifier.emit(
                "auth_denied",
                conn_id=request.conn_id,
                peer_addr=getattr(self.conn, "peer_addr", ""),
                action=request.action,
                app=request.app,
                name=request.name,
                reason=error.reason,
                authoriser=error.authoriser,
            )
        return failure

    def _settled(self, result: Any, d: Deferred) -> Any:
        self._pending.discard(d)
        return result

    def cancel_pending(self) -> None:
        """The connection is gone: cancel every decision still pending."""
        for d in list(self._pending):
            d.cancel()
        self._pending.clear()

    def schedule_expiry(self, allow: Allow, role: str) -> IDelayedCall | None:
        """Close the connection when ``allow``'s permission runs out (None: it never does)."""
        policy = self.policy
        if policy is None:
            return None
        return policy.schedule_expiry(allow, self._expired, role)

    def _expired(self, role: str) -> None:
        self.log.info("Permission expired; disconnecting", conn_id=self.conn.conn_id, role=role)
        self.conn.close(f"{role} permission expired")


def _quiet_when_cancelled(failure: Failure) -> None:
    failure.trap(CancelledError)
    return None
