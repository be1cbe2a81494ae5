"""Which path a new recording file gets: names claimed in this process, then tried in turn on disk.

``rtmpd.recording.names`` says what a file of a key started at some second
is called; this module makes names of one process distinct at once (two
files of one key in the same second: a quick re-publish, or short
segments) and gives the writer thread the alternatives to try if a name
is taken on disk anyway. The writer's exclusive create settles that: a
file is never overwritten.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

from rtmpd.recording.names import recording_file_name

__all__ = ["FilePaths"]


class FilePaths:
    """Paths in ``record_dir`` for new recording files, each name handed out once per process.

    Only the names of the current second are remembered: a name embeds its
    second, so names of earlier seconds cannot clash with new ones.
    """

    def __init__(self, record_dir: str, extension: str = "flv") -> None:
        self.record_dir = record_dir
        self.extension = extension
        self._claimed: set[str] = set()
        self._claimed_second: int | None = None

    def claim(self, key: str, when: float) -> tuple[str, Iterator[str]]:
        """The first path to try for a file of ``key`` starting at ``when``, and every path to try in turn.

        The iterator starts with the first path, then numbered alternatives
        (``_1``, ``_2``, ... after the claimed one), without end.
        """
        second = int(when)
        if second != self._claimed_second:
            self._claimed.clear()
            self._claimed_second = second
        for suffix in itertools.count():
            name = recording_file_name(key, when, suffix, self.extension)
            if name not in self._claimed:
                break
        self._claimed.add(name)
        first = os.path.join(self.record_dir, name)
        rest = (
            os.path.join(self.record_dir, recording_file_name(key, when, n, self.extension))
            for n in itertools.count(suffix + 1)
        )
        return first, itertools.chain((first,), rest)
