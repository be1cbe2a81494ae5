"""``APIResource``: the ``twisted.web`` resource at ``/api``, which serves ``/api/v1/...``.

For each request, in this order: the version segment (404 for any but
``v1``), the route (404, 405 with ``Allow``), the access rule
(``rtmpd.http.api.auth``: 401 with ``WWW-Authenticate``, 403), the JSON body
(400 when it is not a JSON object of the route's fields; its size is bounded
before it is read, ``rtmpd.http.limits``), then the handler. Admin refusals
become 404 (``NotFound``) or 409 (``AdminError``); anything unexpected is
logged with its traceback and answered 500. Every answer is JSON
(``rtmpd.http.jsonio``). A handler's Deferred is answered when it fires,
unless the client left.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rtmpd.admin.actions import Actions
from rtmpd.admin.errors import AdminError, NotFound
from rtmpd.admin.views import Server, ServerViews
from rtmpd.http.api.auth import TokenAuth
from rtmpd.http.api.endpoints import ROUTES, Call
from rtmpd.http.api.errors import APIError
from rtmpd.http.api.routes import Route, Router
from rtmpd.http.jsonio import HTTPError, error_body, json_body

__all__ = ["VERSION", "APIResource"]

#: The one version of the API; its paths are /api/<VERSION>/...
VERSION = "v1"
#: Longest ``reason`` accepted in a body.
MAX_REASON = 200


class APIResource(Resource):
    """The JSON API of ``server`` (see the module doc): reads from ``views``, actions through
    ``rtmpd.admin.actions.Actions`` in the name ``api@<client host>``, with ``reload_access`` for
    ``auth/reload``; who may do what is ``auth``'s rule."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        server: Server,
        views: ServerViews,
        auth: TokenAuth,
        reload_access: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self.rtmp = server
        self.views = views
        self.auth = auth
        self.reload_access = reload_access
        self.router = Router(ROUTES)

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii", "replace")
        try:
            route, params = self._resolve(request, method)
            self.auth.check(request, route.mutation)
            body = read_body(request, route) if method == "POST" else {}
            call = Call(params, body, self.views, self._actions(request))
            result = route.handler(call)
        except Exception as e:
            return _head_aware(request, self._error(request, e, method))
        if isinstance(result, Deferred):
            self._answer_later(request, result, method)
            return NOT_DONE_YET
        return _head_aware(request, json_body(request, result))

    def _resolve(self, request: Request, method: str) -> tuple[Route, dict[str, str]]:
        try:
            segments = [s.decode("utf-8") for s in request.postpath]
        except UnicodeDecodeError:
            raise APIError(404, "no such API path (not UTF-8)") from None
        if not segments or segments[0] != VERSION:
            raise APIError(404, f"no such API version (this server speaks /api/{VERSION}/)")
        segments = segments[1:]
        if segments and segments[-1] == "":
            segments.pop()  # /api/v1/streams/ is /api/v1/streams
        return self.router.resolve(method, segments)

    def _actions(self, request: Request) -> Actions:
        host = getattr(request.getClientAddress(), "host", None) or "local"
        return Actions(self.rtmp, f"api@{host}", self.views, self.reload_access, front="API")

    def _error(self, request: Request, error: BaseException, method: str) -> bytes:
        if isinstance(error, APIError):
            for name, value in error.headers.items():
                request.setHeader(name, value)
        elif isinstance(error, HTTPError):
            pass
        elif isinstance(error, NotFound):
            error = HTTPError(404, str(error))
        elif isinstance(error, AdminError):
            error = HTTPError(409, str(error))
        else:
            self.log.failure(
                "API request failed", Failure(error), method=method, path=request.path.decode("latin-1")[:200]
            )
            error = HTTPError(500, "internal error (logged by the server)")
        return error_body(request, error)

    def _answer_later(self, request: Request, result: Deferred, method: str) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(value: Any) -> None:
            if not gone:
                request.write(json_body(request, value))
                request.finish()

        def failed(failure: Failure) -> None:
            if not gone:
                request.write(self._error(request, failure.value, method))
                request.finish()

        result.addCallbacks(answer, failed)


def _head_aware(request: Request, body: bytes) -> bytes:
    """``body``, or for HEAD nothing but its length (twisted.web logs a warning for a HEAD body)."""
    if request.method != b"HEAD":
        return body
    request.setHeader(b"content-length", b"%d" % len(body))
    return b""


def read_body(request: Request, route: Route) -> dict[str, Any]:
    """The request's JSON body as a dict of the route's fields; {} when it is empty. Raises APIError 400."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise APIError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the body must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - route.fields)
    if unknown:
        known = ", ".join(sorted(route.fields)) or "none"
        raise APIError(400, f"unknown field(s) {', '.join(unknown)} (fields here: {known})")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise APIError(400, f"reason must be a string of at most {MAX_REASON} characters")
    return body
