"""Access control of HLS requests: the server's access policy asked for ``play``, its answers remembered.

Every HLS request (playlist, init segment, segment, part) is a play
request: the credential query (a signed URL's ``exp``/``sig``) is checked
like an RTMP player's stream name query. A viewer makes several requests a
second, so an allow is remembered for ``remember`` seconds (never past the
permission's own ``expires``) per stream, credential and address; a refusal
is not remembered (the policy's throttle sees every failure).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed

from rtmpd.access.decision import ALLOW, Action, Allow, Request

if TYPE_CHECKING:
    from rtmpd.access.policy import AccessPolicy

__all__ = ["PlayPermissions"]

#: Most remembered allows; past it, the memory starts afresh.
MAX_REMEMBERED = 4096


class PlayPermissions:
    """Asks ``policy()`` (None or an open policy: everything is allowed) whether a viewer may play."""

    def __init__(
        self,
        policy: Callable[[], AccessPolicy | None],
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
        remember: float = 10.0,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._wall = wall
        self.remember = remember
        self._allowed: dict[tuple[str, str, str, str], tuple[float, Allow]] = {}
        self._ids = itertools.count(1)

    @property
    def enabled(self) -> bool:
        policy = self._policy()
        return policy is not None and policy.enabled

    def remembered(self, app: str, name: str, credential: str, addr: str) -> Allow | None:
        """The ``Allow`` of a viewer known to be allowed now (everyone, when access control is off),
        else None: then ask ``check``."""
        policy = self._policy()
        if policy is None or not policy.enabled:
            return ALLOW
        remembered = self._allowed.get((app, name, credential, addr))
        if remembered is not None and remembered[0] > self._clock():
            return remembered[1]
        return None

    def check(self, app: str, name: str, credential: str, addr: str) -> Deferred[Allow]:
        """Fires with the ``Allow``, or fails with ``PlayDenied`` (an ``AccessDenied``)."""
        policy = self._policy()
        if policy is None or not policy.enabled:
            return succeed(ALLOW)
        key = (app, name, credential, addr)
        now = self._clock()
        remembered = self._allowed.get(key)
        if remembered is not None and remembered[0] > now:
            return succeed(remembered[1])
        request = Request(Action.PLAY, app, name, credential, addr, f"hls-{next(self._ids)}")
        d = policy.authorise(request)
        d.addCallback(self._remember, key, now)
        return d

    def _remember(self, allow: Allow, key: tuple[str, str, str, str], now: float) -> Allow:
        until = now + self.remember
        if allow.expires is not None:
            until = min(until, now + allow.expires - self._wall())
        if len(self._allowed) >= MAX_REMEMBERED:
            self._allowed.clear()
        self._allowed[key] = (until, allow)
        return allow
