"""The ``/hls/`` resource of the ``twisted.web`` tree: ``HLSAnswers`` served through twisted.web.

Most HLS requests never get here: ``rtmpd.hls.channel`` serves plain
GET/HEAD/OPTIONS requests of ``/hls/`` on a leaner path. This resource answers
the rest (a connection that twisted.web already serves, a request with a
body, another method) with the same answers. Every answer allows any origin
(CORS), so players on other sites can fetch it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rtmpd.access.errors import AccessDenied
from rtmpd.hls.answers import Answer, HLSAnswers, error_answer
from rtmpd.http.jsonio import HTTPError

__all__ = ["CORS_PREFLIGHT", "HLSResource"]

#: The headers of the answer to a CORS preflight (OPTIONS), besides ``access-control-allow-origin``.
CORS_PREFLIGHT = (
    (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-max-age", b"86400"),
)


class HLSResource(Resource):
    """``/hls/``: the playlists and media of live streams (``rtmpd.hls.answers``)."""

    isLeaf = True
    log = Logger()

    def __init__(self, answers: HLSAnswers) -> None:
        super().__init__()
        self.answers = answers

    def render_OPTIONS(self, request: Request) -> bytes:
        self._cors(request)
        for name, value in CORS_PREFLIGHT:
            request.setHeader(name, value)
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: Request) -> Any:
        self._cors(request)
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        raw_query = request.uri.partition(b"?")[2].decode("latin-1")
        permissions = self.answers.permissions
        addr = getattr(request.getClientAddress(), "host", "") if permissions.enabled else ""
        try:
            answer = self.answers.answer(parts, raw_query, addr or "")
        except (HTTPError, AccessDenied) as e:
            answer = error_answer(e)
        if not isinstance(answer, Deferred):
            self._send(answer, request)
            return NOT_DONE_YET
        request.notifyFinish().addErrback(lambda _: answer.cancel())  # the client left: stop waiting
        answer.addCallback(self._send, request)
        answer.addErrback(self._failed, request)
        return NOT_DONE_YET

    @staticmethod
    def _cors(request: Request) -> None:
        # Content-Length and Content-Type are CORS-safelisted: nothing else needs exposing.
        request.setHeader(b"access-control-allow-origin", b"*")

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(HTTPError, AccessDenied):
            self._send(error_answer(failure.value), request)
            return
        self.log.failure("HLS request failed", failure, path=request.path.decode("latin-1")[:200])
        self._send(error_answer(HTTPError(500, "internal error")), request)

    @staticmethod
    def _send(answer: Answer, request: Request) -> None:
        if request.finished:
            return
        request.setResponseCode(answer.status)
        request.setHeader(b"content-type", answer.content_type)
        request.setHeader(b"cache-control", answer.cache)
        request.setHeader(b"content-length", b"%d" % len(answer.body))
        if request.method != b"HEAD":
            request.write(answer.body)
        request.finish()
