"""The timestamps one push connection sends: from 0 on a new connection, never back across publishers.

``Timeline.stamp(ts)`` maps a source timestamp to the destination's. The
first one after ``restart`` (a new connection) maps to 0; the first one
after ``continue_later`` (a new publisher on the same connection) maps to
the last timestamp sent plus the time that went by (at least 1 ms), and no
later one maps below that point, so the destination never sees time go
back. Within one publisher the source's spacing is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Timeline"]

_MASK32 = 0xFFFFFFFF


class Timeline:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._offset: int | None = None
        self._floor = 0
        self.last: int | None = None
        self._last_at = 0.0

    def restart(self) -> None:
        """A new connection: the next timestamp becomes 0."""
        self._offset = None
        self.last = None

    def continue_later(self) -> None:
        """A new publisher on the same connection: continue after what was sent."""
        self._offset = None

    def stamp(self, timestamp: int) -> int:
        if self._offset is None:
            if self.last is None:
                target = 0
            else:
                gap = int((self._now() - self._last_at) * 1000)
                target = self.last + max(1, gap)
            self._offset = target - timestamp
            self._floor = target
        out = timestamp + self._offset
        if out < self._floor:
            out = self._floor
        self.last = out
        self._last_at = self._now()
        return out & _MASK32

    def current(self) -> int:
        """Where the destination is now (for data messages, which have no time of their own)."""
        return (self.last or 0) & _MASK32
