"""An in-memory RTMP client and server pair, for fast tests of rtmpd and of code built on it.

``RTMPTestClient`` speaks RTMP through the same sans-IO core as the server
(handshake, chunk reader/writer, AMF0). It works over a real TCP connection
or, with ``MemoryServer``, over Twisted's in-memory transports and a fake
clock, so a test drives a whole publish/play exchange with no sockets and no
sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim

from rtmpd.config import ServerConfig
from rtmpd.core.chunks import ChunkReader, ChunkWriter
from rtmpd.core.commands import Command, decode_command, encode_command, encode_data
from rtmpd.core.handshake import ClientHandshake
from rtmpd.core.limits import Limits
from rtmpd.core.messages import (
    CONTROL_CSID,
    Message,
    MessageType,
    SetChunkSize,
    UserControl,
    parse_control,
    set_chunk_size,
)
from rtmpd.server.service import RTMPService

_SAMPLE_ACCESS = b"\x02\x00\x11|RtmpSampleAccess"


class CommandFailed(Exception):
    """The server answered ``_error`` (or an error ``onStatus``); ``info`` is its info object."""

    def __init__(self, info: Any) -> None:
        super().__init__(info.get("code") if isinstance(info, dict) else info)
        self.info = info


def status_code(command: Command) -> str | None:
    """The ``code`` of an onStatus/_result/_error info object, if any."""
    for value in (command.command_object, *command.args):
        if isinstance(value, dict) and "code" in value:
            return value["code"]
    return None


class RTMPTestClient(Protocol):
    """A small RTMP client: connect, createStream, publish/play, send and collect messages."""

    def __init__(self, *, digest: bool = False, chunk_size: int = 128) -> None:
        self.handshake = ClientHandshake(digest=digest)
        self.reader = ChunkReader(Limits(max_command_message_size=16 * 1024 * 1024))
        self.writer = ChunkWriter()
        self._initial_chunk_size = chunk_size
        self.messages: list[Message] = []
        self.commands: list[Command] = []
        self.controls: list[Any] = []
        self.handshake_done: Deferred = Deferred()
        self.disconnected: Deferred = Deferred()
        self.connected_transport = False
        self._txn = 1
        self._calls: dict[float, Deferred] = {}
        self._waiters: list[tuple[Callable[[Any], bool], Deferred]] = []

    # -- transport ------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_transport = True
        self.transport.write(self.handshake.initial())

    def connectionLost(self, reason) -> None:
        self.connected_transport = False
        self.disconnect_reason = reason
        if not self.disconnected.called:
            self.disconnected.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if not self.handshake.done:
            reply = self.handshake.receive(data)
            if reply:
                self.transport.write(reply)
            if not self.handshake.done:
                return
            if self._initial_chunk_size != 128:
                self.transport.write(self.writer.set_chunk_size(self._initial_chunk_size))
            data = self.handshake.leftover
            self.handshake_done.callback(None)
        for message in self.reader.feed(data):
            self._received(message)

    def _received(self, message: Message) -> None:
        self.messages.append(message)
        item: Any = message
        if message.type_id in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            item = decode_command(message)
            self.commands.append(item)
            call = self._calls.pop(item.transaction_id, None) if item.transaction_id else None
            if call is not None:
                if item.name == "_result":
                    call.callback(item)
                else:
                    call.errback(CommandFailed(item.args[0] if item.args else item.command_object))
        elif message.type_id <= 6:
            item = parse_control(message)
            self.controls.append(item)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(item):
                self._waiters.remove(waiter)
                d.callback(item)

    # -- sending --------------------------------------------------------------

    def send(self, csid: int, message: Message) -> None:
        self.transport.write(self.writer.write(csid, message))

    def call(self, name: str, command_object: Any = None, *args: Any, stream_id: int = 0) -> Deferred:
        """Send a command with a fresh transaction id; fires with the ``_result`` Command."""
        self._txn += 1
        txn = float(self._txn)
        d: Deferred = Deferred()
        self._calls[txn] = d
        self.send(3, encode_command(name, txn, command_object, *args, stream_id=stream_id))
        return d

    def notify(self, name: str, *args: Any, stream_id: int = 0) -> None:
        """Send a command with transaction id 0 (no reply expected)."""
        self.send(3 if not stream_id else 8, encode_command(name, 0, None, *args, stream_id=stream_id))

    def wait_for(self, predicate: Callable[[Any], bool]) -> Deferred:
        """Fires with the first received item (Command, control event or Message) matching ``predicate``."""
        d: Deferred = Deferred()
        self._waiters.append((predicate, d))
        return d

    def wait_for_status(self, code: str) -> Deferred:
        return self.wait_for(lambda item: isinstance(item, Command) and status_code(item) == code)

    def connect(self, app: str = "live", **params: Any) -> Deferred:
        obj = {
            "app": app,
            "flashVer": "FMLE/3.0 (compatible; rtmpd.testing)",
            "tcUrl": f"rtmp://localhost/{app}",
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 3191.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
            "objectEncoding": 0.0,
        }
        obj.update(params)
        return self.call("connect", obj)

    def create_stream(self) -> Deferred:
        """Fires with the new message stream id (int)."""
        return self.call("createStream").addCallback(lambda result: int(result.args[0]))

    def _stream_command(self, name: str, stream_id: int, *args: Any, expect: str) -> Deferred:
        ok = self.wait_for_status(expect)
        error = self.wait_for(
            lambda item: (
                isinstance(item, Command)
                and item.name == "onStatus"
                and item.stream_id == stream_id
                and isinstance(item.args[0] if item.args else None, dict)
                and item.args[0].get("level") == "error"
            )
        )
        self.send(8, encode_command(name, 0, None, *args, stream_id=stream_id))
        done: Deferred = Deferred()

        def settle(result: Any, failed: bool) -> None:
            if done.called:
                return
            if failed:
                done.errback(CommandFailed(result.args[0]))
            else:
                done.callback(result)

        ok.addCallback(settle, False)
        error.addCallback(settle, True)
        return done

    def publish(self, stream_id: int, name: str, kind: str = "live") -> Deferred:
        """Fires with the ``NetStream.Publish.Start`` onStatus, or fails with CommandFailed."""
        return self._stream_command("publish", stream_id, name, kind, expect="NetStream.Publish.Start")

    def play(self, stream_id: int, name: str) -> Deferred:
        """Fires with the ``NetStream.Play.Start`` onStatus, or fails with CommandFailed."""
        return self._stream_command("play", stream_id, name, -2000.0, expect="NetStream.Play.Start")

    def send_media(self, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        csid = {MessageType.AUDIO: 4, MessageType.VIDEO: 6}.get(type_id, 5)
        self.send(csid, Message(type_id, timestamp, stream_id, payload))

    def send_metadata(self, stream_id: int, metadata: dict[str, Any]) -> None:
        self.send(5, encode_data("@setDataFrame", "onMetaData", metadata, stream_id=stream_id))

    def set_chunk_size(self, size: int) -> None:
        self.transport.write(self.writer.set_chunk_size(size))

    def media(self, stream_id: int | None = None) -> list[Message]:
        """Audio, video and data messages relayed so far (optionally on one message stream).

        The ``|RtmpSampleAccess`` data message that answers every ``play`` is left out.
        """
        kinds = (MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0)
        return [
            m
            for m in self.messages
            if m.type_id in kinds
            and (stream_id is None or m.stream_id == stream_id)
            and not m.payload.startswith(_SAMPLE_ACCESS)
        ]

    def peer_chunk_size(self) -> int:
        return self.reader.chunk_size


class MemoryServer:
    """An rtmpd server factory on a fake clock, with in-memory clients attached by ``connect_client``."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.clock = Clock()
        self.service = RTMPService(config or ServerConfig(), self.clock)
        self.service.startService()
        self.factory = self.service.factory
        self.pumps: list[iosim.IOPump] = []

    @property
    def registry(self):
        return self.factory.registry

    def connect_client(self, client: RTMPTestClient | None = None) -> tuple[RTMPTestClient, iosim.IOPump]:
        client = client or RTMPTestClient()
        server_protocol = self.factory.buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(lambda: server_protocol, lambda: client, clock=self.clock)
        client.server_protocol = server_protocol
        self.pumps.append(pump)
        return client, pump

    def session(self, app: str = "live", **connect_params: Any) -> tuple[RTMPTestClient, int]:
        """A new client, connected to ``app`` with one stream created: (client, stream id)."""
        client, _ = self.connect_client()
        self.flush()
        client.connect_result = self.settle(client.connect(app, **connect_params))
        return client, self.settle(client.create_stream())

    def publisher(
        self, name: str = "test", app: str = "live", **connect_params: Any
    ) -> tuple[RTMPTestClient, int]:
        """A session publishing ``name`` (NetStream.Publish.Start received)."""
        client, sid = self.session(app, **connect_params)
        self.settle(client.publish(sid, name))
        return client, sid

    def player(self, name: str = "test", app: str = "live") -> tuple[RTMPTestClient, int]:
        """A session playing ``name`` (NetStream.Play.Start received)."""
        client, sid = self.session(app)
        self.settle(client.play(sid, name))
        return client, sid

    def settle(self, d: Deferred) -> Any:
        """Flush, then the result of ``d`` (which must have fired)."""
        self.flush()
        return result_of(d)

    def flush(self) -> None:
        """Move bytes between every client and the server until all is quiet."""
        moved = True
        while moved:
            moved = False
            for pump in self.pumps:
                moved = pump.flush() or moved

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()


def result_of(d: Deferred) -> Any:
    """The result of a Deferred that has already fired (raises its failure)."""
    box: list[Any] = []
    d.addBoth(box.append)
    if not box:
        raise AssertionError("Deferred has not fired")
    from twisted.python.failure import Failure

    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


__all__ = [
    "CONTROL_CSID",
    "CommandFailed",
    "MemoryServer",
    "RTMPTestClient",
    "SetChunkSize",
    "UserControl",
    "fail",
    "result_of",
    "set_chunk_size",
    "status_code",
    "succeed",
]
