"""Delays between a webhook's attempts: exponential, capped, with jitter."""

from __future__ import annotations

import random as _random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """The wait before retry number ``n`` (1, 2, ...): ``min(cap, base * 2**(n-1))``, of which the
    second half is random ("equal jitter"), so waits still grow while retries from several servers
    spread out. ``random`` returns a float in [0, 1) (a test passes a constant)."""

    def __init__(self, base: float, cap: float, random: Callable[[], float] = _random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._random = random

    def delay(self, retry: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(retry - 1, 62))
        return ceiling / 2 + self._random() * ceiling / 2
