"""Live streams: who publishes, who plays, and what a late joiner needs.

A stream is named ``app/name``. Each has at most one publisher, any number of
players, its own late-join cache and its own listeners (the recorder). The
relay work that depends only on the message (classifying it, caching it,
serialising it into chunks) is done once per message; the per-player work is
a few attribute checks and an append to that player's outgoing queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rtmpd.config import ServerConfig
from rtmpd.core import media
from rtmpd.core.chunks import encode_message
from rtmpd.core.errors import BadStreamName, MalformedTag
from rtmpd.core.messages import Message, MessageType
from rtmpd.gop import LateJoinCache

if TYPE_CHECKING:
    from rtmpd.player import Player
    from rtmpd.protocol import RTMPProtocol

#: Chunk streams for relayed media. Every message on them is serialised with a
#: full (fmt 0) header, so one serialisation serves every player.
DATA_CSID = 5
AUDIO_CSID = 6
VIDEO_CSID = 7
_CSID = {MessageType.AUDIO: AUDIO_CSID, MessageType.VIDEO: VIDEO_CSID}


class StreamListener:
    """What the registry tells interested services (the recorder) about a stream."""

    def stream_published(self, stream: Stream) -> None:
        pass

    def stream_message(self, stream: Stream, message: Message, info: Any) -> None:
        pass

    def stream_unpublished(self, stream: Stream) -> None:
        pass


@dataclass
class Publication:
    """One publisher's hold on a stream."""

    conn: RTMPProtocol
    stream_id: int
    name: str
    query: str
    started_at: float
    last_activity: float
    bytes_in: int = 0
    messages_in: int = 0


@dataclass
class StreamStats:
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    tracks: dict[str, str] = field(default_factory=dict)
    codecs_logged: bool = False


class Stream:
    log = Logger()

    def __init__(self, key: str, config: ServerConfig, registry: StreamRegistry) -> None:
        self.key = key
        self.config = config
        self.registry = registry
        self.publisher: Publication | None = None
        self.players: list[Player] = []
        self.cache = LateJoinCache(
            gop_enabled=config.gop_cache,
            max_bytes=config.gop_cache_max_bytes,
            max_duration_ms=int(config.gop_cache_max_duration * 1000),
        )
        self.stats = StreamStats()
        self.last_timestamp = 0
        #: What the recorder (or other services) keep about this stream, for inspection.
        self.recording: Any = None

    # -- publishing ---------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.publisher is not None

    def start(self, publication: Publication) -> None:
        self.publisher = publication
        self.cache.clear()
        self.stats = StreamStats()
        for player in list(self.players):
            player.publish_started()
        for listener in self.registry.listeners:
            listener.stream_published(self)

    def stop(self) -> None:
        """The publisher is gone: tell players and listeners; the players stay."""
        if self.publisher is None:
            return
        self.publisher = None
        for listener in self.registry.listeners:
            listener.stream_unpublished(self)
        for player in list(self.players):
            player.publish_stopped()
        self.cache.clear()

    # -- relaying -----------------------------------------------------------

    def relay(self, message: Message, *, is_metadata: bool = False) -> None:
        """Take one audio/video/data message from the publisher and pass it on."""
        type_id = message.type_id
        info: Any = None
        is_header = is_keyframe = False
        try:
            if type_id == MessageType.VIDEO:
                info = media.parse_video(message.payload)
                is_header = info.is_sequence_header
                is_keyframe = info.is_keyframe and not is_header
            elif type_id == MessageType.AUDIO:
                info = media.parse_audio(message.payload)
                is_header = info.is_sequence_header
        except MalformedTag as e:
            # Relayed untouched all the same: we never reject media we cannot parse.
            self.log.debug("Unparsed media tag", stream_key=self.key, error=str(e))
        self.last_timestamp = message.timestamp
        if is_header:
            self._cache_header(message, info)
        elif not is_metadata:
            self.cache.add_frame(message, is_video_keyframe=is_keyframe)
        for listener in self.registry.listeners:
            listener.stream_message(self, message, info)
        if self.players:
            self._fan_out(message, is_header, is_keyframe)

    def set_metadata(self, message: Message, values: dict[str, Any]) -> None:
        """Cache ``onMetaData`` (already unwrapped from ``@setDataFrame``) and relay it at time 0."""
        message = Message(message.type_id, 0, message.stream_id, message.payload)
        self.cache.metadata = message
        width, height = values.get("width"), values.get("height")
        if isinstance(width, (int, float)) and isinstance(height, (int, float)):
            self.stats.width, self.stats.height = int(width), int(height)
        self.relay(message, is_metadata=True)

    def _cache_header(self, message: Message, info: Any) -> None:
        track = getattr(info, "track_id", 0)
        if message.type_id == MessageType.VIDEO:
            self.cache.video_headers[track] = message
            self.stats.video_codec = info.codec
            self.log.info("Cached video sequence header", stream_key=self.key, size=len(message.payload),
                          codec=info.codec, track=track)
        else:
            self.cache.audio_headers[track] = message
            self.stats.audio_codec = info.codec
            self.log.info("Cached audio sequence header", stream_key=self.key, size=len(message.payload),
                          codec=info.codec, track=track)
        if info.multitrack:
            kind = "video" if message.type_id == MessageType.VIDEO else "audio"
            self.stats.tracks[f"{kind}{track}"] = info.codec
        if not self.stats.codecs_logged and self.stats.video_codec and self.stats.audio_codec:
            self.stats.codecs_logged = True
            self.log.info("Codecs detected", stream_key=self.key, videoCodec=self.stats.video_codec,
                          audioCodec=self.stats.audio_codec)

    def _fan_out(self, message: Message, is_header: bool, is_keyframe: bool) -> None:
        type_id = message.type_id
        csid = _CSID.get(type_id, DATA_CSID)
        is_video = type_id == MessageType.VIDEO
        serialised: dict[tuple[int, int], bytes] = {}
        for player in self.players:
            if not player.accepts(type_id, is_video, is_header, is_keyframe, message):
                continue
            conn = player.conn
            group = (conn.chunk_size_out, player.stream_id)
            data = serialised.get(group)
            if data is None:
                data = serialised[group] = encode_message(
                    csid, Message(type_id, message.timestamp, player.stream_id, message.payload), group[0]
                )
            conn.queue_media(data)

    # -- players --------------------------------------------------------------

    def add_player(self, player: Player) -> None:
        self.players.append(player)
        self.log.info("Subscriber added", stream_key=self.key, conn_id=player.conn.conn_id,
                      total_subscribers=len(self.players))

    def remove_player(self, player: Player) -> None:
        try:
            self.players.remove(player)
        except ValueError:
            return
        self.log.info("Subscriber removed", stream_key=self.key, conn_id=player.conn.conn_id,
                      total_subscribers=len(self.players))
        self.registry.forget_if_idle(self)

    def late_join_messages(self) -> list[Message]:
        """The cached messages a player joining now receives, stamped so time never goes backwards."""
        gop = self.cache.gop
        start = gop[0].timestamp if gop else self.last_timestamp
        # onMetaData goes at time 0: ffmpeg's FLV demuxer takes a script tag with a
        # non-zero timestamp for a subtitle stream. Sequence headers go with the keyframe.
        headers = [
            Message(m.type_id, 0 if m.type_id == MessageType.DATA_AMF0 else start, m.stream_id, m.payload)
            for m in self.cache.headers()
        ]
        return headers + gop


