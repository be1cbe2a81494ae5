"""The client side of an RTMP session, sans-IO: handshake, connect, createStream, then play or publish.

Both benchmark clients (the publisher and the load client's players) drive
one ``ClientSession`` each: ``initial()`` gives C0+C1, ``receive(bytes)``
returns the bytes to send back and the media messages that arrived, and
``ready`` turns true once the server said ``NetStream.Publish.Start`` (publish)
or sent the first audio/video message (play). It acknowledges received bytes
at the window the server asked for and answers pings, as real clients do.
"""

from __future__ import annotations

from rtmpd.core import amf0
from rtmpd.core.chunks import ChunkReader, ChunkWriter
from rtmpd.core.commands import COMMAND_CSID, decode_command, encode_command
from rtmpd.core.handshake import ClientHandshake
from rtmpd.core.limits import Limits
from rtmpd.core.messages import (
    CONTROL_CSID,
    Message,
    MessageType,
    UserControl,
    UserControlEvent,
    WindowAckSize,
    acknowledgement,
    parse_control,
    user_control,
)

__all__ = ["MEDIA_TYPES", "ClientSession", "SessionError", "set_data_frame"]

MEDIA_TYPES = frozenset({int(MessageType.AUDIO), int(MessageType.VIDEO)})
_CONTROL_TYPES = frozenset({3, 4, 5, 6})
_CONNECT_TXN = 1.0
_CREATE_STREAM_TXN = 2.0
# Large enough that no real media message is refused by the client itself.
_CLIENT_LIMITS = Limits(max_media_message_size=16 * 1024 * 1024)


class SessionError(Exception):
    """The server refused a step (``_error`` or an error ``onStatus``) or broke the protocol."""


class ClientSession:
    """One RTMP client connection's protocol state, for ``role`` "play" or "publish".

    ``receive`` raises SessionError when the server answers a command with an
    error, and the core's RemoteProtocolError subclasses for malformed bytes.
    """

    def __init__(self, app: str, key: str, role: str, *, tc_url: str, chunk_size: int = 4096) -> None:
        if role not in ("play", "publish"):
            raise ValueError(f"role must be play or publish, got {role!r}")
        self.app = app
        self.key = key
        self.role = role
        self.tc_url = tc_url
        self.chunk_size = chunk_size
        self.handshake = ClientHandshake()
        self.reader: ChunkReader | None = None
        self.writer = ChunkWriter()
        #: Message stream id that createStream returned (None before).
        self.stream_id: int | None = None
        #: True once publishing was accepted, or the first media message of a play arrived.
        self.ready = False
        #: Bytes received after the handshake (what acknowledgements count).
        self.bytes_received = 0
        #: The server's Window Acknowledgement Size (0: it asked for none).
        self.ack_window = 0
        self.last_ack = 0

    def initial(self) -> bytes:
        """C0+C1, to send first."""
        return self.handshake.initial()

    def receive(self, data: bytes) -> tuple[bytes, list[Message]]:
        """Feed bytes from the server; return (bytes to send, media messages completed by them)."""
        out: list[bytes] = []
        if self.reader is None:
            reply = self.handshake.receive(data)
            if not self.handshake.done:
                return b"", []
            out.append(reply)
            self.reader = ChunkReader(_CLIENT_LIMITS)
            out.append(self._start())
            data = self.handshake.leftover
            if not data:
                return b"".join(out), []
        self.bytes_received += len(data)
        media: list[Message] = []
        for message in self.reader.feed(data):
            type_id = message.type_id
            if type_id in MEDIA_TYPES:
                self.ready = True
                media.append(message)
            elif type_id == MessageType.COMMAND_AMF0:
                out.append(self._command(message))
            elif type_id in _CONTROL_TYPES:
                out.append(self._control(message))
        out.append(self.acknowledge())
        return b"".join(out), media

    def acknowledge(self) -> bytes:
        """The Acknowledgement due for the bytes received so far, or b""."""
        if self.ack_window and self.bytes_received - self.last_ack >= self.ack_window:
            self.last_ack = self.bytes_received
            return self.writer.write(CONTROL_CSID, acknowledgement(self.bytes_received))
        return b""

    def write(self, csid: int, message: Message) -> bytes:
        """Chunks of one of our own messages (media for a publisher)."""
        return self.writer.write(csid, message)

    # -- the command exchange --------------------------------------------------

    def _start(self) -> bytes:
        out = []
        if self.role == "publish":
            # A publisher's media goes out in big chunks, like ffmpeg's.
            out.append(self.writer.set_chunk_size(self.chunk_size))
        params = {"app": self.app, "type": "nonprivate", "flashVer": "FMLE/3.0 (rtmpd-bench)",
                  "tcUrl": self.tc_url, "fpad": False, "capabilities": 15.0, "audioCodecs": 4071.0,
                  "videoCodecs": 252.0, "videoFunction": 1.0, "objectEncoding": 0.0}
        out.append(self.writer.write(COMMAND_CSID, encode_command("connect", _CONNECT_TXN, params)))
        return b"".join(out)

    def _command(self, message: Message) -> bytes:
        command = decode_command(message)
        if command.name == "_error":
            raise SessionError(f"{self.role} {self.key}: server answered _error: {command.args!r}")
        if command.name == "_result" and command.transaction_id == _CONNECT_TXN:
            return self.writer.write(COMMAND_CSID, encode_command("createStream", _CREATE_STREAM_TXN, None))
        if command.name == "_result" and command.transaction_id == _CREATE_STREAM_TXN:
            self.stream_id = int(command.args[0])
            sid = self.stream_id
            if self.role == "publish":
                cmd = encode_command("publish", 0, None, self.key, "live", stream_id=sid)
                return self.writer.write(COMMAND_CSID, cmd)
            buffer_ms = user_control(UserControlEvent.SET_BUFFER_LENGTH, sid, 1000)
            cmd = encode_command("play", 0, None, self.key, -2000.0, stream_id=sid)
            return self.writer.write(COMMAND_CSID, cmd) + self.writer.write(CONTROL_CSID, buffer_ms)
        if command.name == "onStatus":
            info = command.args[0] if command.args and isinstance(command.args[0], dict) else {}
            if info.get("level") == "error":
                raise SessionError(f"{self.role} {self.key}: {info.get('code')}: {info.get('description')}")
            if info.get("code") == "NetStream.Publish.Start" and self.role == "publish":
                self.ready = True
        return b""

    def _control(self, message: Message) -> bytes:
        event = parse_control(message)
        if isinstance(event, WindowAckSize):
            self.ack_window = event.size
        elif isinstance(event, UserControl) and event.event == UserControlEvent.PING_REQUEST:
            return self.writer.write(CONTROL_CSID, user_control(UserControlEvent.PING_RESPONSE, event.value))
        return b""


def set_data_frame(script_tag_body: bytes) -> bytes:
    """The data message a publisher sends for an FLV file's onMetaData tag: ``@setDataFrame`` + body."""
    return amf0.encode("@setDataFrame") + script_tag_body
