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
from rtmpd.core.errors import BadStreamName, MalformedTag
from rtmpd.core.messages import Message, MessageType
from rtmpd.relay.fanout import serialise
from rtmpd.relay.latejoin import CONFIG, HEADER, LateJoinCache

if TYPE_CHECKING:
    from rtmpd.relay.player import Player
    from rtmpd.relay.peer import Peer

#: Packet types rtmpd knows (after ModEx prefixes, inside multitrack framing); others are relayed untouched.
_KNOWN_VIDEO_PACKET_TYPES = frozenset({None, 0, 1, 2, 3, 4, 5})
_KNOWN_AUDIO_PACKET_TYPES = frozenset({None, 0, 1, 2, 4})
#: E-RTMP AudioPacketType.MultichannelConfig: configures a track, is no frame.
_AUDIO_MULTICHANNEL_CONFIG = 4
_FRAME_COMMAND = 5


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

    peer: Peer
    stream_id: int
    name: str
    query: str
    started_at: float
    last_activity: float
    bytes_in: int = 0
    messages_in: int = 0
    #: True while the recorder holds the publisher back (it is not idle then).
    throttled: bool = False


@dataclass
class StreamStats:
    """What the relay learnt about a stream's media, for logs and inspection."""

    #: Codec of the primary (lowest-numbered) video/audio track: "H264", "H265", "AV1", "Opus"...
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    #: Every track that sent a sequence header: "video0" -> "H265", "audio1" -> "Opus"...
    tracks: dict[str, str] = field(default_factory=dict)
    #: True once any Enhanced RTMP multitrack tag was seen.
    multitrack: bool = False
    codecs_logged: bool = False
    #: (kind, codec, packet type) of unknown tags already logged.
    unknown_logged: set[tuple[str, str, int | None]] = field(default_factory=set)


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
        #: The video track whose keyframes start a GOP: the lowest track id with a sequence header, else 0.
        self.primary_video_track = 0
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
        self.primary_video_track = 0
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
        """Take one audio/video/data message from the publisher and pass it on.

        Media is classified (``rtmpd.core.media``) to keep the late-join
        cache: configuration messages (sequence headers, E-RTMP video
        Metadata and audio MultichannelConfig) per kind and track, frames in
        the GOP from the last keyframe of the primary video track. Every
        message is relayed untouched, whatever the classification says.
        """
        type_id = message.type_id
        info: Any = None
        is_header = is_keyframe = False
        if type_id == MessageType.VIDEO or type_id == MessageType.AUDIO:
            is_video = type_id == MessageType.VIDEO
            try:
                info = media.parse_video(message.payload) if is_video else media.parse_audio(message.payload)
            except MalformedTag as e:
                # Relayed untouched all the same: we never reject media we cannot parse.
                self.log.debug(
                    "Unparsed media tag",
                    stream_key=self.key,
                    conn_id=self._conn_id(),
                    kind="video" if is_video else "audio",
                    error=str(e),
                )
            else:
                # The common case (one track, a known codec, a frame) costs a few attribute reads.
                tracks = self._tracks(message, info) if info.multitrack else None
                if info.enhanced or info.codec[0] == "u":
                    self._note_unknown(is_video, tracks or (info,))
                slot = (
                    HEADER
                    if info.is_sequence_header
                    else (self._config_slot(is_video, info) if info.enhanced else None)
                )
                if slot is not None:
                    is_header = True
                    self._cache_config(message, tracks or (info,), slot)
                elif is_video:
                    primary = self.primary_video_track
                    if tracks is None:
                        is_keyframe = info.is_keyframe and info.track_id == primary
                    else:
                        is_keyframe = any(t.is_keyframe and t.track_id == primary for t in tracks)
        self.last_timestamp = message.timestamp
        if not is_header and not is_metadata:
            self.cache.add_frame(message, is_video_keyframe=is_keyframe)
        for listener in self.registry.listeners:
            listener.stream_message(self, message, info)
        if self.players:
            self._fan_out(message, is_header, is_keyframe)

    def _conn_id(self) -> str | None:
        return self.publisher.peer.conn_id if self.publisher is not None else None

    @staticmethod
    def _tracks(message: Message, info: Any) -> tuple[Any, ...]:
        """Every track of a multitrack tag; just the first if a later one is truncated."""
        try:
            if message.type_id == MessageType.VIDEO:
                return tuple(media.video_tracks(message.payload))
            return tuple(media.audio_tracks(message.payload))
        except MalformedTag:
            return (info,)

    @staticmethod
    def _config_slot(is_video: bool, info: Any) -> str | None:
        """CONFIG for an E-RTMP tag that configures a track without being a frame, else None."""
        if is_video:
            return CONFIG if info.is_metadata else None
        return CONFIG if info.packet_type == _AUDIO_MULTICHANNEL_CONFIG else None

    def _note_unknown(self, is_video: bool, tracks: tuple[Any, ...]) -> None:
        known = _KNOWN_VIDEO_PACKET_TYPES if is_video else _KNOWN_AUDIO_PACKET_TYPES
        for t in tracks:
            if t.multitrack:
                self.stats.multitrack = True
            if is_video and t.frame_type == _FRAME_COMMAND:
                continue  # A command frame has no FourCC: "unknown(command)" is what it is, not unknown.
            if t.codec.startswith("unknown") or t.packet_type not in known:
                kind = "video" if is_video else "audio"
                seen = (kind, t.codec, t.packet_type)
                if seen not in self.stats.unknown_logged:
                    self.stats.unknown_logged.add(seen)
                    self.log.debug(
                        "Unknown media tag relayed untouched",
                        stream_key=self.key,
                        conn_id=self._conn_id(),
                        kind=kind,
                        codec=t.codec,
                        fourcc=t.fourcc,
                        packet_type=t.packet_type,
                        track=t.track_id,
                    )

    def set_metadata(self, message: Message, values: dict[str, Any]) -> None:
        """Cache ``onMetaData`` (already unwrapped from ``@setDataFrame``) and relay it at time 0."""
        message = Message(message.type_id, 0, message.stream_id, message.payload)
        self.cache.metadata = message
        width, height = values.get("width"), values.get("height")
        if isinstance(width, (int, float)) and isinstance(height, (int, float)):
            self.stats.width, self.stats.height = int(width), int(height)
        self.relay(message, is_metadata=True)

    def _cache_config(self, message: Message, tracks: tuple[Any, ...], slot: str) -> None:
        cache, stats = self.cache, self.stats
        is_video = message.type_id == MessageType.VIDEO
        kind = "video" if is_video else "audio"
        cache.set_config(message, [t.track_id for t in tracks], slot)
        if slot != HEADER:
            self.log.debug(
                "Cached track configuration",
                stream_key=self.key,
                conn_id=self._conn_id(),
                kind=kind,
                tracks=[t.track_id for t in tracks],
                packet_type=tracks[0].packet_type,
            )
            return
        for t in tracks:
            name = f"{kind}{t.track_id}"
            new_track = name not in stats.tracks
            stats.tracks[name] = t.codec
            self.log.info(
                "Cached {kind} sequence header",
                kind=kind,
                stream_key=self.key,
                conn_id=self._conn_id(),
                size=len(message.payload),
                codec=t.codec,
                fourcc=t.fourcc,
                track=t.track_id,
            )
            if new_track and stats.codecs_logged and t.multitrack:
                self.log.info(
                    "Track detected",
                    stream_key=self.key,
                    conn_id=self._conn_id(),
                    kind=kind,
                    track=t.track_id,
                    codec=t.codec,
                )
        if is_video:
            self.primary_video_track = cache.video_tracks()[0]
            stats.video_codec = stats.tracks[f"video{self.primary_video_track}"]
        else:
            stats.audio_codec = stats.tracks[f"audio{min(cache.audio_headers)}"]
        if not stats.codecs_logged and stats.video_codec and stats.audio_codec:
            stats.codecs_logged = True
            self.log.info(
                "Codecs detected",
                stream_key=self.key,
                conn_id=self._conn_id(),
                videoCodec=stats.video_codec,
                audioCodec=stats.audio_codec,
                tracks=dict(stats.tracks) if stats.multitrack else None,
            )

    def _fan_out(self, message: Message, is_header: bool, is_keyframe: bool) -> None:
        type_id = message.type_id
        is_video = type_id == MessageType.VIDEO
        serialised: dict[tuple[int, int], bytes] = {}
        for player in self.players:
            if not player.accepts(type_id, is_video, is_header, is_keyframe, message):
                continue
            peer = player.peer
            group = (peer.chunk_size, player.stream_id)
            data = serialised.get(group)
            if data is None:
                data = serialised[group] = serialise(message, player.stream_id, group[0])
            peer.queue_media(data)

    # -- players --------------------------------------------------------------

    def add_player(self, player: Player) -> None:
        self.players.append(player)
        self.log.info(
            "Subscriber added",
            stream_key=self.key,
            conn_id=player.peer.conn_id,
            total_subscribers=len(self.players),
        )

    def remove_player(self, player: Player) -> None:
        try:
            self.players.remove(player)
        except ValueError:
            return
        self.log.info(
            "Subscriber removed",
            stream_key=self.key,
            conn_id=player.peer.conn_id,
            total_subscribers=len(self.players),
        )
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
        if gop and len(self.cache.video_tracks()) > 1:
            gop = self._from_each_track_keyframe(gop)
        return headers + gop

    def _from_each_track_keyframe(self, gop: list[Message]) -> list[Message]:
        """The GOP without the frames of other video tracks that precede that track's first keyframe in it.

        The GOP starts at a keyframe of the primary track; another track's
        keyframes need not line up with it, and its frames before its own
        first keyframe would only make a decoder complain.
        """
        primary = self.primary_video_track
        started = {primary}
        out = []
        for message in gop:
            if message.type_id == MessageType.VIDEO:
                try:
                    info = media.parse_video(message.payload)
                except MalformedTag:
                    out.append(message)
                    continue
                tracks = self._tracks(message, info) if info.multitrack else (info,)
                started.update(t.track_id for t in tracks if t.is_keyframe)
                if not any(t.track_id in started for t in tracks):
                    continue
            out.append(message)
        return out


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
            self.log.info(
                "Publisher replaced",
                stream_key=key,
                conn_id=publication.peer.conn_id,
                old_conn_id=current.peer.conn_id,
                idle_seconds=round(idle, 3),
            )
            self.unpublish(stream, current)
            current.peer.close("publisher replaced")
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
            s.publisher
            for s in self.streams.values()
            if s.publisher is not None
            and not s.publisher.throttled
            and now - s.publisher.last_activity >= limit
        ]
