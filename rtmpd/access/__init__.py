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

from rtmpd.access.addresses import AddressRule, AddressRules, parse_rule
from rtmpd.access.callback import FailurePolicy, HTTPCallback
from rtmpd.access.counters import AccessCounters, Refusal
from rtmpd.access.decision import ALLOW, Action, Allow, Authoriser, Chain, Decision, Deny, Reloaded, Request
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
