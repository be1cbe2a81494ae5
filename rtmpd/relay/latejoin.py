"""The late-join cache of one stream: metadata, codec configuration per track, and the current GOP.

A player that joins late gets, in this order, ``onMetaData``, the audio
configuration messages, the video configuration messages, then every
message since the last keyframe of the stream's primary video track, so
its decoder starts on a keyframe at once.

Configuration is kept per kind (audio/video) and per track (0 unless the
stream is Enhanced RTMP multitrack): the sequence header (AVC/AAC packet
type 0, E-RTMP SequenceStart or MPEG2TSSequenceStart) and, for E-RTMP, the
messages that configure a track without being frames (video Metadata such
as HDR colorInfo, audio MultichannelConfig). Each slot keeps the latest
message for its track. One message may configure several tracks (a
multitrack message with many tracks): it fills each of their slots and is
sent once. Within a kind, messages go out in the order they arrived, so a
newer message for a track always comes after an older one that also
covered it.

The GOP is bounded on every path with constant work per message: in bytes
(each message counts its payload plus ``MESSAGE_OVERHEAD``, so empty
messages are not free), in messages and in duration. A GOP that outgrows a
bound is dropped and restarts at the next keyframe; a keyframe checks the
bounds too. So a late joiner is never sent more than the byte bound (plus
the configuration messages).
"""

from __future__ import annotations

import itertools
from typing import Any

from rtmpd.core.classify import HEADER, MediaInfo
from rtmpd.core.messages import Message, MessageType

#: Bytes each cached message counts beyond its payload (what holding it costs: the message, its
#: classification, a list slot, and the chunk headers a player is sent with it).
MESSAGE_OVERHEAD = 128
#: Most same-timestamp video messages before a keyframe that move with it into the new GOP (the
#: other tracks' keyframes of a multitrack stream): bounded, so a keyframe is constant work.
MAX_CARRIED = 16


