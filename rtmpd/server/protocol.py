"""The Twisted adapter: one ``RTMPProtocol`` per TCP connection.

It holds the sans-IO core objects (handshake, chunk reader, chunk writer),
feeds them what the transport delivers, dispatches the messages they return,
and writes what they produce. A protocol error from the core ends the
connection in one place (``fail``). The connection is the transport's push
producer: when a player's socket backs up, the transport pauses it and the
relay stops sending it video until it drains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rtmpd.server.responders import NetStream, ServerCommands
from rtmpd.core.chunks import ChunkReader, ChunkWriter
from rtmpd.core.commands import COMMAND_CSID, decode_command, decode_data, encode_command, status_info
from rtmpd.core.errors import CommandBeforeConnect, RemoteProtocolError
from rtmpd.core.flv import unwrap_set_data_frame
from rtmpd.core.handshake import ServerHandshake
from rtmpd.core.messages import (
    CONTROL_CSID,
    Message,
    MessageType,
    SetChunkSize,
    UserControl,
    UserControlEvent,
    WindowAckSize,
    acknowledgement,
    parse_control,
    split_aggregate,
    user_control,
)
from rtmpd.server.dispatch import Dispatcher
from rtmpd.server._fastwrite import write_chunks

if TYPE_CHECKING:
    from rtmpd.server.service import RTMPServerFactory

_CONTROL_TYPES = frozenset({1, 2, 3, 4, 5, 6})


@implementer(IPushProducer)
class RTMPProtocol(Protocol):
    """One RTMP connection: the core's session on a Twisted transport, and a ``Peer`` for the relay."""

    log = Logger()

    def __init__(self, factory: RTMPServerFactory) -> None:
        self.factory = factory
        self.config = factory.config
        self.clock = factory.clock
        self.conn_id = ""
        self.peer_addr = ""
        self.handshake = ServerHandshake(epoch=factory.uptime_ms())
        self.reader: ChunkReader | None = None
        self.writer = ChunkWriter()
        self.commands = ServerCommands(self)
        self.dispatcher = Dispatcher(self.commands, self)
        self.session_open = False
        self.app = ""
        self.connect_params: dict = {}
        self.net_streams: dict[int, NetStream] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_activity = 0.0
        self._ack_window = 0
        self._last_ack = 0
        self._pending: list[bytes] = []
        self._closing = False
        self._close_reason = ""
        self._handshake_timer = None
        # Flow control: set by the transport when its buffer is full.
        self.congested = False
        self.chunk_size = self.writer.chunk_size
        self._input_holds = 0
        self.paused_since = 0.0
        self.bytes_since_pause = 0

    # -- connection lifecycle -------------------------------------------------

    def connectionMade(self) -> None:
        self.conn_id = self.factory.next_conn_id()
        peer = self.transport.getPeer()
        self.peer_addr = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}".rstrip(":")
        self.last_activity = self.clock.seconds()
        self.factory.connections[self.conn_id] = self
        self.transport.registerProducer(self, True)
        self._handshake_timer = self.clock.callLater(
            self.config.limits.handshake_timeout, self._handshake_timed_out
        )
        self.log.info("Connection accepted", conn_id=self.conn_id, peer_addr=self.peer_addr)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        for ns in list(self.net_streams.values()):
            self.commands.close_net_stream(ns)
        self.net_streams.clear()
        self.factory.connections.pop(self.conn_id, None)
        self._pending = []
        self.log.info(
            "Connection closed",
            conn_id=self.conn_id,
            reason=self._close_reason or reason.getErrorMessage(),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self.log.warn(
            "Handshake timed out", conn_id=self.conn_id, timeout=self.config.limits.handshake_timeout
        )
        self.abort("handshake timeout")

    def close(self, reason: str) -> None:
        """Close after what is already written has been sent."""
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        self.flush_media()
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Close at once, discarding buffered output (a peer that does not read)."""
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
        if self.handshake.done and error.status_code:
            info = status_info("error", error.status_code, str(error))
            self.send_command(encode_command("_error", 0, None, info))
        self.close(f"protocol error: {type(error).__name__}")

    # -- input ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.bytes_in += len(data)
        self.last_activity = self.clock.seconds()
        outbox = self.factory.outbox
        outbox.hold()
        try:
            if self.reader is None:
                data = self._handshake(data)
                if self.reader is None or not data:
                    return
            for message in self.reader.feed(data):
                self._message(message)
                if self._closing:
                    return
            self._acknowledge()
        except RemoteProtocolError as e:
            self.fail(e)
        finally:
            outbox.release()

    def _handshake(self, data: bytes) -> bytes:
        reply = self.handshake.receive(data)
        if reply:
            self.write(reply)
        if not self.handshake.done:
            return b""
        if self._handshake_timer is not None and self._handshake_timer.active():
            # OBS waits a few seconds before sending connect: only the handshake is timed.
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self.reader = ChunkReader(self.config.limits)
        self.log.info(
            "Handshake completed", conn_id=self.conn_id, digest=self.handshake.digest_scheme is not None
        )
        return self.handshake.leftover

    def _acknowledge(self) -> None:
        if self._ack_window and self.bytes_in - self._last_ack >= self._ack_window:
            self._last_ack = self.bytes_in
            self.send_control(acknowledgement(self.bytes_in))

    def _message(self, message: Message) -> None:
        t = message.type_id
        if t == MessageType.AUDIO or t == MessageType.VIDEO:
            self._media(message)
        elif t == MessageType.COMMAND_AMF0 or t == MessageType.COMMAND_AMF3:
            command = decode_command(message, max_depth=self.config.limits.max_amf_depth)
            if not self.session_open and command.name != "connect":
                raise CommandBeforeConnect(f"{command.name!r} before connect")
            self.log.debug(
                "Command received", conn_id=self.conn_id, command=command.name, stream_id=command.stream_id
            )
            self.dispatcher.dispatch(command)
        elif t == MessageType.DATA_AMF0 or t == MessageType.DATA_AMF3:
            self._data(message)
        elif t in _CONTROL_TYPES:
            self._control(message)
        elif t == MessageType.AGGREGATE:
            for sub in split_aggregate(message):
                self._message(sub)
        else:
            self.log.debug("Ignored message", conn_id=self.conn_id, type_id=t, size=len(message.payload))

    def _publication(self, stream_id: int):
        ns = self.net_streams.get(stream_id)
        return ns.publication if ns is not None else None

    def _media(self, message: Message) -> None:
        publication = self._publication(message.stream_id)
        if publication is None:
            self.log.debug(
                "Media on a stream that is not publishing", conn_id=self.conn_id, stream_id=message.stream_id
            )
            return
        publication.last_activity = self.last_activity
        publication.bytes_in += len(message.payload)
        publication.messages_in += 1
        self.net_streams[message.stream_id].stream.relay(message)

    def _data(self, message: Message) -> None:
        publication = self._publication(message.stream_id)
        if publication is None:
            self.log.debug("Data message on a stream that is not publishing", conn_id=self.conn_id)
            return
        stream = self.net_streams[message.stream_id].stream
        payload = message.payload
        if message.type_id == MessageType.DATA_AMF3:
            payload = payload[1:]
        unwrapped = unwrap_set_data_frame(payload)
        values = decode_data(
            Message(MessageType.DATA_AMF0, 0, 0, unwrapped if unwrapped is not None else payload),
            max_depth=self.config.limits.max_amf_depth,
        )
        if values and values[0] == "onMetaData":
            meta = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
            body = unwrapped if unwrapped is not None else payload
            stream.set_metadata(
                Message(MessageType.DATA_AMF0, message.timestamp, message.stream_id, body), meta
            )
            self.log.info(
                "Metadata received", conn_id=self.conn_id, stream_key=stream.key, fields=sorted(meta)[:40]
            )
        else:
            body = unwrapped if unwrapped is not None else payload
            stream.relay(Message(MessageType.DATA_AMF0, message.timestamp, message.stream_id, body))

    def _control(self, message: Message) -> None:
        event = parse_control(message)
        if isinstance(event, WindowAckSize):
            self._ack_window = event.size
        elif isinstance(event, UserControl):
            if event.event == UserControlEvent.PING_REQUEST:
                self.send_control(user_control(UserControlEvent.PING_RESPONSE, event.value))
            elif event.event == UserControlEvent.SET_BUFFER_LENGTH:
                self.log.debug(
                    "Client buffer length",
                    conn_id=self.conn_id,
                    stream_id=event.value,
                    buffer_ms=event.buffer_length,
                )
        elif isinstance(event, SetChunkSize):
            self.log.debug("Peer chunk size", conn_id=self.conn_id, size=event.size)

    # -- output ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.congested:
            self.bytes_since_pause += len(data)
        self.transport.write(data)

    def send_control(self, message: Message) -> None:
        self.flush_media()
        self.write(self.writer.write(CONTROL_CSID, message))

    def send_command(self, message: Message) -> None:
        self.flush_media()
        self.write(self.writer.write(COMMAND_CSID, message))

    def set_chunk_size(self, size: int) -> None:
        self.flush_media()
        self.write(self.writer.set_chunk_size(size))
        self.chunk_size = self.writer.chunk_size

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

    @property
    def over_queue_bound(self) -> bool:
        return self.congested and self.bytes_since_pause >= self.config.max_queue_bytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel (best effort: Twisted keeps this private)."""
        transport = self.transport
        return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)

    def accept_connect(self, app: str, params: dict) -> None:
        """``connect`` succeeded: the session is open for the other commands."""
        self.app, self.connect_params, self.session_open = app, params, True

    # -- Peer: input hold, roles ------------------------------------------------

    def hold_input(self) -> None:
        self._input_holds += 1
        if self._input_holds == 1 and self.transport is not None:
            self.transport.pauseProducing()

    def release_input(self) -> None:
        if self._input_holds == 0:
            return
        self._input_holds -= 1
        if self._input_holds == 0 and self.transport is not None and not self._closing:
            self.transport.resumeProducing()

    def roles(self) -> list[str]:
        roles = []
        for ns in self.net_streams.values():
            if ns.publication is not None and ns.stream is not None:
                roles.append(f"publish {ns.stream.key}")
            elif ns.player is not None:
                roles.append(f"play {ns.player.stream.key}")
        return roles

    # -- IPushProducer ----------------------------------------------------------

    def pauseProducing(self) -> None:
        if not self.congested:
            self.congested = True
            self.paused_since = self.clock.seconds()
            self.bytes_since_pause = 0

    def resumeProducing(self) -> None:
        self.congested = False

    def stopProducing(self) -> None:
        self._closing = True
