"""The connection lifecycle events (``connect``, ``disconnect``) told to the notifier (``rtmpd.notify``),
and the count of closed connections by reason (``count_closed``) that the metrics read."""

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
#: Distinct close reasons counted apart; any further reason is counted under "other".
CLOSE_REASONS_KEPT = 64


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


def count_closed(counts: dict[str, int], reason: str) -> None:
    """Count one closed connection under ``reason`` in ``counts`` (at most ``CLOSE_REASONS_KEPT`` keys)."""
    if reason not in counts and len(counts) >= CLOSE_REASONS_KEPT:
        reason = "other"
    counts[reason] = counts.get(reason, 0) + 1


def disconnected(conn: _Connection, reason: str) -> None:
    """Counts every closed connection; the event is told only for connections that had connected
    (a bare TCP probe is no client)."""
    count_closed(conn.factory.closed_by_reason, reason)
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