class StreamRegistry:
    """Every live or awaited stream, by ``app/name``."""

    log = Logger()

    def __init__(self, config: ServerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._now = clock
        self.streams: dict[str, Stream] = {}
        self.listeners: list[StreamListener] = []

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self.streams.values()))

    def get(self, key: str) -> Stream | None:
        return self.streams.get(key)

    def _stream(self, key: str) -> Stream:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream(key, self.config, self)
        return stream

    def publish(self, key: str, publication: Publication) -> Stream:
        """Make ``publication`` the publisher of ``key``.

        A live publisher keeps the key (BadStreamName) unless takeover is on or
        it has been silent for the publisher timeout; then it is dropped.
        """
        stream = self._stream(key)
        current = stream.publisher
        if current is not None:
            idle = self._now() - current.last_activity
            if not (self.config.publish_takeover or idle >= self.config.publisher_timeout):
                raise BadStreamName(f"{key} is already being published")
            self.log.info("Publisher replaced", stream_key=key, conn_id=publication.conn.conn_id,
                          old_conn_id=current.conn.conn_id, idle_seconds=round(idle, 3))
            self.unpublish(stream, current)
            current.conn.close("publisher replaced")
        stream.start(publication)
        return stream

    def unpublish(self, stream: Stream, publication: Publication) -> None:
        if stream.publisher is publication:
            stream.stop()
            self.forget_if_idle(stream)

    def subscribe(self, key: str) -> Stream:
        return self._stream(key)

    def forget_if_idle(self, stream: Stream) -> None:
        if stream.publisher is None and not stream.players and self.streams.get(stream.key) is stream:
            del self.streams[stream.key]

    def idle_publishers(self) -> list[Publication]:
        """Publishers silent for longer than the publisher timeout."""
        now, limit = self._now(), self.config.publisher_timeout
        return [
            s.publisher for s in self.streams.values()
            if s.publisher is not None and now - s.publisher.last_activity >= limit
        ]
