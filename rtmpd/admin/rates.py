"""Bit rates in and out of every connection, sampled from their byte counters.

``RateSampler`` reads each connection's ``bytes_in``/``bytes_out`` (the
``rtmpd.relay.peer.Peer`` counters) every ``SAMPLE_INTERVAL`` seconds; a rate
is the difference over the last interval, in bits per second on the wire
(RTMP framing included). Until a connection has been sampled twice (one to
two intervals after it connects) its rate is unknown (None).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from rtmpd.relay.peer import Peer

__all__ = ["SAMPLE_INTERVAL", "RateSampler"]

#: Seconds between two samples of the connections' byte counters.
SAMPLE_INTERVAL = 2.0


class RateSampler(service.Service):
    """Bit rates in and out of every connection in ``connections``, over the last sampling interval.

    Samples every ``interval`` seconds of ``clock`` while the service runs;
    ``sample`` may also be called directly. Connections that left are
    forgotten at the next sample.
    """

    def __init__(
        self, connections: Mapping[str, Peer], clock: IReactorTime, interval: float = SAMPLE_INTERVAL
    ) -> None:
        self.connections = connections
        self.clock = clock
        self.interval = interval
        self._last: dict[str, tuple[float, int, int]] = {}
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
        last, rates = {}, {}
        for conn_id, peer in list(self.connections.items()):
            current = last[conn_id] = (now, peer.bytes_in, peer.bytes_out)
            previous = self._last.get(conn_id)
            if previous is not None and now > previous[0]:
                elapsed = now - previous[0]
                rates[conn_id] = (
                    (current[1] - previous[1]) * 8 / elapsed,
                    (current[2] - previous[2]) * 8 / elapsed,
                )
        self._last, self._rates = last, rates

    def rates(self, conn_id: str) -> tuple[float, float] | None:
        """(bits/s in, bits/s out) of a connection, or None before it has been sampled twice."""
        return self._rates.get(conn_id)
