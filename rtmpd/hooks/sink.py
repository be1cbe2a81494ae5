"""What every sink shares: the event as sent (``HookEvent``), the bounded queue, the counts, shutdown.

A sink's ``offer`` runs inside the notifier's emit, on the path of a
connection or a stream: it only filters, appends to a bounded deque and
schedules the real work for a later reactor turn, so it costs O(1) and
never raises for a receiver's sake.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from rtmpd.hooks.counters import DeliveryCounts
from rtmpd.hooks.spec import HookSpec
from rtmpd.notify import ServerEvent

__all__ = ["HookEvent", "Sink"]


@dataclass(frozen=True)
class HookEvent:
    """One server event as the hooks send it: ``name``, the JSON object (``payload``: ``id``,
    ``event``, ``time`` and the event's fields) and that object encoded once (``body``)."""

    name: str
    payload: Mapping[str, Any]
    body: bytes

    @classmethod
    def of(cls, event: ServerEvent, event_id: str) -> HookEvent:
        payload = {"id": event_id, **event.as_dict()}
        # default=str: a field of an unexpected type is sent as text rather than lost.
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode("utf-8")
        return cls(event.name, payload, body)


class Sink:
    """A destination of events: a bounded FIFO ``queue`` and ``counts`` (``DeliveryCounts``).

    ``offer`` takes an event the sink's spec wants, or counts it dropped when
    ``queue_size`` events are already waiting; it never raises. Subclasses
    run ``_work`` (a later reactor turn) and say whether they are ``busy``.
    """

    log = Logger()
    kind = "sink"

    def __init__(self, spec: HookSpec, *, queue_size: int, clock: IReactorTime) -> None:
        self.spec = spec
        self.queue_size = queue_size
        self.clock = clock
        self.counts = DeliveryCounts()
        self.queue: deque[HookEvent] = deque()
        self.stopped = False
        self._drops_unreported = 0
        self._scheduled: IDelayedCall | None = None
        self._idle_waiters: list[defer.Deferred] = []

    @property
    def name(self) -> str:
        return self.spec.describe()

    @property
    def busy(self) -> bool:
        """Whether an event is being delivered (or waits to be retried)."""
        return False

    def offer(self, event: HookEvent) -> bool:
        """Queue ``event`` if this sink wants it and has room; returns whether it was queued."""
        if self.stopped or not self.spec.wants(event.name):
            return False
        if len(self.queue) >= self.queue_size:
            self.counts.dropped += 1
            if self._drops_unreported == 0:
                self.log.warn(
                    "Hook queue full; dropping events until it has room",
                    hook=self.name,
                    queue_size=self.queue_size,
                    event_name=event.name,
                )
            self._drops_unreported += 1
            return False
        if self._drops_unreported:
            self.log.warn("Hook queue has room again", hook=self.name, dropped=self._drops_unreported)
            self._drops_unreported = 0
        self.queue.append(event)
        self._schedule()
        return True

    def _schedule(self) -> None:
        if self._scheduled is None and not self.stopped:
            self._scheduled = self.clock.callLater(0, self._scheduled_work)

    def _scheduled_work(self) -> None:
        self._scheduled = None
        if not self.stopped:
            self._work()

    def _work(self) -> None:
        raise NotImplementedError

    def _check_idle(self) -> None:
        if not self.queue and not self.busy:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def when_idle(self) -> defer.Deferred:
        """A Deferred that fires once nothing is queued or being delivered."""
        d: defer.Deferred = defer.Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def stop(self) -> None:
        """Give up what is still queued (counted ``dropped``) and stop taking events."""
        if self.stopped:
            return
        self.stopped = True
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        self._abort()
        if self.queue:
            self.log.warn("Hook events not delivered before shutdown", hook=self.name, count=len(self.queue))
            self.counts.dropped += len(self.queue)
            self.queue.clear()
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    def _abort(self) -> None:
        """End what is in progress (subclasses)."""
