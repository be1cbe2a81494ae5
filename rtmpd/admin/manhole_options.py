"""The manhole's limits against strangers, and the command-line options that set them.

Kept apart from ``rtmpd.admin.manhole`` so that ``rtmpd.tap`` can list the
options without importing conch. ``ManholeLimits`` is what
``rtmpd.admin.manhole.manhole_factory`` takes; ``MANHOLE_PARAMETERS`` are
the options and ``manhole_limits(options)`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtmpd.core.text import ascii_number, bounded_number

__all__ = ["MANHOLE_PARAMETERS", "ManholeLimits", "manhole_limits"]


@dataclass(frozen=True)
class ManholeLimits:
    """How long, how often and how many: the manhole's answers to a stranger at its door."""

    #: An SSH connection not logged in this many seconds after it opened is closed.
    login_grace: float = 30.0
    #: This many failed logins from one address within ``lockout`` seconds lock it out for ``lockout``.
    max_failures: int = 5
    lockout: float = 600.0
    #: Connections not yet logged in, at once; more are closed as they arrive.
    max_unauthenticated: int = 10


_defaults = ManholeLimits()


_positive_float = bounded_number(float, 0, "a positive number of seconds", above=True)


def _at_least_one(value: str) -> int:
    number = ascii_number(int, value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return number


_at_least_one.coerceDoc = "An integer, at least 1."


MANHOLE_PARAMETERS: list[list[Any]] = [
    [
        "manhole-login-grace",
        None,
        _defaults.login_grace,
        "Close a manhole SSH connection not logged in after this many seconds",
        _positive_float,
    ],
    [
        "manhole-max-failures",
        None,
        _defaults.max_failures,
        "Failed manhole logins from one address that lock it out (for --manhole-lockout seconds)",
        _at_least_one,
    ],
    [
        "manhole-lockout",
        None,
        _defaults.lockout,
        "Seconds over which manhole failures are counted, and an address stays locked out",
        _positive_float,
    ],
]


def manhole_limits(options: Mapping[str, Any]) -> ManholeLimits:
    """The limits these options set."""
    return ManholeLimits(
        login_grace=options["manhole-login-grace"],
        max_failures=options["manhole-max-failures"],
        lockout=options["manhole-lockout"],
    )
