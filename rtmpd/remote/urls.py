"""``rtmp://`` and ``rtmps://`` URLs of remote servers: parsing, templates, and what a log may show.

A URL names a server (scheme, host, port), an application and a stream
name: ``rtmp://a.rtmp.youtube.com/live2/KEY`` is app ``live2``, name ``KEY``;
everything between the host and the last ``/`` is the app
(``rtmp://host/app/inst/KEY`` has app ``app/inst``), and a query stays with
the name. The ``tcUrl`` sent in ``connect`` is the URL without the name.
"""

from __future__ import annotations

import fnmatch
import string
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORTS", "RemoteURL", "URLError", "matches", "render", "template_fields"]

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
_FIELDS = frozenset({"app", "name"})


class URLError(ValueError):
    """A URL or template that cannot name a remote stream; the message says why."""


@dataclass(frozen=True)
class RemoteURL:
    scheme: str
    host: str
    port: int
    app: str
    name: str

    @classmethod
    def parse(cls, url: str) -> RemoteURL:
        """Raises URLError for another scheme, no host, a bad port or a path without app and name."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise URLError(f"{url!r}: {e}") from e
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise URLError(f"{url!r}: the scheme must be rtmp or rtmps")
        if not parts.hostname:
            raise URLError(f"{url!r}: no host")
        path = parts.path.lstrip("/")
        if parts.query:
            path += "?" + parts.query
        app, _, name = path.rpartition("/")
        if not app or not name:
            raise URLError(f"{url!r}: the path must be /APP/NAME")
        return cls(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], app, name)

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @property
    def tc_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.app}"

    @property
    def key(self) -> str:
        """``app/name`` without the query: the stream key at the remote server."""
        return f"{self.app}/{self.name.partition('?')[0]}"

    def redacted(self) -> str:
        """The URL with the stream name hidden but for its first characters (platform keys are secrets)."""
        name = self.name.partition("?")[0]
        shown = name[:4] + "***" if len(name) > 4 else name
        return f"{self.tc_url}/{shown}"


def template_fields(template: str) -> set[str]:
    """The ``{field}`` names of a URL template. Raises URLError for a malformed or unknown field."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)]
    except ValueError as e:
        raise URLError(f"{template!r}: {e}") from e
    # A format spec or conversion ("{name:>999999999}") would let a rule pad a URL to any size.
    if any(name is not None and (spec or conv) for name, spec, conv in fields):
        raise URLError(f"{template!r}: write fields as {{app}} and {{name}}, without a format or conversion")
    names = {name for name, _, _ in fields if name is not None}
    unknown = names - _FIELDS
    if unknown:
        raise URLError(f"{template!r}: unknown field(s) {sorted(unknown)}; use {{app}} and {{name}}")
    return names


def render(template: str, key: str) -> RemoteURL:
    """The URL a template gives for local stream ``app/name``. Raises URLError."""
    app, _, name = key.partition("/")
    template_fields(template)
    return RemoteURL.parse(template.format(app=app, name=name))


def matches(pattern: str, key: str) -> bool:
    """Whether local stream ``key`` (``app/name``) matches an fnmatch ``pattern``, case-sensitively."""
    return fnmatch.fnmatchcase(key, pattern)
