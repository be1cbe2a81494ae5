"""The retry schedule of a relay: exponential backoff with jitter, reset after a healthy while.

Delays double from ``initial`` up to ``maximum``; each is drawn from
``[delay * (1 - jitter), delay]`` so that many destinations that failed
together do not come back together, and a later delay is never shorter than
an earlier one (with ``factor * (1 - jitter) >= 1``). A connection that
stayed up ``healthy_after`` seconds resets the schedule.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self,
        *,
        initial: float = 1.0,
        factor: float = 2.0,
        maximum: float = 30.0,
        jitter: float = 0.2,
        healthy_after: float = 60.0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not (initial > 0 and factor >= 1 and maximum >= initial and 0 <= jitter < 1):
            raise ValueError("backoff needs initial > 0, factor >= 1, maximum >= initial, 0 <= jitter < 1")
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.jitter = jitter
        self.healthy_after = healthy_after
        self._uniform = uniform
        #: Failures since the last reset.
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, counting one more failure."""
        delay = min(self.maximum, self.initial * self.factor**self.failures)
        self.failures += 1
        return self._uniform(delay * (1 - self.jitter), delay)

    def connection_ended(self, healthy_for: float) -> None:
        """A connection that worked for ``healthy_for`` seconds ended: reset if that was long enough."""
        if healthy_for >= self.healthy_after:
            self.reset()

    def reset(self) -> None:
        self.failures = 0
