"""One live stream: its publisher, its players, its late-join cache, and the listeners it informs.

The work that depends only on the message is done once per message:
``relay`` classifies it (``rtmpd.core.classify``), keeps the late-join cache,
tells the listeners and serialises it for the players (``rtmpd.relay.fanout``).
The per-player work is ``Player.accepts`` and an append to that player's queue.

Listeners are isolated from each other and from the stream: an exception in
one is logged once with its traceback (ERROR), that listener is detached from
this stream (and told the stream ended, so a recorder finalises its file),
and the publisher, the players and the other listeners go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger, LogLevel

from rtmpd.config import ServerConfig
from rtmpd.core import media
from rtmpd.core.classify import HEADER, METADATA, MediaInfo, classify
from rtmpd.core.errors import MalformedTag
from rtmpd.core.messages import Message, MessageType
from rtmpd.notify import Notifier
from rtmpd.relay.fanout import serialise
from rtmpd.relay.latejoin import LateJoinCache
from rtmpd.relay.publication import Publication, StreamStats

if TYPE_CHECKING:
    from rtmpd.relay.peer import Peer
    from rtmpd.relay.player import Player

#: Packet types rtmpd knows (after ModEx prefixes, inside multitrack framing); others are relayed untouched.
_KNOWN_VIDEO_PACKET_TYPES = frozenset({None, 0, 1, 2, 3, 4, 5})
_KNOWN_AUDIO_PACKET_TYPES = frozenset({None, 0, 1, 2, 4})
_FRAME_COMMAND = 5
#: Distinct unknown (kind, codec, packet type) a stream logs; past it, unknown tags are not noted.
MAX_UNKNOWN_LOGGED = 32
#: Tracks named one by one in a "Cached sequence header" line (a multitrack tag may carry hundreds).
MAX_LOGGED_TRACKS = 8


class Stream:
    """A stream named ``app/name``: at most one publisher, any number of players.

    Players stay subscribed across unpublish and re-publish. ``relay`` takes
    every audio/video/data message of the publisher and never raises for a
    listener's sake.
    """

    log = Logger()

    def __init__(
        self,
        key: str,
        config: ServerConfig,
        listeners: list[Any],
        forget: Callable[[Stream], None],
        notifier: Notifier | None = None,
    ) -> None:
        self.key = key
        #: Lifecycle events (publish, play, codecs) go here; see ``rtmpd.notify``.
        self.notifier = notifier if notifier is not None else Notifier(lambda: 0.0)
        self.config = config
        #: The registry's ``rtmpd.relay.listener.StreamListener``s (shared, not copied).
        self._listeners = listeners
        self._forget = forget
        #: Listeners that failed on this stream: not told anything more until the next publish.
        self._failed: set[int] = set()
        self.publisher: Publication | None = None
        self.players: list[Player] = []
        self.cache = LateJoinCache(
            gop_enabled=config.gop_cache,
            max_bytes=config.gop_cache_max_bytes,
            max_duration_ms=int(config.gop_cache_max_duration * 1000),
            max_messages=config.gop_cache_max_messages,
        )
        self.stats = StreamStats()
        self.last_timestamp = 0
        #: The video track whose keyframes start a GOP: the lowest track id with a sequence header, else 0.
        self.primary_video_track = 0

    # -- publishing ---------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.publisher is not None

    def start(self, publication: Publication) -> None:
        self.publisher = publication
        self.cache.clear()
        self.stats = StreamStats()
        self.primary_video_track = 0
        self._failed.clear()
        for player in list(self.players):
            player.publish_started()
        self._tell("stream_published", self)
        if self.notifier.active:
            self.notifier.emit("publish_start", **self._peer_fields(publication.peer))

    def stop(self) -> None:
        """The publisher is gone: tell players and listeners; the players stay."""
        publication = self.publisher
        if publication is None:
            return
        self.publisher = None
        self._tell("stream_unpublished", self)
        if self.notifier.active:
            self.notifier.emit(
                "publish_stop",
                **self._peer_fields(publication.peer),
                bytes_in=publication.bytes_in,
                messages_in=publication.messages_in,
            )
        for player in list(self.players):
            player.publish_stopped()
        self.cache.clear()

    # -- listeners ----------------------------------------------------------

    def _tell(self, method: str, *args: Any) -> None:
        for listener in self._listeners:
            if id(listener) in self._failed:
                continue
            try:
                getattr(listener, method)(*args)
            except Exception:
                self._listener_failed(listener, method)

    def _listener_failed(self, listener: Any, method: str) -> None:
        self._failed.add(id(listener))
        self.log.failure(
            "Stream listener failed; detached from this stream",
            level=LogLevel.error,
            stream_key=self.key,
            conn_id=self._conn_id(),
            listener=type(listener).__name__,
            call=method,
        )
        if method != "stream_unpublished":
            # Let it end what it keeps for the stream (a recorder finalises its file).
            try:
                listener.stream_unpublished(self)
            except Exception:
                self.log.failure(
                    "Stream listener failed to stop",
                    level=LogLevel.error,
                    stream_key=self.key,
                    listener=type(listener).__name__,
                )

    # -- relaying -----------------------------------------------------------

    def relay(self, message: Message) -> None:
        """Take one audio/video/data message from the publisher and pass it on, untouched.

        It is classified once; configuration messages go to the late-join
        cache's slots by kind and track, frames to its GOP (from the last
        keyframe of the primary video track); then listeners and players get
        the message with its ``MediaInfo``.
        """
        info = classify(message, self.primary_video_track)
        if info.notable:
            self._take_note(message, info)
        self._pass_on(message, info)

    def _take_note(self, message: Message, info: MediaInfo) -> None:
        if info.tracks:
            first = info.tracks[0]
            if first.enhanced or first.multitrack or first.codec[0] == "u":
                self._note_unknown(info)
            if info.config_slot is not None:
                self._cache_config(message, info)
        elif info.error is not None:
            # Relayed untouched all the same: we never reject media we cannot parse.
            self.log.debug(
                "Unparsed media tag",
                stream_key=self.key,
                conn_id=self._conn_id(),
                kind="video" if info.is_video else "audio",
                error=info.error,
            )

    def set_metadata(self, message: Message, values: dict[str, Any]) -> None:
        """Cache ``onMetaData`` (already unwrapped from ``@setDataFrame``) and relay it at time 0."""
        message = Message(message.type_id, 0, message.stream_id, message.payload)
        self.cache.metadata = message
        self.cache.metadata_values = values
        width, height = values.get("width"), values.get("height")
        if _dimension(width) and _dimension(height):
            self.stats.width, self.stats.height = int(width), int(height)
        self._pass_on(message, METADATA)

    def _pass_on(self, message: Message, info: MediaInfo) -> None:
        self.last_timestamp = message.timestamp
        if info.is_frame:
            self.cache.add_frame(message, info)
        # Every message goes to every listener: spelt out rather than through ``_tell``.
        failed = self._failed
        for listener in self._listeners:
            if failed and id(listener) in failed:
                continue
            try:
                listener.stream_message(self, message, info)
            except Exception:
                self._listener_failed(listener, "stream_message")
        if self.players:
            self._fan_out(message, info)

    def _fan_out(self, message: Message, info: MediaInfo) -> None:
        type_id = message.type_id
        is_video = type_id == MessageType.VIDEO
        is_header = info.config_slot is not None
        is_keyframe = info.is_keyframe
        serialised: dict[tuple[int, int], bytes] = {}
        for player in self.players:
            if not player.accepts(type_id, is_video, is_header, is_keyframe):
                continue
            peer = player.peer
            group = (peer.chunk_size, player.stream_id)
            data = serialised.get(group)
            if data is None:
                data = serialised[group] = serialise(message, player.stream_id, group[0])
            peer.queue_media(data)

    def _conn_id(self) -> str | None:
        return self.publisher.peer.conn_id if self.publisher is not None else None

    def _note_unknown(self, info: MediaInfo) -> None:
        is_video = info.is_video
        known = _KNOWN_VIDEO_PACKET_TYPES if is_video else _KNOWN_AUDIO_PACKET_TYPES
        for t in info.tracks:
            if t.multitrack:
                self.stats.multitrack = True
            if is_video and t.frame_type == _FRAME_COMMAND:
                continue  # A command frame has no FourCC: "unknown(command)" is what it is, not unknown.
            if t.codec.startswith("unknown") or t.packet_type not in known:
                kind = "video" if is_video else "audio"
                seen = (kind, t.codec, t.packet_type)
                logged = self.stats.unknown_logged
                if seen not in logged and len(logged) < MAX_UNKNOWN_LOGGED:
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

    def _cache_config(self, message: Message, info: MediaInfo) -> None:
        cache, stats = self.cache, self.stats
        is_video = info.is_video
        kind = "video" if is_video else "audio"
        track_ids = info.track_ids
        cache.set_config(message, track_ids, info.config_slot)
        if info.config_slot != HEADER:
            self.log.debug(
                "Cached track configuration",
                stream_key=self.key,
                conn_id=self._conn_id(),
                kind=kind,
                tracks=track_ids,
                packet_type=info.tracks[0].packet_type,
            )
            return
        # One line per message, not per track: a multitrack tag may name hundreds of tracks.
        new_tracks = []
        for t in info.tracks:
            name = f"{kind}{t.track_id}"
            if name not in stats.tracks:
                new_tracks.append(t)
            stats.tracks[name] = t.codec
        first = info.tracks[0]
        self.log.info(
            "Cached {kind} sequence header",
            kind=kind,
            stream_key=self.key,
            conn_id=self._conn_id(),
            size=len(message.payload),
            codec=first.codec,
            fourcc=first.fourcc,
            track=first.track_id,
            tracks=[t.track_id for t in info.tracks[:MAX_LOGGED_TRACKS]] if len(info.tracks) > 1 else None,
            track_count=len(info.tracks),
        )
        if new_tracks and stats.codecs_logged and first.multitrack:
            self.log.info(
                "Track detected",
                stream_key=self.key,
                conn_id=self._conn_id(),
                kind=kind,
                track=new_tracks[0].track_id,
                codec=new_tracks[0].codec,
                tracks=[t.track_id for t in new_tracks[:MAX_LOGGED_TRACKS]],
                track_count=len(new_tracks),
            )
        if is_video:
            self.primary_video_track = cache.video_tracks()[0]
            stats.video_codec = stats.tracks[f"video{self.primary_video_track}"]
            if self.primary_video_track in track_ids:
                stats.video_config = _config_record(media.parse_avc_sequence_header, message.payload)
        else:
            primary_audio = min(cache.audio_headers)
            stats.audio_codec = stats.tracks[f"audio{primary_audio}"]
            if primary_audio in track_ids:
                stats.audio_config = _config_record(media.parse_aac_config, message.payload)
        if not stats.codecs_logged and stats.video_codec and stats.audio_codec:
            stats.codecs_logged = True
            self.log.info(
                "Codecs detected",
                stream_key=self.key,
                conn_id=self._conn_id(),
                videoCodec=stats.video_codec,
                audioCodec=stats.audio_codec,
                video=stats.video_config or None,
                audio=stats.audio_config or None,
                tracks=dict(stats.tracks) if stats.multitrack else None,
            )
            if self.notifier.active:
                self.notifier.emit(
                    "codec_detected",
                    stream_key=self.key,
                    conn_id=self._conn_id(),
                    video_codec=stats.video_codec,
                    audio_codec=stats.audio_codec,
                    video=dict(stats.video_config) if stats.video_config else None,
                    audio=dict(stats.audio_config) if stats.audio_config else None,
                    tracks=dict(stats.tracks),
                )

    # -- players --------------------------------------------------------------

    def add_player(self, player: Player) -> None:
        self.players.append(player)
        self.log.info(
            "Subscriber added",
            stream_key=self.key,
            conn_id=player.peer.conn_id,
            total_subscribers=len(self.players),
        )
        if self.notifier.active:
            self.notifier.emit("play_start", **self._peer_fields(player.peer))

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
        if self.notifier.active:
            self.notifier.emit(
                "play_stop",
                **self._peer_fields(player.peer),
                dropped_frames=player.dropped_frames,
            )
        self._forget(self)

    def _peer_fields(self, peer: Peer) -> dict[str, Any]:
        app, _, name = self.key.partition("/")
        return dict(stream_key=self.key, app=app, name=name, conn_id=peer.conn_id, peer_addr=peer.peer_addr)

    def late_join_messages(self) -> list[Message]:
        """The cached messages a player joining now receives, stamped so time never goes backwards."""
        return self.cache.late_join_messages(self.last_timestamp, self.primary_video_track)

    def late_join_parts(self) -> tuple[list[Message], list[Message]]:
        """``late_join_messages`` as (configuration, GOP)."""
        return self.cache.late_join_parts(self.last_timestamp, self.primary_video_track)


def _dimension(value: Any) -> bool:
    """True for a width or height worth keeping: a finite, positive number (AMF numbers may be NaN)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 1 << 20
    )


def _config_record(read: Callable[[bytes], dict], payload: bytes) -> dict:
    """What a sequence header's configuration record says (AVC/AAC only), or {} for other codecs."""
    try:
        return read(payload)
    except MalformedTag:
        return {}
