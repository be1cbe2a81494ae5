"""What the server lets of a client's values into log lines and policy requests.

A client's AMF value can be large, nested, or, through AMF references,
expand exponentially when turned into text. Only strings are taken, and
they are cut short; anything else becomes a short placeholder. (Escaping
control characters is the log observer's job, ``rtmpd.logs``.)
"""

from __future__ import annotations

import itertools
from typing import Any

#: Characters of a client's tcUrl or flashVer that go into a log line.
LOGGED_TEXT_LENGTH = 256
#: Metadata field names logged, each cut to ``FIELD_NAME_LENGTH`` characters.
LOGGED_FIELDS = 40
FIELD_NAME_LENGTH = 64


def client_text(value: Any, length: int) -> str:
    """``value`` cut to ``length`` characters if it is a string, else ""."""
    return value[:length] if isinstance(value, str) else ""


def field_names(values: dict[Any, Any]) -> list[str]:
    """The first ``LOGGED_FIELDS`` keys of ``values`` as short strings, sorted (AMF3 dictionary keys
    need not be strings, nor comparable with each other)."""
    names = [
        key[:FIELD_NAME_LENGTH] if isinstance(key, str) else f"<{type(key).__name__}>"
        for key in itertools.islice(values, LOGGED_FIELDS)
    ]
    return sorted(names)
