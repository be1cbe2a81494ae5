"""The names of a stream's HLS files and the query a client's URL carries, both ways.

Under ``/hls/{app}/{name}/``: ``index.m3u8`` (the media playlist),
``{epoch}.mp4`` (an init segment), ``{epoch}.{msn}.m4s`` (a segment) and
``{epoch}.{msn}.{part}.m4s`` (a part). The epoch names one muxer generation,
so a URL always means the same bytes (they may be cached as immutable).

The query of a playlist request is split: ``_HLS_*`` parameters are the
playlist's own (blocking reload); everything else (a signed URL's
``exp``/``sig``, ...) is the client's credential, copied onto every URL the
playlist names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "MAX_QUERY_LENGTH",
    "PLAYLIST",
    "FileName",
    "PlaylistQuery",
    "init_name",
    "parse_file_name",
    "parse_playlist_query",
    "part_name",
    "segment_name",
]

PLAYLIST = "index.m3u8"
#: A longer query is refused (400): a credential is short.
MAX_QUERY_LENGTH = 2048
#: Largest msn or part number accepted from a client (a bigger one is refused, never parsed further).
MAX_NUMBER = 10**12
#: Parsed names and queries remembered: at the live edge every viewer asks for the same few.
_REMEMBERED = 512

_EPOCH = r"[0-9a-z]{1,32}"
_FILE = re.compile(
    rf"^(?P<epoch>{_EPOCH})(?:\.(?P<msn>\d{{1,13}})(?:\.(?P<part>\d{{1,6}}))?)?\.(?P<ext>mp4|m4s)$"
)


@dataclass(frozen=True, slots=True)
class FileName:
    """A media file a client asks for: an init segment (``msn`` None), a segment, or a part."""

    epoch: str
    msn: int | None = None
    part: int | None = None


def init_name(epoch: str) -> str:
    return f"{epoch}.mp4"


def segment_name(epoch: str, msn: int) -> str:
    return f"{epoch}.{msn}.m4s"


def part_name(epoch: str, msn: int, part: int) -> str:
    return f"{epoch}.{msn}.{part}.m4s"


@lru_cache(maxsize=_REMEMBERED)
def parse_file_name(name: str) -> FileName | None:
    """The file ``name`` means, or None if it is not one of ours."""
    match = _FILE.match(name)
    if match is None:
        return None
    msn, part, ext = match["msn"], match["part"], match["ext"]
    if (msn is None) != (ext == "mp4"):
        return None
    return FileName(match["epoch"], None if msn is None else int(msn), None if part is None else int(part))


class QueryError(ValueError):
    """A playlist query that cannot be read (answered 400)."""


@dataclass(frozen=True, slots=True)
class PlaylistQuery:
    """``_HLS_msn``/``_HLS_part`` (None when absent) and the rest, re-encoded, for the URLs."""

    msn: int | None = None
    part: int | None = None
    credential: str = ""


def _number(value: str, name: str) -> int:
    # isascii: str.isdigit() also holds for digits int() refuses ("²").
    if not (value.isascii() and value.isdigit()) or len(value) > 13 or int(value) > MAX_NUMBER:
        raise QueryError(f"{name} must be a non-negative integer")
    return int(value)


@lru_cache(maxsize=_REMEMBERED)
def parse_playlist_query(query: str) -> PlaylistQuery:
    """Split a raw query string (without ``?``); raises QueryError (400) for a malformed one.

    ``_HLS_part`` without ``_HLS_msn`` is an error (the spec says so); other
    ``_HLS_*`` parameters (``_HLS_skip``) are ignored: delta updates are not
    offered.
    """
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryError("query too long")
    msn = part = None
    rest = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "_HLS_msn":
            msn = _number(value, key)
        elif key == "_HLS_part":
            part = _number(value, key)
        elif not key.startswith("_HLS_"):
            rest.append((key, value))
    if part is not None and msn is None:
        raise QueryError("_HLS_part needs _HLS_msn")
    return PlaylistQuery(msn, part, urlencode(rest))


@lru_cache(maxsize=_REMEMBERED)
def credential_query(query: str) -> str:
    """The credential part of any media file's query (``_HLS_*`` dropped), re-encoded."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryError("query too long")
    return urlencode(
        [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not k.startswith("_HLS_")]
    )
