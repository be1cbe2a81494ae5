"""A recording file's timeline: RTMP timestamps rebased to 0 at the file's first frame.

Rules it keeps: the 32-bit millisecond wrap is crossed (a difference of
more than half the range is taken the other way round); a tag a little
older than the file's first (audio interleaved late) goes at 0 (a file has
no negative time); a jump back of more than ``MAX_BACKWARD_JUMP_MS`` behind
the file's latest is the publisher's clock going back (an encoder restart),
and the file goes on from where it is.
"""

from __future__ import annotations

__all__ = ["MAX_BACKWARD_JUMP_MS", "FileTimeline"]

#: Interleaving puts audio and video tags somewhat out of order; a timestamp further back than this
#: behind the file's latest is a jump of the publisher's clock.
MAX_BACKWARD_JUMP_MS = 2000

_HALF_RANGE = 0x80000000


class FileTimeline:
    """Where each tag goes on one file's timeline (module doc); ``last`` is the latest time placed."""

    def __init__(self) -> None:
        self._base = 0
        self.last = 0

    def start(self, timestamp: int) -> None:
        """A new file starts at ``timestamp``: it is 0 there."""
        self._base = timestamp
        self.last = 0

    def place(self, timestamp: int) -> int:
        """``timestamp`` on the file's timeline (ms from its start, never negative)."""
        rel = (timestamp - self._base) & 0xFFFFFFFF
        if rel >= _HALF_RANGE:
            rel -= 0x100000000
        if rel < self.last - MAX_BACKWARD_JUMP_MS:
            self._base = (timestamp - self.last) & 0xFFFFFFFF
            return self.last
        return max(rel, 0)

    def advance(self, rel: int) -> bool:
        """A tag at ``rel`` was written: True if it is the latest so far."""
        if rel > self.last:
            self.last = rel
            return True
        return False
