"""What an HLS request is answered, independent of the HTTP machinery that carried it.

``HLSAnswers.answer`` takes the path below ``/hls/`` (URL-decoded segments),
the raw query and the client's address, and returns an ``Answer`` at once
when it can (the common case: a file that exists, a stream whose access is
allowed or remembered), else a Deferred that fires with one. Refusals raise
(or fail with) ``HTTPError`` or ``AccessDenied``; ``error_answer`` turns
either into the JSON error body every rtmpd resource answers.

- the playlist, at once, or (``_HLS_msn``/``_HLS_part``) when what it asks
  for exists; 400 for a malformed or too distant request, 503 when the wait
  times out or too many requests wait on the stream, 404 for a stream that
  is not live;
- an init segment, segment or part, from memory; a part or segment not made
  yet (a preload hint) is waited for like a blocking reload; 404 when it
  left the window or will never exist.

Playlists are ``no-cache``; media files have unique names and are
``immutable``. The bytes answered are shared: a playlist is rendered once
per change of the window (``LiveHLS.playlist``), media are the window's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from twisted.internet.defer import Deferred

from rtmpd.access.decision import Allow
from rtmpd.access.errors import AccessDenied
from rtmpd.hls.access import PlayPermissions
from rtmpd.hls.blocking import availability, too_far
from rtmpd.hls.live import HLSMuxers, LiveHLS
from rtmpd.hls.names import PLAYLIST, QueryError, credential_query, parse_file_name, parse_playlist_query
from rtmpd.hls.playlist import target_duration
from rtmpd.hls.segments import Availability
from rtmpd.http.jsonio import HTTPError

__all__ = ["MAX_WAIT", "MAX_WAITING", "Answer", "HLSAnswers", "error_answer"]

PLAYLIST_TYPE = b"application/vnd.apple.mpegurl"
MEDIA_TYPE = b"video/mp4"
JSON_TYPE = b"application/json; charset=utf-8"
_PUBLIC_MEDIA = b"public, max-age=31536000, immutable"
_PRIVATE_MEDIA = b"private, max-age=31536000, immutable"
#: Waits are bounded: the spec's three target durations, and never more than this.
MAX_WAIT = 30.0
#: Most requests waiting on one stream at once; past it, 503 (each holds a connection and a little memory).
MAX_WAITING = 5000


class Answer(NamedTuple):
    """A response: status, ``Content-Type``, ``Cache-Control`` and body.

    A tuple (not a frozen dataclass): one is made per request, and a tuple is made several times faster.
    """

    status: int
    content_type: bytes
    cache: bytes
    body: bytes


@lru_cache(maxsize=512)
def _split_path(parts: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(app, name, file name) of a path below ``/hls/``, or None when it is not one (remembered: at the
    live edge every viewer asks for the same few)."""
    if len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
        return None
    return parts[0], "/".join(parts[1:-1]), parts[-1]


def error_answer(error: HTTPError | AccessDenied) -> Answer:
    """The JSON error answer of a refusal (``rtmpd.http.jsonio``'s shape)."""
    if isinstance(error, AccessDenied):
        error = HTTPError(403, error.reason)
    value = {"error": {"status": error.status, "message": error.message, **error.details}}
    body = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str).encode() + b"\n"
    return Answer(error.status, JSON_TYPE, b"no-store", body)


