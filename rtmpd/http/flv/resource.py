"""``/{app}/{name}.flv``: an HTTP-FLV or WebSocket-FLV player per request, asked of access control like an
RTMP ``play``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from rtmpd.access.decision import ALLOW, Action
from rtmpd.access.decision import Request as AccessRequest
from rtmpd.access.errors import AccessDenied
from rtmpd.core.flv import encode_header
from rtmpd.http.flv.peer import HTTPPeer, StreamingPeer
from rtmpd.http.jsonio import ErrorResource, HTTPError, error_body
from rtmpd.relay.names import IllegalName, split_stream_name, validate_app
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


def parse_path(app: str, file_name: str, suffix: str = ".flv") -> tuple[str, str]:
    """``("live", "cam.flv")`` → ("live", "cam") (``suffix`` ".mp4" for WebSocket-fMP4). Raises
    HTTPError(404) for anything else."""
    raw = file_name[: -len(suffix)] if file_name.endswith(suffix) else ""
    try:
        if not app or not raw or len(app) > MAX_NAME or len(raw) > MAX_NAME:
            raise IllegalName("empty or too long")
        # The app names RTMP would accept (no "..", control characters, ...), and only as given.
        if validate_app(app) != app:
            raise IllegalName("application name with a query or outer slashes")
        return app, split_stream_name(raw)[0]
    except IllegalName as e:
        raise HTTPError(404, f"no such stream: {e}") from e


class FLVPlayers(Resource):
    """Serves ``GET /APP/NAME.flv`` (mounted as the HTTP root's fallback): each request becomes an
    ``HTTPPlayer`` of ``APP/NAME`` once access control allows a ``play`` (the request's query is that
    play's query, so signed URLs work); a request that upgrades to WebSocket gets the same stream as
    WebSocket-FLV (``websocket``, set by the wiring). Unknown paths are JSON 404s, refusals JSON 403s.

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
        count_closed: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.next_conn_id = next_conn_id
        self.access = access
        self.clock = clock
        self.outbox = outbox
        self.players: dict[str, Player] = {}
        #: The players' connections by conn id, for the API's connection list and the metrics.
        self.connections: dict[str, StreamingPeer] = {}
        #: Counts a closed connection by its reason, with the RTMP ones (the metrics' close reasons).
        self._count_closed = count_closed
        #: The WebSocket-FLV resource (``rtmpd.http.flv.websocket``), or None.
        self.websocket: Resource | None = None
        #: The WebSocket-fMP4 resource for ``/APP/NAME.mp4`` (``rtmpd.http.fmp4.websocket``), or None.
        self.fmp4: Resource | None = None

    def getChild(self, path: bytes, request: Request) -> IResource:
        if len(request.postpath) == 1 and request.postpath[0].endswith(b".flv"):
            request.prepath.append(request.postpath.pop())
            return _OnePlay(
                self, path.decode("utf-8", "replace"), request.prepath[-1].decode("utf-8", "replace")
            )
        if len(request.postpath) == 1 and request.postpath[0].endswith(b".mp4") and self.fmp4 is not None:
            request.prepath.append(request.postpath.pop())
            return self.fmp4
        return ErrorResource(HTTPError(404, "no such path", path=request.path.decode("latin-1")[:200]))

    # -- shared by both kinds of player ------------------------------------------------

    def decide(self, app: str, name: str, query: str, host: str, conn_id: str) -> Deferred:
        """Ask access control for a ``play``: fires with the name to play, fails with HTTPError(403/500)."""
        policy = self.access()
        request = AccessRequest(Action.PLAY, app, name, query, host, conn_id)
        decision = succeed(ALLOW) if policy is None else policy.authorise(request)
        decision.addCallbacks(
            lambda allow: split_stream_name(allow.name)[0] if allow.name is not None else name,
            self._refused,
            errbackArgs=(conn_id, f"{app}/{name}"),
        )
        return decision

    def _refused(self, failure: Failure, conn_id: str, key: str) -> None:
        if failure.check(AccessDenied):
            self.log.info("HTTP play refused", conn_id=conn_id, stream_key=key, reason=failure.value.reason)
            raise HTTPError(403, failure.value.reason)
        self.log.failure("HTTP play access check failed", failure, conn_id=conn_id, stream_key=key)
        raise HTTPError(500, "access control failed")

    def start(self, peer: StreamingPeer, app: str, name: str) -> None:
        """Send the FLV header, then make ``peer`` a player of ``app/name`` (late join included)."""
        key = f"{app}/{name}"
        peer.playing = key
        peer.write(encode_header(has_audio=True, has_video=True))
        self.opened(peer, HTTPPlayer(peer, _STREAM_ID, self.registry.subscribe(key), name)).start(False)

    def opened(self, peer: StreamingPeer, player: Player) -> Player:
        """``player`` (of ``peer.playing``) is about to start: log it, and count its connection with
        the server's (the ``connect`` event, the API's connection list, the metrics). Returns it."""
        peer.playing = player.stream.key
        self.players[peer.conn_id] = player
        self.connections[peer.conn_id] = peer
        self.log.info(
            f"{peer.kind} player started",
            conn_id=peer.conn_id,
            peer_addr=peer.peer_addr,
            stream_key=peer.playing,
        )
        notifier = self.registry.notifier
        if notifier.active:
            notifier.emit(
                "connect", conn_id=peer.conn_id, peer_addr=peer.peer_addr, app=peer.app, flash_ver=""
            )
        return player

    def gone(self, peer: StreamingPeer, reason: str) -> None:
        player = self.players.pop(peer.conn_id, None)
        if player is None:
            return
        player.stop()
        self.connections.pop(peer.conn_id, None)
        if self._count_closed is not None:
            self._count_closed(reason)
        self.log.info(
            f"{peer.kind} player ended", conn_id=peer.conn_id, reason=reason, bytes_out=peer.bytes_out
        )
        notifier = self.registry.notifier
        if notifier.active:
            notifier.emit(
                "disconnect",
                conn_id=peer.conn_id,
                peer_addr=peer.peer_addr,
                app=peer.app,
                reason=reason,
                bytes_in=peer.bytes_in,
                bytes_out=peer.bytes_out,
            )

    def peer_options(self) -> dict[str, Any]:
        return {
            "clock": self.clock,
            "outbox": self.outbox,
            "max_queue_bytes": self.registry.config.max_queue_bytes,
            "on_gone": self.gone,
        }

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

    # -- HTTP-FLV ------------------------------------------------------------------

    def play(self, request: Request, app: str, file_name: str) -> bytes | int:
        try:
            app, name = parse_path(app, file_name)
        except HTTPError as e:
            return error_body(request, e)
        query = request.uri.split(b"?", 1)[1].decode("latin-1") if b"?" in request.uri else ""
        conn_id = self.next_conn_id()
        host = str(getattr(request.getClientAddress(), "host", "") or "")
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)
        decision = self.decide(app, name, query, host, conn_id)
        decision.addCallbacks(
            self._play_allowed,
            self._play_refused,
            (request, conn_id, app, finished),
            errbackArgs=(request, finished),
        )
        return NOT_DONE_YET

    def _play_allowed(self, name: str, request: Request, conn_id: str, app: str, finished: Deferred) -> None:
        if finished.called:
            return  # the client left while access control thought
        request.setHeader(b"content-type", b"video/x-flv")
        request.setHeader(b"cache-control", b"no-cache, no-store")
        request.setHeader(b"access-control-allow-origin", b"*")
        self.start(HTTPPeer(request, conn_id, app, **self.peer_options()), app, name)

    def _play_refused(self, failure: Failure, request: Request, finished: Deferred) -> None:
        if finished.called:
            return
        error = failure.value if failure.check(HTTPError) else HTTPError(500, "internal error")
        request.write(error_body(request, error))
        request.finish()


class _OnePlay(Resource):
    isLeaf = True

    def __init__(self, players: FLVPlayers, app: str, file_name: str) -> None:
        super().__init__()
        self.players, self.app, self.file_name = players, app, file_name

    def render_GET(self, request: Request) -> bytes | int:
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade == b"websocket" and self.players.websocket is not None:
            return self.players.websocket.render(request)
        return self.players.play(request, self.app, self.file_name)

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"video/x-flv")
        return b""
