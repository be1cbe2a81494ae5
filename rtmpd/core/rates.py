"""Per-connection message and byte rate budgets, as token buckets; time is passed in.

Before ``publish`` a connection sends commands and control messages, a few
a second; after it, media at up to tens of megabits. A ``RateBudget`` holds
one bucket of messages and one of bytes, starting full at ``rate_window``
seconds of each rate, refilled by the time that passes between calls, and
raises ``RateLimitExceeded`` when a spend takes either below zero.
``to_media`` switches to the (much larger) media rates once, with full
buckets. Each call is a handful of float operations, whatever it counts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rtmpd.core.errors import RateLimitExceeded
from rtmpd.core.limits import Limits

if TYPE_CHECKING:
    from rtmpd.core.chunks import ChunkReader

__all__ = ["RateBudget"]


class RateBudget:
    """Token buckets of messages and bytes for one connection (see the module docstring).

    A rate of 0 (or less) means no budget. Until ``spend`` has been given a
    time, nothing is checked: a budget needs a clock to mean anything.
    """

    __slots__ = ("_limits", "_message_rate", "_byte_rate", "_messages", "_bytes", "_last", "_counted")
    __slots__ += ("media",)

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._last: float | None = None
        # The reader's (messages, chunks) counts already spent.
        self._counted = (0, 0)
        #: True once ``to_media`` was called.
        self.media = False
        self._set_rates(limits.command_messages_per_second, limits.command_bytes_per_second)

    def _set_rates(self, message_rate: float, byte_rate: float) -> None:
        window = self._limits.rate_window
        self._message_rate = message_rate
        self._byte_rate = byte_rate
        self._messages = message_rate * window if message_rate > 0 else math.inf
        self._bytes = byte_rate * window if byte_rate > 0 else math.inf

    def to_media(self) -> None:
        """Switch to the media rates (``publish`` was asked for); the buckets start full."""
        if not self.media:
            self.media = True
            limits = self._limits
            self._set_rates(limits.media_messages_per_second, limits.media_bytes_per_second)

    def spend_read(self, now: float, reader: ChunkReader, size: int) -> None:
        """Spend what ``reader`` parsed since the last call: its messages, and ``size`` bytes plus
        ``Limits.chunk_cost`` per chunk. Raises RateLimitExceeded."""
        messages, chunks = self._counted
        self._counted = (reader.messages_received, reader.chunks_received)
        chunks = reader.chunks_received - chunks
        self.spend(now, reader.messages_received - messages, size + chunks * self._limits.chunk_cost)

    def spend(self, now: float | None, messages: int, size: int) -> None:
        """Take ``messages`` and ``size`` bytes out of the buckets at time ``now`` (seconds, any epoch).

        ``now`` None spends without refilling (a count made between two reads).
        Raises RateLimitExceeded when a bucket goes below zero.
        """
        last = self._last
        if now is not None:
            if last is None:
                self._last = now
            else:
                # A clock that steps back refills nothing, and counting goes on from the new time
                # (an hour's step back must not stop refills for an hour).
                self._last = now
                elapsed = now - last
                if elapsed > 0:
                    window = self._limits.rate_window
                    rate = self._message_rate
                    if rate > 0:
                        self._messages = min(rate * window, self._messages + rate * elapsed)
                    rate = self._byte_rate
                    if rate > 0:
                        self._bytes = min(rate * window, self._bytes + rate * elapsed)
        elif last is None:
            return
        self._messages -= messages
        self._bytes -= size
        if self._messages < 0 or self._bytes < 0:
            phase = "media" if self.media else "command"
            if self._messages < 0:
                what = f"more than {self._message_rate:g} messages a second"
            else:
                what = f"more than {self._byte_rate:g} bytes a second"
            raise RateLimitExceeded(f"{what} ({phase} budget, {self._limits.rate_window:g} s window)")
