"""The factory: one ``RTMPProtocol`` per connection, and what every connection shares.

It owns the stream registry, the fan-out ``Outbox``, the live connections by
conn id, the connection ids themselves, and the sweep that drops publishers
silent past ``--publisher-timeout`` and players stalled past ``--play-timeout``.
"""

from __future__ import annotations

import itertools

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from rtmpd.access.policy import AccessPolicy
from rtmpd.config import ServerConfig
from rtmpd.relay.fanout import Outbox
from rtmpd.relay.registry import StreamRegistry
from rtmpd.server.protocol import RTMPProtocol


class RTMPServerFactory(Factory):
    """Builds one ``RTMPProtocol`` per connection and holds what they share."""

    log = Logger()
    #: ListeningService logs "RTMP server listening" with the address; Twisted's own line would repeat it.
    noisy = False

    def __init__(self, config: ServerConfig, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.config = config
        self.clock = clock
        self.registry = StreamRegistry(config, clock.seconds)
        self.outbox = Outbox(clock)
        self.connections: dict[str, RTMPProtocol] = {}
        #: Connections closed so far, by the reason logged (``rtmpd.server.lifecycle.count_closed``).
        self.closed_by_reason: dict[str, int] = {}
        #: The access policy (``rtmpd.access``) the responders ask; None: open, as without --auth-*.
        self.access: AccessPolicy | None = None
        self._started_at = clock.seconds()
        self._ids = itertools.count(1)

    def buildProtocol(self, addr) -> RTMPProtocol:
        return RTMPProtocol(self)

    def next_conn_id(self) -> str:
        return f"c{next(self._ids):06d}"

    def uptime_ms(self) -> int:
        return int((self.clock.seconds() - self._started_at) * 1000) & 0xFFFFFFFF

    def sweep(self) -> None:
        """Drop publishers silent past the publisher timeout and players stalled past the play timeout."""
        now = self.clock.seconds()
        for publication in self.registry.idle_publishers():
            self.log.warn(
                "Publisher timed out",
                conn_id=publication.peer.conn_id,
                idle_seconds=round(now - publication.last_activity, 3),
            )
            publication.peer.abort("publisher timeout")
        limit = self.config.play_timeout
        for conn in list(self.connections.values()):
            if conn.congested and now - conn.paused_since >= limit:
                self.log.warn(
                    "Player timed out",
                    conn_id=conn.conn_id,
                    stalled_seconds=round(now - conn.paused_since, 3),
                )
                conn.abort("play timeout")
