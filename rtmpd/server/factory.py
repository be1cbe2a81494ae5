"""The factory: one ``RTMPProtocol`` per connection, and what every connection shares.

It owns the stream registry, the fan-out ``Outbox``, the live connections by
conn id, the connection ids themselves, the connection limits
(``rtmpd.server.admission``), and the sweep that enforces every deadline
(``rtmpd.server.deadlines``), drops publishers silent past
``--publisher-timeout`` and players stalled past ``--play-timeout``.

Every time the sweep compares is read from the factory's clock, which is
monotonic (``rtmpd.server.clock``) unless a test brings a fake one. The sweep
runs every ``SWEEP_INTERVAL`` seconds, and also from ``sweep_if_due`` when a
connection is accepted or sends data and the last sweep is overdue: after a
wall-clock step back the reactor's timer is late, but a new client or any
input still gets the deadlines enforced.
"""

from __future__ import annotations

import itertools

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from rtmpd import conn_ids
from rtmpd.access.policy import AccessPolicy
from rtmpd.config import ServerConfig
from rtmpd.relay.fanout import Outbox
from rtmpd.relay.registry import StreamRegistry
from rtmpd.server import deadlines
from rtmpd.server.admission import Admission
from rtmpd.server.clock import MonotonicClock
from rtmpd.server.protocol import RTMPProtocol

#: How often idle publishers, stalled players and missed deadlines are looked for (seconds).
SWEEP_INTERVAL = 1.0


class RTMPServerFactory(Factory):
    """Builds one ``RTMPProtocol`` per connection and holds what they share."""

    log = Logger()
    #: ListeningService logs "RTMP server listening" with the address; Twisted's own line would repeat it.
    noisy = False

    def __init__(self, config: ServerConfig, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = MonotonicClock(reactor)
        self.config = config
        self.clock = clock
        self.registry = StreamRegistry(config, clock.seconds)
        self.outbox = Outbox(clock, config.send_window)
        if config.send_window:
            # It ends a window early for keyframes and sequence headers: it must see every message.
            self.registry.listeners.append(self.outbox)
        self.connections: dict[str, RTMPProtocol] = {}
        #: Connections closed so far, by the reason logged (``rtmpd.server.lifecycle.count_closed``).
        self.closed_by_reason: dict[str, int] = {}
        #: The access policy (``rtmpd.access``) the responders ask; None: open, as without --auth-*.
        self.access: AccessPolicy | None = None
        self._started_at = clock.seconds()
        self._ids = itertools.count(1)
        self.admission = Admission(config.max_connections, config.max_connections_per_address)
        #: When the sweep is next due (the factory's clock); see ``sweep_if_due``.
        self.next_sweep = self._started_at + SWEEP_INTERVAL

    def buildProtocol(self, addr) -> RTMPProtocol | None:
        """A protocol for a new connection, or None (Twisted then closes it) when a limit is reached."""
        now = self.clock.seconds()
        self.sweep_if_due(now)  # expired connections go before the limits are judged
        host = str(getattr(addr, "host", "") or "")
        if not self.admission.admit(host, now):
            return None
        protocol = RTMPProtocol(self)
        protocol.admitted_host = host
        return protocol

    def next_conn_id(self) -> str:
        """``c000042``, or in worker 2 of ``--workers`` ``w2-c000042`` (``rtmpd.conn_ids``)."""
        return conn_ids.conn_id(next(self._ids))

    def uptime_ms(self) -> int:
        return int((self.clock.seconds() - self._started_at) * 1000) & 0xFFFFFFFF

    def sweep_if_due(self, now: float) -> None:
        """Sweep now if the last sweep is ``SWEEP_INTERVAL`` old (cheap: called for every input)."""
        if now >= self.next_sweep:
            self.sweep()

    def sweep(self) -> None:
        """Abort connections past a deadline, publishers silent past the publisher timeout and players
        stalled past the play timeout; log the refusals counted since the last sweep."""
        now = self.clock.seconds()
        self.next_sweep = now + SWEEP_INTERVAL
        config = self.config
        for conn in list(self.connections.values()):
            missed = deadlines.expired(conn, now, config)
            if missed is not None:
                self.log.warn(
                    missed.message,
                    conn_id=conn.conn_id,
                    peer_addr=conn.peer_addr,
                    timeout=missed.limit,
                    waited_seconds=round(missed.waited, 3),
                )
                conn.abort(missed.reason)
        self.admission.flush_refusals(now)
        for publication in self.registry.idle_publishers():
            self.log.warn(
                "Publisher timed out",
                conn_id=publication.peer.conn_id,
                idle_seconds=round(now - publication.last_activity, 3),
            )
            publication.peer.abort("publisher timeout")
        limit = config.play_timeout
        for conn in list(self.connections.values()):
            if conn.congested and not conn.aborted and now - conn.paused_since >= limit:
                self.log.warn(
                    "Player timed out",
                    conn_id=conn.conn_id,
                    stalled_seconds=round(now - conn.paused_since, 3),
                )
                conn.abort("play timeout")
