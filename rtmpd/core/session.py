"""One server-side RTMP connection as a state machine, sans-IO: bytes in, events out; messages in, bytes out.

Everything that decides what a connection does with the bytes its peer
sends, and everything it answers by itself, lives here; the Twisted adapter
(``rtmpd.server.protocol``) only moves bytes and acts on events. The rules
``ServerSession`` keeps:

1. **Handshake first.** Every byte up to C2 goes to ``ServerHandshake``.
   S0+S1+S2 are queued as soon as C0+C1 are in; ``HandshakeCompleted`` is
   the first event; the bytes after C2 are the chunk stream.
2. **Connect first.** Until ``accept_connect`` (called by whoever decides
   that ``connect`` succeeded), a command other than ``connect`` raises
   ``CommandBeforeConnect``.
3. **Pings are answered here**: a PingRequest queues a PingResponse with the
   same value the moment it is reached, so it goes out after the replies to
   the events before it and before those to the events after it.
4. **Acknowledgements are sent here.** Once the peer set a window (Window
   Acknowledgement Size, at least 1), an Acknowledgement of every byte
   received so far (handshake included, modulo 2**32) is queued whenever a
   window or more has arrived since the last one. It is checked once per
   input, when every complete message of it has been handed out.
5. **Aggregates are split one level deep**, without recursion: each
   sub-message is handed out as if it had arrived alone, its timestamp
   rebased on the aggregate's. An aggregate inside an aggregate raises
   ``NestedAggregate``; an aggregate is refused or handed out whole.
6. **Data messages are normalised** (``rtmpd.core.datamessages``): AMF0,
   without ``@setDataFrame``, ``onMetaData`` as ``MetadataReceived``.
7. **The peer's numbers are checked** before use (chunk and window sizes,
   finite transaction ids) and kept in budgets (``Limits``, docs/security.md),
   constant work per read or message: message sizes, chunk streams,
   partial-message bytes, AMF depth and expansion, command name length,
   messages and bytes a second (command budget until ``publish``, media
   after; when ``receive_data`` is given the time), E-RTMP tracks and codecs.
8. **Errors are typed.** Malformed input raises a ``RemoteProtocolError``
   subclass, from ``receive_data`` (handshake, chunk headers and sizes) or
   from ``next_event`` (AMF, control payloads, aggregates, the connect gate),
   never anything else. After one the session takes no more input
   (``LocalProtocolError``), but can still send: the adapter may answer the
   error before it closes.
9. **No clock, no socket.** The handshake's time field is the ``epoch``
   passed in; nothing here reads the time or does I/O.

Outgoing media is not serialised here: relayed media is serialised once for
many players (``rtmpd.relay.fanout``) at ``chunk_size``, on chunk streams
of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rtmpd.core.chunks import ChunkReader, ChunkWriter
from rtmpd.core.commands import COMMAND_CSID, decode_command
from rtmpd.core.datamessages import data_event
from rtmpd.core.errors import (
    CommandBeforeConnect,
    InvalidWindowAckSize,
    LocalProtocolError,
    RemoteProtocolError,
)
from rtmpd.core.events import (
    BufferLengthSet,
    CommandReceived,
    Event,
    HandshakeCompleted,
    MediaReceived,
    MessageIgnored,
    PeerChunkSizeChanged,
)
from rtmpd.core.handshake import ServerHandshake
from rtmpd.core.limits import Limits
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
from rtmpd.core.rates import RateBudget
from rtmpd.core.tracks import TrackCensus

__all__ = ["ServerSession"]

_AUDIO = int(MessageType.AUDIO)
_VIDEO = int(MessageType.VIDEO)
_COMMAND_AMF0 = int(MessageType.COMMAND_AMF0)
_COMMAND_AMF3 = int(MessageType.COMMAND_AMF3)
_DATA_AMF0 = int(MessageType.DATA_AMF0)
_DATA_AMF3 = int(MessageType.DATA_AMF3)
_AGGREGATE = int(MessageType.AGGREGATE)
_CONTROL_TYPES = frozenset({1, 2, 3, 4, 5, 6})
#: Every chunk stream starts at 128 bytes per chunk (RTMP 1.0, 5.4.1).
_INITIAL_CHUNK_SIZE = 128


class ServerSession:
    """The server end of one RTMP connection (see the module docstring for its rules).

    Input, in the manner of h11's ``Connection``: ``receive_data(bytes)``
    takes what the peer sent, then ``next_event()`` is called until it
    returns None. Events come one at a time, not as a list, because acting
    on one may change what the next means (``accept_connect`` opens the
    gate for a ``createStream`` that arrived in the same read) and because
    what the adapter sends for one event must go out before what the
    session answers to later messages (a ping that follows ``connect``).

    Output: ``data_to_send()`` returns what the session queued by itself
    (handshake reply, ping replies, acknowledgements); call it after each
    ``next_event()``. ``send_command``, ``send_control`` and
    ``set_chunk_size`` return the bytes of what the adapter sends, preceded
    by anything still queued, so the bytes keep the order they were made in.

    ``receive_data`` and ``next_event`` raise ``RemoteProtocolError``
    subclasses for malformed input (rule 8), and ``LocalProtocolError``
    once that happened.
    """

    __slots__ = (
        "_limits",
        "_amf",
        "_handshake",
        "_reader",
        "_writer",
        "_completed",
        "_messages",
        "_next",
        "outgoing",
        "_ack_window",
        "_last_ack",
        "_failed",
        "chunk_size",
        "bytes_received",
        "_app",
        "_connect_params",
        "_open",
        "_rate",
        "_census",
    )

    #: Outgoing chunk size: the size of every chunk the session writes, and
    #: the size relayed media for this peer must be serialised at.
    chunk_size: int
    #: Every byte received, the handshake included (what acknowledgements count).
    bytes_received: int

    def __init__(
        self,
        limits: Limits = Limits(),  # noqa: B008 - Limits is frozen
        epoch: int = 0,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``epoch``: the server's uptime in ms, written into S1 (time is passed in, never read)."""
        self._limits = limits
        # The AMF decoders' depth and expansion budget.
        self._amf = {
            "max_depth": limits.max_amf_depth,
            "max_nodes": limits.max_amf_nodes,
            "max_bytes": limits.max_amf_decoded_bytes,
        }
        self._handshake = ServerHandshake(epoch=epoch, random_bytes=random_bytes)
        self._reader: ChunkReader | None = None
        self._writer = ChunkWriter()
        self.chunk_size = self._writer.chunk_size
        self.bytes_received = 0
        self._app = ""
        self._connect_params: dict[str, Any] = {}
        self._open = False
        self._completed: HandshakeCompleted | None = None
        # Messages received and not handed out yet: ``_messages[_next:]``.
        self._messages: list[Message] = []
        self._next = 0
        #: What the session queued by itself (handshake reply, pongs, acknowledgements); drained by
        #: ``data_to_send``. Non-empty means there is something to write: a cheap test for adapters.
        self.outgoing: list[bytes] = []
        self._ack_window = 0
        self._last_ack = 0
        self._failed = False
        self._rate = RateBudget(limits)
        self._census = TrackCensus(limits.max_tracks, limits.max_codecs)

    # -- state ------------------------------------------------------------------

    @property
    def handshake(self) -> ServerHandshake:
        """The handshake, for what it learnt about the client (digest scheme, version, epoch)."""
        return self._handshake

    @property
    def handshake_done(self) -> bool:
        return self._reader is not None

    @property
    def peer_chunk_size(self) -> int:
        """The chunk size the peer sends with (128 until it says otherwise)."""
        return self._reader.chunk_size if self._reader is not None else _INITIAL_CHUNK_SIZE

    @property
    def app(self) -> str:
        """The application of the accepted ``connect`` ("live"); "" before."""
        return self._app

    @property
    def connect_params(self) -> dict[str, Any]:
        """The command object of the accepted ``connect`` ({} before)."""
        return self._connect_params

    @property
    def session_open(self) -> bool:
        """True once ``accept_connect`` was called: commands other than ``connect`` are allowed."""
        return self._open

    def accept_connect(self, app: str, params: dict[str, Any]) -> None:
        """``connect`` succeeded: open the session for every other command.

        Raises LocalProtocolError if it was already open.
        """
        if self._open:
            raise LocalProtocolError("the session is already open")
        self._app, self._connect_params, self._open = app, params, True

    # -- input ------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> None:
        """Take bytes from the peer; then call ``next_event`` until it returns None.

        ``now`` (seconds, from any clock that does not jump) is when they
        arrived: with it, the messages and bytes are charged to the rate
        budget; without it, rates are not checked.

        Raises HandshakeError or a ChunkStreamError subclass (bad header,
        MessageTooLarge, TooManyChunkStreams, PartialMessagesTooLarge,
        InvalidChunkSize) or RateLimitExceeded at once; messages completed
        earlier in ``data`` are then not handed out.
        """
        self._check_alive()
        if not data:
            return
        self.bytes_received += len(data)
        try:
            if self._reader is None:
                handshake = self._handshake
                reply = handshake.receive(data)
                if reply:
                    self.outgoing.append(reply)
                if not handshake.done:
                    return
                self._reader = ChunkReader(self._limits)
                self._completed = HandshakeCompleted(handshake.digest_scheme is not None)
                data = handshake.leftover
                if not data:
                    return
            messages = self._reader.feed(data)
            if now is not None:
                self._rate.spend_read(now, self._reader, len(data))
            if self._next < len(self._messages):
                self._messages += messages
            else:
                self._messages, self._next = messages, 0
        except RemoteProtocolError:
            self._failed = True
            raise

    def next_event(self) -> Event | None:
        """The next event of what was received, or None when more data is needed.

        Pings are answered and acknowledgements queued on the way (see
        ``data_to_send``). Raises AMFDecodeError (``AMFBudgetExceeded``),
        MalformedCommand, MalformedControlMessage, InvalidWindowAckSize,
        NestedAggregate, CommandBeforeConnect, TooManyTracks or
        RateLimitExceeded (aggregate parts) for a message that breaks the
        protocol or a budget.
        """
        if self._failed:
            self._check_alive()
        if self._completed is not None:
            event, self._completed = self._completed, None
            return event
        messages = self._messages
        try:
            # ``_messages`` is read again each turn: an aggregate's parts are inserted into it.
            while self._next < len(messages):
                message = messages[self._next]
                self._next += 1
                event = self._message(message)
                if event is not None:
                    return event
            # Hold no handed-out message (an idle player would keep its last ones alive).
            messages.clear()
            self._next = 0
            self._acknowledge()
            return None
        except RemoteProtocolError:
            self._failed = True
            raise

    def _check_alive(self) -> None:
        if self._failed:
            raise LocalProtocolError("the peer broke the protocol: close the connection")

    def _message(self, message: Message) -> Event | None:
        t = message.type_id
        if t == _VIDEO:
            payload = message.payload
            if payload and payload[0] & 0x80:  # Enhanced RTMP: names a FourCC, maybe many tracks
                self._census.video(payload)
            return MediaReceived(message)
        if t == _AUDIO:
            payload = message.payload
            if payload and payload[0] >> 4 == 9:
                self._census.audio(payload)
            return MediaReceived(message)
        if t == _COMMAND_AMF0 or t == _COMMAND_AMF3:
            command = decode_command(message, max_name=self._limits.max_command_name, **self._amf)
            if not self._open and command.name != "connect":
                raise CommandBeforeConnect(f"{command.name!r} before connect")
            if command.name == "publish":
                # From here on the peer sends media: the media budget applies (whether the
                # publish is allowed or not, it is no larger than an allowed publisher's).
                self._rate.to_media()
            return CommandReceived(command)
        if t == _DATA_AMF0 or t == _DATA_AMF3:
            return data_event(message, self._amf)
        if t in _CONTROL_TYPES:
            return self._control(message)
        if t == _AGGREGATE:
            self._split(message)
            return None
        return MessageIgnored(message)

    def _split(self, aggregate: Message) -> None:
        # One level, no recursion (split_aggregate refuses nesting before any copy); the parts go in
        # front of the queue, and the rate budget counts each (the aggregate counted as one).
        parts = split_aggregate(aggregate)
        self._rate.spend(None, len(parts) - 1, len(parts) * self._limits.chunk_cost)
        self._messages[self._next : self._next] = parts

    def _control(self, message: Message) -> Event | None:
        control = parse_control(message)
        if isinstance(control, UserControl):
            if control.event == UserControlEvent.PING_REQUEST:
                response = user_control(UserControlEvent.PING_RESPONSE, control.value)
                self.outgoing.append(self._writer.write(CONTROL_CSID, response))
            elif control.event == UserControlEvent.SET_BUFFER_LENGTH:
                return BufferLengthSet(control.value, control.buffer_length or 0)
        elif isinstance(control, WindowAckSize):
            if control.size == 0:
                raise InvalidWindowAckSize("window acknowledgement size 0")
            self._ack_window = control.size
        elif isinstance(control, SetChunkSize):
            # The reader switched when the message completed; this is news only.
            return PeerChunkSizeChanged(control.size)
        return None

    def _acknowledge(self) -> None:
        if self._ack_window and self.bytes_received - self._last_ack >= self._ack_window:
            self._last_ack = self.bytes_received
            self.outgoing.append(self._writer.write(CONTROL_CSID, acknowledgement(self.bytes_received)))

    # -- output -----------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The bytes the session queued by itself since the last call (b"" if none)."""
        outgoing = self.outgoing
        if not outgoing:
            return b""
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        return data

    def send_command(self, message: Message) -> bytes:
        """The chunks of a command or data message (``_result``, ``onStatus``...) on chunk stream 3."""
        return self._queued_then(self._writer.write(COMMAND_CSID, message))

    def send_control(self, message: Message) -> bytes:
        """The chunks of a protocol or user control message on chunk stream 2."""
        return self._queued_then(self._writer.write(CONTROL_CSID, message))

    def set_chunk_size(self, size: int) -> bytes:
        """Set Chunk Size ``size``; every chunk after it, from the next one on, is at most ``size``.

        Raises LocalProtocolError for a size outside 1..2**31-1.
        """
        data = self._writer.set_chunk_size(size)
        self.chunk_size = self._writer.chunk_size
        return self._queued_then(data)

    def _queued_then(self, data: bytes) -> bytes:
        if self.outgoing:
            self.outgoing.append(data)
            return self.data_to_send()
        return data
