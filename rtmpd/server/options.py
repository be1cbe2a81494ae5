"""Command-line options of the connection limits and deadlines (issue 11), and their defaults.

``rtmpd.tap.Options`` adds ``LIMIT_PARAMETERS`` to its own; ``config_fields``
turns the parsed values into ``ServerConfig`` fields. The defaults never
affect a real client: the total connection limit follows the process's
descriptor limit (what it would run out of anyway), the per-address limit
is off (viewers behind one NAT share an address), and the deadlines are far
longer than any client waits.
"""

from __future__ import annotations

import resource
from typing import Any

from rtmpd.config import ServerConfig
from rtmpd.core.text import ascii_number

#: Descriptors kept back from connections (listening sockets, logs, the manhole, recordings' files).
DESCRIPTOR_RESERVE = 64

_defaults = ServerConfig()


def default_max_connections() -> int:
    """The descriptor limit less a reserve (a quarter of it when the limit is small); 0 if unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 0
    return max(1, soft - min(DESCRIPTOR_RESERVE, soft // 4))


def _count(value: str) -> int:
    number = ascii_number(int, value)
    if number < 0:
        raise ValueError(f"must be 0 (no limit) or more, got {value}")
    return number


_count.coerceDoc = "A whole number; 0 means no limit."


def _seconds(value: str) -> float:
    number = ascii_number(float, value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {value}")
    return number


_seconds.coerceDoc = "A positive number of seconds."


def _positive(value: str) -> int:
    number = ascii_number(int, value)
    if number <= 0:
        raise ValueError(f"must be positive, got {value}")
    return number


_positive.coerceDoc = "A positive integer."


def _milliseconds(value: str) -> float:
    number = ascii_number(float, value)
    if not 0 <= number <= 1000:
        raise ValueError(f"must be 0..1000 milliseconds, got {value}")
    return number


_milliseconds.coerceDoc = "Milliseconds, 0..1000; 0 means off."

#: The operator's default send window (docs/performance.md, "Send windows"): of the windows measured
#: (0, 5, 10, 20 ms), the longest whose added latency stays within the 20 ms the project allows at the
#: p99. ``ServerConfig.send_window`` itself stays 0, so code that builds a config (tests, embedders) writes
#: at once unless it asks for a window.
DEFAULT_SEND_WINDOW_MS = 10.0


LIMIT_PARAMETERS: list[list[Any]] = [
    [
        "max-connections",
        None,
        None,
        "Most connections at once, 0 for no limit (default: the descriptor limit less a reserve)",
        _count,
    ],
    [
        "max-connections-per-address",
        None,
        _defaults.max_connections_per_address,
        "Most connections at once from one IP address, 0 for no limit",
        _count,
    ],
    [
        "connect-timeout",
        None,
        _defaults.connect_timeout,
        "Seconds from the end of the handshake to a successful connect",
        _seconds,
    ],
    [
        "idle-timeout",
        None,
        _defaults.idle_timeout,
        "Seconds a connected client may go without publishing or playing",
        _seconds,
    ],
    [
        "max-stream-requests",
        None,
        _defaults.max_stream_requests,
        "createStream/publish/play requests one connection may make",
        _positive,
    ],
    [
        "gop-cache-messages",
        None,
        _defaults.gop_cache_max_messages,
        "Most messages in a stream's GOP cache",
        _positive,
    ],
    [
        "send-window-ms",
        None,
        DEFAULT_SEND_WINDOW_MS,
        "Milliseconds a player's media may wait to go out with more in one write (0: no waiting; "
        "keyframes never wait)",
        _milliseconds,
    ],
]


def config_fields(options: Any) -> dict[str, Any]:
    """The ``ServerConfig`` fields the options of ``LIMIT_PARAMETERS`` set."""
    max_connections = options["max-connections"]
    return {
        "max_connections": default_max_connections() if max_connections is None else max_connections,
        "max_connections_per_address": options["max-connections-per-address"],
        "connect_timeout": options["connect-timeout"],
        "idle_timeout": options["idle-timeout"],
        "max_stream_requests": options["max-stream-requests"],
        "gop_cache_max_messages": options["gop-cache-messages"],
        "send_window": options["send-window-ms"] / 1000,
    }
