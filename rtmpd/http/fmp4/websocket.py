"""WebSocket-fMP4 players on the ``.mp4`` paths (autobahn): the init segment, then one fragment per
binary message, with the WebSocket-FLV players' access control, slow-player policy, timeouts and logs."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Request

from rtmpd.http.flv.peer import WebSocketPeer
from rtmpd.http.flv.resource import FLVPlayers
from rtmpd.http.flv.websocket import FLVWebSocketFactory, FLVWebSocketProtocol
from rtmpd.http.fmp4.source import FMP4Player, FragmentSources
from rtmpd.http.jsonio import HTTPError, error_body

__all__ = ["FMP4Peer", "FMP4Resource", "FMP4WebSocketFactory", "fmp4_resource"]


class FMP4Peer(WebSocketPeer):
    """A WebSocket-fMP4 player's connection: queued media are ``source.Fragment``s, sent as their
    prepared (framed once) messages."""

    kind = "WebSocket-fMP4"


class FMP4WebSocketProtocol(FLVWebSocketProtocol):
    """One WebSocket-fMP4 player: access control in the opening handshake, then an ``FMP4Player``."""

    factory: FMP4WebSocketFactory
    suffix = ".mp4"

    def onOpen(self) -> None:
        factory = self.factory
        players = factory.players
        self.peer = FMP4Peer(self, self.conn_id, self.app, attrgetter("prepared"), **players.peer_options())
        key = f"{self.app}/{self.name}"
        player = FMP4Player(self.peer, players.registry.subscribe(key), self.name, factory.sources)
        # One of the HTTP players: swept for stalls, counted and ended like the FLV ones.
        players.opened(self.peer, player).start(False)


class FMP4WebSocketFactory(FLVWebSocketFactory):
    """Builds ``FMP4WebSocketProtocol``s for ``players``; ``sources`` makes each stream's fragments once
    and frames each once with this factory's ``prepareMessage``."""

    protocol = FMP4WebSocketProtocol

    def __init__(self, players: FLVPlayers) -> None:
        super().__init__(players)
        self.sources = FragmentSources(players.registry, self._prepare_binary)

    def _prepare_binary(self, data: bytes) -> Any:
        return self.prepareMessage(data, isBinary=True)


class FMP4Resource(Resource):
    """``/APP/NAME.mp4``: a WebSocket upgrade becomes a WebSocket-fMP4 player; a plain GET is told to
    upgrade (426, JSON)."""

    isLeaf = True

    def __init__(self, players: FLVPlayers) -> None:
        super().__init__()
        self.websocket_factory = FMP4WebSocketFactory(players)
        self.websocket = WebSocketResource(self.websocket_factory)

    def render_GET(self, request: Request) -> bytes | int:
        if (request.getHeader(b"upgrade") or b"").lower() == b"websocket":
            return self.websocket.render(request)
        request.setHeader(b"upgrade", b"websocket")
        return error_body(request, HTTPError(426, "fMP4 is played over WebSocket: ws://HOST/APP/NAME.mp4"))


def fmp4_resource(players: FLVPlayers) -> FMP4Resource:
    return FMP4Resource(players)
