"""Recording file names: ``{app}_{stream}_{YYYYMMDD}_{HHMMSS}.flv`` (or ``.mp4``), in UTC, one plain name.

Whatever a publisher calls its stream, the name this module returns is one
path component of printable ASCII: it cannot climb out of the recording
directory (``../``), name a subdirectory (``/``), start a hidden file
(``.``), carry NUL or control characters, or exceed a file system's name
length. Characters outside ``A-Z a-z 0-9 - .`` become ``_``; each part is
cut to a bounded length. Two different keys may therefore map to the same
name: uniqueness is the caller's job (a numeric suffix, see ``suffix``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["MAX_APP_CHARS", "MAX_STREAM_CHARS", "recording_file_name", "safe_part"]

#: Longest app and stream parts kept. With the date, a suffix and ".flv" a
#: name stays far below the usual 255-byte limit.
MAX_APP_CHARS = 64
MAX_STREAM_CHARS = 120

_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]+")


def safe_part(text: str, max_chars: int) -> str:
    """``text`` reduced to ``A-Z a-z 0-9 - . _``, not starting with a dot, at most ``max_chars`` long.

    Runs of other characters (``/``, ``\\``, spaces, NUL, controls, any
    non-ASCII) become one ``_``. Never returns an empty string or one made
    only of dots.
    """
    cleaned = _UNSAFE.sub("_", text)[:max_chars].lstrip(".")
    if not cleaned.strip("._"):
        # Nothing meaningful left ("", "..", "___"): a fixed, harmless word.
        return "unnamed"
    return cleaned


def recording_file_name(key: str, when: float, suffix: int = 0, extension: str = "flv") -> str:
    """The file name for a recording of stream ``key`` ("app/name") started at ``when`` (Unix time).

    The date and time are UTC. ``suffix`` > 0 appends ``_<suffix>`` before
    the extension, to tell apart recordings that would otherwise share a
    name (same key, same second). A key without "/" is taken as a stream
    name with an empty app. ``extension`` is the file format's ("flv", "mp4").
    """
    app, _, stream = key.partition("/") if "/" in key else ("", "", key)
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d_%H%M%S")
    name = f"{safe_part(app, MAX_APP_CHARS)}_{safe_part(stream, MAX_STREAM_CHARS)}_{stamp}"
    if suffix:
        name += f"_{suffix}"
    return f"{name}.{extension}"
