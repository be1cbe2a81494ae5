"""Access-control counters, kept as plain numbers for the metrics exporter and the manhole to read.

Nothing here exports or formats: ``AccessCounters`` only counts. It holds

- ``outcomes[(action, result)]``: final decisions (``result`` is ``allow`` or
  ``deny``);
- ``decisions[(action, result, authoriser)]``: each authoriser's own answer,
  plus ``throttle`` for refusals at connect of a locked-out address;
- ``callback_results[result]``: the HTTP callback's outcomes (``allow``,
  ``deny``, ``cached``, ``error``, ``timeout``, ``garbage``);
- ``callback_latency``: callback round-trip times (count, sum, cumulative
  buckets in the Prometheus manner, the last few samples);
- ``refusals``: the last ``RECENT_REFUSALS`` refusals, for the manhole.

Memory is bounded: the keys of the counters come from small fixed sets, and
the sample lists are fixed-size deques.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS", "RECENT_REFUSALS", "AccessCounters", "LatencySamples", "Refusal"]

#: Upper bounds (seconds) of the callback latency buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Refusals remembered for the manhole.
RECENT_REFUSALS = 100
#: Latency samples remembered as they were.
RECENT_SAMPLES = 256


class LatencySamples:
    """Durations in seconds: a count, a sum, cumulative bucket counts and the last few samples."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = buckets
        #: ``buckets[i]`` counts samples <= ``bounds[i]`` (cumulative, as Prometheus wants them).
        self.buckets = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_SAMPLES)

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.count += 1
        self.sum += seconds
        self.recent.append(seconds)
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.buckets[i] += 1


@dataclass(frozen=True)
class Refusal:
    """One refusal as the manhole lists it (no secret: the query is not kept)."""

    time: float
    action: str
    key: str
    addr: str
    authoriser: str
    reason: str


class AccessCounters:
    """The counters of one server's access control (module doc)."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.callback_results: Counter[str] = Counter()
        self.callback_latency = LatencySamples()
        self.refusals: deque[Refusal] = deque(maxlen=RECENT_REFUSALS)

    def authoriser_decision(self, action: str, allowed: bool, authoriser: str) -> None:
        self.decisions[(str(action), "allow" if allowed else "deny", authoriser or "?")] += 1

    def outcome(self, action: str, allowed: bool) -> None:
        self.outcomes[(str(action), "allow" if allowed else "deny")] += 1

    def refused(self, refusal: Refusal) -> None:
        self.refusals.append(refusal)

    def callback(self, result: str, latency: float | None = None) -> None:
        self.callback_results[result] += 1
        if latency is not None:
            self.callback_latency.observe(latency)
