"""Enhanced RTMP v2 reconnect requests: ask publishers to move, then wait for them to go.

E-RTMP v2 lets a server ask a client to reconnect (to itself after a
restart, or to another server given as ``tcUrl``) with an ``onStatus``
``NetConnection.Connect.ReconnectRequest``; a client that advertised the
Reconnect bit of ``capsEx`` in its ``connect`` finishes its current GOP,
connects again, and only then leaves. The old server keeps relaying and
recording until it does (the spec's "SHOULD continue processing messages
from the client until the client disconnects").

``RTMPService`` uses this on a graceful shutdown and offers
``request_reconnect`` to operators (the manhole).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rtmpd.core.ertmp import client_capabilities, reconnect_request
from rtmpd.relay.registry import StreamListener

if TYPE_CHECKING:
    from rtmpd.relay.registry import Stream, StreamRegistry
    from rtmpd.server.protocol import RTMPProtocol

__all__ = ["Reconnector", "can_reconnect", "published_keys"]


def published_keys(conn: RTMPProtocol) -> list[str]:
    """The stream keys ``conn`` publishes now."""
    return [
        ns.stream.key
        for ns in conn.net_streams.values()
        if ns.publication is not None and ns.stream is not None
    ]


def can_reconnect(conn: RTMPProtocol) -> bool:
    """Whether the client's ``connect`` advertised capsEx Reconnect."""
    return client_capabilities(conn.connect_params).reconnect


class Reconnector:
    """Reconnect requests to the publishers of one server (its connections and registry)."""

    log = Logger()

    def __init__(
        self, connections: Mapping[str, RTMPProtocol], registry: StreamRegistry, clock: IReactorTime
    ) -> None:
        self.connections = connections
        self.registry = registry
        self.clock = clock

    def request(
        self,
        *,
        tc_url: str | None = None,
        description: str = "Please reconnect.",
        key: str | None = None,
        force: bool = False,
    ) -> list[RTMPProtocol]:
        """Send ``NetConnection.Connect.ReconnectRequest`` to publishers; return the connections asked.

        Asked: every connection that publishes (only the publisher of stream
        ``key``, "app/name", when given) and whose ``connect`` advertised the
        Reconnect capability, or every such publisher when ``force`` is true
        (a client that does not know the request ignores it). Nothing is
        closed: the clients leave when they have reconnected.
        """
        asked = []
        for conn in list(self.connections.values()):
            keys = published_keys(conn)
            if not keys or (key is not None and key not in keys):
                continue
            capable = can_reconnect(conn)
            if not (capable or force):
                self.log.debug(
                    "Publisher cannot be asked to reconnect", conn_id=conn.conn_id, stream_keys=keys
                )
                continue
            conn.send_command(reconnect_request(tc_url, description))
            self.log.info(
                "Reconnect requested",
                conn_id=conn.conn_id,
                stream_keys=keys,
                tcUrl=tc_url,
                description=description,
                advertised=capable,
            )
            asked.append(conn)
        return asked

    def wait_for_departures(self, conns: list[RTMPProtocol], grace: float) -> Deferred:
        """A Deferred that fires when none of ``conns`` publishes any more, or after ``grace`` seconds.

        It fires with the connections still publishing (empty if all left in time); it never fails.
        """
        return _Departures(conns, self.registry, self.clock, grace).done


class _Departures(StreamListener):
    """Fires ``done`` once none of ``conns`` publishes any more, or when ``grace`` seconds have passed."""

    log = Logger()

    def __init__(
        self, conns: list[RTMPProtocol], registry: StreamRegistry, clock: IReactorTime, grace: float
    ) -> None:
        self.conns = conns
        self.registry = registry
        self.clock = clock
        self.done: Deferred = Deferred()
        self._finishing = False
        registry.listeners.append(self)
        self._timeout = clock.callLater(grace, self._finish, True)
        self._check()

    def stream_unpublished(self, stream: Stream) -> None:
        # Not now: the registry is still telling its listeners (the recorder among them) about this
        # stream, and the publisher's connection has not yet let go of it.
        self.clock.callLater(0, self._check)

    def _check(self) -> None:
        if not self._finishing and not any(published_keys(c) for c in self.conns):
            self._finishing = True
            self._finish(False)

    def _finish(self, timed_out: bool) -> None:
        if self.done.called:
            return
        if self._timeout.active():
            self._timeout.cancel()
        if self in self.registry.listeners:
            self.registry.listeners.remove(self)
        staying = [c for c in self.conns if published_keys(c)]
        if timed_out and staying:
            self.log.warn("Publishers did not reconnect in time", conn_ids=[c.conn_id for c in staying])
        else:
            self.log.info("Publishers asked to reconnect have left", conn_ids=[c.conn_id for c in self.conns])
        self.done.callback(staying)
