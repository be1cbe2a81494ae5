"""The server's command responders: ``rtmp_connect``, ``rtmp_publish``, ``rtmp_play``...

Each takes the decoded ``Command``; it returns ``None``, a ``Reply`` (sent
as ``_result``), or a Deferred of either, and raises a ``CommandError`` to
refuse (see ``rtmpd.server.dispatch``). Stream names may carry a query string
(``KEY?token=...``): the key is the part before ``?``; the query is kept on
the publication for authorisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rtmpd.core.amf0 import ECMAArray
from rtmpd.core.commands import Command, encode_command, on_status, status_info
from rtmpd.core.errors import BadStreamName, CommandError, ConnectRejected, InvalidApp, UnknownCommand
from rtmpd.core.ertmp import client_capabilities, connect_result_properties
from rtmpd.core.messages import (
    PeerBandwidthLimit,
    UserControlEvent,
    set_peer_bandwidth,
    user_control,
    window_ack_size,
)
from rtmpd.server.dispatch import Reply
from rtmpd.relay.names import IllegalName, split_stream_name, validate_app
from rtmpd.relay.player import Player
from rtmpd.relay.registry import Publication, Stream

if TYPE_CHECKING:
    from rtmpd.server.protocol import RTMPProtocol

FMS_VERSION = "FMS/3,5,7,7009"
#: NetStreams one connection may create (publishers use one, players one or two).
MAX_NET_STREAMS = 16


class IllegalStreamName(CommandError):
    """A name that cannot be a stream key (``../``, control characters...): refused, connection closed."""

    status_code = "NetStream.Publish.BadName"
    fatal = True


class IllegalPlayName(IllegalStreamName):
    """The same refusal for ``play``: players expect a ``NetStream.Play.*`` code."""

    status_code = "NetStream.Play.StreamNotFound"


@dataclass
class NetStream:
    """A message stream created by ``createStream``: idle, publishing or playing."""

    stream_id: int
    stream: Stream | None = None
    publication: Publication | None = None
    player: Player | None = None


class ServerCommands:
    log = Logger()

    def __init__(self, conn: RTMPProtocol) -> None:
        self.conn = conn
        self._next_stream_id = 1

    @property
    def registry(self):
        return self.conn.factory.registry

    # -- NetConnection commands -----------------------------------------------

    def rtmp_connect(self, command: Command) -> Reply:
        conn = self.conn
        if conn.session_open:
            raise CommandError("already connected")
        params = command.command_object
        if not isinstance(params, dict):
            raise ConnectRejected("connect carries no command object")
        try:
            app = validate_app(params.get("app"))
        except IllegalName as e:
            raise InvalidApp(str(e)) from e
        conn.accept_connect(app, params)
        object_encoding = params.get("objectEncoding", 0.0)
        if object_encoding not in (0, 3):
            object_encoding = 0.0
        enhanced = client_capabilities(params)
        self.log.info(
            "connect command",
            conn_id=conn.conn_id,
            app=app,
            tcUrl=str(params.get("tcUrl", "")),
            flashVer=str(params.get("flashVer", "")),
            enhanced=enhanced.summary(),
        )
        config = conn.config
        conn.send_control(window_ack_size(config.window_ack_size))
        conn.send_control(set_peer_bandwidth(config.window_ack_size, PeerBandwidthLimit.DYNAMIC))
        conn.set_chunk_size(config.chunk_size)
        properties: dict[str, Any] = {"fmsVer": FMS_VERSION, "capabilities": 31.0, "mode": 1.0}
        # Enhanced RTMP: state what rtmpd supports (it forwards every codec) so the client enables it.
        properties.update(connect_result_properties(enhanced))
        info = status_info(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
            objectEncoding=float(object_encoding),
            data=ECMAArray(version="3,5,7,7009"),
        )
        return Reply(properties, info)

    def rtmp_createStream(self, command: Command) -> Reply:
        if len(self.conn.net_streams) >= MAX_NET_STREAMS:
            raise CommandError(f"more than {MAX_NET_STREAMS} streams on one connection")
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self.conn.net_streams[stream_id] = NetStream(stream_id)
        return Reply(None, float(stream_id))

    def rtmp_releaseStream(self, command: Command) -> Reply:
        return Reply(None)

    def rtmp_FCPublish(self, command: Command) -> Reply:
        name = command.args[0] if command.args else ""
        self.conn.send_command(
            encode_command(
                "onFCPublish", 0, None, status_info("status", "NetStream.Publish.Start", str(name))
            )
        )
        return Reply(None)

    def rtmp_FCUnpublish(self, command: Command) -> Reply:
        name = command.args[0] if command.args else ""
        for ns in list(self.conn.net_streams.values()):
            if ns.publication is not None and ns.publication.name == split_stream_name(str(name))[0]:
                self._stop_publishing(ns)
        self.conn.send_command(
            encode_command(
                "onFCUnpublish", 0, None, status_info("status", "NetStream.Unpublish.Success", str(name))
            )
        )
        return Reply(None)

    def rtmp_FCSubscribe(self, command: Command) -> None:
        # librtmp (rtmpdump) asks for this before play; FMS answers with onFCSubscribe.
        name = command.args[0] if command.args else ""
        self.conn.send_command(
            encode_command("onFCSubscribe", 0, None, status_info("status", "NetStream.Play.Start", str(name)))
        )

    def rtmp_FCUnsubscribe(self, command: Command) -> None:
        name = command.args[0] if command.args else ""
        self.conn.send_command(
            encode_command(
                "onFCUnsubscribe", 0, None, status_info("status", "NetStream.Play.Stop", str(name))
            )
        )

    def rtmp_deleteStream(self, command: Command) -> None:
        stream_id = command.args[0] if command.args else None
        if isinstance(stream_id, (int, float)) and not isinstance(stream_id, bool):
            ns = self.conn.net_streams.pop(int(stream_id), None)
            if ns is not None:
                self.close_net_stream(ns)

    def rtmp_getStreamLength(self, command: Command) -> Reply:
        return Reply(None, 0.0)

    def rtmp__checkbw(self, command: Command) -> Reply:
        return Reply(None)

    def rtmp_unknown(self, command: Command) -> None:
        raise UnknownCommand(f"unknown command {command.name!r}")

    # -- NetStream commands ------------------------------------------------------

    def _net_stream(self, command: Command) -> NetStream:
        ns = self.conn.net_streams.get(command.stream_id)
        if ns is None:
            raise CommandError(
                f"{command.name} on stream {command.stream_id}, which createStream did not make"
            )
        return ns

    def _key(self, name: Any, refusal: type[IllegalStreamName] = IllegalStreamName) -> tuple[str, str, str]:
        try:
            name, query = split_stream_name(name)
        except IllegalName as e:
            raise refusal(str(e)) from e
        return f"{self.conn.app}/{name}", name, query

    def rtmp_publish(self, command: Command) -> None:
        conn = self.conn
        ns = self._net_stream(command)
        key, name, query = self._key(command.args[0] if command.args else None)
        self.log.info(
            "publish command",
            conn_id=conn.conn_id,
            stream_key=key,
            type=str(command.args[1]) if len(command.args) > 1 else "live",
        )
        if ns.publication is not None or ns.player is not None:
            raise BadStreamName(f"stream {ns.stream_id} is already in use")
        now = conn.clock.seconds()
        publication = Publication(conn, ns.stream_id, name, query, now, now)
        ns.stream = self.registry.publish(key, publication)
        ns.publication = publication
        conn.send_control(user_control(UserControlEvent.STREAM_BEGIN, ns.stream_id))
        conn.send_command(
            on_status(
                ns.stream_id, "status", "NetStream.Publish.Start", f"{key} is now published.", details=name
            )
        )

    def rtmp_play(self, command: Command) -> None:
        self._play(command, command.args[0] if command.args else None, reset=True)

    def rtmp_play2(self, command: Command) -> None:
        params = command.args[0] if command.args else None
        self._play(command, params.get("streamName") if isinstance(params, dict) else None, reset=False)

    def _play(self, command: Command, raw_name: Any, *, reset: bool) -> None:
        conn = self.conn
        ns = self._net_stream(command)
        key, name, _query = self._key(raw_name, IllegalPlayName)
        self.log.info("play command", conn_id=conn.conn_id, stream_key=key)
        if ns.publication is not None:
            raise CommandError("cannot play on a publishing stream")
        if ns.player is not None:
            ns.player.stop()
        ns.stream = self.registry.subscribe(key)
        ns.player = Player(conn, ns.stream_id, ns.stream, name)
        ns.player.start(reset)

    def rtmp_pause(self, command: Command) -> None:
        ns = self._net_stream(command)
        if ns.player is not None:
            ns.player.set_paused(bool(command.args[0]) if command.args else True)

    def rtmp_receiveAudio(self, command: Command) -> None:
        ns = self._net_stream(command)
        if ns.player is not None:
            ns.player.receive_audio = bool(command.args[0]) if command.args else True

    def rtmp_receiveVideo(self, command: Command) -> None:
        ns = self._net_stream(command)
        if ns.player is not None:
            ns.player.receive_video = bool(command.args[0]) if command.args else True
            ns.player.waiting_keyframe = True

    def rtmp_closeStream(self, command: Command) -> None:
        ns = self.conn.net_streams.get(command.stream_id)
        if ns is not None:
            self.close_net_stream(ns)

    # -- teardown -------------------------------------------------------------

    def _stop_publishing(self, ns: NetStream) -> None:
        if ns.publication is not None and ns.stream is not None:
            self.registry.unpublish(ns.stream, ns.publication)
        ns.publication = None

    def close_net_stream(self, ns: NetStream) -> None:
        """Stop whatever the NetStream does (publishing or playing); it may be reused."""
        self._stop_publishing(ns)
        if ns.player is not None:
            ns.player.stop()
            ns.player = None
        ns.stream = None
