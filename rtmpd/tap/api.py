"""Wiring of the JSON API (``/api/v1/`` on ``--http``): its token, rate sampler and start times."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

if TYPE_CHECKING:
    from rtmpd.http.root import HTTPRoot
    from rtmpd.server.service import RTMPService

_log = Logger(namespace="rtmpd.tap")


def install_api(
    top: RTMPService,
    root: HTTPRoot,
    token_file: str | None,
    token_always: bool = False,
    reload_access: Any = None,
) -> None:
    """Mount the API at ``/api`` on ``root``; add its bit-rate sampler to ``top``. Exits with one
    line when the token file cannot be used."""
    from rtmpd.admin.rates import RateSampler
    from rtmpd.admin.uptimes import StartTimes
    from rtmpd.admin.views import ServerViews
    from rtmpd.http.api.auth import TokenAuth, TokenFileError, read_token_file
    from rtmpd.http.api.resource import APIResource

    token = None
    if token_file is not None:
        try:
            token, shared = read_token_file(token_file)
        except TokenFileError as e:
            sys.exit(f"rtmpd: error: {e}")
        if shared:
            _log.warn("The API token file is readable by others than its owner", path=token_file)
    elif token_always:
        sys.exit("rtmpd: error: --api-token-always needs --api-token-file")
    sampler = RateSampler(top.connections, top.clock)
    sampler.setName("api-rates")
    sampler.setServiceParent(top)
    times = StartTimes(top.clock.seconds, top.connections)
    times.subscribe_to(top.registry.notifier)
    views = ServerViews(top, sampler, times)
    root.mount("api", APIResource(top, views, TokenAuth(token, token_always), reload_access))
    _log.info(
        "JSON API at /api/v1/",
        changes="on (bearer token)" if token is not None else "off (no --api-token-file)",
        reads="token always" if token_always else "open on loopback, token elsewhere",
    )
