"""Text for the operator's prompt: aligned tables of row dicts, and the formatters of their cells.

Nothing here knows what a stream or a connection is: a ``Table`` is a list of
rows (dicts of raw values, still usable by code) whose ``repr`` lays chosen
keys out in aligned columns. A missing value (None or "") prints as ``-``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Column", "Table", "duration", "kbps", "size", "text"]


def text(value: Any) -> str:
    """``str(value)``, or ``-`` for None and ""."""
    return "-" if value is None or value == "" else str(value)


def size(value: int | None) -> str:
    """A byte count in B, KiB, MiB or GiB with one decimal: ``1.5 KiB``."""
    if value is None:
        return "-"
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def kbps(bits_per_second: float | None) -> str:
    """A bit rate in whole kbit/s."""
    return "-" if bits_per_second is None else f"{bits_per_second / 1000:.0f}"


def duration(seconds: float | None) -> str:
    """Seconds as ``H:MM:SS`` (whole seconds)."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Column:
    """One column of a ``Table``: a header, the row key it shows, how to format it, which side it hugs."""

    def __init__(self, header: str, key: str, fmt: Callable[[Any], str] = text, right: bool = False) -> None:
        self.header = header
        self.key = key
        self.fmt = fmt
        self.right = right


class Table(list):
    """Rows (dicts of raw values) that print as an aligned text table, or as ``empty`` when there are none.

    A row may lack a column's key: the cell shows ``-``.
    """

    def __init__(self, columns: list[Column], rows: Iterable[dict[str, Any]], empty: str) -> None:
        super().__init__(rows)
        self.columns = columns
        self.empty = empty

    def __repr__(self) -> str:
        if not self:
            return self.empty
        cells = [[c.header for c in self.columns]]
        cells += [[c.fmt(row.get(c.key)) for c in self.columns] for row in self]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.columns))]
        lines = []
        for line in cells:
            parts = [
                cell.rjust(width) if column.right else cell.ljust(width)
                for cell, width, column in zip(line, widths, self.columns, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
        return "\n".join(lines)

    __str__ = __repr__
