"""``HTTPPeer``: one HTTP-FLV response as the relay sees a connection (``rtmpd.relay.peer.Peer``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from rtmpd.core.messages import Message
from rtmpd.relay.fanout import FLV_TAGS, Outbox


@implementer(IPushProducer)
class HTTPPeer:
    """The relay's view of one HTTP-FLV player: queued media (FLV tags) go out in the response body,
    written once per publisher input through the shared ``Outbox``; RTMP status and control messages
    have no place in FLV and are not sent. The response is the transport's push producer, so a full
    socket sets ``congested`` as for an RTMP player, and ``over_queue_bound`` past ``max_queue_bytes``.
    ``on_gone`` is called once when the response ends, whoever ended it."""

    log = Logger()
    chunk_size = FLV_TAGS
    bytes_in = 0

    def __init__(
        self,
        request: Request,
        conn_id: str,
        app: str,
        *,
        clock: Any,
        outbox: Outbox,
        max_queue_bytes: int,
        on_gone: Callable[[HTTPPeer, str], None],
    ) -> None:
        self.request = request
        self.conn_id = conn_id
        self.app = app
        address = request.getClientAddress()
        self.peer_addr = f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}".rstrip(":")
        self.peer_host = str(getattr(address, "host", "") or "")
        self._clock = clock
        self._outbox = outbox
        self._max_queue_bytes = max_queue_bytes
        self._on_gone = on_gone
        self.congested = False
        self.paused_since = 0.0
        self.bytes_since_pause = 0
        self.bytes_out = 0
        self.playing = ""
        self.finished = False
        self._queued: list[bytes] = []
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)

    # -- what the relay reads ------------------------------------------------------

    @property
    def over_queue_bound(self) -> bool:
        return self.congested and self.bytes_since_pause >= self._max_queue_bytes

    @property
    def buffered_bytes(self) -> int:
        transport = getattr(self.request.channel, "transport", None)
        buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
        return buffered + getattr(transport, "_tempDataLen", 0)

    def roles(self) -> list[str]:
        return [f"play {self.playing} (HTTP-FLV)"] if self.playing else []

    # -- output -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write ``data`` to the response now (the FLV header; media go through ``queue_media``)."""
        if self.finished:
            return
        self.bytes_out += len(data)
        if self.congested:
            self.bytes_since_pause += len(data)
        self.request.write(data)

    def queue_media(self, data: bytes) -> None:
        if not self._queued:
            self._outbox.mark(self)
        self._queued.append(data)

    def flush_media(self) -> None:
        if self._queued:
            queued, self._queued = self._queued, []
            self.write(b"".join(queued))

    def send_command(self, message: Message) -> None:
        pass  # onStatus and the like: FLV has no place for them

    def send_control(self, message: Message) -> None:
        pass

    def close(self, reason: str) -> None:
        """End the response after what was queued (the FLV simply stops)."""
        if self.finished:
            return
        self.flush_media()
        self._end(reason)
        self.request.unregisterProducer()
        self.request.finish()

    def abort(self, reason: str) -> None:
        """Drop the connection at once, unsent bytes and all."""
        if self.finished:
            return
        self._queued = []
        self._end(reason)
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def hold_input(self) -> None:
        pass  # a player sends nothing to hold back

    def release_input(self) -> None:
        pass

    # -- IPushProducer: the transport's calls ----------------------------------------

    def pauseProducing(self) -> None:
        if not self.congested:
            self.congested = True
            self.paused_since = self._clock.seconds()
            self.bytes_since_pause = 0

    def resumeProducing(self) -> None:
        self.congested = False

    def stopProducing(self) -> None:
        self._end("connection lost")

    # -- the end ----------------------------------------------------------------

    def _gone(self, result: Any) -> None:
        self._end("client closed the connection" if not self.finished else "")

    def _end(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._on_gone(self, reason)
