"""Wiring of the HTTP listener (``--http``): the tree, its health resources, its listening service."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rtmpd.server.listening import ListeningService

if TYPE_CHECKING:
    from rtmpd.http.root import HTTPRoot
    from rtmpd.server.service import RTMPService


def install_http(
    top: RTMPService, description: str, max_body: int | None = None, max_connections: int | None = None
) -> HTTPRoot:
    """Add an HTTP listener on ``description`` to ``top``, serving a new tree with ``/healthz`` and
    ``/readyz``; return the tree so that other features mount their resources on it. Request bodies
    over ``max_body`` bytes are refused, connections past ``max_connections`` too (defaults in
    ``rtmpd.http.limits``)."""
    from rtmpd.http.health import Healthz, Readyz
    from rtmpd.http.limits import MAX_BODY_BYTES, MAX_CONNECTIONS, ConnectionCap
    from rtmpd.http.root import HTTPRoot
    from rtmpd.http.site import HTTPSite

    root = HTTPRoot()
    root.mount("healthz", Healthz())
    root.mount("readyz", Readyz(readiness_checks(top)))
    site = HTTPSite(root, max_body=max_body or MAX_BODY_BYTES)
    capped = ConnectionCap(site, max_connections or MAX_CONNECTIONS)
    ListeningService(description, capped, what="HTTP server").setServiceParent(top)
    return root


def readiness_checks(top: RTMPService) -> list:
    def listening() -> tuple[bool, str]:
        ports = [child for child in top if isinstance(child, ListeningService)]
        down = [p.description for p in ports if p.port is None]
        return (not down and bool(ports), f"down: {', '.join(down)}" if down else f"{len(ports)} listening")

    def record_dir() -> tuple[bool, str]:
        path = top.config.record_dir
        if path is None:
            return True, "recording off"
        ok = os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
        return ok, "writable" if ok else "not writable"

    return [("listeners", listening), ("record_dir", record_dir)]
