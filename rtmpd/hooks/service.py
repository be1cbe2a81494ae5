"""The hook service: subscribes its sinks to the server's notifier; drains them at shutdown.

Each event becomes one ``HookEvent`` (JSON encoded once, with a unique
``id``) offered to every sink. At shutdown the service keeps delivering for
up to ``shutdown_grace`` seconds: first it waits for ``before_drain`` (the
recordings' files being finalized, so that their ``record_done`` goes out),
then for every sink's queue to empty; what is left is given up (counted
``dropped``) and running commands are killed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rtmpd.hooks.counters import RESULTS
from rtmpd.hooks.sink import HookEvent, Sink
from rtmpd.notify import Notifier, ServerEvent

__all__ = ["HookService"]


class HookService(service.Service):
    """Hands every server event to ``sinks``; ``deliveries()`` totals their counts by kind and result.

    Found in the service tree as ``top.getServiceNamed("hooks")``."""

    log = Logger()
    name = "hooks"

    def __init__(
        self,
        notifier: Notifier,
        sinks: Iterable[Sink],
        clock: IReactorTime,
        *,
        shutdown_grace: float = 10.0,
        before_drain: Callable[[], defer.Deferred | None] | None = None,
        on_stopped: Callable[[], object] | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.notifier = notifier
        self.sinks = list(sinks)
        self.clock = clock
        self.shutdown_grace = shutdown_grace
        self._before_drain = before_drain
        self._on_stopped = on_stopped
        self._new_id = new_id
        self._unsubscribe: Callable[[], None] | None = None

    def deliveries(self) -> dict[tuple[str, str], int]:
        """``{(kind, result): count}`` over all sinks, every kind present and every result listed."""
        totals = {(sink.kind, result): 0 for sink in self.sinks for result in RESULTS}
        for sink in self.sinks:
            for result, count in sink.counts.as_dict().items():
                totals[sink.kind, result] += count
        return totals

    def startService(self) -> None:
        super().startService()
        if self._unsubscribe is None:
            self._unsubscribe = self.notifier.subscribe(self.event)
        for sink in self.sinks:
            self.log.info("Event hook enabled: {hook}", hook=sink.name)

    def event(self, event: ServerEvent) -> None:
        """Offer ``event`` to every sink that wants it (encoded only if one does)."""
        wanted = [sink for sink in self.sinks if sink.spec.wants(event.name)]
        if not wanted:
            return
        hook_event = HookEvent.of(event, self._new_id())
        for sink in wanted:
            sink.offer(hook_event)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        done: defer.Deferred = defer.Deferred()

        stopping: list[bool] = []

        def give_up() -> None:
            # Stopping the sinks fires their idle waiters, which come back here: once is enough.
            if not stopping:
                stopping.append(True)
                self._stop_sinks()
                done.callback(None)

        timer = self.clock.callLater(self.shutdown_grace, give_up)

        def drained(_: object) -> None:
            if timer.active():
                timer.cancel()
            give_up()

        def drain(_: object) -> defer.Deferred:
            return defer.DeferredList([sink.when_idle() for sink in self.sinks])

        before = self._before_drain() if self._before_drain is not None else None
        d = defer.maybeDeferred(lambda: before)
        d.addCallback(drain)
        d.addBoth(drained)
        return done

    def _stop_sinks(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for sink in self.sinks:
            sink.stop()
            self.log.info(
                "Event hook stopped: {hook}", hook=sink.name, kind=sink.kind, **sink.counts.as_dict()
            )
        if self._on_stopped is not None:
            self._on_stopped()
