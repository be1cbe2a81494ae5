"""Access control: who may connect, publish and play, by address, signed URL, key file or HTTP callback.

The server asks one ``AccessPolicy`` (``build_policy(AccessSettings(...),
reactor)``) for each connect, publish and play; it fires with an ``Allow``
(maybe renaming the stream, setting recording, with an expiry) or fails
with an ``AccessDenied`` that the command dispatcher answers with the right
status code. docs/access.md is the operator's guide.

This package imports nothing of the server: it sees a client only as a
``Request``. Modules: ``decision`` (the interface and ``Chain``),
``signed``, ``keyfile``, ``callback``, ``addresses`` (the authorisers),
``throttle``, ``counters``, ``policy``, ``settings``, ``errors``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtmpd.access.addresses import AddressRule, AddressRules, parse_rule
    from rtmpd.access.callback import FailurePolicy, HTTPCallback
    from rtmpd.access.counters import AccessCounters, Refusal
    from rtmpd.access.decision import (
        ALLOW,
        Action,
        Allow,
        Authoriser,
        Chain,
        Decision,
        Deny,
        Reloaded,
        Request,
    )
    from rtmpd.access.errors import (
        AccessDenied,
        CallbackConfigError,
        ConfigFileError,
        ConnectDenied,
        KeyFileError,
        PlayDenied,
        PublishDenied,
        RuleError,
        SecretsFileError,
    )
    from rtmpd.access.keyfile import KeyChanges, KeyFile, KeyTable, StreamKeys
    from rtmpd.access.policy import AccessPolicy, ReloadResult
    from rtmpd.access.settings import DEFAULT_EXPIRY_GRACE, AccessSettings, build_policy
    from rtmpd.access.signed import SecretsFile, SecretsTable, SignedURLs, sign, signed_query
    from rtmpd.access.throttle import FailureThrottle

#: Where each public name lives: imported on first use, so that importing the package (the
#: server does, for the options) does not load the HTTP callback's client (treq, twisted.web).
_MODULES = {
    "ALLOW": "rtmpd.access.decision",
    "AccessCounters": "rtmpd.access.counters",
    "AccessDenied": "rtmpd.access.errors",
    "AccessPolicy": "rtmpd.access.policy",
    "AccessSettings": "rtmpd.access.settings",
    "Action": "rtmpd.access.decision",
    "AddressRule": "rtmpd.access.addresses",
    "AddressRules": "rtmpd.access.addresses",
    "Allow": "rtmpd.access.decision",
    "Authoriser": "rtmpd.access.decision",
    "CallbackConfigError": "rtmpd.access.errors",
    "Chain": "rtmpd.access.decision",
    "ConfigFileError": "rtmpd.access.errors",
    "ConnectDenied": "rtmpd.access.errors",
    "DEFAULT_EXPIRY_GRACE": "rtmpd.access.settings",
    "Decision": "rtmpd.access.decision",
    "Deny": "rtmpd.access.decision",
    "FailurePolicy": "rtmpd.access.callback",
    "FailureThrottle": "rtmpd.access.throttle",
    "HTTPCallback": "rtmpd.access.callback",
    "KeyChanges": "rtmpd.access.keyfile",
    "KeyFile": "rtmpd.access.keyfile",
    "KeyFileError": "rtmpd.access.errors",
    "KeyTable": "rtmpd.access.keyfile",
    "PlayDenied": "rtmpd.access.errors",
    "PublishDenied": "rtmpd.access.errors",
    "Refusal": "rtmpd.access.counters",
    "ReloadResult": "rtmpd.access.policy",
    "Reloaded": "rtmpd.access.decision",
    "Request": "rtmpd.access.decision",
    "RuleError": "rtmpd.access.errors",
    "SecretsFile": "rtmpd.access.signed",
    "SecretsFileError": "rtmpd.access.errors",
    "SecretsTable": "rtmpd.access.signed",
    "SignedURLs": "rtmpd.access.signed",
    "StreamKeys": "rtmpd.access.keyfile",
    "build_policy": "rtmpd.access.settings",
    "parse_rule": "rtmpd.access.addresses",
    "sign": "rtmpd.access.signed",
    "signed_query": "rtmpd.access.signed",
}

__all__ = [
    "ALLOW",
    "DEFAULT_EXPIRY_GRACE",
    "AccessCounters",
    "AccessDenied",
    "AccessPolicy",
    "AccessSettings",
    "Action",
    "AddressRule",
    "AddressRules",
    "Allow",
    "Authoriser",
    "CallbackConfigError",
    "Chain",
    "ConfigFileError",
    "ConnectDenied",
    "Decision",
    "Deny",
    "FailurePolicy",
    "FailureThrottle",
    "HTTPCallback",
    "KeyChanges",
    "KeyFile",
    "KeyFileError",
    "KeyTable",
    "PlayDenied",
    "PublishDenied",
    "Refusal",
    "ReloadResult",
    "Reloaded",
    "Request",
    "RuleError",
    "SecretsFile",
    "SecretsFileError",
    "SecretsTable",
    "SignedURLs",
    "StreamKeys",
    "build_policy",
    "parse_rule",
    "sign",
    "signed_query",
]


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
