"""One publisher's hold on a stream, and what the relay learnt about the stream's media."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtmpd.relay.peer import Peer


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
    #: Recording wish of whoever authorised the publish: False keeps it out of the recordings, True
    #: records it even if no --record-match pattern matches, None leaves the recorder's settings.
    record: bool | None = None
    #: What access control allowed this publish on (an ``rtmpd.access`` request), for periodic
    #: re-checks; opaque to the relay. None without access control.
    authorisation: Any = None


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
    #: What the primary tracks' configuration records say (AVC profile/level, AAC rate/channels).
    video_config: dict[str, int] = field(default_factory=dict)
    audio_config: dict[str, int | None] = field(default_factory=dict)
    #: True once any Enhanced RTMP multitrack tag was seen.
    multitrack: bool = False
    codecs_logged: bool = False
    #: (kind, codec, packet type) of unknown tags already logged.
    unknown_logged: set[tuple[str, str, int | None]] = field(default_factory=set)
