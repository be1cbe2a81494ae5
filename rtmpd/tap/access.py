"""Wiring of access control: the policy on the connection factory, the SIGHUP reloader, the re-checks."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rtmpd.access.errors import CallbackConfigError, ConfigFileError, RuleError
from rtmpd.access.settings import AccessSettings, build_policy

if TYPE_CHECKING:
    from rtmpd.access.reloading import ReloadOnHangup
    from rtmpd.server.service import RTMPService

_log = Logger(namespace="rtmpd.tap")


def install_access(top: RTMPService, settings: AccessSettings, reactor: Any) -> ReloadOnHangup:
    """Build the access policy, give it to the connection factory, and add the SIGHUP reloader.
    Exits with one line when a file or setting is bad."""
    from rtmpd.access.reloading import ReloadOnHangup

    try:
        policy = build_policy(settings, reactor)
    except (ConfigFileError, RuleError, CallbackConfigError, ValueError) as e:
        sys.exit(f"rtmpd: error: access control: {e}")
    top.factory.access = policy
    for line in policy.describe():
        _log.info("Access control: {line}", line=line)

    def revoke(key: str) -> None:
        stream = top.registry.streams.get(key)
        if stream is not None and stream.publisher is not None:
            _log.warn("Publish key removed; ending its live publisher", stream_key=key)
            stream.publisher.peer.close("publish key revoked")

    reloader = ReloadOnHangup(policy, reactor, revoke if settings.revoke_live else None)
    reloader.setServiceParent(top)
    if settings.recheck_interval > 0:
        from rtmpd.access.recheck import PublisherRecheck

        def publications() -> list:
            return [s.publisher for s in top.registry if s.publisher is not None]

        PublisherRecheck(policy, publications, settings.recheck_interval, reactor).setServiceParent(top)
    return reloader
