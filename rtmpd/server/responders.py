"""The server's command responders: ``rtmp_connect``, ``rtmp_publish``, ``rtmp_play``...

Each declares its arguments and its error map with ``responder`` (see
``rtmpd.server.dispatch``), is called with the decoded ``Command`` and its
checked arguments, and returns ``None``, a ``Reply`` (sent as ``_result``)
or a Deferred of either; it raises (or its Deferred fails with) a
``CommandError`` or a mapped error to refuse. Stream names may carry a query
string (``KEY?token=...``): the key is the part before ``?``; the query is
kept on the publication for authorisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from rtmpd.access.decision import Action, Allow, Request
from rtmpd.access.errors import ConnectDenied, PlayDenied, PublishDenied
from rtmpd.core.amf0 import ECMAArray
from rtmpd.core.commands import Command, encode_command, on_status, status_info
from rtmpd.core.errors import (
    BadArgument,
    BadStreamName,
    CommandError,
    ConnectRejected,
    InvalidApp,
    UnknownCommand,
)
from rtmpd.core.ertmp import client_capabilities, connect_result_properties
from rtmpd.core.messages import (
    PeerBandwidthLimit,
    UserControlEvent,
    set_peer_bandwidth,
    user_control,
    window_ack_size,
)
from rtmpd.core.text import client_text, url_without_query
from rtmpd.relay.names import IllegalName, split_stream_name, validate_app
from rtmpd.relay.peer import Peer
from rtmpd.relay.player import Player
from rtmpd.relay.registry import Publication, Stream
from rtmpd.server import clienttext
from rtmpd.server.dispatch import MAX_STRING_ARGUMENT, Boolean, Integer, Object, Reply, String, responder
from rtmpd.server.errors import TooManyStreamRequests
from rtmpd.server.gate import AccessGate

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from rtmpd.config import ServerConfig
    from rtmpd.relay.registry import StreamRegistry

FMS_VERSION = "FMS/3,5,7,7009"
#: NetStreams one connection may create (publishers use one, players one or two).
MAX_NET_STREAMS = 16


@dataclass
class NetStream:
    """A message stream created by ``createStream``: idle, publishing or playing."""

    stream_id: int
    stream: Stream | None = None
    publication: Publication | None = None
    player: Player | None = None
    #: The end of the publish or play permission (a signed URL's expiry), cancelled when the stream stops.
    expiry: IDelayedCall | None = None
    #: True while a publish or play on this NetStream waits for its authorisation.
    pending: bool = False


class _Factory(Protocol):
    registry: StreamRegistry


class CommandConnection(Peer, Protocol):
    """What the responders need from their connection (``RTMPProtocol`` is the one).

    Declared here rather than imported, so that the responders do not import
    the adapter that imports them.
    """

    factory: _Factory
    config: ServerConfig
    clock: IReactorTime
    session_open: bool
    connect_params: dict
    net_streams: dict[int, NetStream]
    #: The client's IP address without its port ("" for a UNIX socket).
    peer_host: str

    def set_chunk_size(self, size: int) -> None: ...
    def accept_connect(self, app: str, params: dict) -> None: ...


class ServerCommands:
    """The responders of one connection: NetConnection and NetStream commands (see the module docstring).

    Each ``rtmp_<name>`` method declares its arguments and error map with
    ``responder``; the ``Dispatcher`` checks the arguments, calls it and
    answers. The NetStreams that ``createStream`` makes live in
    ``conn.net_streams``; ``close_net_stream`` stops whatever one does.
    """

    log = Logger()

    def __init__(self, conn: CommandConnection) -> None:
        self.conn = conn
        self._next_stream_id = 1
        self._connecting = False
        self._stream_requests = 0
        self.gate = AccessGate(conn)

    @property
    def connecting(self) -> bool:
        """True while a ``connect`` waits for its authorisation."""
        return self._connecting

    def _count_stream_request(self, command: Command) -> None:
        """One more createStream/publish/play: refused (and the connection closed) past the bound."""
        self._stream_requests += 1
        limit = self.conn.config.max_stream_requests
        if self._stream_requests > limit:
            raise TooManyStreamRequests(f"{command.name}: over {limit} stream requests on a connection")

    @property
    def registry(self) -> StreamRegistry:
        return self.conn.factory.registry

    # -- NetConnection commands -----------------------------------------------

    @responder(
        command_object=("params", Object()),
        fatal_errors={
            InvalidApp: "NetConnection.Connect.InvalidApp",
            IllegalName: "NetConnection.Connect.InvalidApp",
            ConnectRejected: "NetConnection.Connect.Rejected",
            ConnectDenied: "NetConnection.Connect.Rejected",
            BadArgument: "NetConnection.Connect.Rejected",
        },
    )
    def rtmp_connect(self, command: Command, params: dict) -> Reply | Deferred:
        conn = self.conn
        if conn.session_open or self._connecting:
            raise CommandError("already connected")
        raw_app = params.get("app")
        app = validate_app(raw_app)
        tc_url = clienttext.client_text(params.get("tcUrl"), MAX_STRING_ARGUMENT)
        query = (raw_app.partition("?")[2] if isinstance(raw_app, str) else "") or tc_url.partition("?")[2]
        self._connecting = True
        request = self.gate.request(Action.CONNECT, app, "", query, params)
        return self.gate.authorise(request, self._connected, app, params)

    def _connected(self, _allow: Allow, app: str, params: dict) -> Reply:
        conn = self.conn
        self._connecting = False
        conn.accept_connect(app, params)
        object_encoding = params.get("objectEncoding", 0.0)
        if object_encoding not in (0, 3):
            object_encoding = 0.0
        enhanced = client_capabilities(params)
        self.log.info(
            "connect command",
            conn_id=conn.conn_id,
            app=app,
            tcUrl=client_text(url_without_query(params.get("tcUrl", ""))),  # no signed-URL token
            flashVer=client_text(params.get("flashVer", "")),
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

    @responder(fatal_errors={TooManyStreamRequests: "NetConnection.Call.Failed"})
    def rtmp_createStream(self, command: Command) -> Reply:
        self._count_stream_request(command)
        if len(self.conn.net_streams) >= MAX_NET_STREAMS:
            raise CommandError(f"more than {MAX_NET_STREAMS} streams on one connection")
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self.conn.net_streams[stream_id] = NetStream(stream_id)
        return Reply(None, float(stream_id))

    @responder()
    def rtmp_releaseStream(self, command: Command) -> Reply:
        return Reply(None)

    @responder(arguments=[("name", String(default=""))])
    def rtmp_FCPublish(self, command: Command, name: str) -> Reply:
        self._notify("onFCPublish", "NetStream.Publish.Start", name)
        return Reply(None)

    @responder(
        arguments=[("name", String(default=""))],
        # A name that is no stream key names nothing to unpublish: refused, the connection lives.
        errors={IllegalName: "NetConnection.Call.Failed"},
    )
    def rtmp_FCUnpublish(self, command: Command, name: str) -> Reply:
        key = split_stream_name(name)[0]
        for ns in list(self.conn.net_streams.values()):
            if ns.publication is not None and ns.publication.name == key:
                self._stop_publishing(ns)
        self._notify("onFCUnpublish", "NetStream.Unpublish.Success", name)
        return Reply(None)

    @responder(arguments=[("name", String(default=""))])
    def rtmp_FCSubscribe(self, command: Command, name: str) -> None:
        # librtmp (rtmpdump) asks for this before play; FMS answers with onFCSubscribe.
        self._notify("onFCSubscribe", "NetStream.Play.Start", name)

    @responder(arguments=[("name", String(default=""))])
    def rtmp_FCUnsubscribe(self, command: Command, name: str) -> None:
        self._notify("onFCUnsubscribe", "NetStream.Play.Stop", name)

    def _notify(self, event: str, code: str, name: str) -> None:
        """FMS's answer to the FC* commands: ``event(0, null, info)`` with the name as description."""
        self.conn.send_command(encode_command(event, 0, None, status_info("status", code, name)))

    @responder(arguments=[("stream_id", Integer())])
    def rtmp_deleteStream(self, command: Command, stream_id: int) -> None:
        ns = self.conn.net_streams.pop(stream_id, None)
        if ns is not None:
            self.close_net_stream(ns)

    @responder()
    def rtmp_getStreamLength(self, command: Command) -> Reply:
        return Reply(None, 0.0)

    @responder()
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

    def _key(self, raw_name: str) -> tuple[str, str, str]:
        """``(app/KEY, KEY, query)`` of a stream name. Raises IllegalName."""
        name, query = split_stream_name(raw_name)
        return f"{self.conn.app}/{name}", name, query

    @responder(
        arguments=[("name", String()), ("kind", String(default="live"))],
        errors={BadStreamName: "NetStream.Publish.BadName"},
        fatal_errors={
            IllegalName: "NetStream.Publish.BadName",
            BadArgument: "NetStream.Publish.BadName",
            PublishDenied: "NetStream.Publish.BadName",
            TooManyStreamRequests: "NetStream.Publish.Failed",
        },
    )
    def rtmp_publish(self, command: Command, name: str, kind: str) -> Deferred:
        conn = self.conn
        self._count_stream_request(command)
        ns = self._net_stream(command)
        key, name, query = self._key(name)
        self.log.info("publish command", conn_id=conn.conn_id, stream_key=key, type=kind)
        if ns.publication is not None or ns.player is not None or ns.pending:
            raise BadStreamName(f"stream {ns.stream_id} is already in use")
        ns.pending = True
        request = self.gate.request(Action.PUBLISH, conn.app, name, query)
        return self.gate.authorise(request, self._publish_allowed, ns, name, query, request)

    def _publish_allowed(self, allow: Allow, ns: NetStream, name: str, query: str, request: Request) -> Any:
        conn = self.conn
        if allow.name is not None:
            name = split_stream_name(allow.name)[0]
        now = conn.clock.seconds()
        publication = Publication(conn, ns.stream_id, name, query, now, now, record=allow.record)
        publication.authorisation = request
        d = self.registry.check_publish(f"{conn.app}/{name}", publication)  # a cluster's claim: may wait
        return d.addBoth(self._publish_checked, allow, ns, publication)

    def _publish_checked(self, refused: Any, allow: Allow, ns: NetStream, publication: Publication) -> Any:
        conn, name, ns.pending = self.conn, publication.name, False
        if refused is not None or conn.net_streams.get(ns.stream_id) is not ns:
            return refused  # a Failure, or None when the stream was deleted while the decisions were pending
        key = f"{conn.app}/{name}"
        # Authorised before the registry decides: a takeover (--publish-takeover) needs the permission.
        ns.stream = self.registry.publish(key, publication)
        ns.publication = publication
        ns.expiry = self.gate.schedule_expiry(allow, "publish")
        conn.send_control(user_control(UserControlEvent.STREAM_BEGIN, ns.stream_id))
        text = f"{key} is now published."
        conn.send_command(on_status(ns.stream_id, "status", "NetStream.Publish.Start", text, details=name))

    #: Players expect a ``NetStream.Play.*`` code for a name that cannot be played.
    _PLAY_ERRORS = {
        IllegalName: "NetStream.Play.StreamNotFound",
        BadArgument: "NetStream.Play.StreamNotFound",
        PlayDenied: "NetStream.Play.Failed",
        TooManyStreamRequests: "NetStream.Play.Failed",
    }

    @responder(arguments=[("name", String())], fatal_errors=_PLAY_ERRORS)
    def rtmp_play(self, command: Command, name: str) -> Deferred:
        return self._play(command, name, reset=True)

    @responder(arguments=[("params", Object())], fatal_errors=_PLAY_ERRORS)
    def rtmp_play2(self, command: Command, params: dict) -> Deferred:
        return self._play(command, params.get("streamName"), reset=False)

    def _play(self, command: Command, raw_name: Any, *, reset: bool) -> Deferred:
        conn = self.conn
        self._count_stream_request(command)
        ns = self._net_stream(command)
        key, name, query = self._key(raw_name)
        self.log.info("play command", conn_id=conn.conn_id, stream_key=key)
        if ns.publication is not None or ns.pending:
            raise CommandError("cannot play on a publishing stream")
        ns.pending = True
        request = self.gate.request(Action.PLAY, conn.app, name, query)
        return self.gate.authorise(request, self._play_allowed, ns, name, reset)

    def _play_allowed(self, allow: Allow, ns: NetStream, name: str, reset: bool) -> None:
        conn = self.conn
        ns.pending = False
        if conn.net_streams.get(ns.stream_id) is not ns:
            return
        if allow.name is not None:
            name = split_stream_name(allow.name)[0]
        key = f"{conn.app}/{name}"
        if ns.player is not None:
            ns.player.stop()
        if ns.expiry is not None:
            ns.expiry.cancel()
            ns.expiry = None
        ns.stream = self.registry.subscribe(key)
        ns.expiry = self.gate.schedule_expiry(allow, "play")
        ns.player = Player(conn, ns.stream_id, ns.stream, name)
        ns.player.start(reset)

    @responder(arguments=[("paused", Boolean(default=True))])
    def rtmp_pause(self, command: Command, paused: bool) -> None:
        ns = self._net_stream(command)
        if ns.player is not None:
            ns.player.set_paused(paused)

    @responder(arguments=[("enabled", Boolean(default=True))])
    def rtmp_receiveAudio(self, command: Command, enabled: bool) -> None:
        ns = self._net_stream(command)
        if ns.player is not None:
            ns.player.receive_audio = enabled

    @responder(arguments=[("enabled", Boolean(default=True))])
    def rtmp_receiveVideo(self, command: Command, enabled: bool) -> None:
        ns = self._net_stream(command)
        if ns.player is not None:
            ns.player.receive_video = enabled
            ns.player.waiting_keyframe = True

    @responder()
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
        if ns.expiry is not None:
            if ns.expiry.active():
                ns.expiry.cancel()
            ns.expiry = None
        self._stop_publishing(ns)
        if ns.player is not None:
            ns.player.stop()
            ns.player = None
        ns.stream = None
