"""The manhole's door: where it listens, and what a stranger knocking on it meets before logging in.

- ``loopback_default``/``manhole_endpoint``: the endpoint is bound to loopback
  unless it names an interface, and a ``unix:`` socket is created mode 0600
  unless it names a ``mode=``.
- ``ManholeDoor``: the limits of ``rtmpd.admin.manhole_options.ManholeLimits``
  kept for one manhole: connections waiting to log in (at most
  ``max_unauthenticated``; more are closed as they arrive), and the failed
  logins per address (``rtmpd.access.throttle.FailureThrottle`` on the
  monotonic clock: ``max_failures`` within ``lockout`` seconds lock the
  address out for ``lockout`` seconds, and its connections are closed as they
  arrive). Refused connections log at debug only.
- ``ManholeTransport``: the SSH server transport of one connection. It is
  closed if it has not logged in ``login_grace`` seconds after it opened
  (one INFO line), and a client's ordinary disconnect message is not logged
  as a server error.
"""

from __future__ import annotations

import re
import time
from typing import Any

from twisted.conch.ssh import transport
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger

from rtmpd.access.throttle import FailureThrottle
from rtmpd.admin.manhole_options import ManholeLimits
from rtmpd.core.text import ascii_digits

__all__ = ["ManholeDoor", "ManholeTransport", "loopback_default", "manhole_endpoint"]

#: Endpoint types that take ``interface=``, and the loopback address each binds to by default.
_LOOPBACK = {"tcp": "127.0.0.1", "ssl": "127.0.0.1", "tcp6": "\\:\\:1"}
_ARGUMENTS = re.compile(r"(?<!\\):")


def loopback_default(description: str) -> str:
    """``description`` bound to loopback unless it names an interface: ``2222`` and ``tcp:2222`` become
    ``tcp:2222:interface=127.0.0.1``; ``tcp6:`` gets ``::1``; ``unix:`` and others are left alone."""
    if ascii_digits(description):
        description = f"tcp:{description}"
    kind, _, rest = description.partition(":")
    if kind in _LOOPBACK and not any(arg.startswith("interface=") for arg in _ARGUMENTS.split(rest)):
        return f"{description}:interface={_LOOPBACK[kind]}"
    return description


def manhole_endpoint(description: str) -> str:
    """Where the manhole listens: ``loopback_default(description)``, and a ``unix:`` socket created
    mode 0600 (only the server's user may connect) unless the description names a ``mode=``."""
    description = loopback_default(description)
    kind, _, rest = description.partition(":")
    if kind == "unix" and not any(arg.startswith("mode=") for arg in _ARGUMENTS.split(rest)):
        return f"{description}:mode=600"
    return description


class _MonotonicClock:
    """``seconds()`` on the monotonic clock: a lockout neither ends nor lasts longer when the clock steps."""

    @staticmethod
    def seconds() -> float:
        return time.monotonic()


def address_text(addr: Any) -> tuple[str, str]:
    """(host the failures are counted under, "host:port" for the logs) of an IAddress."""
    host = getattr(addr, "host", None)
    if host is None:
        return "unix", str(addr)
    return host, f"{host}:{getattr(addr, 'port', '')}"


class ManholeDoor:
    """The limits one manhole keeps against strangers (module doc); ``clock`` runs the grace timers."""

    log = Logger()

    def __init__(self, limits: ManholeLimits | None = None, clock: IReactorTime | None = None) -> None:
        self.limits = limits if limits is not None else ManholeLimits()
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.throttle = FailureThrottle(
            _MonotonicClock(),
            max_failures=self.limits.max_failures,
            window=self.limits.lockout,
            lockout=self.limits.lockout,
        )
        #: Connections not logged in yet.
        self.unauthenticated = 0

    def admits(self, addr: Any) -> bool:
        """Whether a connection from ``addr`` may start (else it is closed at once)."""
        host, _ = address_text(addr)
        if self.throttle.locked_for(host) > 0:
            self.log.debug("Manhole connection refused: address locked out", address=host)
            return False
        if self.unauthenticated >= self.limits.max_unauthenticated:
            self.log.debug(
                "Manhole connection refused: too many connections waiting to log in",
                address=host,
                waiting=self.unauthenticated,
            )
            return False
        return True


class ManholeTransport(transport.SSHServerTransport):
    """The SSH server transport of one manhole connection (module doc). The factory sets ``door`` and
    ``address`` ("host:port") before the connection starts."""

    log = Logger()
    door: ManholeDoor
    address = ""
    _grace: IDelayedCall | None = None
    #: Counted among the door's connections waiting to log in.
    _waiting = False

    def connectionMade(self) -> None:
        door = self.door
        self._waiting = True
        door.unauthenticated += 1
        self._grace = door.clock.callLater(door.limits.login_grace, self._grace_expired)
        super().connectionMade()

    def setService(self, service) -> None:
        super().setService(service)
        if service.name == b"ssh-connection":
            # Logged in: the grace time is over and the place among those waiting is free.
            self._logged_in()

    def _logged_in(self) -> None:
        grace, self._grace = self._grace, None
        if grace is not None and grace.active():
            grace.cancel()
        if self._waiting:
            self._waiting = False
            self.door.unauthenticated -= 1

    def _grace_expired(self) -> None:
        self._grace = None
        self.log.info(
            "Manhole connection closed: not logged in within the grace time",
            peer=self.address,
            grace=self.door.limits.login_grace,
        )
        self.loseConnection()

    def connectionLost(self, reason=connectionDone) -> None:
        self._logged_in()
        super().connectionLost(reason)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # OpenSSH says goodbye with a disconnect message (code 11, "disconnected by
        # user"); the stock transport logs every such message at error level.
        self.log.info(
            "Manhole client disconnected", code=reasonCode, reason=description.decode("utf-8", "replace")
        )
