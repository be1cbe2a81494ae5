"""One listening endpoint as a service; failing to listen stops start-up with one line."""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure


class ListeningService(service.Service):
    log = Logger()

    def __init__(self, description: str, factory: Factory, what: str = "RTMP server", reactor=None) -> None:
        self.description = description
        self.factory = factory
        self.what = what
        self._reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        # Listen before privileges are dropped, as twistd's own strports services do.
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        outcome: list = []
        endpoints.serverFromString(reactor, self.description).listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"endpoint {self.description} did not listen synchronously")
        if isinstance(outcome[0], Failure):
            # An operator wants the reason, not twistd's traceback of it.
            sys.stderr.write(f"rtmpd: cannot listen on {self.description}: {outcome[0].getErrorMessage()}\n")
            raise SystemExit(1)
        self.port = outcome[0]
        host = self.port.getHost()
        addr = (
            f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}" if hasattr(host, "port") else str(host)
        )
        self.log.info("{what} listening", what=self.what, addr=addr, endpoint=self.description)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
