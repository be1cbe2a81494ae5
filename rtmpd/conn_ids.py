"""Connection ids, unique on this host: one text for a connection in the logs, the API and the manhole.

A process numbers its connections ``c000001``, ``c000002``... (``conn_id``:
RTMP clients, HTTP and WebSocket players) and the pulls it makes
``pull00001``... (``pull_id``). With ``--workers N`` several processes serve
the same listeners and numbered alike, so each worker prefixes its ids with
its number: ``w2-c000017``. ``set_worker`` is called once, by the wiring of a
worker (``rtmpd.tap.workers``), before it accepts any connection. A
restarted worker numbers from 1 again, as a restarted server does.
"""

from __future__ import annotations

__all__ = ["conn_id", "pull_id", "set_worker", "worker_prefix"]

_prefix = ""


def set_worker(worker_id: int | None) -> None:
    """Ids made from now on say they belong to worker ``worker_id`` (None: a single process, no prefix)."""
    global _prefix
    _prefix = "" if worker_id is None else f"w{int(worker_id)}-"


def worker_prefix() -> str:
    """``"w2-"`` in worker 2, ``""`` in a single process."""
    return _prefix


def conn_id(number: int) -> str:
    """The id of this process's connection ``number``: ``c000042``, or ``w2-c000042`` in worker 2."""
    return f"{_prefix}c{number:06d}"


def pull_id(number: int) -> str:
    """The id of this process's pull upstream ``number``: ``pull00042``, or ``w2-pull00042`` in worker 2."""
    return f"{_prefix}pull{number:05d}"
