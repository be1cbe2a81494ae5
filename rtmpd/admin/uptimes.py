"""When each connection connected and each player started playing, for the views' uptimes.

``StartTimes`` subscribes to the server's lifecycle events (``rtmpd.notify``):
``connect``/``disconnect`` for connections, ``play_start``/``play_stop`` for
players. It holds one float per open connection and per live player: entries
go when their ``disconnect``/``play_stop`` comes, and any left over by a
connection that closed without one are pruned against the open connections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rtmpd.notify import Notifier, ServerEvent

__all__ = ["StartTimes"]


class StartTimes:
    """Start times (the clock's seconds) of connections by conn_id and of players by (conn_id, key).

    ``started`` is when this object was made: the server's start, when it is
    made at wiring time. ``connections`` (conn_id -> anything) bounds what is
    kept.
    """

    def __init__(self, now: Callable[[], float], connections: Mapping[str, Any]) -> None:
        self._now = now
        self._connections = connections
        self.started = now()
        self._connected: dict[str, float] = {}
        self._playing: dict[tuple[str, str], float] = {}

    def subscribe_to(self, notifier: Notifier) -> Callable[[], None]:
        """Follow ``notifier``'s events; returns the call that stops it."""
        return notifier.subscribe(self.event)

    def event(self, event: ServerEvent) -> None:
        fields, name = event.fields, event.name
        conn_id = fields.get("conn_id")
        if not isinstance(conn_id, str):
            return
        if name == "connect":
            self._connected[conn_id] = self._now()
            self._bound()
        elif name == "disconnect":
            self._connected.pop(conn_id, None)
            for play in [p for p in self._playing if p[0] == conn_id]:
                del self._playing[play]
        elif name == "play_start":
            self._playing[(conn_id, str(fields.get("stream_key")))] = self._now()
            self._bound()
        elif name == "play_stop":
            self._playing.pop((conn_id, str(fields.get("stream_key"))), None)

    def connection_uptime(self, conn_id: str) -> float | None:
        """Seconds since ``conn_id`` connected (its RTMP ``connect``), None if unknown."""
        since = self._connected.get(conn_id)
        return None if since is None else self._now() - since

    def play_uptime(self, conn_id: str, key: str) -> float | None:
        """Seconds since ``conn_id`` started playing stream ``key``, None if unknown."""
        since = self._playing.get((conn_id, key))
        return None if since is None else self._now() - since

    def uptime(self) -> float:
        """Seconds since the server started."""
        return self._now() - self.started

    def _bound(self) -> None:
        # Entries whose stop event never came (a connection closed before its session opened) go
        # once there are clearly more entries than open connections.
        live = self._connections
        if len(self._connected) + len(self._playing) <= 4 * len(live) + 64:
            return
        self._prune()

    def _prune(self) -> None:
        live = self._connections
        self._connected = {c: t for c, t in self._connected.items() if c in live}
        self._playing = {p: t for p, t in self._playing.items() if p[0] in live}
