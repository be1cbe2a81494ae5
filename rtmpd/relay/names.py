"""Application and stream names: what may become a stream key.

A key ``app/name`` is shown in logs, used in file names and typed in the
manhole, so both parts are plain printable text without path tricks.
"""

from __future__ import annotations

from typing import Any

MAX_NAME_LENGTH = 256


class IllegalName(ValueError):
    """The name cannot be used as (part of) a stream key."""


def _check(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise IllegalName(f"{kind} name is missing or not a string")
    if len(name) > MAX_NAME_LENGTH:
        raise IllegalName(f"{kind} name longer than {MAX_NAME_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "\\" in name:
        raise IllegalName(f"{kind} name contains control characters or a backslash")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise IllegalName(f"{kind} name {name!r} has an empty, '.' or '..' path segment")
    return name


def validate_app(app: Any) -> str:
    """The application name of ``connect`` (``live`` in rtmp://host/live/KEY), without outer slashes."""
    if isinstance(app, str):
        # Some clients append the tcUrl's query string to the app name.
        app = app.partition("?")[0].strip("/")
    return _check("application", app)


def split_stream_name(raw: Any) -> tuple[str, str]:
    """``KEY?query`` -> (KEY, query). Raises IllegalName."""
    if not isinstance(raw, str):
        raise IllegalName("stream name is missing or not a string")
    name, _, query = raw.partition("?")
    return _check("stream", name), query
