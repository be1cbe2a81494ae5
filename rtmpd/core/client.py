"""One client-side RTMP connection as a state machine, sans-IO: publish to or play from a server.

``ClientSession`` is the mirror of ``rtmpd.core.session.ServerSession``: bytes
in, events out; calls in, bytes out; no clock and no socket. It drives the
whole conversation a publisher or a player has with a server, so that an
adapter only moves bytes, arms timers and acts on the few events that matter.
The rules it keeps:

1. **Handshake first.** ``initiate()`` returns C0+C1; every byte up to S2
   goes to ``ClientHandshake``; C2 is queued as soon as S0+S1+S2 are in.
   Set Chunk Size (``chunk_size``) goes out right after C2, before
   ``connect``, as OBS sends it, so everything we send is chunked at it.
2. **The command sequence is fixed.** ``connect`` (app, tcUrl, flashVer,
   the caller's extra parameters), then for a publisher ``releaseStream``,
   ``FCPublish`` and ``createStream`` back to back (as ffmpeg and OBS do),
   then ``publish``; for a player ``createStream``, then Set Buffer Length
   and ``play``. Each step waits only for what real servers always send.
3. **Answers are matched by transaction id, statuses by code**, so the
   orders servers use all work: nginx-rtmp and SRS send the control
   messages before or after ``_result``; YouTube and Twitch answer
   ``releaseStream``/``FCPublish`` with ``_result``, ``_error`` or nothing
   and send ``onFCPublish``; ``NetStream.Publish.Start`` may come before or
   after a ``_result`` to ``publish``. What does not start or refuse a step
   (``onBWDone``, ``onFCPublish``, ``_result`` to releaseStream) is an
   ``StatusReceived`` event at most, never an error.
4. **Refusals are events**, not errors: ``_error`` to connect, createStream
   or publish/play, or an ``onStatus`` of level ``error`` before the stream
   started, ends the conversation with ``Refused`` (stage and info).
5. **Pings are answered and acknowledgements sent here**, as the server
   session does: a PingRequest queues a PingResponse; once the server set a
   window, an Acknowledgement goes out whenever a window or more arrived.
6. **Media goes out through ``send_media``** only while publishing, on
   chunk streams of its own (never 2 nor 3), at the current chunk size,
   each message with a full header (``publish_chunks``: stateless, so one
   serialisation serves many connections). ``onMetaData`` is wrapped in
   ``@setDataFrame``, as publishers send it.
7. **Errors are typed.** Malformed input raises a ``RemoteProtocolError``
   subclass; after one, ``receive_data``/``next_event`` raise
   ``LocalProtocolError``. Calling ``send_media`` before the stream started
   raises ``LocalProtocolError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rtmpd.core import amf0
from rtmpd.core.chunks import ChunkReader, ChunkWriter, encode_message
from rtmpd.core.client_answers import CommandAnswers
from rtmpd.core.client_events import Acknowledged, ClientEvent, ClientState, StreamStopped
from rtmpd.core.commands import COMMAND_CSID, decode_command, encode_command
from rtmpd.core.errors import InvalidWindowAckSize, LocalProtocolError, RemoteProtocolError
from rtmpd.core.events import DataReceived, MediaReceived, MetadataReceived
from rtmpd.core.flv import unwrap_set_data_frame
from rtmpd.core.handshake import ClientHandshake
from rtmpd.core.limits import Limits
from rtmpd.core.messages import (
    CONTROL_CSID,
    Acknowledgement,
    Message,
    MessageType,
    SetChunkSize,
    UserControl,
    UserControlEvent,
    WindowAckSize,
    acknowledgement,
    parse_control,
    user_control,
)

__all__ = ["ClientSession", "publish_chunks"]

#: Chunk streams for what a publisher sends (as ffmpeg: data and media apart from commands).
DATA_CSID = 5
AUDIO_CSID = 6
VIDEO_CSID = 7
_MEDIA_CSID = {int(MessageType.AUDIO): AUDIO_CSID, int(MessageType.VIDEO): VIDEO_CSID}
_INITIAL_CHUNK_SIZE = 128
_DEFAULT_FLASH_VER = "FMLE/3.0 (compatible; rtmpd)"
_SET_DATA_FRAME = amf0.encode("@setDataFrame")
_ON_METADATA = amf0.encode("onMetaData")
_CONTROL_TYPES = frozenset({1, 2, 3, 4, 5, 6})
_AUDIO, _VIDEO = int(MessageType.AUDIO), int(MessageType.VIDEO)
_DATA_TYPES = frozenset({int(MessageType.DATA_AMF0), int(MessageType.DATA_AMF3)})
_COMMAND_TYPES = frozenset({int(MessageType.COMMAND_AMF0), int(MessageType.COMMAND_AMF3)})


def publish_chunks(type_id: int, timestamp: int, payload: bytes, stream_id: int, chunk_size: int) -> bytes:
    """The chunks a publisher sends for one audio, video or data message on message stream ``stream_id``.

    Stateless: every message gets a full (type 0) header on its own chunk
    stream (audio 6, video 7, data 5, which nothing else of the session
    uses), so the same bytes are right for every connection with this
    ``stream_id`` and ``chunk_size``, whatever it sent before: one
    serialisation can go to many servers (``rtmpd.remote``). A data message
    goes as AMF0, and ``onMetaData`` gets the ``@setDataFrame`` prefix.
    Raises LocalProtocolError for fields that do not fit the header.
    """
    if type_id in _DATA_TYPES:
        if type_id == MessageType.DATA_AMF3:
            payload = payload[1:]
        if unwrap_set_data_frame(payload) is None and payload.startswith(_ON_METADATA):
            payload = _SET_DATA_FRAME + payload
        type_id = int(MessageType.DATA_AMF0)
    out = Message(type_id, timestamp, stream_id, payload)
    return encode_message(_MEDIA_CSID.get(type_id, DATA_CSID), out, chunk_size)


class ClientSession(CommandAnswers):
    """The client end of one RTMP connection that publishes or plays one stream (see the module docstring).

    ``mode`` is "publish" or "play"; ``app`` and ``tc_url`` go into
    ``connect`` with ``connect_params`` (extra properties of its command
    object); ``stream_name`` is what ``publish``/``play`` names (query
    included). ``epoch`` is our uptime in ms for the handshake.

    Use: send ``initiate()``; then for every read ``receive_data(data)``,
    ``next_event()`` until None, and send ``data_to_send()``.
    """

    def __init__(
        self,
        *,
        mode: str,
        app: str,
        tc_url: str,
        stream_name: str,
        connect_params: dict[str, Any] | None = None,
        flash_ver: str = _DEFAULT_FLASH_VER,
        chunk_size: int = 4096,
        buffer_ms: int = 3000,
        limits: Limits = Limits(),  # noqa: B008 - Limits is frozen
        epoch: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if mode not in ("publish", "play"):
            raise LocalProtocolError(f"mode must be 'publish' or 'play', got {mode!r}")
        self.mode = mode
        self.app = app
        self.tc_url = tc_url
        self.stream_name = stream_name
        self._connect_params = dict(connect_params or {})
        self._flash_ver = flash_ver
        self._chunk_size = chunk_size
        self._buffer_ms = buffer_ms
        self._limits = limits
        self._max_depth = limits.max_amf_depth
        self._handshake = ClientHandshake(epoch=epoch, random_bytes=random_bytes)
        self._reader: ChunkReader | None = None
        self._writer = ChunkWriter()
        self.state = ClientState.HANDSHAKE
        #: The message stream id ``createStream`` returned (0 before).
        self.stream_id = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.outgoing: list[bytes] = []
        self._events: list[ClientEvent] = []
        self._ack_window = 0
        self._last_ack = 0
        self._failed = False
        self._next_txn = 1
        #: transaction id -> command name, for the answers we wait for.
        self._calls: dict[float, str] = {}
        self._stream_started = False

    # -- state --------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        """The size of the chunks we send now."""
        return self._writer.chunk_size

    @property
    def peer_chunk_size(self) -> int:
        return self._reader.chunk_size if self._reader is not None else _INITIAL_CHUNK_SIZE

    @property
    def publishing(self) -> bool:
        """True while media may go out: a publisher whose stream started."""
        return self.state is ClientState.ACTIVE and self.mode == "publish"

    @property
    def active(self) -> bool:
        """True once the stream started (publishing or playing) and until ``close_stream``."""
        return self.state is ClientState.ACTIVE

    # -- output -------------------------------------------------------------------

    def initiate(self) -> bytes:
        """C0+C1, the first bytes to send. Raises LocalProtocolError when called twice."""
        data = self._handshake.initial()
        self.bytes_sent += len(data)
        return data

    def data_to_send(self) -> bytes:
        """What the session queued since the last call (handshake, commands, pongs, acks), or b""."""
        outgoing = self.outgoing
        if not outgoing:
            return b""
        data = b"".join(outgoing)
        outgoing.clear()
        self.bytes_sent += len(data)
        return data

    def send_media(self, message: Message) -> bytes:
        """The chunks of an audio, video or data message on our stream, after anything queued.

        A data message whose first value is ``onMetaData`` gets the
        ``@setDataFrame`` prefix. Raises LocalProtocolError unless publishing.
        """
        if not self.publishing:
            raise LocalProtocolError("send_media while not publishing")
        self.outgoing.append(
            publish_chunks(
                message.type_id, message.timestamp, message.payload, self.stream_id, self.chunk_size
            )
        )
        return self.data_to_send()

    def close_stream(self) -> bytes:
        """End the stream politely: ``FCUnpublish`` and ``deleteStream`` (publish), or ``deleteStream``.

        Returns the bytes to send (b"" if no stream was created). The session
        takes no more media afterwards.
        """
        if self.stream_id and self.state is not ClientState.CLOSED:
            if self.mode == "publish" and self._stream_started:
                self._command("FCUnpublish", None, self.stream_name, expect=False)
            self._command("deleteStream", None, float(self.stream_id), expect=False)
        self.state = ClientState.CLOSED
        return self.data_to_send()

    def _command(self, name: str, command_object: Any, *args: Any, stream_id: int = 0, expect: bool = True):
        txn = float(self._next_txn)
        self._next_txn += 1
        if expect:
            self._calls[txn] = name
        message = encode_command(name, txn, command_object, *args, stream_id=stream_id)
        self.outgoing.append(self._writer.write(COMMAND_CSID, message))

    def _start_connect(self) -> None:
        self.outgoing.append(self._writer.set_chunk_size(self._chunk_size))
        params: dict[str, Any] = {
            "app": self.app,
            "type": "nonprivate",
            "flashVer": self._flash_ver,
            "tcUrl": self.tc_url,
        }
        if self.mode == "play":
            params.update(
                fpad=False, capabilities=15.0, audioCodecs=4071.0, videoCodecs=252.0, videoFunction=1.0
            )
        params.update(self._connect_params)
        self._command("connect", params)
        self.state = ClientState.CONNECTING

    def _start_stream(self) -> None:
        if self.mode == "publish":
            # Answers to these two vary by server (nothing, _result, _error): none is waited for.
            self._command("releaseStream", None, self.stream_name, expect=False)
            self._command("FCPublish", None, self.stream_name, expect=False)
        self._command("createStream", None)
        self.state = ClientState.CREATING_STREAM

    def _stream_created(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.state = ClientState.STARTING
        if self.mode == "publish":
            self._command("publish", None, self.stream_name, "live", stream_id=stream_id)
        else:
            self.outgoing.append(
                self._writer.write(
                    CONTROL_CSID, user_control(UserControlEvent.SET_BUFFER_LENGTH, stream_id, self._buffer_ms)
                )
            )
            self._command("play", None, self.stream_name, -2000.0, stream_id=stream_id)

    # -- input --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server; then call ``next_event`` until it returns None.

        Raises HandshakeError or a ChunkStreamError subclass for malformed input.
        """
        if self._failed:
            raise LocalProtocolError("the server broke the protocol: close the connection")
        if not data:
            return
        self.bytes_received += len(data)
        try:
            if self._reader is None:
                c2 = self._handshake.receive(data)
                if not self._handshake.done:
                    return
                self.outgoing.append(c2)
                self._reader = ChunkReader(self._limits)
                self._start_connect()
                data = self._handshake.leftover
                if not data:
                    return
            for message in self._reader.feed(data):
                self._message(message)
            self._acknowledge()
        except RemoteProtocolError:
            self._failed = True
            raise

    def next_event(self) -> ClientEvent | None:
        """The next event of what was received, or None when more data is needed."""
        if self._events:
            return self._events.pop(0)
        return None

    def _acknowledge(self) -> None:
        if self._ack_window and self.bytes_received - self._last_ack >= self._ack_window:
            self._last_ack = self.bytes_received
            self.outgoing.append(self._writer.write(CONTROL_CSID, acknowledgement(self.bytes_received)))

    def _message(self, message: Message) -> None:
        t = message.type_id
        if t == _AUDIO or t == _VIDEO:
            if self.mode == "play":
                self._events.append(MediaReceived(message))
        elif t in _COMMAND_TYPES:
            self._command_received(decode_command(message, max_depth=self._max_depth))
        elif t in _DATA_TYPES:
            if self.mode == "play":
                self._data(message)
        elif t in _CONTROL_TYPES:
            self._control(message)

    def _data(self, message: Message) -> None:
        payload = message.payload
        if message.type_id == MessageType.DATA_AMF3:
            payload = payload[1:]
        unwrapped = unwrap_set_data_frame(payload)
        if unwrapped is not None:
            payload = unwrapped
        values = amf0.decode_all(payload, max_depth=self._max_depth)
        body = Message(int(MessageType.DATA_AMF0), message.timestamp, message.stream_id, payload)
        if values and values[0] == "onMetaData":
            meta = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
            self._events.append(MetadataReceived(body, meta))
        elif values and values[0] == "|RtmpSampleAccess":
            return
        else:
            self._events.append(DataReceived(body))

    def _control(self, message: Message) -> None:
        control = parse_control(message)
        if isinstance(control, UserControl):
            if control.event == UserControlEvent.PING_REQUEST:
                pong = user_control(UserControlEvent.PING_RESPONSE, control.value)
                self.outgoing.append(self._writer.write(CONTROL_CSID, pong))
            elif (
                control.event == UserControlEvent.STREAM_EOF
                and self.mode == "play"
                and self.state is ClientState.ACTIVE
                and control.value == self.stream_id
            ):
                self._events.append(StreamStopped("StreamEOF"))
        elif isinstance(control, WindowAckSize):
            if control.size == 0:
                raise InvalidWindowAckSize("window acknowledgement size 0")
            self._ack_window = control.size
        elif isinstance(control, Acknowledgement):
            self._events.append(Acknowledged(control.sequence_number))
        elif isinstance(control, SetChunkSize):
            pass  # the reader switched already
