"""``--tls auto|on``: whether the process loads TLS, decided from the options before Twisted's networking.

With ``auto`` (the default) TLS (pyOpenSSL, cryptography) is loaded only when
an option needs it: a listener that is not ``tcp:``, ``tcp6:``, ``unix:`` or
``systemd:`` (``ssl:`` and endpoint plugins), an ``rtmps://`` push or pull,
``--push-ca``, an ``https://`` access callback or webhook, or ``--cluster``
(internal pulls go to whatever URL the other nodes advertise). ``on`` loads it
always, for ``rtmps://`` push rules added at run time through the API or the
manhole: without it, such a destination fails with ``TLSUnavailable`` (its
last error says to start with ``--tls on``). See ``rtmpd.tls``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rtmpd import tls
from rtmpd.access.options import choice

__all__ = ["TLS_PARAMETERS", "apply_tls_choice", "tls_reasons"]

TLS_PARAMETERS = [
    [
        "tls",
        None,
        "auto",
        "Load TLS: auto (only if an option needs it: ssl: listener, rtmps://, https://) or on "
        "(also for rtmps:// pushes added at run time)",
        choice("auto", "on"),
    ],
]

#: Endpoint types that need no TLS; any other (ssl:, plugins) may.
PLAIN_ENDPOINTS = frozenset({"tcp", "tcp6", "unix", "systemd"})
_TLS_SCHEMES = ("rtmps://", "https://")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif hasattr(value, "target"):  # a hook (rtmpd.hooks.spec.HookSpec)
        yield from _strings(value.target)


def _listeners(options: Any) -> Iterable[tuple[str, str]]:
    for name in ("port", "http", "manhole"):
        if options.get(name):
            yield name, options[name]
    for description in options.get("listen") or []:
        yield "listen", description


def tls_reasons(options: Any) -> list[str]:
    """What in ``options`` needs TLS, one phrase each (empty: nothing does)."""
    reasons = []
    if options.get("tls") == "on":
        reasons.append("--tls on")
    for name, description in _listeners(options):
        kind = description.split(":", 1)[0].lower()
        if kind not in PLAIN_ENDPOINTS:
            reasons.append(f"--{name} {kind}:")
    for name in ("push-ca", "cluster"):
        if options.get(name):
            reasons.append(f"--{name}")
    for name, value in options.items():
        if name in ("push-ca", "cluster"):
            continue
        if any(s.lower().startswith(_TLS_SCHEMES) for s in _strings(value)):
            reasons.append(f"--{name} (a TLS URL)")
    return reasons


def apply_tls_choice(options: Any) -> bool:
    """Keep TLS out of this process when no option needs it; True if it is kept out.

    Only for a process that twistd or twist starts (``options.parent`` set): an
    Options parsed inside another program (a test) must not change what that
    program can import."""
    if options.parent is None or tls_reasons(options):
        return False
    return tls.keep_out()
