"""Fuzz the AMF0 decoder: any bytes decode within the expansion budget or raise AMFDecodeError.

Whatever decodes is also walked the ways the server walks client values
(``client_text`` for logs, AMF0 re-encoding for relays and recordings), which
must stay within the per-input budgets: the expansion budget is what makes
that true for values built from references.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports():
    from rtmpd.core import amf0
    from rtmpd.core.errors import AMFDecodeError, AMFEncodeError
    from rtmpd.core.text import client_text


def target(data: bytes) -> None:
    values = amf0.decode_all(data)
    for value in values:
        client_text(value)
        try:
            amf0.encode(value)
        except AMFEncodeError:
            pass  # a cycle, a non-str key from AMF3, an empty key: refused, typed


if __name__ == "__main__":
    run(target, (AMFDecodeError,))
