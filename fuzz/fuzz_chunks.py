"""Fuzz the chunk reader: any bytes, in any split, give the same messages or a ChunkStreamError.

The first byte chooses the read size; the stream is fed once whole and once
in pieces, and the two must agree (messages, or the same error type). Only
``RemoteProtocolError`` subclasses may escape, and the reader's memory (its
partial messages) stays within ``Limits``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports():
    from rtmpd.core.chunks import ChunkReader
    from rtmpd.core.errors import RemoteProtocolError
    from rtmpd.core.limits import Limits

# Small limits so the fuzzer reaches them with short inputs.
LIMITS = Limits(
    max_media_message_size=4096,
    max_command_message_size=1024,
    max_chunk_streams=8,
    max_partial_message_bytes=8192,
)


def _feed(stream: bytes, step: int):
    reader = ChunkReader(LIMITS)
    out = []
    try:
        for pos in range(0, len(stream), step):
            out += reader.feed(stream[pos : pos + step])
    except RemoteProtocolError as e:
        return out, type(e), reader
    return out, None, reader


def target(data: bytes) -> None:
    if not data:
        return
    step = data[0] + 1
    stream = data[1:]
    whole, whole_error, reader = _feed(stream, max(len(stream), 1))
    pieces, pieces_error, _ = _feed(stream, step)
    assert whole_error == pieces_error, (whole_error, pieces_error)
    if whole_error is None:
        assert whole == pieces
    assert reader._in_progress <= LIMITS.max_partial_message_bytes
    if whole_error is not None:
        raise whole_error("reported")


if __name__ == "__main__":
    run(target, (RemoteProtocolError,))
