"""The disk calls of a recording: create a file without ever truncating one, fsync it and its directory.

Also how a disk error is named in logs and events.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO

__all__ = ["describe_error", "fsync_directory", "fsync_file", "open_exclusive", "write_all"]


def open_exclusive(path: str) -> BinaryIO:
    """Create ``path`` for writing, unbuffered; FileExistsError if it exists (never truncates a file)."""
    return open(path, "xb", buffering=0)  # noqa: SIM115 - the writer owns and closes it


def fsync_file(file: BinaryIO) -> None:
    """fsync ``file`` if it is a real file (a test double without a descriptor is left alone)."""
    fileno = getattr(file, "fileno", None)
    if fileno is None:
        return
    try:
        fd = fileno()
    except (OSError, ValueError):
        return
    os.fsync(fd)


def fsync_directory(path: str) -> None:
    """fsync the directory holding ``path``, so that a file created or finished there survives a power cut."""
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_error(error: BaseException) -> str:
    """ "ENOSPC: No space left on device" for an OSError, else the exception's type and text."""
    if isinstance(error, OSError) and error.errno is not None:
        return f"{errno.errorcode.get(error.errno, str(error.errno))}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


def write_all(file: BinaryIO, path: str, data: bytes) -> None:
    """Write all of ``data`` to the unbuffered ``file`` (a short write is continued); OSError if stuck."""
    view = memoryview(data)
    while view:
        n = file.write(view)
        if n is None or n <= 0:
            raise OSError(f"write to {path} made no progress")
        view = view[n:]
