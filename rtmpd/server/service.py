"""The server as a Twisted service: factory, registry, housekeeping.

``RTMPService`` is the top of the service collection that ``tap.makeService``
builds and wires: listening services, the recorder and the manhole are its
children, added there.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from rtmpd.config import ServerConfig
from rtmpd.relay.fanout import Outbox
from rtmpd.relay.registry import StreamRegistry
from rtmpd.server.listening import ListeningService
from rtmpd.server.protocol import RTMPProtocol
from rtmpd.server.reconnect import Reconnector

if TYPE_CHECKING:
    from rtmpd.recording.recorder import Recorder

#: How often idle publishers and stalled players are looked for (seconds).
SWEEP_INTERVAL = 1.0
#: Seconds that publishers asked to reconnect at shutdown get to leave before shutdown goes on.
RECONNECT_GRACE = 5.0


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


class RTMPService(service.MultiService):
    """The rtmpd service collection: owns the factory and the registry; runs the sweeper.

    ``connections`` (by conn_id) and ``clock`` are the factory's; ``recorder``
    is the recording service when ``tap.makeService`` added one, else None.
    """

    def __init__(self, config: ServerConfig, clock: IReactorTime | None = None) -> None:
        super().__init__()
        self.config = config
        self.factory = RTMPServerFactory(config, clock)
        self.registry = self.factory.registry
        self.connections = self.factory.connections
        self.clock = self.factory.clock
        self.recorder: Recorder | None = None
        self._sweeper = task.LoopingCall(self.factory.sweep)
        self._sweeper.clock = self.factory.clock

    def startService(self) -> None:
        super().startService()
        self._sweeper.start(SWEEP_INTERVAL, now=False)

    def request_reconnect(
        self,
        tc_url: str | None = None,
        description: str = "Please reconnect.",
        *,
        key: str | None = None,
        force: bool = False,
    ) -> list[RTMPProtocol]:
        """Ask publishers to reconnect (Enhanced RTMP v2 ``NetConnection.Connect.ReconnectRequest``).

        Every publisher that advertised the Reconnect capability (only that
        of stream ``key`` if given; any publisher with ``force``) is asked to
        reconnect, to ``tc_url`` if given, else where it is connected now.
        Returns the connections asked; they keep publishing here until they
        leave by themselves.
        """
        reconnector = Reconnector(self.factory.connections, self.registry, self.factory.clock)
        return reconnector.request(tc_url=tc_url, description=description, key=key, force=force)

    def _move_publishers(self):
        """At shutdown: stop listening, ask capable publishers to reconnect elsewhere, wait for them to go.

        Returns None when no publisher was asked, else a Deferred that fires
        once those publishers left or after ``RECONNECT_GRACE`` seconds.
        """
        asked = self.request_reconnect(description="The server is shutting down.")
        if not asked:
            return None
        # A publisher that reconnects must not come back here: close the RTMP listeners now.
        for child in list(self):
            if isinstance(child, ListeningService):
                child.stopService()
        reconnector = Reconnector(self.factory.connections, self.registry, self.factory.clock)
        return reconnector.wait_for_departures(asked, RECONNECT_GRACE)

    def stopService(self):
        if self._sweeper.running:
            self._sweeper.stop()
        moving = self._move_publishers()
        if moving is not None:
            # Recordings are finalized (by the children) once the publishers have moved on.
            return moving.addCallback(lambda _: service.MultiService.stopService(self))
        return super().stopService()
