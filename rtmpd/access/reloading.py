"""``ReloadOnHangup``: the service that reloads the access policy's files on SIGHUP.

The signal handler only schedules the reload in the reactor thread
(``callFromThread``); the reload replaces the key and secrets tables in one
step, so live streams are untouched. With ``revoke`` (``--auth-revoke-live``)
the publishers of stream keys whose key was removed are handed to it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from rtmpd.access.policy import AccessPolicy, ReloadResult

__all__ = ["ReloadOnHangup", "reload_policy"]


def reload_policy(policy: AccessPolicy, revoke: Callable[[str], object] | None = None) -> list[ReloadResult]:
    """Reload ``policy``'s files; with ``revoke``, call it with each stream key whose publish key went."""
    results = policy.reload()
    if revoke is not None:
        for result in results:
            for key in sorted(result.revoked_streams):
                revoke(key)
    return results


class ReloadOnHangup(service.Service):
    """Installs a SIGHUP handler while running (the previous handler comes back on stop)."""

    log = Logger()
    name = "access-reload"

    def __init__(
        self, policy: AccessPolicy, reactor: Any, revoke: Callable[[str], object] | None = None
    ) -> None:
        self.policy = policy
        self.reactor = reactor
        self.revoke = revoke
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> list[ReloadResult]:
        self.log.info("SIGHUP: reloading access control files")
        return reload_policy(self.policy, self.revoke)
