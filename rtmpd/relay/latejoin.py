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
"""

from __future__ import annotations

import itertools

from rtmpd.core.messages import Message, MessageType

#: Slots of configuration per track.
HEADER = "header"
CONFIG = "config"


class LateJoinCache:
    """Holds what a late joiner needs, bounded in bytes and duration."""

    def __init__(self, *, gop_enabled: bool, max_bytes: int, max_duration_ms: int) -> None:
        self.gop_enabled = gop_enabled
        self.max_bytes = max_bytes
        self.max_duration_ms = max_duration_ms
        self.metadata: Message | None = None
        #: (type_id, slot, track) -> (arrival number, message).
        self._config: dict[tuple[int, str, int], tuple[int, Message]] = {}
        self._arrivals = itertools.count()
        self.gop: list[Message] = []
        self.gop_bytes = 0
        #: False once the GOP outgrew its bounds; it restarts at the next keyframe.
        self._gop_valid = False

    def clear(self) -> None:
        self.metadata = None
        self._config.clear()
        self._drop_gop()

    def _drop_gop(self) -> None:
        self.gop = []
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

    def add_frame(self, message: Message, *, is_video_keyframe: bool) -> None:
        """Record a media/data message that is not configuration.

        ``is_video_keyframe`` must be true only for a keyframe of the
        stream's primary video track: the GOP restarts there. Video
        messages of the same timestamp just before it (other tracks'
        keyframes sent first) move into the new GOP with it.
        """
        if not self.gop_enabled:
            return
        if is_video_keyframe:
            ts = message.timestamp
            carried: list[Message] = []
            for previous in reversed(self.gop):
                if previous.timestamp != ts:
                    break
                if previous.type_id == MessageType.VIDEO:
                    carried.append(previous)
            carried.reverse()
            carried.append(message)
            self.gop = carried
            self.gop_bytes = sum(len(m.payload) for m in carried)
            self._gop_valid = True
            return
        if not self._gop_valid:
            return
        self.gop.append(message)
        self.gop_bytes += len(message.payload)
        duration = (message.timestamp - self.gop[0].timestamp) & 0xFFFFFFFF
        if self.gop_bytes > self.max_bytes or duration > self.max_duration_ms:
            self._drop_gop()
