"""``MonotonicClock``: the server's clock, which wall-clock steps do not move.

Twisted's ``reactor.seconds()`` is wall time (``time.time``): a step of the
system clock forward (NTP, a VM resumed) would make every timeout expire at
once, and a step back would suspend them. The server's timeouts (handshake,
connect, idle, publisher, player) therefore compare times read from this
clock: wall time at start plus the monotonic time elapsed since, so it
never jumps, and it still reads as a Unix time (recording names, logs).

Scheduling is the reactor's (``callLater`` takes a relative delay and hands
it on). The reactor schedules in wall time, so after a step back a timer
fires late; the server does not rely on timers alone for that reason: its
sweep also runs when a connection is accepted or sends data and the last
sweep is overdue on this clock (``RTMPServerFactory.sweep_if_due``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer


@implementer(IReactorTime)
class MonotonicClock:
    """An ``IReactorTime`` whose ``seconds()`` only moves forward, at the pace of ``monotonic``.

    ``reactor`` does the scheduling; ``monotonic`` (``time.monotonic`` unless a
    test gives a fake) measures elapsed time; the reading is anchored to
    ``reactor.seconds()`` when the clock is made.
    """

    def __init__(self, reactor: IReactorTime, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._reactor = reactor
        self._monotonic = monotonic
        self._offset = reactor.seconds() - monotonic()

    def seconds(self) -> float:
        return self._offset + self._monotonic()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        return self._reactor.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> list[IDelayedCall]:
        return self._reactor.getDelayedCalls()

    def __getattr__(self, name: str) -> Any:
        # callFromThread and the rest of the reactor, for services handed this clock (the recorder).
        return getattr(self._reactor, name)