class HLSAnswers:
    """Answers ``/hls/APP/NAME/FILE`` requests from the streams' ``LiveHLS`` (module doc)."""

    def __init__(self, muxers: HLSMuxers, permissions: PlayPermissions) -> None:
        self.muxers = muxers
        self.permissions = permissions

    def answer(self, parts: Sequence[str], raw_query: str, client_host: str) -> Answer | Deferred[Answer]:
        """The answer to a GET of ``/hls/`` + ``"/".join(parts)``; raises (or fails with) ``HTTPError``
        or ``AccessDenied``. ``client_host`` is only read when access control is on."""
        split = _split_path(tuple(parts))
        if split is None:
            raise HTTPError(404, "not an HLS path: /hls/APP/NAME/index.m3u8")
        app, name, file_name = split
        try:
            if file_name == PLAYLIST:
                query = parse_playlist_query(raw_query)
                credential = query.credential
            else:
                query = None
                credential = credential_query(raw_query) if raw_query else ""
        except QueryError as e:
            raise HTTPError(400, str(e)) from e
        allow = self.permissions.remembered(app, name, credential, client_host)
        if allow is None:
            allowed = self.permissions.check(app, name, credential, client_host)
            return allowed.addCallback(self._allowed, app, name, file_name, query, credential)
        return self._allowed(allow, app, name, file_name, query, credential)

    def _allowed(self, allow: Allow, app, name, file_name, query, credential) -> Answer | Deferred[Answer]:
        key = f"{app}/{allow.name or name}"
        live = self.muxers.get(key)
        if live is None:
            raise HTTPError(404, "stream is not live", stream=key)
        if query is not None:
            return self._playlist(live, query.msn, query.part, credential)
        return self._media(live, file_name)

    def _timeout(self, live: LiveHLS) -> float:
        if len(live.waiters) >= MAX_WAITING:
            raise HTTPError(503, "too many requests waiting for this stream")
        return min(MAX_WAIT, 3 * target_duration(live.window, live.settings.segment_duration))

    def _playlist(
        self, live: LiveHLS, msn: int | None, part: int | None, credential: str
    ) -> Answer | Deferred[Answer]:
        window = live.window
        if msn is None:
            if window.last_complete_msn() is not None:
                return self._playlist_now(None, live, credential, "")
            # A new muxer: answer with its first segment, so classic clients have one to play.
            self._timeout(live)
            waited = live.wait(window.next_msn, None, live.settings.first_segment_timeout)
            return waited.addCallback(self._playlist_now, live, credential, "no segment yet; try again")
        state = availability(window, msn, part)
        if state is not Availability.PENDING:
            return self._playlist_now(state, live, credential, "")
        if too_far(window, msn, part):
            raise HTTPError(400, "_HLS_msn/_HLS_part too far ahead of the live edge")
        waited = live.wait(msn, part, self._timeout(live))
        message = "the segment or part asked for did not come in time"
        return waited.addCallback(self._playlist_now, live, credential, message)

    @staticmethod
    def _playlist_now(state: Availability | None, live: LiveHLS, credential: str, late: str) -> Answer:
        if state is None and late:
            raise HTTPError(503, late)
        return Answer(200, PLAYLIST_TYPE, b"no-cache", live.playlist(credential))

    def _media(self, live: LiveHLS, file_name: str) -> Answer | Deferred[Answer]:
        cache = _PRIVATE_MEDIA if self.permissions.enabled else _PUBLIC_MEDIA
        memo = live.remembered()
        answer = memo.get((file_name, cache))
        if answer is not None:
            return answer
        answer = self._media_answer(live, file_name, cache)
        if isinstance(answer, Answer):
            memo[(file_name, cache)] = answer
        return answer

    def _media_answer(self, live: LiveHLS, file_name: str, cache: bytes) -> Answer | Deferred[Answer]:
        wanted = parse_file_name(file_name)
        if wanted is None:
            raise HTTPError(404, "no such HLS file")
        window = live.window
        if wanted.msn is None:
            data = window.inits.get(wanted.epoch)
            if data is None:
                raise HTTPError(404, "no such init segment")
            return Answer(200, MEDIA_TYPE, cache, data)
        msn, part = wanted.msn, wanted.part
        state = window.segment_availability(msn) if part is None else window.part_availability(msn, part)
        if state is Availability.PENDING:
            if too_far(window, msn, part) or (window.open is None and live.segmenter is None):
                raise HTTPError(404, "not made yet")
            waited = live.wait(msn, part, self._timeout(live))
            return waited.addCallback(self._media_now, live, wanted, cache)
        return self._media_now(state, live, wanted, cache)

    @staticmethod
    def _media_now(state: Availability | None, live: LiveHLS, wanted, cache: bytes) -> Answer:
        if state is None:
            raise HTTPError(503, "not made in time")
        msn, part = wanted.msn, wanted.part
        window = live.window
        segment = window.segment(msn)
        if state is not Availability.READY or segment is None or segment.epoch != wanted.epoch:
            raise HTTPError(404, "no such segment or part (it may have left the window)")
        data = segment.data if part is None else window.part_data(msn, part)
        if data is None:
            raise HTTPError(404, "no such segment or part")
        return Answer(200, MEDIA_TYPE, cache, data)
