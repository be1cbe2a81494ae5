"""Failure throttling: slow down and then lock out an address that keeps failing authorisation.

- Every refusal is answered after a small random delay (``refusal_delay``,
  uniform in ``delay``): a guesser learns nothing from timing and cannot
  run attempts back to back on one connection.
- ``max_failures`` refusals from one address within ``window`` seconds lock
  it out for ``lockout`` seconds: it is then refused at connect, at once.
- A success clears the address's failure count (not a lockout).
- Memory is bounded: at most ``max_addresses`` addresses are tracked for
  failures and at most ``max_addresses`` are locked; past that the least
  recently seen is forgotten. An IPv6 client is tracked by its /64, the
  block one subscriber is usually given, so an attacker cannot step through
  its own addresses to flush the table.

Time comes from the injected ``IReactorTime`` (``seconds()``; tests use a
``Clock``); randomness from the injected ``uniform(a, b)``.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict, deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from rtmpd.access.addresses import client_address

__all__ = ["FailureThrottle", "address_bucket"]

#: An IPv6 client is tracked by this prefix.
IPV6_PREFIX = 64
#: Longest unparsable address text kept as a key.
MAX_KEY_LENGTH = 64


def address_bucket(addr: str) -> str:
    """The key an address is tracked under: the IPv4 address, the IPv6 /64, or the text itself."""
    address = client_address(addr)
    if address is None:
        return addr[:MAX_KEY_LENGTH]
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class FailureThrottle:
    """Counts refusals per address and locks out an address that fails too often (module doc)."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_failures: int = 10,
        window: float = 60.0,
        lockout: float = 300.0,
        delay: tuple[float, float] = (0.5, 1.5),
        max_addresses: int = 10_000,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        if max_failures < 1 or window <= 0 or lockout < 0 or max_addresses < 1:
            raise ValueError("max_failures and max_addresses must be >= 1, window > 0, lockout >= 0")
        if not 0 <= delay[0] <= delay[1]:
            raise ValueError("delay must be (low, high) with 0 <= low <= high")
        self._clock = clock
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.delay = delay
        self.max_addresses = max_addresses
        self._uniform = uniform if uniform is not None else random.Random().uniform
        #: address -> times of its recent failures (at most max_failures), least recently failed first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        #: address -> end of its lockout, earliest end first (every lockout has the same length).
        self._locked: OrderedDict[str, float] = OrderedDict()
        self.lockouts = 0

    @property
    def tracked(self) -> int:
        """Addresses held in memory (failing or locked)."""
        return len(self._failures) + len(self._locked)

    def refusal_delay(self) -> float:
        """Seconds to wait before sending a refusal."""
        low, high = self.delay
        return min(high, max(low, self._uniform(low, high)))

    def locked_for(self, addr: str) -> float:
        """Seconds left in ``addr``'s lockout, 0 if it is not locked out."""
        self._expire_locks()
        until = self._locked.get(address_bucket(addr))
        return max(0.0, until - self._clock.seconds()) if until is not None else 0.0

    def record_failure(self, addr: str) -> bool:
        """Count a refusal; True if it locked the address out."""
        now = self._clock.seconds()
        key = address_bucket(addr)
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures and self.lockout > 0:
            self._lock(key, now)
            return True
        self._failures[key] = times
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return False

    def record_success(self, addr: str) -> None:
        self._failures.pop(address_bucket(addr), None)

    def _lock(self, key: str, now: float) -> None:
        self.lockouts += 1
        self._locked.pop(key, None)
        self._locked[key] = now + self.lockout
        self._expire_locks()
        while len(self._locked) > self.max_addresses:
            self._locked.popitem(last=False)

    def _expire_locks(self) -> None:
        now = self._clock.seconds()
        while self._locked:
            key, until = next(iter(self._locked.items()))
            if until > now:
                break
            del self._locked[key]

    def describe(self) -> str:
        return (
            f"throttle ({self.max_failures} failures in {self.window:g} s lock an address out for "
            f"{self.lockout:g} s; refusals delayed {self.delay[0]:g}-{self.delay[1]:g} s; "
            f"{len(self._locked)} locked, {len(self._failures)} tracked)"
        )
