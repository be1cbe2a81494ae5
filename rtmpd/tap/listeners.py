"""The listener options' endpoint descriptions, checked once the options are parsed.

Checking a description (``serverFromString``) imports Twisted's networking,
which must wait until ``rtmpd.tap.tls`` has chosen whether TLS is loaded; the
coerce function (``rtmpd.tap.coerce.endpoint_description``) only turns a bare
port number into ``tcp:PORT`` and checks that the numbers are ASCII digits.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

__all__ = ["LISTENER_OPTIONS", "check_endpoint", "check_listeners"]

#: The options that hold endpoint descriptions ("listen" is a list).
LISTENER_OPTIONS = ("port", "listen", "http", "manhole")


def check_endpoint(value: str) -> None:
    """Raise ValueError unless ``value`` parses as a Twisted server endpoint description."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, value)
    except Exception as e:  # serverFromString raises assorted types for bad descriptions
        raise ValueError(f"not a port number or endpoint description: {value!r} ({e})") from e


def check_listeners(options: Any) -> None:
    """Check every listener option's description. Raises UsageError naming the option."""
    for name in LISTENER_OPTIONS:
        values = options.get(name) if name == "listen" else [options.get(name)]
        for description in values or []:
            if description is None:
                continue
            try:
                check_endpoint(description)
            except ValueError as e:
                raise usage.UsageError(f"--{name}: {e}") from e
