"""Bit rates in and out of every connection, sampled from their byte counters.

``RateSampler`` reads each connection's ``bytes_in``/``bytes_out`` (the
``rtmpd.relay.peer.Peer`` counters) every ``SAMPLE_INTERVAL`` seconds and
keeps the samples of the last ``WINDOW`` seconds; a rate is the difference
between the newest sample and the oldest one kept, over the time between
them, in bits per second on the wire (RTMP framing included). A connection
younger than the window is measured over the time it has been sampled.
Until a connection has been sampled twice (one to two intervals after it
connects) its rate is unknown (None).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from rtmpd.relay.peer import Peer

__all__ = ["SAMPLE_INTERVAL", "WINDOW", "RateSampler"]

#: Seconds between two samples of the connections' byte counters.
SAMPLE_INTERVAL = 2.0
#: Seconds a rate is averaged over (at most; less for a younger connection).
WINDOW = 10.0


class RateSampler(service.Service):
    """Bit rates in and out of every connection in ``connections``, over the last ``window`` seconds.

    Samples every ``interval`` seconds of ``clock`` while the service runs;
    ``sample`` may also be called directly. Connections that left are
    forgotten at the next sample. Memory: a few samples per open connection.
    """

    def __init__(
        self,
        connections: Mapping[str, Peer],
        clock: IReactorTime,
        interval: float = SAMPLE_INTERVAL,
        window: float = WINDOW,
    ) -> None:
        self.connections = connections
        self.clock = clock
        self.interval = interval
        self.window = window
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        if self._loop.running:
            self._loop.stop()
        return super().stopService()

    def sample(self) -> None:
        """Take one sample of every connection's byte counters; forget connections that are gone."""
        now = self.clock.seconds()
        # A small tolerance so that a sample taken exactly one window ago still counts.
        horizon = now - self.window - self.interval / 10
        samples, rates = {}, {}
        for conn_id, peer in list(self.connections.items()):
            kept = self._samples.get(conn_id) or deque()
            if kept and kept[-1][0] >= now:
                kept.pop()  # sampled twice at one instant: the newer counts
            kept.append((now, peer.bytes_in, peer.bytes_out))
            while kept[0][0] < horizon:
                kept.popleft()
            samples[conn_id] = kept
            if len(kept) > 1:
                oldest = kept[0]
                elapsed = now - oldest[0]
                rates[conn_id] = (
                    (peer.bytes_in - oldest[1]) * 8 / elapsed,
                    (peer.bytes_out - oldest[2]) * 8 / elapsed,
                )
        self._samples, self._rates = samples, rates

    def rates(self, conn_id: str) -> tuple[float, float] | None:
        """(bits/s in, bits/s out) of a connection, or None before it has been sampled twice."""
        return self._rates.get(conn_id)
