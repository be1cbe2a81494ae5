"""``--heap-trim-interval``: the heap trimmer (``rtmpd.server.heap``) and its option."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtmpd.core.text import bounded_number

if TYPE_CHECKING:
    from twisted.application.service import MultiService

__all__ = ["HEAP_PARAMETERS", "install_heap_trimmer"]


_seconds = bounded_number(float, 0, "a number of seconds >= 0 (0: off)")

HEAP_PARAMETERS = [
    [
        "heap-trim-interval",
        None,
        5.0,
        "Give freed C heap memory back to the system every this many seconds (glibc; 0: never)",
        _seconds,
    ],
]


def install_heap_trimmer(top: MultiService, options: Any, clock: Any) -> None:
    """Add the heap trimmer to ``top`` unless ``--heap-trim-interval`` is 0."""
    interval = options.get("heap-trim-interval", 5.0)
    if not interval:
        return
    from rtmpd.server.heap import HeapTrimmer

    HeapTrimmer(interval, clock).setServiceParent(top)
