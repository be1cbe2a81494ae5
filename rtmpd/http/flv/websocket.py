"""WebSocket-FLV players on the ``.flv`` paths (autobahn): the FLV header, then one FLV tag per binary
message, each tag framed once for every WebSocket player (autobahn's prepared messages)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from rtmpd.http.flv.peer import WebSocketPeer
from rtmpd.http.flv.resource import FLVPlayers, parse_path
from rtmpd.http.jsonio import HTTPError

#: Largest message a WebSocket player may send us (it has nothing to say; pings and closes fit).
MAX_CLIENT_MESSAGE = 4096


class FLVWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket-FLV player: access control in the opening handshake, then a ``WebSocketPeer``."""

    factory: FLVWebSocketFactory
    #: The file name ending this kind of player plays.
    suffix = ".flv"

    def onConnect(self, request: Any) -> Deferred:
        players = self.factory.players
        self.peer: WebSocketPeer | None = None
        segments = request.path.strip("/").split("/")
        try:
            if len(segments) != 2:
                raise HTTPError(404, "no such path")
            self.app, name = parse_path(segments[0], segments[1], self.suffix)
        except HTTPError as e:
            raise ConnectionDeny(e.status, e.message) from e
        self.conn_id = players.next_conn_id()
        query = urlsplit(self.http_request_uri).query
        host = str(getattr(self.transport.getPeer(), "host", "") or "")
        decision = players.decide(self.app, name, query, host, self.conn_id)
        decision.addCallbacks(self._allowed, self._refused)
        return decision

    def _allowed(self, name: str) -> None:
        self.name = name

    def _refused(self, failure: Failure) -> None:
        error = failure.value if failure.check(HTTPError) else HTTPError(500, "internal error")
        raise ConnectionDeny(error.status, error.message)

    def onOpen(self) -> None:
        players = self.factory.players
        self.peer = WebSocketPeer(
            self, self.conn_id, self.app, self.factory.prepare, **players.peer_options()
        )
        players.start(self.peer, self.app, self.name)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass  # a player has nothing to say; the size limit keeps it cheap

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if getattr(self, "peer", None) is not None:
            self.peer._end(f"websocket closed ({code})")


class FLVWebSocketFactory(WebSocketServerFactory):
    """Builds ``FLVWebSocketProtocol``s for ``players``; no compression (tags are compressed media)."""

    protocol = FLVWebSocketProtocol

    def __init__(self, players: FLVPlayers) -> None:
        super().__init__()
        self.players = players
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_CLIENT_MESSAGE,
            maxMessagePayloadSize=MAX_CLIENT_MESSAGE,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
        )
        self._last_data: bytes | None = None
        self._last_prepared: Any = None

    def prepare(self, data: bytes) -> Any:
        """``data`` as one binary message, framed once: every player of a message gets the same bytes."""
        if data is not self._last_data:
            self._last_prepared = self.prepareMessage(data, isBinary=True)
            self._last_data = data
        return self._last_prepared


def websocket_resource(players: FLVPlayers) -> WebSocketResource:
    return WebSocketResource(FLVWebSocketFactory(players))
