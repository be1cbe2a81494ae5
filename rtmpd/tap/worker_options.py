"""The options of ``--workers N`` (and the internal ``--worker-spec``), apart from their wiring.

``rtmpd.tap.workers`` builds the parent or the worker; it imports the AMP
directory and the reactor, so the tap's options import only this module.
"""

from __future__ import annotations

import os
from typing import Any

from rtmpd.core.text import ascii_number

__all__ = ["DEFAULT_TTL", "WORKER_PARAMETERS", "wants_workers", "worker_count"]

#: Seconds a claim lives without a refresh in the in-host directory.
DEFAULT_TTL = 5.0


def worker_count(value: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    count = ascii_number(int, value)
    if not 1 <= count <= 256:
        raise ValueError(f"--workers must be 1..256 or auto, got {value}")
    return count


worker_count.coerceDoc = "A number of processes (1..256), or auto (one per core)."

WORKER_PARAMETERS = [
    ["workers", None, 1, "Worker processes sharing the listeners (auto: one per core)", worker_count],
    ["worker-spec", None, None, "(internal) what a worker process is told by its parent"],
]


def wants_workers(options: Any) -> bool:
    """Whether these options describe the parent of several workers, or one worker."""
    return options["workers"] > 1 or bool(options["worker-spec"])
