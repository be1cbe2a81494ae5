"""The connection lifecycle events (``connect``, ``disconnect``) told to the notifier (``rtmpd.notify``)."""

from __future__ import annotations

from typing import Any, Protocol


class _Connection(Protocol):
    """What the events read of a connection (``rtmpd.server.protocol.RTMPProtocol``, which imports us)."""

    conn_id: str
    peer_addr: str
    app: str
    session_open: bool
    bytes_in: int
    bytes_out: int
    factory: Any

#: Client-given text is cut to this many characters in events.
_TEXT_LIMIT = 256


def connected(conn: _Connection, app: str, params: dict[str, Any]) -> None:
    notifier = conn.factory.registry.notifier
    if notifier.active:
        notifier.emit(
            "connect",
            conn_id=conn.conn_id,
            peer_addr=conn.peer_addr,
            app=app,
            flash_ver=str(params.get("flashVer", "") or "")[:_TEXT_LIMIT],
        )


def disconnected(conn: _Connection, reason: str) -> None:
    """Told only for connections that had connected: a bare TCP probe is no client."""
    notifier = conn.factory.registry.notifier
    if notifier.active and conn.session_open:
        notifier.emit(
            "disconnect",
            conn_id=conn.conn_id,
            peer_addr=conn.peer_addr,
            app=conn.app,
            reason=reason,
            bytes_in=conn.bytes_in,
            bytes_out=conn.bytes_out,
        )
