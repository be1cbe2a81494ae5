"""Fragmented MP4 (ISO BMFF, CMAF-style) from the relay's classified media messages, sans-IO.

``Fmp4Muxer`` is fed what the relay has for every message, the
``Message`` and its ``MediaInfo``, and hands back bytes: an init segment
(``ftyp`` + ``moov``) and fragments (``moof`` + ``mdat``) cut wherever the
caller asks. It never reads a clock and does no I/O; LL-HLS and MP4
recording drive it.

What it muxes (anything else is skipped and counted in ``skipped``):

- video H.264, HEVC, AV1, VP9 and audio AAC, Opus, from legacy FLV tags
  (codec ids 7, 12, 13; SoundFormat 10) and Enhanced RTMP tags (FourCCs
  ``avc1``, ``hvc1``, ``av01``, ``vp09``, ``mp4a``, ``Opus``);
- one video track (id 1) and one audio track (id 2): the stream's primary,
  non-multitrack tags. Enhanced RTMP multitrack tags are skipped (their
  extra tracks are not muxed), as are ModEx nanosecond offsets (ignored:
  MP4 time is derived from the millisecond timestamps).

Rules it keeps:

- A track exists once its sequence header arrives (E-RTMP SequenceStart or
  legacy AVC/AAC header); frames before it are skipped. A video track
  starts at its first keyframe: earlier frames cannot be decoded.
- The track set is fixed by the first ``init_segment()`` or fragment: a
  track configured later is skipped. A sequence header that differs from a
  track's once that track has samples, or once the set is fixed, raises
  ``Fmp4ConfigChanged`` (identical repeats are ignored).
- Time: video in a 90 kHz timescale, AAC at its AudioSpecificConfig's rate,
  Opus at 48 kHz. RTMP's 32-bit millisecond timestamps are unwrapped
  stream-wide (each timestamp is taken as the nearer of the two
  directions from the previous one), so decode times keep growing across
  the wrap; a decode time is ``round(ms * timescale / 1000)``, never
  negative and never less than its track's previous one (such timestamps
  are raised to it).
- A sample's duration is the distance to its track's next sample, so the
  last sample of each track stays buffered until the next one arrives
  (``flush(final=True)`` gives it its predecessor's duration, or when that
  is missing or 0, one frame: 1/30 s, 1024 or 960 samples). To cut just
  before a keyframe, ``add`` it, then ``flush``: the keyframe opens the
  next fragment. Each track's ``tfdt`` is then exactly the previous
  fragment's plus its durations.
- Sample data is the tag body without its FLV/E-RTMP header: length-prefixed
  NAL units pass through as sent (the avcC/hvcC declare the length size),
  a leading AV1 temporal delimiter OBU is dropped (AV1-ISOBMFF 2.4), and
  frames with no data are skipped. Video samples are sync samples exactly
  when the tag is a keyframe; composition offsets come from the AVC/HEVC
  composition time; audio samples are all sync samples.

``add`` raises ``Fmp4Error`` for a sequence header or frame header of a
muxed codec that cannot be read, and leaves the muxer's tracks and samples
as they were. Box layouts are ``rtmpd.core.fmp4_boxes``'s; codec
configurations are read by ``rtmpd.core.fmp4_video`` and ``rtmpd.core.fmp4_audio``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from rtmpd.core.classify import MediaInfo
from rtmpd.core.errors import Fmp4ConfigChanged, Fmp4Error, LocalProtocolError, MalformedTag
from rtmpd.core.fmp4_audio import aac_config, opus_config
from rtmpd.core.fmp4_boxes import (
    FLAGS_DISPOSABLE,
    FLAGS_NON_SYNC,
    FLAGS_SYNC,
    CodecConfig,
    TrackEntry,
    TrackRun,
    audio_sample_entry,
    fragment,
    init_segment,
    visual_sample_entry,
)
from rtmpd.core.fmp4_video import (
    av1_config,
    av1_keyframe_size,
    avc_config,
    hevc_config,
    vp9_config,
    vp9_keyframe_size,
)

# media owns where a tag's codec data starts (after ModEx prefixes and the FourCC): reuse its reader.
from rtmpd.core.media import AudioInfo, VideoInfo, codec_data_span, parse_aac_config
from rtmpd.core.messages import Message, MessageType

__all__ = [
    "AUDIO_TRACK_ID",
    "VIDEO_TIMESCALE",
    "VIDEO_TRACK_ID",
    "Fmp4Muxer",
    "Fmp4Track",
]

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2
VIDEO_TIMESCALE = 90000

VIDEO_CODECS = frozenset({"H264", "H265", "AV1", "VP9"})
AUDIO_CODECS = frozenset({"AAC", "Opus"})

_CODED_FRAMES = 1  # AVCPacketType NALU, AACPacketType raw, E-RTMP CodedFrames
_CODED_FRAMES_X = 3  # E-RTMP video CodedFrames without a composition time
_SEQUENCE_START = 0
_FRAME_DISPOSABLE = 3
# Codecs whose (E-RTMP) CodedFrames carry an SI24 composition time before the data.
_WITH_COMPOSITION_TIME = frozenset({"H264", "H265"})
_LEGACY_VIDEO_HEADER = 5  # frame type/codec id, AVCPacketType, SI24 composition time
_AV1_TEMPORAL_DELIMITER = b"\x12\x00"  # OBU type 2 with obu_has_size_field, size 0
_WRAP = 1 << 32
_HALF_WRAP = 1 << 31
_MAX_DURATION = 0xFFFFFFFF

_DEFAULT_DURATIONS = {"AAC": 1024, "Opus": 960}  # one frame, in samples (Opus: 20 ms at 48 kHz)
_DEFAULT_VIDEO_DURATION = VIDEO_TIMESCALE // 30

_VIDEO_CONFIGS = {
    "H264": avc_config,
    "H265": hevc_config,
    "AV1": av1_config,
    "VP9": vp9_config,
}


@dataclass(frozen=True, slots=True)
class Fmp4Track:
    """What the init segment declares for one track (sizes are 0 while unknown)."""

    track_id: int
    #: "video" or "audio".
    kind: str
    #: rtmpd's codec name: "H264", "H265", "AV1", "VP9", "AAC" or "Opus".
    codec: str
    #: RFC 6381 ``codecs`` value for an HLS playlist or ``MediaSource.isTypeSupported``.
    codec_string: str
    timescale: int
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


class _Track:
    """One track's configuration and the samples not yet in a fragment."""

    __slots__ = (
        "codec",
        "config",
        "data",
        "default_duration",
        "floor",
        "held",
        "is_video",
        "last_duration",
        "raw_config",
        "samples",
        "start",
        "started",
        "timescale",
        "used",
    )

    def __init__(self, codec: str, raw_config: bytes, config: CodecConfig, is_video: bool) -> None:
        self.codec = codec
        self.raw_config = raw_config
        self.config = config
        self.is_video = is_video
        self.timescale = VIDEO_TIMESCALE if is_video else config.sample_rate
        self.default_duration = _DEFAULT_VIDEO_DURATION if is_video else _DEFAULT_DURATIONS[codec]
        #: A video track starts at its first keyframe; audio at once.
        self.started = not is_video
        #: Whether any sample was accepted (the configuration can no longer change).
        self.used = False
        #: Samples whose duration is known: (duration, size, flags, composition offset), their bytes,
        #: and the decode time of the first.
        self.samples: list[tuple[int, int, int, int]] = []
        self.data: list[bytes] = []
        self.start = 0
        #: The last sample (decode time, flags, composition offset, bytes), waiting for its duration.
        self.held: tuple[int, int, int, bytes] | None = None
        self.last_duration: int | None = None
        #: The least decode time the next sample may have.
        self.floor = 0

    def push(self, dts: int, duration: int, flags: int, cto: int, data: bytes) -> None:
        if not self.samples:
            self.start = dts
        self.samples.append((duration, len(data), flags, cto))
        self.data.append(data)
        self.last_duration = duration

    def public(self, track_id: int) -> Fmp4Track:
        c = self.config
        return Fmp4Track(
            track_id=track_id,
            kind="video" if self.is_video else "audio",
            codec=self.codec,
            codec_string=c.codec_string,
            timescale=self.timescale,
            width=c.width,
            height=c.height,
            sample_rate=c.sample_rate,
            channels=c.channels,
        )

    def entry(self, track_id: int) -> TrackEntry:
        c = self.config
        if self.is_video:
            sample_entry = visual_sample_entry(c.fourcc, c.width, c.height, c.config_box)
        else:
            sample_entry = audio_sample_entry(c.fourcc, c.channels, c.sample_rate, c.config_box)
        return TrackEntry(track_id, self.is_video, self.timescale, sample_entry, c.width, c.height)


