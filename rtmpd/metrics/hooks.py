"""Event-hook delivery counts: incremented by the hooks, exported by the metrics.

The hooks and the metrics are wired separately (``rtmpd.tap``), in either
order: both ask ``hook_deliveries(server)`` for the one ``HookDeliveries``
of that server. Nothing here imports ``prometheus_client``: the hooks work
without the metrics.

Exported as ``rtmpd_hook_deliveries_total{kind, result}`` and
``rtmpd_hook_events_dropped_total{kind}``; ``kind`` is the sink kind
(``webhook``, ``exec``), ``result`` one of ``RESULTS`` (anything else is
counted as ``error``), so the label sets stay small whatever sinks are
configured.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

__all__ = ["RESULTS", "HookDeliveries", "hook_deliveries"]

#: Results of one delivery attempt.
RESULTS = ("ok", "error", "timeout", "retry")
#: Most distinct sink kinds counted apart; beyond, "other".
MAX_KINDS = 8


class HookDeliveries:
    """Counts of delivery attempts by (kind, result) and of events dropped (queue full) by kind."""

    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.dropped: Counter[str] = Counter()
        self._kinds: set[str] = set()

    def _kind(self, kind: str) -> str:
        if kind in self._kinds:
            return kind
        if len(self._kinds) < MAX_KINDS:
            self._kinds.add(kind)
            return kind
        return "other"

    def delivered(self, kind: str, result: str) -> None:
        """One delivery attempt of a ``kind`` sink ended with ``result`` (one of ``RESULTS``)."""
        self.deliveries[(self._kind(kind), result if result in RESULTS else "error")] += 1

    def dropped_event(self, kind: str, count: int = 1) -> None:
        """``count`` events were dropped by a ``kind`` sink (its queue was full)."""
        self.dropped[self._kind(kind)] += count


_by_server: weakref.WeakKeyDictionary[Any, HookDeliveries] = weakref.WeakKeyDictionary()


def hook_deliveries(server: Any) -> HookDeliveries:
    """The ``HookDeliveries`` of ``server`` (an ``RTMPService``), made on the first call."""
    counts = _by_server.get(server)
    if counts is None:
        counts = _by_server[server] = HookDeliveries()
    return counts
