"""Counts of deliveries by result, kept on each sink (exported by the metrics as
``rtmpd_hook_deliveries_total{kind, result}``).

Results, per event and sink:

- ``ok``: delivered (a webhook answered 2xx; a command exited 0);
- ``retry``: one attempt failed and another is scheduled (webhooks only; an
  event can count several retries, then ``ok`` or ``failed``);
- ``failed``: given up (a webhook's retries exhausted or a 4xx answer; a
  command that exited non-zero, was killed on timeout or could not start);
- ``dropped``: never attempted, because the sink's queue was full, or the
  server stopped before its turn came.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESULTS", "DeliveryCounts"]

RESULTS = ("ok", "retry", "failed", "dropped")


@dataclass
class DeliveryCounts:
    """Monotonic counters of one sink (see the module doc for what each result means)."""

    ok: int = 0
    retry: int = 0
    failed: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {result: getattr(self, result) for result in RESULTS}