class Fmp4Muxer:
    """Turns one stream's audio/video messages into an fMP4 init segment and fragments.

    ``add(message, info)`` for every message the relay passes (anything that
    is not muxed is skipped); ``init_segment()`` once the tracks wanted are
    configured (for VP9, once its first keyframe was added: the picture size
    comes from it); ``flush()`` whenever a fragment should end. See the module
    docstring for the rules.
    """

    def __init__(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._frozen = False
        self._sequence = 0
        self._last_timestamp: int | None = None
        self._last_ms = 0
        #: Messages not muxed, by reason ("unsupported codec", "multitrack", "no sequence header", ...).
        self.skipped: Counter[str] = Counter()

    # -- what the muxer knows ---------------------------------------------------------

    @property
    def tracks(self) -> tuple[Fmp4Track, ...]:
        """The configured tracks, by id (video first)."""
        return tuple(self._tracks[i].public(i) for i in sorted(self._tracks))

    @property
    def fragments(self) -> int:
        """How many fragments were made (the last ``mfhd`` sequence number)."""
        return self._sequence

    def pending(self, track_id: int) -> tuple[int, int]:
        """(samples, total duration in the track's timescale) that ``flush()`` would emit for a track."""
        track = self._tracks.get(track_id)
        if track is None:
            return 0, 0
        return len(track.samples), sum(s[0] for s in track.samples)

    # -- input ------------------------------------------------------------------------

    def add(self, message: Message, info: MediaInfo) -> None:
        """Take one message: a sequence header configures a track, a coded frame becomes a sample.

        Raises Fmp4Error (Fmp4ConfigChanged for a changed configuration) as
        the module docstring says; the stream-wide clock still advances.
        """
        is_video = info.type_id == MessageType.VIDEO
        if not is_video and info.type_id != MessageType.AUDIO:
            return
        ms = self._unwrap(message.timestamp)
        header = info.first
        if header is None:
            self.skipped["unreadable tag"] += 1
            return
        if header.multitrack:
            self.skipped["multitrack"] += 1
            return
        if header.codec not in (VIDEO_CODECS if is_video else AUDIO_CODECS):
            self.skipped["unsupported codec"] += 1
            return
        payload = message.payload
        if info.config_slot is not None:
            if header.is_sequence_header and header.packet_type == _SEQUENCE_START:
                self._configure(is_video, header, payload)
            return
        if header.packet_type == _CODED_FRAMES or (
            is_video and header.enhanced and header.packet_type == _CODED_FRAMES_X
        ):
            self._sample(is_video, header, payload, ms)

    def _unwrap(self, timestamp: int) -> int:
        timestamp &= _WRAP - 1
        if self._last_timestamp is None:
            ms = timestamp
        else:
            delta = (timestamp - self._last_timestamp) & (_WRAP - 1)
            ms = self._last_ms + (delta - _WRAP if delta >= _HALF_WRAP else delta)
        self._last_timestamp, self._last_ms = timestamp, ms
        return ms

    @staticmethod
    def _body(is_video: bool, payload: bytes) -> bytes:
        start, end = codec_data_span(payload, is_video)
        return payload[start:end]

    def _configure(self, is_video: bool, header: VideoInfo | AudioInfo, payload: bytes) -> None:
        track_id = VIDEO_TRACK_ID if is_video else AUDIO_TRACK_ID
        body = self._body(is_video, payload)
        existing = self._tracks.get(track_id)
        if existing is not None:
            if existing.codec == header.codec and existing.raw_config == body:
                return
            if self._frozen or existing.used:
                raise Fmp4ConfigChanged(
                    f"{'video' if is_video else 'audio'} configuration changed ({existing.codec} -> "
                    f"{header.codec}) after the init segment or samples were made"
                )
        elif self._frozen:
            self.skipped["track not in the init segment"] += 1
            return
        if is_video:
            config = _VIDEO_CONFIGS[header.codec](body)
        elif header.codec == "AAC":
            config = self._aac(payload, body)
        else:
            config = opus_config(body)
        self._tracks[track_id] = _Track(header.codec, body, config, is_video)

    @staticmethod
    def _aac(payload: bytes, asc: bytes) -> CodecConfig:
        try:
            aac = parse_aac_config(payload)
        except MalformedTag as e:
            raise Fmp4Error(f"AAC sequence header: {e}") from e
        rate = aac["sample_rate"]
        if not rate:
            raise Fmp4Error("AudioSpecificConfig with a reserved sampling frequency index")
        return aac_config(asc, aac["object_type"] or 0, rate, aac["channels"] or 2)

    def _sample(self, is_video: bool, header: VideoInfo | AudioInfo, payload: bytes, ms: int) -> None:
        track = self._tracks.get(VIDEO_TRACK_ID if is_video else AUDIO_TRACK_ID)
        if track is None or track.codec != header.codec:
            self.skipped["no sequence header"] += 1
            return
        cto_ms = 0
        if not header.enhanced:
            if is_video:
                if len(payload) < _LEGACY_VIDEO_HEADER:
                    raise Fmp4Error(f"{header.codec} frame of {len(payload)} bytes ends in its header")
                cto_ms = int.from_bytes(payload[2:5], "big", signed=True)
            body = self._body(is_video, payload)
        else:
            body = self._body(is_video, payload)
            if header.packet_type == _CODED_FRAMES and header.codec in _WITH_COMPOSITION_TIME:
                if len(body) < 3:
                    raise Fmp4Error(f"{header.codec} CodedFrames without its composition time")
                cto_ms = int.from_bytes(body[:3], "big", signed=True)
                body = body[3:]
        keyframe = not is_video or header.is_keyframe
        if is_video and not track.started and not keyframe:
            self.skipped["before the first keyframe"] += 1
            return
        if header.codec == "AV1" and body.startswith(_AV1_TEMPORAL_DELIMITER):
            body = body[len(_AV1_TEMPORAL_DELIMITER) :]
        if not body:
            self.skipped["empty frame"] += 1
            return
        if keyframe and is_video and not track.config.width and not self._frozen:
            self._learn_size(track, body)
        if keyframe:
            flags = FLAGS_SYNC
        else:
            disposable = header.frame_type == _FRAME_DISPOSABLE  # type: ignore[union-attr]
            flags = FLAGS_NON_SYNC | (FLAGS_DISPOSABLE if disposable else 0)
        scale = track.timescale
        dts = max((max(ms, 0) * scale + 500) // 1000, track.floor)
        if track.held is not None:
            held_dts, held_flags, held_cto, held_data = track.held
            # A forward jump too long for a 32-bit duration (hours) moves this track's timeline back.
            dts = min(dts, held_dts + _MAX_DURATION)
            track.push(held_dts, dts - held_dts, held_flags, held_cto, held_data)
        track.held = (dts, flags, cto_ms * scale // 1000, body)
        track.floor = dts
        track.started = track.used = True

    @staticmethod
    def _learn_size(track: _Track, frame: bytes) -> None:
        """VP9 (and AV1 without configOBUs) say their picture size in keyframes only."""
        read = {"VP9": vp9_keyframe_size, "AV1": av1_keyframe_size}.get(track.codec)
        try:
            size = read(frame) if read is not None else None
        except Fmp4Error:  # the size is informational: the decoder reads the frame itself
            return
        if size is not None:
            track.config = dataclasses.replace(track.config, width=size[0], height=size[1])

    # -- output -----------------------------------------------------------------------

    def init_segment(self) -> bytes:
        """``ftyp`` + ``moov`` for the configured tracks; fixes the track set.

        Raises LocalProtocolError if no track is configured yet (check
        ``tracks`` first).
        """
        if not self._tracks:
            raise LocalProtocolError("no track is configured yet: the init segment would be empty")
        self._frozen = True
        return init_segment([self._tracks[i].entry(i) for i in sorted(self._tracks)])

    def flush(self, *, final: bool = False, track_ids: Collection[int] | None = None) -> bytes:
        """One fragment (``moof`` + ``mdat``) of every sample whose duration is known, or b"" if none.

        With ``final``, each track's buffered last sample goes too. With
        ``track_ids``, only those tracks are flushed (one track per fragment
        is what CMAF asks); the others keep their samples. Making a fragment
        fixes the track set.
        """
        runs = []
        for track_id in sorted(self._tracks):
            if track_ids is not None and track_id not in track_ids:
                continue
            track = self._tracks[track_id]
            if final and track.held is not None:
                dts, flags, cto, data = track.held
                duration = track.last_duration or track.default_duration
                track.push(dts, duration, flags, cto, data)
                track.held = None
                track.floor = dts + duration
            if track.samples:
                runs.append(TrackRun(track_id, track.start, track.samples, track.data))
                track.samples, track.data = [], []
        if not runs:
            return b""
        self._frozen = True
        self._sequence += 1
        return fragment(self._sequence, runs)
