"""JSON answers and JSON errors for every HTTP resource of rtmpd."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

#: Every JSON answer is UTF-8 and never cached by a proxy: it describes the server now.
_HEADERS = ((b"content-type", b"application/json; charset=utf-8"), (b"cache-control", b"no-store"))


class HTTPError(Exception):
    """An answer other than success: ``status`` (an HTTP status code) and a message for the client.

    Raised by resources' helpers and turned into a JSON body by ``error_body``.
    """

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def json_body(request: Request, value: Any, status: int = 200) -> bytes:
    """Set the status and JSON headers on ``request``; return ``value`` as JSON bytes to write."""
    request.setResponseCode(status)
    for name, value_ in _HEADERS:
        request.setHeader(name, value_)
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str).encode() + b"\n"


def error_body(request: Request, error: HTTPError) -> bytes:
    """The JSON body of ``error``: ``{"error": {"status": 404, "message": "...", ...details}}``."""
    return json_body(
        request, {"error": {"status": error.status, "message": error.message, **error.details}}, error.status
    )


class ErrorResource(Resource):
    """Answers every method with one JSON error (a 404 for an unknown path, ...)."""

    isLeaf = True

    def __init__(self, error: HTTPError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: Request) -> bytes:
        return error_body(request, self.error)
