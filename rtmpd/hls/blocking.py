"""Blocking playlist reload and preload-hint requests: what a request waits for, and when it is refused.

Sans-IO: the caller passes the ``Window`` and the time. A playlist request
with ``_HLS_msn=M`` waits until segment M is complete; with ``_HLS_part=P``
too, until part P of segment M exists (a P past the last part of a complete
segment M means part 0 of segment M+1, as the spec says). A request for a
segment or part that is not made yet waits the same way. A request more than
two segments or more than ``ADVANCE_PART_LIMIT`` parts beyond the last part
made is refused at once (the LL-HLS spec's 400).
A waiting request is answered when what it waits for exists, or times out
(the spec suggests three target durations; the caller answers 503).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable

from rtmpd.hls.segments import Availability, Window

__all__ = ["ADVANCE_PART_LIMIT", "Waiters", "availability", "too_far"]

#: How many parts beyond the last one a client may ask for before it gets a 400 (the spec's value).
ADVANCE_PART_LIMIT = 3


def availability(window: Window, msn: int, part: int | None) -> Availability:
    """Segment ``msn`` (``part`` None) or one of its parts: ready, pending, or gone for good."""
    if part is None:
        return window.segment_availability(msn)
    segment = window.segment(msn)
    if segment is not None and segment.complete and part >= len(segment.parts):
        # The spec: a part index past a segment's last part means part 0 of the following segment.
        return window.part_availability(msn + 1, 0)
    return window.part_availability(msn, part)


def too_far(window: Window, msn: int, part: int | None) -> bool:
    """Whether a request for ``msn``/``part`` is beyond what a client may wait for (a 400)."""
    newest = window.segments[-1] if window.segments else None
    if newest is None:
        last_msn, last_part = window.next_msn - 1, -1
    elif newest.complete:
        last_msn, last_part = newest.msn, None
    else:
        last_msn, last_part = newest.msn, len(newest.parts) - 1
    if msn > last_msn + 2:
        return True
    if part is None or msn < last_msn:
        return False
    if msn == last_msn:
        return last_part is not None and part - last_part > ADVANCE_PART_LIMIT
    return (msn - last_msn) + part > ADVANCE_PART_LIMIT


class Waiters:
    """Requests waiting for a segment or part, by the caller's token (any hashable).

    The viewers at the live edge all wait for the same next part: waits are grouped by what they
    wait for, so a change of the window is checked once per group, not once per request, and the
    earliest deadline is kept in a heap (stale entries are dropped lazily).
    """

    def __init__(self) -> None:
        #: token -> (msn, part, deadline, sequence number)
        self._waiting: dict[Hashable, tuple[int, int | None, float, int]] = {}
        self._groups: dict[tuple[int, int | None], dict[Hashable, None]] = {}
        self._deadlines: list[tuple[float, int, Hashable]] = []
        self._added = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, token: Hashable, msn: int, part: int | None, deadline: float) -> None:
        self.discard(token)
        self._added += 1
        self._waiting[token] = (msn, part, deadline, self._added)
        group = self._groups.get((msn, part))
        if group is None:
            group = self._groups[(msn, part)] = {}
        group[token] = None
        heapq.heappush(self._deadlines, (deadline, self._added, token))
        if len(self._deadlines) > 2 * len(self._waiting) + 64:
            # Settled waits leave their entry behind until its deadline: keep the heap bounded.
            self._deadlines = [(w[2], w[3], t) for t, w in self._waiting.items()]
            heapq.heapify(self._deadlines)

    def discard(self, token: Hashable) -> None:
        wait = self._waiting.pop(token, None)
        if wait is not None:
            target = (wait[0], wait[1])
            group = self._groups[target]
            del group[token]
            if not group:
                del self._groups[target]

    def settled(self, window: Window) -> list[tuple[Hashable, Availability]]:
        """Remove and return the waits whose target is no longer pending, with its availability."""
        done = []
        for target in list(self._groups):
            state = availability(window, target[0], target[1])
            if state is not Availability.PENDING:
                for token in self._groups.pop(target):
                    del self._waiting[token]
                    done.append((token, state))
        return done

    def expired(self, now: float) -> list[Hashable]:
        """Remove and return the waits whose deadline has passed."""
        done = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, added, token = heapq.heappop(deadlines)
            wait = self._waiting.get(token)
            if wait is not None and wait[3] == added:
                self.discard(token)
                done.append(token)
        return done

    def next_deadline(self) -> float | None:
        deadlines = self._deadlines
        while deadlines:
            deadline, added, token = deadlines[0]
            wait = self._waiting.get(token)
            if wait is not None and wait[3] == added:
                return deadline
            heapq.heappop(deadlines)  # that wait was settled or discarded
        return None

    def tokens(self) -> list[Hashable]:
        return list(self._waiting)
