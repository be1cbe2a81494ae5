"""The Twisted adapter: one ``RTMPProtocol`` per TCP connection, over ``rtmpd.core.session.ServerSession``.

The session holds the connection's state machine (handshake, chunks, acknowledgements, pings, the connect
gate, aggregates, ``@setDataFrame``); this adapter feeds it what the transport delivers, acts on each event it
returns with one small method, and writes what it has to send, in the manner of Twisted's
``twisted/web/_http2.py`` over h2.

Every exception raised while one input is handled is caught in
``dataReceived``. A ``RemoteProtocolError`` (the peer broke the protocol)
goes to ``fail``: logged, answered where RTMP has a way, closed. Any other is
our bug: logged once with its traceback and conn id, the connection closed
cleanly, never an "Unhandled Error". (A failing command responder is
answered by ``rtmpd.server.dispatch`` and the connection lives on.)
Deadlines are checked by the factory's sweep (``rtmpd.server.deadlines``).

The connection is the transport's push producer: when a player's socket backs up, the transport pauses it and
the relay stops sending it video until it drains. It is also the relay's ``rtmpd.relay.peer.Peer``.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rtmpd.core.commands import Command, encode_command, status_info
from rtmpd.core.errors import RemoteProtocolError
from rtmpd.core.events import (
    BufferLengthSet,
    CommandReceived,
    DataReceived,
    Event,
    HandshakeCompleted,
    MediaReceived,
    MessageIgnored,
    MetadataReceived,
    PeerChunkSizeChanged,
)
from rtmpd.core.messages import Message
from rtmpd.core.session import ServerSession
from rtmpd.fastwrite import write_chunks
from rtmpd.server import lifecycle
from rtmpd.server.clienttext import field_names
from rtmpd.server.dispatch import Dispatcher
from rtmpd.server.flow import FlowControl
from rtmpd.server.responders import NetStream, ServerCommands

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from rtmpd.config import ServerConfig
    from rtmpd.relay.fanout import Outbox
    from rtmpd.relay.registry import Publication, StreamRegistry

#: "Metadata received" lines at info per connection; later ones are debug (a publisher may send thousands).
METADATA_INFO_LINES = 8


class ConnectionFactory(typing.Protocol):
    """What a connection uses of its factory (``RTMPServerFactory``, not named: it imports this module)."""

    config: ServerConfig
    clock: IReactorTime
    outbox: Outbox
    registry: StreamRegistry
    connections: dict[str, RTMPProtocol]

    def next_conn_id(self) -> str: ...
    def uptime_ms(self) -> int: ...

    next_sweep: float

    def sweep(self) -> None: ...


@implementer(IPushProducer)
class RTMPProtocol(FlowControl, Protocol):
    """One RTMP connection: a ``ServerSession`` on a Twisted transport, and a ``Peer`` for the relay.

    ``session`` decides what the bytes mean; this class acts on its events
    (commands to the ``dispatcher``, media and data to the publishing
    NetStream's stream), writes, and applies flow control: the transport
    pauses it when the socket is full (``congested``), the recorder holds
    its input (``hold_input``). ``chunk_size`` is the session's outgoing
    chunk size, kept as a plain attribute because the relay reads it per
    message and player.
    """

    log = Logger()

    def __init__(self, factory: ConnectionFactory) -> None:
        self.factory = factory
        self.config = factory.config
        self.clock = factory.clock
        self.conn_id = ""
        self.peer_addr = self.peer_host = ""  # peer_host: the address without its port, for access control
        self.session = ServerSession(self.config.limits, factory.uptime_ms())
        self.commands = ServerCommands(self)
        self.dispatcher = Dispatcher(self.commands, self)
        self.net_streams: dict[int, NetStream] = {}
        self.bytes_out = 0
        self.last_activity = 0.0
        self._metadata_count = 0
        self._pending: list[bytes] = []
        self._closing = False
        self._close_reason = ""
        self.aborted = False
        #: The address ``factory.admission`` counted this connection under (released when it is lost).
        self.admitted_host: str | None = None
        #: For the deadlines (``rtmpd.server.deadlines``), on the factory's clock.
        self.connected_at = self.handshake_done_at = 0.0
        self.idle_since = self.closing_since = None
        self.chunk_size = self.session.chunk_size
        FlowControl.__init__(self)

    # -- what the session knows -------------------------------------------------

    @property
    def app(self) -> str:
        return self.session.app

    @property
    def connect_params(self) -> dict[str, Any]:
        return self.session.connect_params

    @property
    def session_open(self) -> bool:
        return self.session.session_open

    @property
    def bytes_in(self) -> int:
        return self.session.bytes_received

    def accept_connect(self, app: str, params: dict) -> None:
        """``connect`` succeeded: the session is open for the other commands."""
        self.session.accept_connect(app, params)
        self.idle_since = self.clock.seconds()
        lifecycle.connected(self, app, params)

    # -- connection lifecycle -------------------------------------------------

    def connectionMade(self) -> None:
        self.conn_id = self.factory.next_conn_id()
        peer = self.transport.getPeer()
        self.peer_addr = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}".rstrip(":")
        self.peer_host = str(getattr(peer, "host", "") or "")
        self.last_activity = self.connected_at = self.clock.seconds()
        self.factory.connections[self.conn_id] = self
        self.transport.registerProducer(self, True)
        self.log.info("Connection accepted", conn_id=self.conn_id, peer_addr=self.peer_addr)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.admitted_host is not None:
            self.factory.admission.release(self.admitted_host)
            self.admitted_host = None
        self.commands.gate.cancel_pending()  # a decision that comes after the client left starts nothing
        for ns in list(self.net_streams.values()):
            self.commands.close_net_stream(ns)
        self.net_streams.clear()
        self.factory.connections.pop(self.conn_id, None)
        self._pending = []
        why = self._close_reason or reason.getErrorMessage()
        self.log.info(
            "Connection closed",
            conn_id=self.conn_id,
            reason=why,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )
        lifecycle.disconnected(self, why)

    def close(self, reason: str) -> None:
        """Close after what is already written has been sent."""
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        self.closing_since = self.clock.seconds()
        self.flush_media()
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Close at once, discarding buffered output (a peer that does not read)."""
        if self.aborted:
            return
        self.aborted = True
        self._closing = True
        self._close_reason = self._close_reason or reason
        self._pending = []
        self.transport.abortConnection()

    def fail(self, error: RemoteProtocolError) -> None:
        """The peer broke the protocol: log it, answer it where RTMP has a way, close."""
        if self._closing:
            return
        self.log.warn(
            "Protocol error",
            conn_id=self.conn_id,
            error=type(error).__name__,
            detail=str(error),
            code=error.status_code,
        )
        if self.session.handshake_done and error.status_code:
            info = status_info("error", error.status_code, str(error))
            self.send_command(encode_command("_error", 0, None, info))
        self.close(f"protocol error: {type(error).__name__}")

    # -- input ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_activity = now = self.clock.seconds()
        factory = self.factory
        if now >= factory.next_sweep:  # the sweep is overdue (the reactor's timer waits on wall time)
            factory.sweep()
            if self._closing:
                return  # past a deadline itself
        session = self.session
        outbox = self.factory.outbox
        outbox.hold()
        try:
            session.receive_data(data, self.last_activity)  # the time drives the rate budget
            outgoing = session.outgoing
            next_event = session.next_event
            while not self._closing:
                event = next_event()
                if outgoing:
                    self._write_session_output()
                if event is None:
                    break
                # Media is nearly every event: it takes the shortest path.
                if type(event) is MediaReceived:
                    self._media(event.message)
                else:
                    self._event(event)
        except RemoteProtocolError as e:
            # What the session answered before the bad message still goes out first.
            self._write_session_output()
            self.fail(e)
        except Exception:
            # Our bug, triggered by this client: one line with the traceback, a clean close.
            self.log.failure(
                "Unexpected error while handling client input", conn_id=self.conn_id, peer_addr=self.peer_addr
            )
            self.close("internal error")
        finally:
            outbox.release()

    def _event(self, event: Event) -> None:
        # Media first: it is nearly every event.
        if isinstance(event, MediaReceived):
            self._media(event.message)
        elif isinstance(event, CommandReceived):
            self._command(event.command)
        elif isinstance(event, MetadataReceived):
            self._metadata(event.message, event.values)
        elif isinstance(event, DataReceived):
            self._data(event.message)
        elif isinstance(event, HandshakeCompleted):
            self._handshake_completed(event.digest)
        elif isinstance(event, BufferLengthSet):
            self.log.debug(
                "Client buffer length",
                conn_id=self.conn_id,
                stream_id=event.stream_id,
                buffer_ms=event.buffer_ms,
            )
        elif isinstance(event, PeerChunkSizeChanged):
            self.log.debug("Peer chunk size", conn_id=self.conn_id, size=event.size)
        elif isinstance(event, MessageIgnored):
            message = event.message
            self.log.debug(
                "Ignored message", conn_id=self.conn_id, type_id=message.type_id, size=len(message.payload)
            )

    def _handshake_completed(self, digest: bool) -> None:
        # OBS waits a few seconds before sending connect: --connect-timeout is generous.
        self.handshake_done_at = self.clock.seconds()
        self.log.info("Handshake completed", conn_id=self.conn_id, digest=digest)

    def _command(self, command: Command) -> None:
        self.log.debug(
            "Command received", conn_id=self.conn_id, command=command.name, stream_id=command.stream_id
        )
        self.dispatcher.dispatch(command)

    def _publication(self, stream_id: int) -> Publication | None:
        ns = self.net_streams.get(stream_id)
        return ns.publication if ns is not None else None

    def _media(self, message: Message) -> None:
        ns = self.net_streams.get(message.stream_id)
        publication = ns.publication if ns is not None else None
        if publication is None:
            self.log.debug(
                "Media on a stream that is not publishing", conn_id=self.conn_id, stream_id=message.stream_id
            )
            return
        publication.last_activity = self.last_activity
        publication.bytes_in += len(message.payload)
        publication.messages_in += 1
        ns.stream.relay(message)

    def _metadata(self, message: Message, values: dict[str, Any]) -> None:
        if self._publication(message.stream_id) is None:
            self.log.debug("Data message on a stream that is not publishing", conn_id=self.conn_id)
            return
        stream = self.net_streams[message.stream_id].stream
        stream.set_metadata(message, values)
        self._metadata_count += 1
        log = self.log.info if self._metadata_count <= METADATA_INFO_LINES else self.log.debug
        log(
            "Metadata received",
            conn_id=self.conn_id,
            stream_key=stream.key,
            fields=field_names(values),
            field_count=len(values),
        )

    def _data(self, message: Message) -> None:
        if self._publication(message.stream_id) is None:
            self.log.debug("Data message on a stream that is not publishing", conn_id=self.conn_id)
            return
        self.net_streams[message.stream_id].stream.relay(message)

    # -- output ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.congested:
            self.bytes_since_pause += len(data)
        self.transport.write(data)

    def _write_session_output(self) -> None:
        """Write what the session answered by itself (handshake reply, pings, acknowledgements)."""
        data = self.session.data_to_send()
        if data:
            self.flush_media()
            self.write(data)

    def send_control(self, message: Message) -> None:
        self.flush_media()
        self.write(self.session.send_control(message))

    def send_command(self, message: Message) -> None:
        self.flush_media()
        self.write(self.session.send_command(message))

    def set_chunk_size(self, size: int) -> None:
        self.flush_media()
        self.write(self.session.set_chunk_size(size))
        self.chunk_size = self.session.chunk_size

    def queue_media(self, data: bytes) -> None:
        """Queue serialised chunks; they are written together when the current input is done."""
        if not self._pending:
            self.factory.outbox.mark(self)
        self._pending.append(data)

    def flush_media(self) -> None:
        if self._pending and not self._closing:
            pending, self._pending = self._pending, []
            size = sum(map(len, pending))
            self.bytes_out += size
            if self.congested:
                self.bytes_since_pause += size
            write_chunks(self.transport, pending)

    # -- Peer: roles ------------------------------------------------------------

    def roles(self) -> list[str]:
        roles = []
        for ns in self.net_streams.values():
            if ns.publication is not None and ns.stream is not None:
                roles.append(f"publish {ns.stream.key}")
            elif ns.player is not None:
                roles.append(f"play {ns.player.stream.key}")
        return roles

    def stopProducing(self) -> None:  # IPushProducer; pause and resume are FlowControl's
        self._closing = True
