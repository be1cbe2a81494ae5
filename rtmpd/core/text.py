"""Client-supplied text made safe to log or echo: bounded in length, with no control characters.

Whatever a client sends as a string (flashVer, tcUrl, stream names, command
names) may hold newlines that forge log lines, terminal escape sequences, or
megabytes; a value that should be a string may be a list whose references
expand. ``client_text`` turns any such value into a short printable ``str``
in bounded time; ``url_without_query`` drops a URL's query (signed-URL
tokens) before it is logged. ``ascii_digits`` and ``ascii_number`` read a
number typed as text (an option, a port): ``str.isdigit()``, ``int()`` and
``float()`` also take the digits of other scripts.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

__all__ = [
    "DEFAULT_TEXT_LIMIT",
    "ascii_digits",
    "ascii_number",
    "bounded_number",
    "client_text",
    "escape_controls",
    "url_without_query",
]

#: Characters kept of a client string by default.
DEFAULT_TEXT_LIMIT = 256

# C0 controls, DEL and C1 controls (0x9b is a one-byte CSI on some terminals),
# the Unicode line/paragraph separators, and the bidirectional overrides that
# can make a line read differently from what it holds.
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})
_TABLE = str.maketrans(_ESCAPES)
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\\\\]")

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = DEFAULT_TEXT_LIMIT
_repr.maxother = 64


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``).

    Backslashes are doubled, so an escape in the output always stands for a
    character of the input. Printable text comes back unchanged (the same object).
    """
    if _UNSAFE_RE.search(text) is None:
        return text
    return text.translate(_TABLE)


def client_text(value: Any, limit: int = DEFAULT_TEXT_LIMIT) -> str:
    """A printable, bounded rendering of a value a client sent, for a log line or a reply.

    A ``str`` is cut to ``limit`` characters (an ellipsis and the original
    length mark the cut) and its control characters escaped; anything else
    is shown by ``reprlib`` (a few elements per level), so a list standing
    in for a string costs no more than a string. Never raises.
    """
    if not isinstance(value, str):
        try:
            value = _repr.repr(value)
        except Exception:  # a value's own __repr__ is not ours to trust
            value = f"<{type(value).__name__}>"
    if len(value) > limit:
        value = f"{value[:limit]}…(+{len(value) - limit} chars)"
    return escape_controls(value)


def url_without_query(url: Any) -> str:
    """``url`` (an RTMP tcUrl) without its query and fragment, where tokens and signatures travel.

    A non-string gives "" (it is no URL).
    """
    if not isinstance(url, str):
        return ""
    return url.partition("?")[0].partition("#")[0]


def ascii_digits(text: str) -> bool:
    """Whether ``text`` is one or more of the ASCII digits 0-9, and nothing else.

    ``str.isdigit()`` is not this: it also holds for superscripts (``"²"``,
    which ``int()`` refuses) and for the digits of other scripts (``"٣"``,
    which ``int()`` reads as 3).
    """
    return text.isascii() and text.isdigit()


def ascii_number(kind: type, text: str):
    """``kind(text)`` (``int`` or ``float``) of a number written in ASCII.

    ``int("٣")`` is 3 and ``float("١.٥")`` 1.5: a number typed in other
    digits is refused, not silently read. Raises ValueError.
    """
    if not text.isascii():
        raise ValueError(f"not a number in ASCII digits: {text!r}")
    return kind(text)


def bounded_number(kind: type, minimum: float, what: str, *, above: bool = False):
    """The coerce function of an option that is a finite ``kind`` (int or float) in ASCII digits, at
    least ``minimum`` (above it with ``above``); ``what`` names it in the error ("a number of seconds
    >= 0"). Raises ValueError; nan and inf are refused."""

    def coerce(value: str):
        try:
            number = ascii_number(kind, value)
        except ValueError:
            raise ValueError(f"must be {what}, got {value!r}") from None
        low_ok = number > minimum if above else number >= minimum
        if not (low_ok and number < float("inf")):  # nan compares false
            raise ValueError(f"must be {what}, got {value}")
        return number

    coerce.coerceDoc = f"{what[0].upper()}{what[1:]}."
    return coerce
