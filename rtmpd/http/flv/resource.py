"""``/{app}/{name}.flv``: an HTTP-FLV player per request, asked of access control like an RTMP ``play``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from rtmpd.access.decision import ALLOW, Action
from rtmpd.access.decision import Request as AccessRequest
from rtmpd.access.errors import AccessDenied
from rtmpd.core.flv import encode_header
from rtmpd.http.flv.peer import HTTPPeer
from rtmpd.http.jsonio import ErrorResource, HTTPError, error_body
from rtmpd.relay.names import IllegalName, split_stream_name
from rtmpd.relay.player import Player
from rtmpd.relay.registry import StreamRegistry

#: The message stream id HTTP players are given (FLV has none; the relay groups players by it).
_STREAM_ID = 1
#: Longest app or stream name accepted in a URL, in characters.
MAX_NAME = 256


class HTTPPlayer(Player):
    """A relay ``Player`` whose peer is an HTTP response: when the publisher leaves, the FLV ends."""

    def publish_stopped(self) -> None:
        super().publish_stopped()
        self.peer.close("stream unpublished")


class FLVPlayers(Resource):
    """Serves ``GET /APP/NAME.flv`` (mounted as the HTTP root's fallback): each request becomes an
    ``HTTPPlayer`` of ``APP/NAME`` after access control allows a ``play`` (the signed-URL query of the
    request is the query of that play). Unknown shapes of path are JSON 404s.

    ``players`` holds the live ones by conn id; ``sweep`` ends those stalled past the play timeout.
    """

    log = Logger()

    def __init__(
        self,
        registry: StreamRegistry,
        *,
        next_conn_id: Callable[[], str],
        access: Callable[[], Any],
        clock: Any,
        outbox: Any,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.next_conn_id = next_conn_id
        self.access = access
        self.clock = clock
        self.outbox = outbox
        self.players: dict[str, HTTPPlayer] = {}

    def getChild(self, path: bytes, request: Request) -> IResource:
        if len(request.postpath) == 1 and request.postpath[0].endswith(b".flv"):
            request.prepath.append(request.postpath.pop())
            return _OnePlay(
                self, path.decode("utf-8", "replace"), request.prepath[-1][:-4].decode("utf-8", "replace")
            )
        return ErrorResource(HTTPError(404, "no such path", path=request.path.decode("latin-1")[:200]))

    def play(self, request: Request, app: str, raw_name: str) -> bytes | int:
        try:
            if not app or len(app) > MAX_NAME or len(raw_name) > MAX_NAME:
                raise IllegalName("name too long or empty")
            name, _ = split_stream_name(raw_name)
        except IllegalName as e:
            return error_body(request, HTTPError(404, f"no such stream: {e}"))
        query = request.uri.split(b"?", 1)[1].decode("latin-1") if b"?" in request.uri else ""
        conn_id = self.next_conn_id()
        address = request.getClientAddress()
        access_request = AccessRequest(
            Action.PLAY, app, name, query, str(getattr(address, "host", "") or ""), conn_id
        )
        policy = self.access()
        decision = succeed(ALLOW) if policy is None else policy.authorise(access_request)
        finished = request.notifyFinish()
        decision.addCallback(self._allowed, request, conn_id, app, name, finished)
        decision.addErrback(self._refused, request, conn_id, f"{app}/{name}")
        return NOT_DONE_YET

    def _allowed(
        self, allow: Any, request: Request, conn_id: str, app: str, name: str, finished: Any
    ) -> None:
        if finished.called:
            return  # the client left while access control thought
        if allow.name is not None:
            name = split_stream_name(allow.name)[0]
        config = self.registry.config
        peer = HTTPPeer(
            request,
            conn_id,
            app,
            clock=self.clock,
            outbox=self.outbox,
            max_queue_bytes=config.max_queue_bytes,
            on_gone=self._gone,
        )
        key = f"{app}/{name}"
        peer.playing = key
        request.setHeader(b"content-type", b"video/x-flv")
        request.setHeader(b"cache-control", b"no-cache, no-store")
        request.setHeader(b"access-control-allow-origin", b"*")
        peer.write(encode_header(has_audio=True, has_video=True))
        player = HTTPPlayer(peer, _STREAM_ID, self.registry.subscribe(key), name)
        self.players[conn_id] = player
        self.log.info("HTTP-FLV player started", conn_id=conn_id, peer_addr=peer.peer_addr, stream_key=key)
        player.start(False)

    def _refused(self, failure: Failure, request: Request, conn_id: str, key: str) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        if failure.check(AccessDenied):
            error = HTTPError(403, failure.value.reason)
            self.log.info(
                "HTTP-FLV play refused", conn_id=conn_id, stream_key=key, reason=failure.value.reason
            )
        else:
            error = HTTPError(500, "access control failed")
            self.log.failure("HTTP-FLV access check failed", failure, conn_id=conn_id, stream_key=key)
        request.write(error_body(request, error))
        request.finish()

    def _gone(self, peer: HTTPPeer, reason: str) -> None:
        player = self.players.pop(peer.conn_id, None)
        if player is not None:
            player.stop()
            self.log.info(
                "HTTP-FLV player ended", conn_id=peer.conn_id, reason=reason, bytes_out=peer.bytes_out
            )

    def sweep(self) -> None:
        """End players whose socket has made no progress for the play timeout (as RTMP players)."""
        now, limit = self.clock.seconds(), self.registry.config.play_timeout
        for player in list(self.players.values()):
            peer = player.peer
            if peer.congested and now - peer.paused_since >= limit:
                self.log.warn(
                    "Player timed out",
                    conn_id=peer.conn_id,
                    stalled_seconds=round(now - peer.paused_since, 3),
                )
                peer.abort("play timeout")


class _OnePlay(Resource):
    isLeaf = True

    def __init__(self, players: FLVPlayers, app: str, name: str) -> None:
        super().__init__()
        self.players, self.app, self.name = players, app, name

    def render_GET(self, request: Request) -> bytes | int:
        return self.players.play(request, self.app, self.name)

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"video/x-flv")
        return b""
