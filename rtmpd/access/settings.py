"""``AccessSettings`` (what the ``--auth-*`` options say) and ``build_policy``, which assembles the policy.

The authorisers are chained cheapest first, so a request refused locally
never costs an HTTP round trip: address rules, signed URLs, the key file,
then the HTTP callback. Every configured one must allow. The failure
throttle is on whenever any authoriser is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtmpd.access.addresses import AddressRules
from rtmpd.access.counters import AccessCounters
from rtmpd.access.decision import Authoriser
from rtmpd.access.keyfile import KeyFile, StreamKeys
from rtmpd.access.policy import AccessPolicy
from rtmpd.access.signed import SecretsFile, SignedURLs
from rtmpd.access.throttle import FailureThrottle

__all__ = ["DEFAULT_EXPIRY_GRACE", "AccessSettings", "build_policy"]

#: Seconds a stream may outlive its signed URL's ``exp`` (docs/access.md says why 0).
DEFAULT_EXPIRY_GRACE = 0.0


@dataclass(frozen=True)
class AccessSettings:
    """The access-control options, frozen. The defaults are the options' documented defaults."""

    #: ``--auth-secrets FILE``: signed URLs.
    secrets: str | None = None
    #: ``--auth-keys FILE``: the key file.
    keys: str | None = None
    #: ``--auth-callback URL``, ``--auth-callback-timeout S``, ``--auth-failure-policy closed|open``.
    callback: str | None = None
    callback_timeout: float = 5.0
    failure_policy: str = "closed"
    #: Seconds a callback's answer is cached (0: not cached).
    callback_cache: float = 0.0
    #: ``--auth-allow ACTION:CIDR`` / ``--auth-deny ACTION:CIDR``.
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    #: ``--auth-expiry-grace S``; None: a live stream is never ended for its URL's expiry.
    expiry_grace: float | None = DEFAULT_EXPIRY_GRACE
    #: ``--auth-revoke-live``: a publish key removed on reload ends its live publisher.
    revoke_live: bool = False
    #: ``--auth-recheck S``: ask again for every live publisher every S seconds (0: never).
    recheck_interval: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.secrets or self.keys or self.callback or self.allow or self.deny)


def build_policy(
    settings: AccessSettings,
    reactor: Any,
    *,
    now: Callable[[], float] = time.time,
    counters: AccessCounters | None = None,
) -> AccessPolicy:
    """The policy the settings describe. Raises ``ConfigFileError`` (a secrets or key file that does not
    parse), ``RuleError`` or ``CallbackConfigError``: each message is fit for a usage error."""
    counters = counters if counters is not None else AccessCounters()
    authorisers: list[Authoriser] = []
    if settings.allow or settings.deny:
        authorisers.append(AddressRules.from_options(settings.allow, settings.deny))
    if settings.secrets:
        authorisers.append(SignedURLs(SecretsFile(settings.secrets), now=now))
    if settings.keys:
        authorisers.append(StreamKeys(KeyFile(settings.keys)))
    if settings.callback:
        # Imported here: the callback's HTTP client (treq, twisted.web) is loaded only when one is configured.
        from rtmpd.access.callback import HTTPCallback

        authorisers.append(
            HTTPCallback(
                settings.callback,
                reactor=reactor,
                timeout=settings.callback_timeout,
                failure_policy=settings.failure_policy,
                cache_ttl=settings.callback_cache,
                counters=counters,
            )
        )
    throttle = FailureThrottle(reactor) if authorisers else None
    return AccessPolicy(
        authorisers,
        clock=reactor,
        now=now,
        throttle=throttle,
        expiry_grace=settings.expiry_grace,
        counters=counters,
    )
