"""The coerce functions of the plugin's options: endpoint descriptions and numbers.

Each takes the text typed on the command line and returns the value, or
raises ValueError (``usage.Options`` turns it into a one-line usage error).
None imports Twisted's networking: whether TLS is loaded is chosen after
parsing (``rtmpd.tap.tls``), and ``rtmpd.tap.listeners`` then checks that
each endpoint description parses.
A number is ASCII: ``int()`` and ``float()`` also read the digits of other
scripts (``"٣"`` is 3), and ``str.isdigit()`` says yes to ``"²"``, which
``int()`` refuses.
"""

from __future__ import annotations

import math
import re

from rtmpd.core.limits import OPTIONS_ZERO_OK
from rtmpd.core.messages import MAX_CHUNK_SIZE
from rtmpd.core.text import ascii_digits, ascii_number

__all__ = ["chunk_size_value", "endpoint_description", "limit_value", "positive"]


def _endpoint_numbers(description: str) -> list[str]:
    """The port (first positional argument or ``port=``) and ``backlog=`` of a tcp/tcp6/ssl description."""
    kind, *arguments = re.split(r"(?<!\\):", description)
    if kind not in ("tcp", "tcp6", "ssl"):
        return []
    named = [argument.partition("=") for argument in arguments]
    positional = [name for name, equals, _ in named if not equals][:1]
    return positional + [value for name, _, value in named if name in ("port", "backlog")]


def endpoint_description(value: str) -> str:
    """A bare port number becomes ``tcp:PORT``; anything else is checked by
    ``rtmpd.tap.listeners.check_endpoint`` once the options are parsed.

    Numbers are ASCII digits: Twisted reads ``tcp:٣`` as port 3, which nobody means.
    """
    if ascii_digits(value):
        port = int(value)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} outside 0..65535")
        return f"tcp:{port}"
    if ":" not in value:  # every description starts with its type (tcp:, unix:, ...)
        raise ValueError(f"not a port number or endpoint description: {value!r}")
    for number in _endpoint_numbers(value):
        if not ascii_digits(number):
            raise ValueError(f"{value!r}: {number!r} is not a number in ASCII digits")
    return value


endpoint_description.coerceDoc = "A port number or a Twisted endpoint description (tcp:, tcp6:, ssl:, unix:)."


def positive(kind: type):
    """The coerce function of an option that is a positive ``kind`` (int or float)."""

    def coerce(value: str):
        number = ascii_number(kind, value)
        if not 0 < number < math.inf:  # nan compares false
            raise ValueError(f"must be positive, got {value}")
        return number

    coerce.coerceDoc = f"A positive {'number' if kind is float else 'integer'}."
    return coerce


def limit_value(name: str, kind: type):
    """The coerce function of a Limits option: positive, or also 0 (no budget) for a rate."""
    positive_value = positive(kind)
    if name not in OPTIONS_ZERO_OK:
        return positive_value
    return lambda value: ascii_number(kind, value) and positive_value(value)


def chunk_size_value(value: str) -> int:
    """The outgoing chunk size: 1..MAX_CHUNK_SIZE."""
    size = ascii_number(int, value)
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE}")
    return size
