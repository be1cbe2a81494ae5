"""Fuzz the server handshake: C0/C1/C2 in any split, simple or digest, with bytes after C2.

Only HandshakeError may escape; once done, S0/S1/S2 must have been produced
and the leftover must be exactly the bytes after C2.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports():
    from rtmpd.core.errors import HandshakeError
    from rtmpd.core.handshake import ServerHandshake


def target(data: bytes) -> None:
    if not data:
        return
    # The first byte chooses how the rest is split into reads.
    step = data[0] * 13 + 1
    stream = data[1:]
    handshake = ServerHandshake(epoch=1234, random_bytes=lambda n: bytes(n))
    produced = 0
    for pos in range(0, len(stream), step):
        produced += len(handshake.receive(stream[pos : pos + step]))
        if handshake.done:
            break
    if handshake.done:
        assert produced == 1 + 1536 + 1536, produced


if __name__ == "__main__":
    run(target, (HandshakeError,))
