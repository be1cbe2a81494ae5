"""The recording's command-line options beyond ``--record-dir``: limits, durability and file format.

``rtmpd.tap`` lists ``RECORDING_PARAMETERS`` among its options and passes
``recording_config(options)`` into the ``ServerConfig`` it builds; the
defaults are ``ServerConfig``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtmpd.config import ServerConfig
from rtmpd.core.text import ascii_number

__all__ = ["RECORDING_PARAMETERS", "RECORD_FORMATS", "recording_config"]

_defaults = ServerConfig()


def _at_least_one(value: str) -> int:
    number = ascii_number(int, value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return number


_at_least_one.coerceDoc = "An integer, at least 1."


def _not_negative(value: str) -> float:
    number = ascii_number(float, value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be a finite number >= 0, got {value}")
    return number


_not_negative.coerceDoc = "A number of seconds, 0 or more."


def _format(value: str) -> str:
    if value not in RECORD_FORMATS:
        raise ValueError(f"must be one of {', '.join(RECORD_FORMATS)}, got {value!r}")
    return value


_format.coerceDoc = "flv or mp4."

#: The recording file formats.
RECORD_FORMATS = ("flv", "mp4")

RECORDING_PARAMETERS: list[list[Any]] = [
    [
        "record-format",
        None,
        _defaults.record_format,
        "Recording file format: flv (every tag as received) or mp4 (fragmented MP4, one fragment a second)",
        _format,
    ],
    [
        "record-max-active",
        None,
        _defaults.record_max_active,
        "Most recordings with an open file at once; streams over it are relayed, not recorded",
        _at_least_one,
    ],
    [
        "record-max-new",
        None,
        _defaults.record_max_new,
        "Most new recording files (starts and segments) a minute",
        _at_least_one,
    ],
    [
        "record-fsync-interval",
        None,
        _defaults.record_fsync_interval,
        "fsync open recordings every this many seconds (0: only when a file is finished)",
        _not_negative,
    ],
]


def recording_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ServerConfig`` fields these options set."""
    return {
        "record_max_active": options["record-max-active"],
        "record_max_new": options["record-max-new"],
        "record_fsync_interval": options["record-fsync-interval"],
        "record_format": options["record-format"],
    }
