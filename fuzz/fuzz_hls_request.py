"""Fuzz what an HLS request's target means: the path, the file name and the ``_HLS_*`` query.

The input's first byte picks the segment window the request meets (empty, a
few complete segments, an open segment with parts, segments whose parts were
dropped); the rest is a request target (``/live/cam/index.m3u8?_HLS_msn=3``)
read as ``HLSResource`` reads it: segments unquoted as twisted.web does, the
playlist query or a media file's credential query split off, the file name
parsed, then the blocking-reload decisions (``too_far``, ``availability``,
``Waiters``) and the playlist with the client's credential in every URL.

Only ``QueryError`` (a 400) may escape. The credential a client sends must
come back encoded (no quote, newline or other character that could end a URL
or a playlist line), without any ``_HLS_`` parameter, and the playlist must
have the same lines as with no credential; numbers are bounded.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qsl, unquote_to_bytes

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports(include=["rtmpd"]):
    from rtmpd.hls.blocking import Waiters, availability, too_far
    from rtmpd.hls.names import (
        MAX_NUMBER,
        MAX_QUERY_LENGTH,
        PLAYLIST,
        QueryError,
        credential_query,
        parse_file_name,
        parse_playlist_query,
    )
    from rtmpd.hls.playlist import render_playlist
    from rtmpd.hls.segments import Part, Window

#: What an encoded credential may hold (urlencode's output alphabet): nothing that ends a URL or a line.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~%+=&")


def _window(kind: int) -> Window:
    window = Window(3, spare=1, part_segments=2)
    window.add_init("e1", b"init")
    segments = (0, 2, 2, 6)[kind]
    for msn in range(segments):
        window.start_segment("e1", 1_700_000_000.0 + msn, discontinuity=msn == 4)
        for i in range(3):
            window.add_part(Part(b"part", 0.5, i == 0))
        window.close_segment()
    if kind == 2:
        window.start_segment("e1", 1_700_000_010.0, discontinuity=False)
        window.add_part(Part(b"open", 0.5, True))
    return window


def _playlist(window: Window, credential: str) -> str:
    return render_playlist(window, epoch="e1", segment_target=2.0, part_target=0.5, credential=credential)


def target(data: bytes) -> None:
    if not data:
        return
    window = _window(data[0] & 3)
    path, _, raw_query = data[1:].partition(b"?")
    # twisted.web: postpath = unquoted segments of the path after the first "/".
    parts = [unquote_to_bytes(s).decode("utf-8", "replace") for s in path[1:].split(b"/")]
    if len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
        return  # the resource's 404
    query = raw_query.decode("latin-1")
    file_name = parts[-1]
    if file_name == PLAYLIST:
        asked = parse_playlist_query(query)
        credential = asked.credential
        msn, part = asked.msn, asked.part
        assert msn is None or 0 <= msn <= MAX_NUMBER
        assert part is None or (msn is not None and 0 <= part <= MAX_NUMBER)
    else:
        credential = credential_query(query)
        wanted = parse_file_name(file_name)
        if wanted is None:
            return
        msn, part = wanted.msn, wanted.part
        assert wanted.epoch and len(wanted.epoch) <= 32
        if msn is None:
            return
    assert set(credential) <= _SAFE, credential[:200]
    assert len(credential) <= 6 * MAX_QUERY_LENGTH
    assert not any(key.startswith("_HLS_") for key, _ in parse_qsl(credential, keep_blank_values=True))
    playlist = _playlist(window, credential)
    assert playlist.count("\n") == _playlist(window, "").count("\n")
    if msn is None:
        return
    far = too_far(window, msn, part)
    state = availability(window, msn, part)
    if msn > window.next_msn + 2:
        assert far, (msn, part)
    waiters = Waiters()
    waiters.add("request", msn, part, 10.0)
    settled = waiters.settled(window)
    assert len(settled) + len(waiters) == 1
    assert settled == [] or settled[0][1] is state


if __name__ == "__main__":
    run(target, (QueryError,))
