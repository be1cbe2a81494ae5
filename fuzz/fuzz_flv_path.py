"""Fuzz the HTTP-FLV and WebSocket-FLV path parser: which stream ``/APP/NAME.flv?QUERY`` plays.

The input is a request target. It is read the two ways rtmpd reads it: as
twisted.web routes an HTTP-FLV request (segments unquoted, one segment after
the app, ending in ``.flv``: ``FLVPlayers.getChild``) and as the
WebSocket-FLV handshake does (autobahn's unquoted path, split on ``/``).
Both end in ``parse_path``, from which only ``HTTPError`` 404 may escape.
What it accepts must be a name the RTMP side would accept too (the rules of
``rtmpd.relay.names``: no empty, ``.`` or ``..`` segment, no control
character or backslash, bounded length), so an HTTP player can never wait on
a key no publisher could have.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote, unquote_to_bytes

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports(include=["rtmpd"]):
    from rtmpd.http.flv.resource import MAX_NAME, parse_path
    from rtmpd.http.jsonio import HTTPError
    from rtmpd.relay.names import split_stream_name, validate_app


def _accepted(app: str, name: str) -> None:
    assert validate_app(app) == app, app
    assert split_stream_name(name) == (name, ""), name
    assert len(app) <= MAX_NAME and len(name) <= MAX_NAME


def _http(path: bytes) -> None:
    segments = [unquote_to_bytes(s) for s in path[1:].split(b"/")]
    if len(segments) != 2 or not segments[1].endswith(b".flv"):
        return  # FLVPlayers.getChild: a JSON 404
    try:
        app, name = parse_path(segments[0].decode("utf-8", "replace"), segments[1].decode("utf-8", "replace"))
    except HTTPError as e:
        assert e.status == 404
        return
    _accepted(app, name)


def _websocket(path: bytes) -> None:
    segments = unquote(path.decode("latin-1")).strip("/").split("/")
    if len(segments) != 2:
        return
    try:
        app, name = parse_path(segments[0], segments[1])
    except HTTPError as e:
        assert e.status == 404
        return
    _accepted(app, name)


def target(data: bytes) -> None:
    path = data.partition(b"?")[0]
    _http(path)
    _websocket(path)


if __name__ == "__main__":
    run(target, ())
