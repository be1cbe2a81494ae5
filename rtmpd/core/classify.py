"""One classification per relayed message: what the relay, the late-join cache and every listener need.

The relay classifies each audio, video and data message once, as it
arrives, into a frozen ``MediaInfo``, and hands that same object to the
players' decision, the late-join cache and every stream listener (the
recorder): nobody parses a payload again.

Rules this module keeps:

- ``classify`` never raises: a tag the header readers of ``rtmpd.core.media``
  cannot read gives a ``MediaInfo`` with ``error`` set (such media is still
  relayed and recorded untouched).
- A configuration message (``is_config``) is never a frame: AVC/HEVC/AAC
  sequence headers and E-RTMP SequenceStart (the ``HEADER`` slot), E-RTMP
  video Metadata and audio MultichannelConfig (the ``CONFIG`` slot).
- ``is_keyframe`` holds only for a keyframe of the stream's primary video
  track (the track whose keyframes start a GOP): for a multitrack tag, any
  of its tracks.
- The common case (one track, a header whose first bytes decide it, see
  ``rtmpd.core.media.video_header_key``) allocates nothing: results are
  memoised by those bytes and the primary track, in a bounded table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtmpd.core.errors import MalformedTag
from rtmpd.core.media import (
    AudioInfo,
    VideoInfo,
    audio_header_key,
    audio_tracks,
    parse_audio,
    parse_video,
    video_header_key,
    video_tracks,
)
from rtmpd.core.messages import Message, MessageType

__all__ = ["CONFIG", "HEADER", "MediaInfo", "classify", "DATA", "METADATA"]

#: The late-join cache's configuration slots (see ``rtmpd.relay.latejoin``).
HEADER = "header"
CONFIG = "config"

#: E-RTMP AudioPacketType.MultichannelConfig: configures a track, is no frame.
AUDIO_MULTICHANNEL_CONFIG = 4
#: Header objects remembered with their classification; the table is emptied when it is full.
_MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What one relayed message is, decided once.

    ``tracks`` holds the header of every track of an audio/video tag (one
    unless Enhanced RTMP multitrack); it is empty for data messages and for
    tags that could not be read (``error`` says why).
    """

    type_id: int
    tracks: tuple[VideoInfo | AudioInfo, ...] = ()
    #: None, HEADER or CONFIG: which late-join configuration slot this message fills.
    config_slot: str | None = None
    #: A keyframe of the stream's primary video track: a GOP starts here.
    is_keyframe: bool = False
    #: ``onMetaData``, already unwrapped from ``@setDataFrame``.
    is_metadata: bool = False
    error: str | None = None
    #: Neither configuration nor metadata: a frame (or a data message) for the late-join GOP.
    is_frame: bool = field(init=False)
    #: Worth the relay's closer look: configuration, an unreadable tag, or a first track that is
    #: Enhanced RTMP, multitrack or of an unknown codec. Plain frames (nearly every message) are not.
    notable: bool = field(init=False)

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: the derived fields are set once, here
        set_field(self, "is_frame", self.config_slot is None and not self.is_metadata)
        first = self.tracks[0] if self.tracks else None
        set_field(
            self,
            "notable",
            self.config_slot is not None
            or self.error is not None
            or (first is not None and (first.enhanced or first.multitrack or first.codec.startswith("u"))),
        )

    @property
    def is_config(self) -> bool:
        return self.config_slot is not None

    @property
    def is_video(self) -> bool:
        return self.type_id == MessageType.VIDEO

    @property
    def first(self) -> VideoInfo | AudioInfo | None:
        """The header of the first (usually only) track, or None."""
        return self.tracks[0] if self.tracks else None

    @property
    def track_ids(self) -> list[int]:
        return [t.track_id for t in self.tracks]


#: The classification of every data message but onMetaData, and of onMetaData.
DATA = MediaInfo(MessageType.DATA_AMF0)
METADATA = MediaInfo(MessageType.DATA_AMF0, is_metadata=True)

#: Classifications by header bytes (``rtmpd.core.media``'s memo keys): (primary track, info).
_video_memo: dict[bytes, tuple[int, MediaInfo]] = {}
_audio_memo: dict[bytes, tuple[int, MediaInfo]] = {}


def classify(message: Message, primary_video_track: int = 0) -> MediaInfo:
    """Classify an audio or video message (any other type is ``DATA``); never raises."""
    type_id = message.type_id
    payload = message.payload
    if type_id == MessageType.VIDEO:
        key = video_header_key(payload)
        memo = _video_memo
    elif type_id == MessageType.AUDIO:
        key = audio_header_key(payload)
        memo = _audio_memo
    else:
        return DATA
    if key is not None:
        # The common case: the header bytes alone decide, and this stream's primary track was seen.
        entry = memo.get(key)
        if entry is not None and entry[0] == primary_video_track:
            return entry[1]
    is_video = type_id == MessageType.VIDEO
    try:
        header = parse_video(payload) if is_video else parse_audio(payload)
    except MalformedTag as e:
        return MediaInfo(type_id, error=str(e))
    if header.multitrack:
        return _classify_tracks(message, header, is_video, primary_video_track)
    info = _make(type_id, (header,), is_video, primary_video_track)
    if key is not None:
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[key] = (primary_video_track, info)
    return info


def _classify_tracks(
    message: Message, first: VideoInfo | AudioInfo, is_video: bool, primary: int
) -> MediaInfo:
    try:
        tracks = tuple(video_tracks(message.payload) if is_video else audio_tracks(message.payload))
    except MalformedTag:
        # A later track is truncated: what the first one says still holds.
        tracks = (first,)
    return _make(message.type_id, tracks, is_video, primary)


def _make(type_id: int, tracks: tuple, is_video: bool, primary: int) -> MediaInfo:
    first = tracks[0]
    if first.is_sequence_header:
        return MediaInfo(type_id, tracks, config_slot=HEADER)
    if first.enhanced and (first.is_metadata if is_video else first.packet_type == AUDIO_MULTICHANNEL_CONFIG):
        return MediaInfo(type_id, tracks, config_slot=CONFIG)
    keyframe = is_video and any(t.is_keyframe and t.track_id == primary for t in tracks)
    return MediaInfo(type_id, tracks, is_keyframe=keyframe)
