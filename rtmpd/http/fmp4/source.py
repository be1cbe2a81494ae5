"""The fMP4 of the streams that have WebSocket-fMP4 players: muxed once per stream, shared by its players.

``FragmentSources`` is a stream listener of the registry. A stream gets a
``FragmentSource`` when its first WebSocket-fMP4 player starts and loses it
when its last one leaves. The source muxes every message the relay passes
with ``rtmpd.core.fmp4.Fmp4Muxer`` and cuts a fragment after every video
frame (a fragment holds one video frame, the one before: its duration is
known once the next arrives) or, for a stream without video, every 100 ms of
audio. Each fragment is made, and framed as a WebSocket message, once.

A source started on a live stream first muxes the late-join cache (codec
configuration, then the GOP from the last keyframe), so a player joining
gets the init segment and the fragments since the last keyframe at once.
Those fragments are kept until the next keyframe, bounded by
``--gop-cache-max-bytes``: past it, a joiner waits for the next keyframe.

A configuration the muxer cannot continue with (``Fmp4Error``, e.g. a new
sequence header) starts a new generation from the stream's cached
configuration: a new init segment, which each player is sent before its
next keyframe fragment (timestamps go on, so MSE takes it in the same
``SourceBuffer``). A re-publish starts a new generation too, but players
of the old one were ended when the publisher left (``FMP4Player``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rtmpd.core.classify import MediaInfo, classify
from rtmpd.core.errors import Fmp4Error
from rtmpd.core.fmp4 import AUDIO_TRACK_ID, VIDEO_TRACK_ID, Fmp4Muxer
from rtmpd.core.fmp4_boxes import FLAGS_SYNC
from rtmpd.core.messages import Message, MessageType
from rtmpd.relay.listener import StreamListener
from rtmpd.relay.player import Player

if TYPE_CHECKING:
    from rtmpd.relay.peer import Peer
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["FMP4Player", "Fragment", "FragmentSource", "FragmentSources", "starts_with_sync_sample"]

#: The message stream id WebSocket-fMP4 players are given (the relay groups players by it).
_STREAM_ID = 1
#: A stream without video is cut every this many seconds of audio.
AUDIO_ONLY_FRAGMENT = 0.1

_BOX = struct.Struct(">I4s")
_TRUN_DATA_OFFSET = 0x000001
_TRUN_FIRST_SAMPLE_FLAGS = 0x000004
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400


class Fragment:
    """An init segment or a fragment: its bytes, whether a player may start with it (``keyframe``), and
    the same bytes framed once as a WebSocket message (``prepared``). ``len()`` is the bytes' length."""

    __slots__ = ("data", "keyframe", "prepared")

    def __init__(self, data: bytes, keyframe: bool, prepared: Any) -> None:
        self.data = data
        self.keyframe = keyframe
        self.prepared = prepared

    def __len__(self) -> int:
        return len(self.data)


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, box end) of each box between ``start`` and ``end``."""
    while start + _BOX.size <= end:
        size, kind = _BOX.unpack_from(data, start)
        if size < _BOX.size or start + size > end:
            return
        yield kind, start + _BOX.size, start + size
        start += size


def starts_with_sync_sample(data: bytes, track_id: int = VIDEO_TRACK_ID) -> bool | None:
    """Whether the first sample of ``track_id`` in a ``moof`` + ``mdat`` is a sync sample; None if the
    fragment has no run of that track (or is not one this module's muxer makes)."""
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moof":
            continue
        for traf_kind, traf_start, traf_end in _boxes(data, start, end):
            if traf_kind != b"traf":
                continue
            found = False
            for child, at, child_end in _boxes(data, traf_start, traf_end):
                if child == b"tfhd" and at + 8 <= child_end:
                    found = int.from_bytes(data[at + 4 : at + 8], "big") == track_id
                elif child == b"trun" and found and at + 8 <= child_end:
                    flags = int.from_bytes(data[at + 1 : at + 4], "big")
                    if not int.from_bytes(data[at + 4 : at + 8], "big"):
                        return None
                    at += 8 + (4 if flags & _TRUN_DATA_OFFSET else 0)
                    if flags & _TRUN_FIRST_SAMPLE_FLAGS:
                        sample_flags = data[at : at + 4]
                    elif flags & _TRUN_FLAGS:
                        at += (4 if flags & _TRUN_DURATION else 0) + (4 if flags & _TRUN_SIZE else 0)
                        sample_flags = data[at : at + 4]
                    else:
                        return None
                    if len(sample_flags) < 4:
                        return None
                    return int.from_bytes(sample_flags, "big") == FLAGS_SYNC
    return None


class FMP4Player(Player):
    """A WebSocket-fMP4 player of one stream. It is one of the stream's players (counted, listed, told of
    publish and unpublish like any other) but takes no relayed messages: its media are its stream's
    fragments (``take``), with the slow-player policy of ``Player.accepts`` applied per fragment (a
    congested peer drops fragments until the next keyframe fragment). When the publisher leaves, the
    connection ends."""

    def __init__(self, peer: Peer, stream: Stream, name: str, sources: FragmentSources) -> None:
        super().__init__(peer, _STREAM_ID, stream, name)
        self.sources = sources
        #: The generation of the init segment this player was sent (0: none yet).
        self.generation = 0

    def accepts(self, type_id: int, is_video: bool, is_header: bool, is_keyframe: bool) -> bool:
        return False  # relayed messages are for RTMP and FLV players; this one takes fragments

    def start(self, reset: bool = False) -> None:
        self.stream.add_player(self)
        self.sources.attach(self)

    def publish_started(self) -> None:
        self.waiting_keyframe = True
        self.in_burst = False

    def publish_stopped(self) -> None:
        self.waiting_keyframe = True
        self.peer.close("stream unpublished")

    def stop(self) -> None:
        self.sources.detach(self)
        super().stop()

    def take(self, fragment: Fragment, source: FragmentSource) -> None:
        """Queue ``fragment`` unless the slow-player policy drops it; the init segment goes first when the
        player starts on a generation it was not sent the init of."""
        if not Player.accepts(self, MessageType.VIDEO, True, False, fragment.keyframe):
            return
        if self.generation != source.generation:
            if not fragment.keyframe or source.init is None:
                return
            self.peer.queue_media(source.init)
            self.generation = source.generation
        self.peer.queue_media(fragment)

    def join(self, source: FragmentSource) -> None:
        """The late-join burst: the init segment and the fragments since the last keyframe, if any."""
        if source.init is None or not source.gop:
            self.waiting_keyframe = True
            return
        self.peer.queue_media(source.init)
        for fragment in source.gop:
            self.peer.queue_media(fragment)
        self.generation = source.generation
        self.waiting_keyframe = False
        self.in_burst = True
        self.peer.flush_media()


class FragmentSource:
    """One stream's muxer, init segment, fragments since the last keyframe, and WebSocket-fMP4 players
    (see the module docstring). ``prepare(bytes)`` frames bytes as a WebSocket message."""

    log = Logger()

    def __init__(self, stream: Stream, prepare: Callable[[bytes], Any], max_gop_bytes: int) -> None:
        self.stream = stream
        self.key = stream.key
        self._prepare = prepare
        self._max_gop_bytes = max_gop_bytes
        self.players: list[FMP4Player] = []
        self.generation = 0
        self.muxer: Fmp4Muxer | None = None
        self.init: Fragment | None = None
        self.gop: list[Fragment] = []
        self.gop_bytes = 0
        self.fragments = 0
        self._has_video = False

    # -- generations -------------------------------------------------------------------

    def start(self, stream: Stream, *, from_cache: bool) -> None:
        """A new generation: a new muxer, fed the late-join cache first when ``from_cache``."""
        self.stream = stream
        self.generation += 1
        self.muxer = Fmp4Muxer()
        self.init = None
        self.gop, self.gop_bytes = [], 0
        self._has_video = False
        for player in self.players:
            player.waiting_keyframe = True
        if from_cache:
            primary = stream.primary_video_track
            for message in stream.late_join_messages():
                self.message(message, classify(message, primary))

    def _restart(self, error: Fmp4Error) -> None:
        self.log.warn("WebSocket-fMP4 muxer restarts: {error}", stream_key=self.key, error=str(error))
        self.start(self.stream, from_cache=False)
        primary = self.stream.primary_video_track
        try:
            for message in self.stream.cache.codec_headers():
                self._mux(message, classify(message, primary))
        except Fmp4Error as e:
            self.log.warn("WebSocket-fMP4 cannot mux this stream: {error}", stream_key=self.key, error=str(e))
            self.finish()
            for player in list(self.players):
                player.peer.close("stream cannot be muxed as fMP4")

    def finish(self) -> None:
        """The publisher left: nothing more is muxed until the next publish."""
        self.muxer = None
        self.init = None
        self.gop, self.gop_bytes = [], 0

    # -- muxing ------------------------------------------------------------------------

    def message(self, message: Message, info: MediaInfo) -> None:
        if self.muxer is None:
            return
        try:
            self._mux(message, info)
        except Fmp4Error as e:
            self._restart(e)

    def _mux(self, message: Message, info: MediaInfo) -> None:
        muxer = self.muxer
        if muxer is None:
            return
        type_id = info.type_id
        if type_id != MessageType.VIDEO and type_id != MessageType.AUDIO:
            return
        muxer.add(message, info)
        if info.config_slot is not None:
            return
        if type_id == MessageType.VIDEO:
            if self.init is None and not any(t.kind == "video" for t in muxer.tracks):
                return
        elif self._has_video:
            return
        elif self.init is None and any(t.kind == "video" for t in muxer.tracks):
            return  # video is configured: fragments are cut at its frames
        else:
            samples, duration = muxer.pending(AUDIO_TRACK_ID)
            track = next((t for t in muxer.tracks if t.track_id == AUDIO_TRACK_ID), None)
            if not samples or track is None or duration < track.timescale * AUDIO_ONLY_FRAGMENT:
                return
        data = muxer.flush()
        if not data:
            return
        if self.init is None:
            self._has_video = any(t.kind == "video" for t in muxer.tracks)
            init = muxer.init_segment()
            self.init = Fragment(init, True, self._prepare(init))
        sync = starts_with_sync_sample(data)
        self._publish(Fragment(data, bool(sync) or not self._has_video, self._prepare(data)))

    def _publish(self, fragment: Fragment) -> None:
        self.fragments += 1
        if fragment.keyframe:
            self.gop, self.gop_bytes = [fragment], len(fragment)
        elif self.gop:
            self.gop_bytes += len(fragment)
            if self.gop_bytes > self._max_gop_bytes:
                self.gop, self.gop_bytes = [], 0  # joiners wait for the next keyframe
            else:
                self.gop.append(fragment)
        for player in self.players:
            player.take(fragment, self)


class FragmentSources(StreamListener):
    """The ``FragmentSource`` of every stream that has WebSocket-fMP4 players, fed as a listener of the
    registry; ``prepare`` frames bytes as a WebSocket message (the factory's ``prepareMessage``)."""

    log = Logger()

    def __init__(self, registry: StreamRegistry, prepare: Callable[[bytes], Any]) -> None:
        self.registry = registry
        self.prepare = prepare
        self.sources: dict[str, FragmentSource] = {}
        if self not in registry.listeners:
            registry.listeners.append(self)

    def attach(self, player: FMP4Player) -> None:
        """Add ``player`` to its stream's source (made now, from the late-join cache when the stream is
        live) and send it the late-join burst."""
        stream = player.stream
        source = self.sources.get(stream.key)
        if source is None:
            max_gop = stream.config.gop_cache_max_bytes
            source = self.sources[stream.key] = FragmentSource(stream, self.prepare, max_gop)  # type: ignore[arg-type]
            if stream.live:
                source.start(stream, from_cache=True)  # type: ignore[arg-type]
            self.log.info("WebSocket-fMP4 muxer started", stream_key=stream.key, live=stream.live)
        source.players.append(player)
        player.join(source)

    def detach(self, player: FMP4Player) -> None:
        """Remove ``player``; the last one out frees its stream's source."""
        source = self.sources.get(player.stream.key)
        if source is None or player not in source.players:
            return
        source.players.remove(player)
        if not source.players:
            del self.sources[source.key]
            self.log.info("WebSocket-fMP4 muxer stopped", stream_key=source.key, fragments=source.fragments)

    # -- StreamListener ----------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        source = self.sources.get(stream.key)
        if source is not None:
            source.start(stream, from_cache=False)

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        source = self.sources.get(stream.key)
        if source is not None:
            source.message(message, info)

    def stream_unpublished(self, stream: Stream) -> None:
        source = self.sources.get(stream.key)
        if source is not None:
            source.finish()
