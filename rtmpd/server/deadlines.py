"""The deadlines of one connection's life, checked by the factory's sweep on the monotonic clock.

A connection that does nothing useful must not hold a descriptor for ever.
In order, it has:

- ``--handshake-timeout`` seconds from accept to the end of the handshake;
- ``--connect-timeout`` seconds from then to a successful ``connect`` (an
  authorisation still pending counts as done: access control times out its
  own callbacks);
- ``--idle-timeout`` seconds, from ``connect`` and again whenever it stops its
  last publish or play, to be publishing or playing (a pending publish/play
  counts);
- while publishing, ``--publisher-timeout`` without input; while its socket is
  full, ``--play-timeout`` without progress (both checked by the factory);
- once it is closing, ``CLOSE_GRACE`` seconds to take what we still send
  (a peer that does not read would otherwise keep a closing connection open).

Each check is a few attribute reads; at the deadline the connection is
aborted with one WARN line naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from rtmpd.config import ServerConfig
    from rtmpd.server.protocol import RTMPProtocol

#: Seconds a closing connection gets to take what is still buffered for it.
CLOSE_GRACE = 10.0


class Expired(NamedTuple):
    """A deadline that passed: the log message, the close reason, the limit (seconds), the overrun."""

    message: str
    reason: str
    limit: float
    waited: float


def expired(conn: RTMPProtocol, now: float, config: ServerConfig) -> Expired | None:
    """The deadline ``conn`` missed at ``now``, or None. Notes when it became idle (``conn.idle_since``)."""
    if conn.aborted:
        return None  # gone at the reactor's next turn
    if conn.closing_since is not None:
        waited = now - conn.closing_since
        if waited >= CLOSE_GRACE:
            return Expired("Closing connection aborted", "close grace over", CLOSE_GRACE, waited)
        return None
    if not conn.session.handshake_done:
        waited = now - conn.connected_at
        limit = config.limits.handshake_timeout
        return Expired("Handshake timed out", "handshake timeout", limit, waited) if waited >= limit else None
    if not conn.session_open:
        if conn.commands.connecting:
            return None
        waited = now - conn.handshake_done_at
        limit = config.connect_timeout
        return Expired("Connect timed out", "connect timeout", limit, waited) if waited >= limit else None
    if busy(conn):
        conn.idle_since = None
        return None
    if conn.idle_since is None:
        # It stopped since the last sweep, on a command of its own: its last input is when.
        conn.idle_since = min(conn.last_activity, now)
        return None
    waited = now - conn.idle_since
    limit = config.idle_timeout
    return Expired("Idle connection timed out", "idle timeout", limit, waited) if waited >= limit else None


def busy(conn: RTMPProtocol) -> bool:
    """True while ``conn`` publishes or plays, or waits to be allowed to."""
    for ns in conn.net_streams.values():
        if ns.publication is not None or ns.player is not None or ns.pending:
            return True
    return False
