"""Whether this process may load TLS (pyOpenSSL, and cryptography under it): the switch and its error.

Twisted's TCP transport imports pyOpenSSL whenever it is installed
(``twisted.internet.tcp`` -> ``_newtls`` -> ``twisted.protocols.tls`` ->
``OpenSSL`` -> ``cryptography``): about 20 MB of RSS in every process, used or
not. Twisted supports running without pyOpenSSL: its TCP connections then
have no ``startTLS``, ``listenSSL`` is absent and ``endpoints.wrapClientTLS``
raises NotImplementedError. ``keep_out()`` makes ``import OpenSSL`` fail by
putting None under ``sys.modules["OpenSSL"]`` (the import system's documented
way to stop an import), so that Twisted's networking modules take that path
when they are first imported.

The choice cannot be undone: Twisted's modules remember at import time that
TLS is missing. ``rtmpd.tap`` therefore makes it once, from the options,
before anything imports the reactor, and only for a process that twistd (or
twist) starts; code that would need TLS later calls ``require()``, which
raises ``TLSUnavailable`` with what to do instead of an ImportError from deep
inside Twisted.
"""

from __future__ import annotations

import sys

__all__ = ["TLSUnavailable", "available", "keep_out", "require", "unavailable"]

#: The package whose import is stopped; cryptography is only loaded under it (or by the SSH manhole).
BLOCKED = "OpenSSL"


class TLSUnavailable(RuntimeError):
    """TLS was left out of this process at start-up because no option needed it."""


def keep_out() -> bool:
    """Make pyOpenSSL unimportable from now on. True if TLS is kept out; False (and nothing done) when
    pyOpenSSL or Twisted's TCP transport is already loaded: it is too late then, and TLS stays."""
    if BLOCKED in sys.modules or "twisted.internet.tcp" in sys.modules:
        return not available()
    sys.modules[BLOCKED] = None  # type: ignore[assignment]
    return True


def available() -> bool:
    """Whether TLS was not kept out of this process (pyOpenSSL may still be missing: not installed)."""
    return sys.modules.get(BLOCKED, True) is not None


def require(what: str) -> None:
    """Raise TLSUnavailable, naming ``what`` needs it, if TLS was kept out of this process."""
    if not available():
        raise unavailable(what)


def unavailable(what: str) -> TLSUnavailable:
    """The error that says ``what`` needs TLS, which this process left out, and what to do instead."""
    return TLSUnavailable(
        f"{what} needs TLS, which this rtmpd process left out at start-up because no option needed "
        "it: start rtmpd with --tls on (or with the rtmps://, https:// or ssl: option)"
    )
