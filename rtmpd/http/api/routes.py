"""The JSON API's paths: patterns of segments, matched to a handler by method and path.

A pattern is a tuple of segments: a literal (``"streams"``), ``"{name}"``
for exactly one segment, or ``"{name+}"`` for one or more (a stream name
may hold slashes). ``Router.resolve`` answers the route for a method and a
path, or raises ``APIError`` 404 (no pattern matches the path) or 405 (some
do, for other methods; the error carries ``Allow``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rtmpd.http.api.errors import APIError

__all__ = ["Route", "Router"]


@dataclass(frozen=True)
class Route:
    """``method`` on ``pattern`` is answered by ``handler``; ``mutation`` routes need the token;
    ``fields`` are the keys its JSON body may hold (a body is optional)."""

    method: str
    pattern: tuple[str, ...]
    handler: Callable[..., Any]
    mutation: bool = False
    fields: frozenset[str] = frozenset()

    @property
    def path(self) -> str:
        return "/".join(self.pattern)


def match(pattern: Sequence[str], segments: Sequence[str]) -> dict[str, str] | None:
    """The parameters of ``segments`` if they match ``pattern``, else None."""
    params: dict[str, str] = {}
    i = 0
    for j, part in enumerate(pattern):
        if part.endswith("+}"):
            rest = len(pattern) - j - 1
            take = len(segments) - i - rest
            if take < 1:
                return None
            taken = segments[i : i + take]
            if any(s == "" for s in taken):
                return None
            params[part[1:-2]] = "/".join(taken)
            i += take
        elif i >= len(segments):
            return None
        elif part.startswith("{"):
            if segments[i] == "":
                return None
            params[part[1:-1]] = segments[i]
            i += 1
        elif part == segments[i]:
            i += 1
        else:
            return None
    return params if i == len(segments) else None


class Router:
    """Routes in order; the first that matches method and path wins."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

    def resolve(self, method: str, segments: Sequence[str]) -> tuple[Route, dict[str, str]]:
        """The route and path parameters for ``method`` (HEAD is GET) on ``segments``; APIError 404/405."""
        wanted = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        for route in self.routes:
            params = match(route.pattern, segments)
            if params is None:
                continue
            if route.method == wanted:
                return route, params
            allowed.append(route.method)
        if not allowed:
            raise APIError(404, "no such API path", path="/".join(segments))
        if "GET" in allowed:
            allowed.append("HEAD")
        methods = sorted(set(allowed))
        raise APIError(
            405,
            f"{method} is not allowed here (allowed: {', '.join(methods)})",
            {b"allow": ", ".join(methods).encode()},
            allowed=methods,
        )
