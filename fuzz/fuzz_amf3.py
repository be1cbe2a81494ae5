"""Fuzz the AMF3 decoder (values, reference tables, traits, dictionaries with keys of any type).

Several values are decoded with one ``Decoder`` so the reference tables carry
over, as in an AMF3 message; each must stay within the expansion budget or
raise AMFDecodeError, and whatever decodes is walked as the server would.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports():
    from rtmpd.core import amf3
    from rtmpd.core.errors import AMFDecodeError, AMFEncodeError
    from rtmpd.core.text import client_text


def target(data: bytes) -> None:
    decoder = amf3.Decoder()
    pos = 0
    for _ in range(8):
        if pos >= len(data):
            break
        value, pos = decoder.decode(data, pos)
        client_text(value)
        try:
            amf3.encode(value)
        except AMFEncodeError:
            pass


if __name__ == "__main__":
    run(target, (AMFDecodeError,))
