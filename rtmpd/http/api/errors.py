"""``APIError``: an HTTP error of the JSON API, with the headers its status calls for."""

from __future__ import annotations

from typing import Any

from rtmpd.http.jsonio import HTTPError

__all__ = ["APIError"]


class APIError(HTTPError):
    """An ``HTTPError`` (status, message, details for the JSON body) plus response ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[bytes, bytes] | None = None, **details: Any):
        super().__init__(status, message, **details)
        self.headers = dict(headers or {})
