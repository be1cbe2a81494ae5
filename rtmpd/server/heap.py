"""Giving the C heap's free pages back to the system: glibc's ``malloc_trim`` every few seconds.

A burst (late joiners' keyframes and GOPs queued on their transports, a slow
player's backlog, the publisher's reads) grows glibc's heap; once its buffers
are freed, the pages stay in the process, because glibc returns memory by
itself only from the top of the heap and a few live objects sit above them.
``malloc_trim(0)`` hands every whole free page back (``MADV_DONTNEED``).
Measured with 250 players of a 3 Mb/s stream (docs/performance.md, "Lean
process: memory"): 47-58 MB of RSS without it, 41 MB with a trim every 5 s,
at about 0.13 ms of CPU per call. Where the C library has no ``malloc_trim``
(not glibc), nothing is done.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["FROM_LIBC", "HeapTrimmer", "libc_malloc_trim"]


def libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim(pad)`` from the C library this process runs on, or None without one."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


#: ``HeapTrimmer``'s default ``trim``: look up ``libc_malloc_trim()``.
FROM_LIBC: Any = object()


class HeapTrimmer(service.Service):
    """While running, calls ``trim(0)`` every ``interval`` seconds of ``clock`` (not at once: start-up
    is followed by the first trim). ``trim`` defaults to ``libc_malloc_trim()``; when there is none
    (None), the service does nothing and says so once."""

    log = Logger()
    name = "heap-trimmer"

    def __init__(self, interval: float, clock: Any, trim: Callable[[int], int] | None = FROM_LIBC) -> None:
        self.interval = interval
        self.clock = clock
        self._trim = libc_malloc_trim() if trim is FROM_LIBC else trim
        self._loop: LoopingCall | None = None
        #: Trims done, and how many of them gave memory back (malloc_trim returned 1).
        self.calls = self.released = 0

    def startService(self) -> None:
        super().startService()
        if self._trim is None:
            self.log.info("No malloc_trim in this C library: the heap is not trimmed")
            return
        self._loop = LoopingCall(self.trim_now)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()

    def trim_now(self) -> None:
        """Give the heap's free pages back now."""
        if self._trim is None:
            return
        self.calls += 1
        self.released += bool(self._trim(0))
