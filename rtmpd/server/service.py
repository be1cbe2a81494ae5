"""The server as a Twisted service: the factory, the housekeeping sweep, the shutdown sequence.

``RTMPService`` is the top of the service collection that ``tap.makeService``
builds and wires: listening services, the recorder and the manhole are its
children, added there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from rtmpd.config import ServerConfig
from rtmpd.server.factory import SWEEP_INTERVAL, RTMPServerFactory
from rtmpd.server.listening import ListeningService
from rtmpd.server.protocol import RTMPProtocol
from rtmpd.server.reconnect import Reconnector

if TYPE_CHECKING:
    from rtmpd.recording.recorder import Recorder

#: Seconds that publishers asked to reconnect at shutdown get to leave before shutdown goes on.
RECONNECT_GRACE = 5.0


class RTMPService(service.MultiService):
    """The rtmpd service collection: owns the factory and the registry; runs the sweeper.

    ``connections`` (by conn_id) and ``clock`` are the factory's (with ``--http``
    the tap widens ``connections`` to a ChainMap of them and the HTTP players, so
    the views and metrics see both); ``recorder`` is the recording service when
    ``tap.makeService`` added one, else None.
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