class LateJoinCache:
    """Holds what a late joiner needs; the GOP is bounded in bytes (with ``MESSAGE_OVERHEAD`` per
    message), messages and duration."""

    def __init__(
        self, *, gop_enabled: bool, max_bytes: int, max_duration_ms: int, max_messages: int = 20_000
    ) -> None:
        self.gop_enabled = gop_enabled
        self.max_bytes = max_bytes
        self.max_duration_ms = max_duration_ms
        self.max_messages = max_messages
        self.metadata: Message | None = None
        #: The object of ``metadata`` as its connection decoded it, under the server's AMF limits
        #: (the recorder writes it): a client's bytes are decoded once. {} without metadata.
        self.metadata_values: dict[str, Any] = {}
        #: (type_id, slot, track) -> (arrival number, message).
        self._config: dict[tuple[int, str, int], tuple[int, Message]] = {}
        self._arrivals = itertools.count()
        self.gop: list[Message] = []
        #: The classification of each GOP message, in step with ``gop``.
        self._gop_infos: list[MediaInfo] = []
        #: What the GOP counts against ``max_bytes``: payloads plus ``MESSAGE_OVERHEAD`` each.
        self.gop_bytes = 0
        #: False once the GOP outgrew its bounds; it restarts at the next keyframe.
        self._gop_valid = False

    def clear(self) -> None:
        self.metadata = None
        self.metadata_values = {}
        self._config.clear()
        self._drop_gop()

    def _drop_gop(self) -> None:
        self.gop = []
        self._gop_infos = []
        self.gop_bytes = 0
        self._gop_valid = False

    # -- codec configuration ------------------------------------------------------

    def set_config(self, message: Message, tracks: tuple[int, ...] | list[int], slot: str = HEADER) -> None:
        """Keep ``message`` as the latest ``slot`` (HEADER or CONFIG) of each of ``tracks``."""
        entry = (next(self._arrivals), message)
        for track in tracks:
            self._config[(message.type_id, slot, track)] = entry

    def _slot(self, type_id: int, slot: str) -> dict[int, Message]:
        return {
            key[2]: message
            for key, (_, message) in self._config.items()
            if key[0] == type_id and key[1] == slot
        }

    @property
    def audio_headers(self) -> dict[int, Message]:
        """Audio sequence headers by track id (a snapshot; one message may appear under several tracks)."""
        return self._slot(MessageType.AUDIO, HEADER)

    @property
    def video_headers(self) -> dict[int, Message]:
        """Video sequence headers by track id (a snapshot; one message may appear under several tracks)."""
        return self._slot(MessageType.VIDEO, HEADER)

    def video_tracks(self) -> list[int]:
        """Track ids that have a cached video sequence header, ascending."""
        return sorted({key[2] for key in self._config if key[0] == MessageType.VIDEO and key[1] == HEADER})

    def codec_headers(self) -> list[Message]:
        """Every cached configuration message once: audio, then video, each in arrival order.

        This is what must precede any frame (after ``onMetaData``) in a
        player's stream or at the start of a recording.
        """
        out: list[Message] = []
        for type_id in (MessageType.AUDIO, MessageType.VIDEO):
            # A message that configures several tracks is in several slots: send it once.
            unique = {id(m): (n, m) for key, (n, m) in self._config.items() if key[0] == type_id}
            out.extend(m for _, m in sorted(unique.values(), key=lambda entry: entry[0]))
        return out

    def headers(self) -> list[Message]:
        """Metadata, then ``codec_headers()``: what must precede any frame."""
        out = [self.metadata] if self.metadata is not None else []
        out.extend(self.codec_headers())
        return out

    # -- GOP ----------------------------------------------------------------------

    def add_frame(self, message: Message, info: MediaInfo) -> None:
        """Record a media/data message that is not configuration.

        ``info.is_keyframe`` holds only for a keyframe of the stream's primary
        video track: the GOP restarts there. Video messages of the same
        timestamp just before it (other tracks' keyframes sent first), at
        most ``MAX_CARRIED``, move into the new GOP with it.
        """
        if not self.gop_enabled:
            return
        if info.is_keyframe:
            self._restart_gop(message, info)
        elif self._gop_valid:
            self.gop.append(message)
            self._gop_infos.append(info)
            self.gop_bytes += len(message.payload) + MESSAGE_OVERHEAD
        else:
            return
        gop = self.gop
        if (
            self.gop_bytes > self.max_bytes
            or len(gop) > self.max_messages
            or (message.timestamp - gop[0].timestamp) & 0xFFFFFFFF > self.max_duration_ms
        ):
            self._drop_gop()

    def _restart_gop(self, keyframe: Message, info: MediaInfo) -> None:
        ts = keyframe.timestamp
        gop, infos = self.gop, self._gop_infos
        start = end = len(gop)
        floor = max(0, end - MAX_CARRIED)
        while start > floor and gop[start - 1].timestamp == ts:
            start -= 1
        carried = [i for i in range(start, end) if gop[i].type_id == MessageType.VIDEO]
        self.gop = [gop[i] for i in carried] + [keyframe]
        self._gop_infos = [infos[i] for i in carried] + [info]
        self.gop_bytes = sum(len(m.payload) for m in self.gop) + MESSAGE_OVERHEAD * len(self.gop)
        self._gop_valid = True

    # -- late join ------------------------------------------------------------------

    def late_join_messages(self, last_timestamp: int, primary_video_track: int) -> list[Message]:
        """What a player joining now receives: ``headers()`` then the GOP, stamped so time never goes back.
        (``late_join_parts`` gives the two apart.)

        ``onMetaData`` goes at time 0 (ffmpeg's FLV demuxer takes a script tag
        with a non-zero timestamp for a subtitle stream); configuration goes at
        the GOP's first timestamp (or the stream's latest without a GOP).
        """
        headers, gop = self.late_join_parts(last_timestamp, primary_video_track)
        return headers + gop

    def late_join_parts(
        self, last_timestamp: int, primary_video_track: int
    ) -> tuple[list[Message], list[Message]]:
        """``late_join_messages`` as (the headers, the GOP)."""
        gop = self.gop
        start = gop[0].timestamp if gop else last_timestamp
        headers = [
            Message(m.type_id, 0 if m.type_id == MessageType.DATA_AMF0 else start, m.stream_id, m.payload)
            for m in self.headers()
        ]
        if gop and len(self.video_tracks()) > 1:
            gop = self._from_each_track_keyframe(primary_video_track)
        return headers, list(gop)

    def _from_each_track_keyframe(self, primary: int) -> list[Message]:
        """The GOP without the frames of other video tracks that precede that track's first keyframe in it.

        The GOP starts at a keyframe of the primary track; another track's
        keyframes need not line up with it, and its frames before its own
        first keyframe would only make a decoder complain.
        """
        started = {primary}
        out = []
        for message, info in zip(self.gop, self._gop_infos, strict=True):
            if message.type_id == MessageType.VIDEO and info.tracks:
                started.update(t.track_id for t in info.tracks if t.is_keyframe)
                if not any(t.track_id in started for t in info.tracks):
                    continue
            out.append(message)
        return out
