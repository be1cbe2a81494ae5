"""The late-join cache of one stream: metadata, sequence headers and the current GOP.

A player that joins late gets, in this order, ``onMetaData``, the audio
sequence header(s), the video sequence header(s), then every message since
the last video keyframe, so its decoder starts on a keyframe at once.
"""

from __future__ import annotations

from rtmpd.core.messages import Message


class LateJoinCache:
    """Holds what a late joiner needs, bounded in bytes and duration."""

    def __init__(self, *, gop_enabled: bool, max_bytes: int, max_duration_ms: int) -> None:
        self.gop_enabled = gop_enabled
        self.max_bytes = max_bytes
        self.max_duration_ms = max_duration_ms
        self.metadata: Message | None = None
        #: Sequence headers by track id (0 unless Enhanced RTMP multitrack).
        self.audio_headers: dict[int, Message] = {}
        self.video_headers: dict[int, Message] = {}
        self.gop: list[Message] = []
        self.gop_bytes = 0
        #: False once the GOP outgrew its bounds; it restarts at the next keyframe.
        self._gop_valid = False

    def clear(self) -> None:
        self.metadata = None
        self.audio_headers.clear()
        self.video_headers.clear()
        self._drop_gop()

    def _drop_gop(self) -> None:
        self.gop = []
        self.gop_bytes = 0
        self._gop_valid = False

    def add_frame(self, message: Message, *, is_video_keyframe: bool) -> None:
        """Record a media/data message that is not a sequence header."""
        if not self.gop_enabled:
            return
        if is_video_keyframe:
            self.gop = [message]
            self.gop_bytes = len(message.payload)
            self._gop_valid = True
            return
        if not self._gop_valid:
            return
        self.gop.append(message)
        self.gop_bytes += len(message.payload)
        duration = (message.timestamp - self.gop[0].timestamp) & 0xFFFFFFFF
        if self.gop_bytes > self.max_bytes or duration > self.max_duration_ms:
            self._drop_gop()

    def headers(self) -> list[Message]:
        """Metadata, then audio and video sequence headers: what must precede any frame."""
        out = [self.metadata] if self.metadata is not None else []
        out.extend(self.audio_headers.values())
        out.extend(self.video_headers.values())
        return out
