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
    """Add an HTTP listener on ``description`` to ``top``, serving a new tree with the dashboard at ``/``,
    ``/healthz``, ``/readyz`` and the HTTP-FLV players; return the tree so that other features mount
    their resources on it. Request bodies over ``max_body`` bytes are refused, connections past
    ``max_connections`` too (defaults in ``rtmpd.http.limits``)."""
    from rtmpd.http.dashboard.resource import DashboardFiles, DashboardPage
    from rtmpd.http.health import Healthz, Readyz
    from rtmpd.http.limits import MAX_BODY_BYTES, MAX_CONNECTIONS, ConnectionCap
    from rtmpd.http.root import HTTPRoot
    from rtmpd.http.site import HTTPSite

    root = HTTPRoot()
    root.mount("", DashboardPage())
    root.mount("dashboard", DashboardFiles())
    root.mount("healthz", Healthz())
    root.mount("readyz", Readyz(readiness_checks(top)))
    site = HTTPSite(root, max_body=max_body or MAX_BODY_BYTES)
    capped = ConnectionCap(site, max_connections or MAX_CONNECTIONS)
    ListeningService(description, capped, what="HTTP server").setServiceParent(top)
    install_flv_players(top, root)
    return root


def install_flv_players(top: RTMPService, root: HTTPRoot) -> None:
    """HTTP-FLV and WebSocket-FLV players at ``/APP/NAME.flv``, WebSocket-fMP4 players at
    ``/APP/NAME.mp4`` (the root's fallback), swept for stalls once a second."""
    from collections import ChainMap

    from twisted.application.internet import TimerService

    from rtmpd.http.flv.resource import FLVPlayers
    from rtmpd.http.flv.websocket import websocket_resource
    from rtmpd.http.fmp4.websocket import fmp4_resource
    from rtmpd.server.lifecycle import count_closed

    factory = top.factory
    players = FLVPlayers(
        top.registry,
        next_conn_id=factory.next_conn_id,
        access=lambda: factory.access,
        clock=top.clock,
        outbox=factory.outbox,
        count_closed=lambda reason: count_closed(factory.closed_by_reason, reason),
    )
    # What reads the service's connections (the API and manhole views, the metrics, the rate sampler)
    # sees the HTTP players too; the RTMP factory's own sweeps and reconnects keep to RTMP connections.
    top.connections = ChainMap(factory.connections, players.connections)  # type: ignore[assignment]
    players.websocket = websocket_resource(players)
    players.fmp4 = fmp4_resource(players)
    root.fallback = players
    sweeper = TimerService(1.0, players.sweep)
    sweeper.clock = top.clock
    sweeper.setServiceParent(top)


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
