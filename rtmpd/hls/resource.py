"""The ``/hls/`` HTTP tree: ``/hls/{app}/{name}/index.m3u8`` and the media files it names.

Every request is checked by ``PlayPermissions`` (a refusal is a 403 JSON
error), then answered from the stream's ``LiveHLS``:

- the playlist, at once, or (``_HLS_msn``/``_HLS_part``) when what it asks
  for exists; 400 for a malformed or too distant request, 503 when the wait
  times out or too many requests wait on the stream, 404 for a stream that
  is not live;
- an init segment, segment or part, from memory; a part or segment not made
  yet (a preload hint) is waited for like a blocking reload; 404 when it
  left the window or will never exist.

Playlists are ``no-cache``; media files have unique names and are
``immutable``. Every answer allows any origin (CORS), so players on other
sites can fetch it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rtmpd.access.errors import AccessDenied
from rtmpd.hls.access import PlayPermissions
from rtmpd.hls.blocking import too_far
from rtmpd.hls.live import HLSMuxers, LiveHLS
from rtmpd.hls.names import PLAYLIST, QueryError, credential_query, parse_file_name, parse_playlist_query
from rtmpd.hls.playlist import target_duration
from rtmpd.hls.segments import Availability
from rtmpd.http.jsonio import HTTPError, error_body

__all__ = ["HLSResource"]

PLAYLIST_TYPE = b"application/vnd.apple.mpegurl"
MEDIA_TYPE = b"video/mp4"
#: Waits are bounded: the spec's three target durations, and never more than this.
MAX_WAIT = 30.0
#: Most requests waiting on one stream at once; past it, 503 (each holds a connection and a little memory).
MAX_WAITING = 5000


class HLSResource(Resource):
    """``/hls/``: the playlists and media of live streams (module doc)."""

    isLeaf = True
    log = Logger()

    def __init__(self, muxers: HLSMuxers, permissions: PlayPermissions) -> None:
        super().__init__()
        self.muxers = muxers
        self.permissions = permissions

    # -- HTTP --------------------------------------------------------------------------

    def render_OPTIONS(self, request: Request) -> bytes:
        self._cors(request)
        request.setHeader(b"access-control-allow-methods", b"GET, HEAD, OPTIONS")
        request.setHeader(b"access-control-allow-headers", b"*")
        request.setHeader(b"access-control-max-age", b"86400")
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: Request) -> Any:
        self._cors(request)
        d = Deferred.fromCoroutine(self._answer(request))
        finished = request.notifyFinish()
        finished.addErrback(lambda _: d.cancel())  # the client left: stop waiting for it
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    @staticmethod
    def _cors(request: Request) -> None:
        # Content-Length and Content-Type are CORS-safelisted: nothing else needs exposing.
        request.setHeader(b"access-control-allow-origin", b"*")

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(HTTPError):
            error = failure.value
        elif failure.check(AccessDenied):
            error = HTTPError(403, failure.value.reason)
        else:
            self.log.failure("HLS request failed", failure, path=request.path.decode("latin-1")[:200])
            error = HTTPError(500, "internal error")
        if not request.finished:
            request.write(error_body(request, error))
            request.finish()

    @staticmethod
    def _send(request: Request, body: bytes, content_type: bytes, cache: bytes) -> None:
        if request.finished:
            return
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", cache)
        request.setHeader(b"content-length", str(len(body)).encode())
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    # -- what is asked ---------------------------------------------------------------------

    async def _answer(self, request: Request) -> None:
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
            raise HTTPError(404, "not an HLS path: /hls/APP/NAME/index.m3u8")
        app, name, file_name = parts[0], "/".join(parts[1:-1]), parts[-1]
        raw_query = request.uri.partition(b"?")[2].decode("latin-1")
        try:
            if file_name == PLAYLIST:
                query = parse_playlist_query(raw_query)
                credential = query.credential
            else:
                query = None
                credential = credential_query(raw_query)
        except QueryError as e:
            raise HTTPError(400, str(e)) from e
        addr = getattr(request.getClientAddress(), "host", "") if self.permissions.enabled else ""
        allow = await self.permissions.check(app, name, credential, addr or "")
        key = f"{app}/{allow.name or name}"
        live = self.muxers.get(key)
        if live is None:
            raise HTTPError(404, "stream is not live", stream=key)
        if query is not None:
            await self._playlist(request, live, query.msn, query.part, credential)
        else:
            await self._media(request, live, file_name)

    def _timeout(self, live: LiveHLS) -> float:
        if len(live.waiters) >= MAX_WAITING:
            raise HTTPError(503, "too many requests waiting for this stream")
        return min(MAX_WAIT, 3 * target_duration(live.window, live.settings.segment_duration))

    async def _playlist(
        self, request: Request, live: LiveHLS, msn: int | None, part: int | None, credential: str
    ) -> None:
        window = live.window
        if msn is None:
            if window.last_complete_msn() is None:
                # A new muxer: answer with its first segment, so classic clients have one to play.
                self._timeout(live)
                state = await live.wait(window.next_msn, None, live.settings.first_segment_timeout)
                if state is None:
                    raise HTTPError(503, "no segment yet; try again")
        else:
            if too_far(window, msn, part):
                raise HTTPError(400, "_HLS_msn/_HLS_part too far ahead of the live edge")
            if await live.wait(msn, part, self._timeout(live)) is None:
                raise HTTPError(503, "the segment or part asked for did not come in time")
        self._send(request, live.playlist(credential), PLAYLIST_TYPE, b"no-cache")

    async def _media(self, request: Request, live: LiveHLS, file_name: str) -> None:
        wanted = parse_file_name(file_name)
        if wanted is None:
            raise HTTPError(404, "no such HLS file")
        window = live.window
        cache = b"private" if self.permissions.enabled else b"public"
        cache += b", max-age=31536000, immutable"
        if wanted.msn is None:
            data = window.inits.get(wanted.epoch)
            if data is None:
                raise HTTPError(404, "no such init segment")
            self._send(request, data, MEDIA_TYPE, cache)
            return
        msn, part = wanted.msn, wanted.part
        state = window.segment_availability(msn) if part is None else window.part_availability(msn, part)
        if state is Availability.PENDING:
            if too_far(window, msn, part) or (window.open is None and live.segmenter is None):
                raise HTTPError(404, "not made yet")
            state = await live.wait(msn, part, self._timeout(live))
            if state is None:
                raise HTTPError(503, "not made in time")
        window = live.window
        segment = window.segment(msn)
        if state is not Availability.READY or segment is None or segment.epoch != wanted.epoch:
            raise HTTPError(404, "no such segment or part (it may have left the window)")
        data = segment.data if part is None else window.part_data(msn, part)
        if data is None:
            raise HTTPError(404, "no such segment or part")
        self._send(request, data, MEDIA_TYPE, cache)
