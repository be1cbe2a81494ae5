"""Reading the small line-oriented files of access control (secrets, keys).

One record a line, fields separated by spaces or tabs; ``#`` starts a
comment that runs to the end of the line (so a secret or key cannot contain
``#``); blank lines are skipped. A file is read whole, decoded as UTF-8, and
bounded in size so a wrong path (``/dev/zero``, a video) fails fast.
"""

from __future__ import annotations

from collections.abc import Iterator

from rtmpd.access.errors import ConfigFileError

__all__ = ["MAX_FILE_BYTES", "read_text", "records"]

#: A secrets or key file larger than this is refused: they are hand-written lists.
MAX_FILE_BYTES = 4 * 1024 * 1024


def read_text(path: str, error: type[ConfigFileError]) -> str:
    """The file's text. Raises ``error`` (with line 0) if it cannot be read, is too large or not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise error(path, 0, f"cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise error(path, 0, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(path, line, "not UTF-8 text") from None


def records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each line that has any, comments removed."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.partition("#")[0].split()
        if fields:
            yield number, fields
