"""One player of one stream: what it still wants, what it has been spared.

The decision whether a relayed message goes to this player is the only
per-player work on the hot path, so it is a handful of attribute checks.
A player whose socket backs up is sent no video until the next keyframe
(audio, data and sequence headers continue within the queue bound).

The late-join burst is not slowness: it fills the socket at once by design.
Until the peer's socket has drained after the burst, the player is judged
by the bytes written to it beyond the burst (``Peer.over_queue_bound``), not
by the socket being full, so a player that reads at full speed gets every
frame after the burst. A connection gets a burst of GOP only when it has
nothing left unsent, or when the burst fits within ``--max-queue-bytes``
with what it has: a client that repeats ``play`` without reading gets the
configuration again, never the cache again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

from rtmpd.core.commands import encode_data, on_status
from rtmpd.core.messages import Message, MessageType, UserControlEvent, user_control
from rtmpd.relay.fanout import serialise
from rtmpd.relay.latejoin import LateJoinCache

if TYPE_CHECKING:
    from rtmpd.config import ServerConfig
    from rtmpd.relay.peer import Peer


class PlayedStream(Protocol):
    """What a player needs of its stream (``rtmpd.relay.stream.Stream``), named here so the two
    modules do not import each other."""

    key: str
    cache: LateJoinCache
    config: ServerConfig

    @property
    def live(self) -> bool: ...

    def add_player(self, player: Player) -> None: ...

    def remove_player(self, player: Player) -> None: ...

    def late_join_messages(self) -> list[Message]: ...

    def late_join_parts(self) -> tuple[list[Message], list[Message]]: ...


class Player:
    """One ``play`` of a stream on one message stream of a peer.

    It answers ``play`` with the status messages players expect, sends the
    late-join burst when the stream is live, and then takes every relayed
    message ``accepts`` lets through: from a keyframe on, without video while
    its peer is congested (until the next keyframe), and nothing but
    configuration once the peer is over its queue bound. It stays subscribed
    across unpublish and re-publish until ``stop``.
    """

    log = Logger()

    def __init__(self, peer: Peer, stream_id: int, stream: PlayedStream, name: str) -> None:
        self.peer = peer
        self.stream_id = stream_id
        self.stream = stream
        self.name = name
        self.waiting_keyframe = True
        self.receive_audio = True
        self.receive_video = True
        self.paused_by_client = False
        self.dropped_frames = 0
        self._dropping = False
        #: True from the late-join burst until the peer's socket is no longer full.
        self.in_burst = False

    def accepts(self, type_id: int, is_video: bool, is_header: bool, is_keyframe: bool) -> bool:
        """Whether a relayed message should be queued for this player now."""
        if self.paused_by_client:
            return False
        peer = self.peer
        if is_video:
            if not self.receive_video:
                return False
            if is_header:
                return not peer.over_queue_bound
            if peer.congested:
                # During the burst only what was written beyond it counts (over_queue_bound).
                if not self.in_burst or peer.over_queue_bound:
                    self._drop()
                    return False
            elif self.in_burst:
                self.in_burst = False
            if self.waiting_keyframe:
                if not is_keyframe:
                    return False
                self.waiting_keyframe = False
                if self._dropping:
                    self._dropping = False
                    self.log.info(
                        "Slow subscriber caught up",
                        stream_key=self.stream.key,
                        conn_id=peer.conn_id,
                        dropped_frames=self.dropped_frames,
                    )
            return True
        if type_id == MessageType.AUDIO and not self.receive_audio:
            return False
        return not peer.over_queue_bound

    def _drop(self) -> None:
        self.dropped_frames += 1
        self.waiting_keyframe = True
        if not self._dropping:
            self._dropping = True
            self.log.warn(
                "Slow subscriber dropping frames",
                stream_key=self.stream.key,
                conn_id=self.peer.conn_id,
                dropped_frames=self.dropped_frames,
            )

    # -- lifecycle ------------------------------------------------------------

    def start(self, reset: bool) -> None:
        """Answer ``play``: status messages, then the late-join burst if the stream is live."""
        peer, sid, key = self.peer, self.stream_id, self.stream.key
        peer.send_control(user_control(UserControlEvent.STREAM_BEGIN, sid))
        if reset:
            peer.send_command(
                on_status(
                    sid, "status", "NetStream.Play.Reset", f"Playing and resetting {key}.", details=self.name
                )
            )
        peer.send_command(
            on_status(sid, "status", "NetStream.Play.Start", f"Started playing {key}.", details=self.name)
        )
        peer.send_command(encode_data("|RtmpSampleAccess", True, True, stream_id=sid))
        self.stream.add_player(self)
        if self.stream.live:
            self._send_late_join()

    def _send_late_join(self) -> None:
        stream, peer = self.stream, self.peer
        headers, gop = stream.late_join_parts()
        backlog = peer.buffered_bytes
        if gop and backlog and backlog + stream.cache.gop_bytes > stream.config.max_queue_bytes:
            # Unsent output already (a repeated play, a second stream): no second burst; from a keyframe.
            self.log.debug(
                "Late-join burst skipped: output backlog",
                stream_key=stream.key,
                conn_id=peer.conn_id,
                buffered_bytes=backlog,
                gop_bytes=stream.cache.gop_bytes,
            )
            gop = []
        sid, chunk_size = self.stream_id, peer.chunk_size
        for message in headers:
            peer.queue_media(serialise(message, sid, chunk_size))
        for message in gop:
            peer.queue_media(serialise(message, sid, chunk_size))
        if stream.cache.audio_headers:
            self.log.debug(
                "Sent cached audio sequence header to subscriber",
                stream_key=stream.key,
                conn_id=self.peer.conn_id,
            )
        if stream.cache.video_headers:
            self.log.debug(
                "Sent cached video sequence header to subscriber",
                stream_key=stream.key,
                conn_id=self.peer.conn_id,
            )
        # A GOP starts at a keyframe: the player can take live frames at once.
        self.waiting_keyframe = not gop
        self.in_burst = bool(gop)
        self.peer.flush_media()

    def publish_started(self) -> None:
        """Someone (re)started publishing the stream this player waits on."""
        self.waiting_keyframe = True
        self.in_burst = False
        self.peer.send_control(user_control(UserControlEvent.STREAM_BEGIN, self.stream_id))
        self.peer.send_command(
            on_status(
                self.stream_id,
                "status",
                "NetStream.Play.PublishNotify",
                f"{self.stream.key} is now published.",
                details=self.name,
            )
        )

    def publish_stopped(self) -> None:
        """The publisher left: tell the player, which stays subscribed for a re-publish."""
        self.waiting_keyframe = True
        self.peer.send_command(
            on_status(
                self.stream_id,
                "status",
                "NetStream.Play.UnpublishNotify",
                f"{self.stream.key} is now unpublished.",
                details=self.name,
            )
        )
        self.peer.send_control(user_control(UserControlEvent.STREAM_EOF, self.stream_id))

    def stop(self) -> None:
        self.stream.remove_player(self)

    def set_paused(self, paused: bool) -> None:
        self.paused_by_client = paused
        if not paused:
            self.waiting_keyframe = True
        code = "NetStream.Pause.Notify" if paused else "NetStream.Unpause.Notify"
        self.peer.send_command(on_status(self.stream_id, "status", code, self.stream.key, details=self.name))

    def stats(self) -> dict[str, object]:
        return {
            "conn_id": self.peer.conn_id,
            "peer": self.peer.peer_addr,
            "bytes_sent": self.peer.bytes_out,
            "dropped_frames": self.dropped_frames,
            "buffered_bytes": self.peer.buffered_bytes,
        }
