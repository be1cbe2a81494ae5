"""The ``--auth-*`` command-line options of the twistd plugin, and whether a listener is on loopback.

``AccessOptions`` is mixed into ``rtmpd.tap.Options``: it checks every
value at start-up (a bad file, rule or URL stops start-up with one line)
and leaves the frozen ``AccessSettings`` in ``access_settings``; the tap
builds the policy from them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.python import usage

from rtmpd.access.addresses import parse_rule
from rtmpd.access.errors import CallbackConfigError, ConfigFileError, RuleError
from rtmpd.access.settings import DEFAULT_EXPIRY_GRACE, AccessSettings, build_policy
from rtmpd.core.text import ascii_number

__all__ = ["AUTH_PARAMETERS", "AccessOptions", "choice", "on_loopback"]


def _seconds_or_never(value: str) -> float | None:
    if value == "never":
        return None
    number = ascii_number(float, value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be a number of seconds >= 0 or 'never', got {value}")
    return number


_seconds_or_never.coerceDoc = "Seconds (>= 0), or 'never'."


def _non_negative(value: str) -> float:
    number = ascii_number(float, value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be a number >= 0, got {value}")
    return number


_non_negative.coerceDoc = "A number >= 0."


def _positive_float(value: str) -> float:
    number = ascii_number(float, value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be positive, got {value}")
    return number


_positive_float.coerceDoc = "A positive number."


def choice(*choices: str):
    """An option coercer accepting only ``choices`` (shared with the tap's other options)."""

    def coerce(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    coerce.coerceDoc = f"One of: {', '.join(choices)}."
    return coerce


def _rule(option: str, rule: str) -> str:
    try:
        parse_rule(rule, True)
    except (RuleError, ValueError) as e:
        raise usage.UsageError(f"{option}: {e}") from e
    return rule


AUTH_PARAMETERS: list[list[Any]] = [
    ["auth-secrets", None, None, "Signed URLs: file of 'APP SECRET' lines (docs/access.md)"],
    ["auth-keys", None, None, "Key file: 'APP KEY [play] [name=NAME] [record=yes|no]' lines"],
    ["auth-callback", None, None, "HTTP callback URL asked for each connect, publish and play"],
    [
        "auth-callback-timeout",
        None,
        5.0,
        "Seconds to wait for the HTTP callback's answer",
        _positive_float,
    ],
    [
        "auth-failure-policy",
        None,
        "closed",
        "When the callback is down: closed (deny) or open (allow)",
        choice("closed", "open"),
    ],
    [
        "auth-callback-cache",
        None,
        0.0,
        "Seconds to cache the callback's answers (0: off)",
        _non_negative,
    ],
    [
        "auth-recheck",
        None,
        0.0,
        "Every S seconds, ask again whether each live publisher may publish; end it if not (0: off)",
        _non_negative,
    ],
    [
        "auth-expiry-grace",
        None,
        DEFAULT_EXPIRY_GRACE,
        "Seconds a stream may outlive its signed URL's exp ('never': no mid-stream end)",
        _seconds_or_never,
    ],
]


class AccessOptions:
    """The ``--auth-allow``/``--auth-deny`` handlers and the settings check (mixed into the tap's Options)."""

    access_settings: AccessSettings

    def init_access(self) -> None:
        self["auth-allow"] = []  # type: ignore[index]
        self["auth-deny"] = []  # type: ignore[index]

    def opt_auth_allow(self, rule: str) -> None:
        """Only these networks may do ACTION: ACTION:CIDR, ACTION one of connect, publish, play, all
        (repeatable)."""
        self["auth-allow"].append(_rule("--auth-allow", rule))

    def opt_auth_deny(self, rule: str) -> None:
        """These networks may not do ACTION: ACTION:CIDR (repeatable)."""
        self["auth-deny"].append(_rule("--auth-deny", rule))

    def access_settings_from_options(self) -> AccessSettings:
        settings = AccessSettings(
            secrets=self["auth-secrets"],
            keys=self["auth-keys"],
            callback=self["auth-callback"],
            callback_timeout=self["auth-callback-timeout"],
            failure_policy=self["auth-failure-policy"],
            callback_cache=self["auth-callback-cache"],
            allow=tuple(self["auth-allow"]),
            deny=tuple(self["auth-deny"]),
            expiry_grace=self["auth-expiry-grace"],
            revoke_live=self["auth-revoke-live"],
            recheck_interval=self["auth-recheck"],
        )
        # Imported here, after rtmpd.tap chose whether TLS is loaded (rtmpd.tap.tls).
        from twisted.internet import reactor

        try:
            # Built once here so that a bad file or URL stops start-up with one line; makeService
            # builds the policy it runs.
            build_policy(settings, reactor)
        except (ConfigFileError, RuleError, CallbackConfigError, ValueError) as e:
            raise usage.UsageError(f"access control: {e}") from e
        return settings


def on_loopback(description: str) -> bool:
    """Whether an endpoint description listens only on loopback (or a UNIX socket)."""
    kind = description.split(":", 1)[0]
    if kind == "unix":
        return True
    match = re.search(r"(?:^|:)interface=((?:\\.|[^:])*)", description)
    if match is None:
        return False
    interface = match.group(1).replace("\\", "")
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return interface == "localhost"
