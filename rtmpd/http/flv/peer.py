"""The relay's view of an HTTP player (``rtmpd.relay.peer.Peer``): ``HTTPPeer`` for an HTTP-FLV response,
``WebSocketPeer`` for a WebSocket-FLV connection; both share ``StreamingPeer``'s flow control."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.server import Request
from zope.interface import implementer

from rtmpd.core.messages import Message
from rtmpd.fastwrite import write_chunks
from rtmpd.relay.fanout import FLV_TAGS, Outbox


def socket_transport(transport: Any) -> Any:
    """The transport under the plain forwarding wrappers of ``twisted.protocols.policies`` (the HTTP
    listener's connection cap is a ``WrappingFactory``): writing there is what the wrapper would do,
    and lets ``rtmpd.fastwrite`` see the socket. A wrapper that changes the bytes (TLS) is kept."""
    while (
        isinstance(transport, ProtocolWrapper)
        and type(transport).write is ProtocolWrapper.write
        and type(transport).writeSequence is ProtocolWrapper.writeSequence
    ):
        transport = transport.transport
    return transport


@implementer(IPushProducer)
class StreamingPeer:
    """One HTTP player as the relay sees a connection. Queued media (FLV tags: ``chunk_size`` is
    ``FLV_TAGS``) go out once per publisher input through the shared ``Outbox``; RTMP status and control
    messages have no place in FLV and are not sent. It is its transport's push producer, so a full socket
    sets ``congested`` as for an RTMP player, and ``over_queue_bound`` past ``max_queue_bytes``.
    ``on_gone(peer, reason)`` is called once when the player ends, whoever ended it."""

    chunk_size = FLV_TAGS
    bytes_in = 0

    def __init__(
        self,
        conn_id: str,
        app: str,
        address: Any,
        *,
        clock: Any,
        outbox: Outbox,
        max_queue_bytes: int,
        on_gone: Callable[[StreamingPeer, str], None],
    ) -> None:
        self.conn_id = conn_id
        self.app = app
        self.peer_addr = f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}".rstrip(":")
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

    kind = "HTTP"

    # -- what a subclass provides -------------------------------------------------

    def _transport(self) -> Any:
        raise NotImplementedError

    def _send(self, chunks: list[bytes]) -> int:
        """Write ``chunks`` (the FLV header, or queued tags); return the bytes put on the wire."""
        raise NotImplementedError

    def _finish(self) -> None:
        """End the response or connection cleanly, after what was written."""
        raise NotImplementedError

    # -- what the relay reads ------------------------------------------------------

    @property
    def over_queue_bound(self) -> bool:
        return self.congested and self.bytes_since_pause >= self._max_queue_bytes

    @property
    def buffered_bytes(self) -> int:
        transport = self._transport()
        buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
        return buffered + getattr(transport, "_tempDataLen", 0)

    def roles(self) -> list[str]:
        return [f"play {self.playing} ({self.kind})"] if self.playing else []

    # -- output -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send ``data`` now (the FLV header; media go through ``queue_media``)."""
        self._write([data])

    def _write(self, chunks: list[bytes]) -> None:
        if self.finished:
            return
        sent = self._send(chunks)
        self.bytes_out += sent
        if self.congested:
            self.bytes_since_pause += sent

    def queue_media(self, data: bytes) -> None:
        if not self._queued:
            self._outbox.mark(self)
        self._queued.append(data)

    def flush_media(self) -> None:
        if self._queued:
            queued, self._queued = self._queued, []
            self._write(queued)

    def send_command(self, message: Message) -> None:
        pass  # onStatus and the like: FLV has no place for them

    def send_control(self, message: Message) -> None:
        pass

    def close(self, reason: str) -> None:
        """End after what was queued (the FLV simply stops)."""
        if self.finished:
            return
        self.flush_media()
        self._end(reason)
        self._finish()

    def abort(self, reason: str) -> None:
        """Drop the connection at once, unsent bytes and all."""
        if self.finished:
            return
        self._queued = []
        self._end(reason)
        transport = self._transport()
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

    def _end(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._on_gone(self, reason)


class HTTPPeer(StreamingPeer):
    """An HTTP-FLV player: the FLV in a chunked response body."""

    kind = "HTTP-FLV"

    def __init__(self, request: Request, conn_id: str, app: str, **kwargs: Any) -> None:
        super().__init__(conn_id, app, request.getClientAddress(), **kwargs)
        self.request = request
        #: Once the headers went out: the socket's transport, and whether the body is chunked.
        self._socket: Any = None
        self._chunked = False
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: self._end("client closed the connection"))

    def _transport(self) -> Any:
        if self._socket is not None:
            return self._socket
        return socket_transport(getattr(self.request.channel, "transport", None))

    def _send(self, chunks: list[bytes]) -> int:
        socket = self._socket
        if socket is None:
            request = self.request
            data = b"".join(chunks)
            request.write(data)  # the status line and headers go with the first bytes
            # A response keeps its connection: what the fan-out needs of it is looked up once.
            self._socket, self._chunked = self._transport(), request.chunked
            return len(data)
        size = sum(map(len, chunks))
        if self._chunked:
            # HTTP/1.1 chunked transfer, framed here as twisted.web's own ``write`` would.
            chunks = [b"%x\r\n" % size, *chunks, b"\r\n"]
        # Straight to the kernel when Twisted has nothing buffered (rtmpd.fastwrite): the fan-out's
        # one system call per player per input, as for RTMP players.
        write_chunks(socket, chunks)
        return size

    def _finish(self) -> None:
        self.request.unregisterProducer()
        self.request.finish()


class WebSocketPeer(StreamingPeer):
    """A WebSocket-FLV player: the FLV header, then one FLV tag per binary message.

    ``prepare(data)`` turns a tag into autobahn's prepared message: the fan-out hands every player the
    same bytes object for a message, so the factory prepares (frames) it once for all of them.
    """

    kind = "WebSocket-FLV"

    def __init__(self, protocol: Any, conn_id: str, app: str, prepare: Callable[[bytes], Any], **kwargs: Any):
        super().__init__(conn_id, app, protocol.transport.getPeer(), **kwargs)
        self.protocol = protocol
        self._prepare = prepare
        transport = protocol.transport
        # The HTTP channel that carried the upgrade is still the transport's producer; it is done.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def _transport(self) -> Any:
        return socket_transport(self.protocol.transport)

    def _send(self, chunks: list[bytes]) -> int:
        for chunk in chunks:
            self.protocol.sendPreparedMessage(self._prepare(chunk))
        return sum(len(chunk) for chunk in chunks)

    def _finish(self) -> None:
        self.protocol.sendClose(1000, "stream ended")
