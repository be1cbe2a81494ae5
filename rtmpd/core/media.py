"""Classify RTMP audio/video payloads (FLV tag bodies) from their first bytes.

The relay calls ``parse_video``/``parse_audio`` on every media message, so
they read only the few header bytes needed to say what a tag is (codec,
keyframe, sequence header, track) and never copy or validate the codec data
itself. Media is relayed untouched whatever these functions say: a
``MalformedTag`` is for logs, never a reason to reject a stream.

Layouts come from the legacy FLV specification v10.1 (annex E.4.2/E.4.3)
and Enhanced RTMP v1/v2 (veovera): a video tag whose first byte has the
high bit set, or an audio tag whose SoundFormat is 9, carries a packet type,
optional ModEx prefixes, optional multitrack framing and a FourCC.

Everything this module owns:

- which bytes are read to classify a tag, and which lack of them is a
  ``MalformedTag`` (nothing else is ever raised for any input, except
  ``TooManyTracks`` when a caller asks for a track cap);
- the codec names reported to the rest of rtmpd;
- small config-record readers for logs (AVC profile/level, AAC config).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtmpd.core.errors import MalformedTag, TooManyTracks

__all__ = [
    "AudioInfo",
    "VideoInfo",
    "audio_header_key",
    "audio_tracks",
    "codec_data_span",
    "parse_aac_config",
    "parse_audio",
    "parse_avc_sequence_header",
    "parse_video",
    "video_header_key",
    "video_tracks",
]


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the header of one video tag says.

    ``is_keyframe`` is true only for coded frames (AVC NALU, E-RTMP
    CodedFrames/CodedFramesX, or any frame of a codec without packet
    types) of frame type 1 (keyframe) or 4 (generated keyframe): a
    sequence header, sequence end, metadata or command frame is never a
    keyframe, so a GOP cache can start a GOP at exactly the tags where
    ``is_keyframe`` holds.
    """

    #: "H264", "H265", "AV1", "VP9", "VP8", "VVC", "H263", "VP6", "VP6A",
    #: "ScreenVideo", "ScreenVideo2", or "unknown(<codec id or FourCC>)".
    codec: str
    #: The FourCC as text (E-RTMP only; hex "0x..." if not printable).
    fourcc: str | None
    enhanced: bool
    #: 1 keyframe, 2 inter, 3 disposable, 4 generated keyframe, 5 command.
    frame_type: int
    is_keyframe: bool
    #: AVC/HEVC packet type 0, E-RTMP SequenceStart or MPEG2TSSequenceStart.
    is_sequence_header: bool
    is_sequence_end: bool
    #: E-RTMP PacketTypeMetadata (AMF-encoded, e.g. HDR colorInfo).
    is_metadata: bool
    #: 0 unless the tag is multitrack.
    track_id: int = 0
    multitrack: bool = False
    #: AVCPacketType (legacy H264/H265/AV1) or the E-RTMP VideoPacketType
    #: after ModEx prefixes and inside multitrack framing; None otherwise.
    packet_type: int | None = None


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the header of one audio tag says.

    ``sample_rate`` and ``channels`` come from the legacy SoundRate and
    SoundType flags, corrected where the FLV specification fixes them for
    a codec (Nellymoser 8/16 kHz mono, MP3 8 kHz, Speex 16 kHz mono,
    G.711 8 kHz). They are None for AAC (its flags are constant; use
    ``parse_aac_config`` on the sequence header) and for E-RTMP tags.
    """

    #: "AAC", "MP3", "Opus", "FLAC", "AC3", "EAC3", "Speex", "PCM", "ADPCM",
    #: "G711A", "G711U", "Nellymoser", or "unknown(<sound format or FourCC>)".
    codec: str
    fourcc: str | None
    enhanced: bool
    #: AACPacketType 0 (AudioSpecificConfig) or E-RTMP SequenceStart.
    is_sequence_header: bool
    track_id: int = 0
    multitrack: bool = False
    #: AACPacketType (legacy AAC) or E-RTMP AudioPacketType; None otherwise.
    packet_type: int | None = None
    sample_rate: int | None = None
    channels: int | None = None


# -- shared constants -------------------------------------------------------

_EX_VIDEO_HEADER = 0x80
_SOUND_FORMAT_EX_HEADER = 9

# E-RTMP packet types (video and audio share SequenceStart/CodedFrames/End/ModEx).
_SEQUENCE_START = 0
_CODED_FRAMES = 1
_SEQUENCE_END = 2
_CODED_FRAMES_X = 3
_VIDEO_METADATA = 4
_VIDEO_MPEG2TS_SEQUENCE_START = 5
_VIDEO_MULTITRACK = 6
_AUDIO_MULTITRACK = 5
_MODEX = 7

# AvMultitrackType
_ONE_TRACK = 0
_MANY_TRACKS = 1
_MANY_TRACKS_MANY_CODECS = 2

_FRAME_KEY = 1
_FRAME_GENERATED_KEY = 4
_FRAME_COMMAND = 5

_VIDEO_CODEC_IDS = {
    2: "H263",
    3: "ScreenVideo",
    4: "VP6",
    5: "VP6A",
    6: "ScreenVideo2",
    7: "H264",
    # 12 and 13 are not in any Adobe spec but are what Chinese CDNs and
    # older OBS forks send for HEVC/AV1, with the AVC packet layout.
    12: "H265",
    13: "AV1",
}
# Codec ids whose second byte is an AVCPacketType followed by a composition time.
_AVC_LIKE_IDS = frozenset({7, 12, 13})

_VIDEO_FOURCCS = {
    b"avc1": "H264",
    b"hvc1": "H265",
    b"av01": "AV1",
    b"vp09": "VP9",
    b"vp08": "VP8",
    b"vvc1": "VVC",
}

_AUDIO_FOURCCS = {
    b"Opus": "Opus",
    b"fLaC": "FLAC",
    b"ac-3": "AC3",
    b"ec-3": "EAC3",
    b"mp4a": "AAC",
    b".mp3": "MP3",
}

_SOUND_FORMATS = {
    0: "PCM",
    1: "ADPCM",
    2: "MP3",
    3: "PCM",
    4: "Nellymoser",
    5: "Nellymoser",
    6: "Nellymoser",
    7: "G711A",
    8: "G711U",
    10: "AAC",
    11: "Speex",
    14: "MP3",
}
_SOUND_FORMAT_AAC = 10
_SOUND_RATES = (5512, 11025, 22050, 44100)
# Formats whose rate (and for some, channel count) the FLV spec fixes.
_FIXED_RATE = {4: 16000, 5: 8000, 7: 8000, 8: 8000, 11: 16000, 14: 8000}
_MONO_FORMATS = frozenset({4, 5, 11})

# Results depend only on a short prefix for all common tags, so they are
# memoised by that prefix. Keys are bounded: 1-2 bytes for legacy tags, and
# 5 bytes for E-RTMP tags only when the FourCC is a known one.
_VIDEO_CACHE: dict[bytes, VideoInfo] = {}
_AUDIO_CACHE: dict[bytes, AudioInfo] = {}


# -- low-level readers ------------------------------------------------------


def _need(payload: bytes, end: int, what: str) -> None:
    if end > len(payload):
        raise MalformedTag(f"truncated tag: {what} needs {end} bytes, have {len(payload)}")


def _fourcc_text(raw: bytes) -> str:
    if all(0x20 <= c < 0x7F for c in raw):
        return raw.decode("ascii")
    return "0x" + raw.hex()


def _skip_modex(payload: bytes, pos: int, packet_type: int) -> tuple[int, int]:
    """Skip ModEx prefixes; return the real packet type and the position after it.

    Each prefix is a size (UI8 + 1, or UI16 + 1 when the UI8 is 255), the
    modifier data, then one byte: modifier type (high nibble) and the next
    packet type (low nibble). Every round consumes at least 3 bytes, so the
    loop ends within len(payload) / 3 rounds.
    """
    while packet_type == _MODEX:
        _need(payload, pos + 1, "ModEx size")
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            _need(payload, pos + 2, "ModEx size16")
            size = ((payload[pos] << 8) | payload[pos + 1]) + 1
            pos += 2
        _need(payload, pos + size + 1, "ModEx data")
        pos += size
        packet_type = payload[pos] & 0x0F
        pos += 1
    return packet_type, pos


# One track of a tag: (FourCC or None, track id, body start, body end).
_Track = tuple[bytes | None, int, int, int]


def _multitrack(
    payload: bytes, pos: int, nested: int, first_only: bool, max_tracks: int | None = None
) -> tuple[int, int, list[_Track]]:
    """Walk E-RTMP multitrack framing starting at the AvMultitrackType byte.

    Returns (multitrack type, inner packet type, tracks). A reserved
    multitrack type has an unknown layout: no tracks are returned for it.
    Raises MalformedTag on truncation, on a track whose declared size runs
    past the payload, and on a nested Multitrack packet type; TooManyTracks
    past ``max_tracks`` track entries (when given).
    """
    _need(payload, pos + 1, "multitrack type")
    mt_type = payload[pos] >> 4
    packet_type = payload[pos] & 0x0F
    pos += 1
    if packet_type == nested:
        raise MalformedTag("multitrack packet nested in a multitrack packet")
    if mt_type > _MANY_TRACKS_MANY_CODECS:
        return mt_type, packet_type, []
    shared: bytes | None = None
    if mt_type != _MANY_TRACKS_MANY_CODECS:
        _need(payload, pos + 4, "FourCC")
        shared = payload[pos : pos + 4]
        pos += 4
    end = len(payload)
    tracks: list[_Track] = []
    # Each round consumes at least 4 bytes (track id + size), so it ends.
    while True:
        fourcc = shared
        if mt_type == _MANY_TRACKS_MANY_CODECS:
            _need(payload, pos + 4, "track FourCC")
            fourcc = payload[pos : pos + 4]
            pos += 4
        _need(payload, pos + 1, "track id")
        track_id = payload[pos]
        pos += 1
        if mt_type == _ONE_TRACK:
            tracks.append((fourcc, track_id, pos, end))
            break
        _need(payload, pos + 3, "track size")
        size = (payload[pos] << 16) | (payload[pos + 1] << 8) | payload[pos + 2]
        pos += 3
        _need(payload, pos + size, "track data")
        tracks.append((fourcc, track_id, pos, pos + size))
        pos += size
        if first_only or pos >= end:
            break
        if max_tracks is not None and len(tracks) >= max_tracks:
            raise TooManyTracks(f"a multitrack tag holds more than {max_tracks} track entries")
    return mt_type, packet_type, tracks


# -- memo keys ----------------------------------------------------------------


def video_header_key(payload: bytes) -> bytes | None:
    """The few first bytes that alone decide what ``parse_video`` says of a tag, or None.

    None for an empty tag and for tags whose header is longer or varies
    (multitrack, ModEx, command frames, unknown FourCCs): those are parsed
    each time. Keys are bounded: 1-2 bytes for legacy tags, 5 for known E-RTMP
    FourCCs, so a table keyed by them stays small whatever a peer sends.
    """
    if not payload:
        return None
    b0 = payload[0]
    if b0 & _EX_VIDEO_HEADER:
        if (b0 & 0x0F) in (_VIDEO_MULTITRACK, _MODEX) or (b0 >> 4) & 0x07 == _FRAME_COMMAND:
            return None
        key = payload[:5]
        return key if key[1:] in _VIDEO_FOURCCS else None
    return payload[:2] if (b0 & 0x0F) in _AVC_LIKE_IDS else payload[:1]


def audio_header_key(payload: bytes) -> bytes | None:
    """Like ``video_header_key``, for ``parse_audio``."""
    if not payload:
        return None
    b0 = payload[0]
    if b0 >> 4 == _SOUND_FORMAT_EX_HEADER:
        if (b0 & 0x0F) in (_AUDIO_MULTITRACK, _MODEX):
            return None
        key = payload[:5]
        return key if key[1:] in _AUDIO_FOURCCS else None
    return payload[:2] if b0 >> 4 == _SOUND_FORMAT_AAC else payload[:1]


# -- video ------------------------------------------------------------------


def _video_flags(frame_type: int, packet_type: int | None, coded: bool) -> tuple[bool, bool, bool, bool]:
    """(is_keyframe, is_sequence_header, is_sequence_end, is_metadata) for an E-RTMP packet."""
    return (
        coded and frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY),
        packet_type in (_SEQUENCE_START, _VIDEO_MPEG2TS_SEQUENCE_START),
        packet_type == _SEQUENCE_END,
        packet_type == _VIDEO_METADATA,
    )


def _ex_video_info(frame_type: int, packet_type: int, fourcc: bytes, track_id: int, multi: bool) -> VideoInfo:
    text = _fourcc_text(fourcc)
    coded = packet_type in (_CODED_FRAMES, _CODED_FRAMES_X)
    key, seq, end, meta = _video_flags(frame_type, packet_type, coded)
    return VideoInfo(
        codec=_VIDEO_FOURCCS.get(fourcc) or f"unknown({text})",
        fourcc=text,
        enhanced=True,
        frame_type=frame_type,
        is_keyframe=key,
        is_sequence_header=seq,
        is_sequence_end=end,
        is_metadata=meta,
        track_id=track_id,
        multitrack=multi,
        packet_type=packet_type,
    )


def _parse_video(
    payload: bytes, first_only: bool, max_tracks: int | None = None
) -> tuple[list[VideoInfo], list[tuple[int, int]]]:
    """Classify a video tag: one info per track and the (start, end) of each track's codec data."""
    _need(payload, 1, "video header")
    b0 = payload[0]
    if not b0 & _EX_VIDEO_HEADER:
        return [_legacy_video(payload, b0)], [(_legacy_video_body(b0), len(payload))]

    frame_type = (b0 >> 4) & 0x07
    packet_type, pos = _skip_modex(payload, 1, b0 & 0x0F)
    if frame_type == _FRAME_COMMAND and packet_type != _VIDEO_METADATA:
        # A command frame carries one UI8 command and no FourCC.
        info = VideoInfo(
            codec="unknown(command)",
            fourcc=None,
            enhanced=True,
            frame_type=frame_type,
            is_keyframe=False,
            is_sequence_header=False,
            is_sequence_end=False,
            is_metadata=False,
            packet_type=packet_type,
        )
        return [info], [(pos, len(payload))]
    if packet_type == _VIDEO_MULTITRACK:
        mt_type, inner, tracks = _multitrack(payload, pos, _VIDEO_MULTITRACK, first_only, max_tracks)
        if not tracks:
            info = VideoInfo(
                codec=f"unknown(multitrack type {mt_type})",
                fourcc=None,
                enhanced=True,
                frame_type=frame_type,
                is_keyframe=False,
                is_sequence_header=False,
                is_sequence_end=False,
                is_metadata=False,
                multitrack=True,
                packet_type=inner,
            )
            return [info], [(pos, len(payload))]
        infos = [_ex_video_info(frame_type, inner, fourcc, tid, True) for fourcc, tid, _, _ in tracks]
        return infos, [(start, end) for _, _, start, end in tracks]
    _need(payload, pos + 4, "video FourCC")
    info = _ex_video_info(frame_type, packet_type, payload[pos : pos + 4], 0, False)
    return [info], [(pos + 4, len(payload))]


def _legacy_video(payload: bytes, b0: int) -> VideoInfo:
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    codec = _VIDEO_CODEC_IDS.get(codec_id) or f"unknown({codec_id})"
    packet_type = None
    # A legacy command frame (type 5) has a UI8 command where AVC has its packet type.
    if codec_id in _AVC_LIKE_IDS and frame_type != _FRAME_COMMAND:
        _need(payload, 2, "AVCPacketType")
        packet_type = payload[1]
        coded = packet_type == 1
    else:
        coded = frame_type != _FRAME_COMMAND
    return VideoInfo(
        codec=codec,
        fourcc=None,
        enhanced=False,
        frame_type=frame_type,
        is_keyframe=coded and frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY),
        is_sequence_header=packet_type == 0,
        is_sequence_end=packet_type == 2,
        is_metadata=False,
        packet_type=packet_type,
    )


def _legacy_video_body(b0: int) -> int:
    # AVC-like: header byte, AVCPacketType, SI24 composition time.
    return 5 if (b0 & 0x0F) in _AVC_LIKE_IDS else 1


def parse_video(payload: bytes) -> VideoInfo:
    """Classify one video tag body (an RTMP video message payload).

    ``payload`` must be ``bytes`` (results are memoised by a short prefix
    of it). Reads only the header bytes; the codec data is not validated. For a
    multitrack tag this describes the FIRST track (``multitrack`` is True,
    ``track_id`` is that track's id); ``video_tracks`` lists them all. An
    unknown codec id, FourCC or packet type is not an error: ``codec`` is
    then "unknown(...)".

    Raises MalformedTag if the payload is empty or ends inside the header
    (e.g. an E-RTMP flag without a FourCC, an AVC tag without its packet
    type, a first track shorter than its declared size).
    """
    if not payload:
        raise MalformedTag("empty video tag")
    key = video_header_key(payload)
    if key is None:
        return _parse_video(payload, True)[0][0]
    info = _VIDEO_CACHE.get(key)
    if info is None:
        info = _parse_video(payload, True)[0][0]
        _VIDEO_CACHE[key] = info
    return info


def video_tracks(payload: bytes, max_tracks: int | None = None) -> list[VideoInfo]:
    """One ``VideoInfo`` per track of a video tag (a single one if not multitrack).

    Raises MalformedTag where ``parse_video`` does, and also if any track is
    truncated; with ``max_tracks``, TooManyTracks for a tag of more track
    entries (found after at most ``max_tracks`` of them are read).
    """
    return _parse_video(payload, False, max_tracks)[0]


# -- audio ------------------------------------------------------------------


def _ex_audio_info(packet_type: int, fourcc: bytes, track_id: int, multi: bool) -> AudioInfo:
    text = _fourcc_text(fourcc)
    return AudioInfo(
        codec=_AUDIO_FOURCCS.get(fourcc) or f"unknown({text})",
        fourcc=text,
        enhanced=True,
        is_sequence_header=packet_type == _SEQUENCE_START,
        track_id=track_id,
        multitrack=multi,
        packet_type=packet_type,
    )


def _legacy_audio(payload: bytes, b0: int) -> AudioInfo:
    sound_format = b0 >> 4
    codec = _SOUND_FORMATS.get(sound_format) or f"unknown({sound_format})"
    if sound_format == _SOUND_FORMAT_AAC:
        _need(payload, 2, "AACPacketType")
        packet_type = payload[1]
        return AudioInfo(
            codec=codec,
            fourcc=None,
            enhanced=False,
            is_sequence_header=packet_type == 0,
            packet_type=packet_type,
        )
    rate = _FIXED_RATE.get(sound_format) or _SOUND_RATES[(b0 >> 2) & 0x03]
    channels = 1 if sound_format in _MONO_FORMATS else (b0 & 0x01) + 1
    return AudioInfo(
        codec=codec,
        fourcc=None,
        enhanced=False,
        is_sequence_header=False,
        sample_rate=rate,
        channels=channels,
    )


def _parse_audio(
    payload: bytes, first_only: bool, max_tracks: int | None = None
) -> tuple[list[AudioInfo], list[tuple[int, int]]]:
    """Classify an audio tag: one info per track and the (start, end) of each track's codec data."""
    _need(payload, 1, "audio header")
    b0 = payload[0]
    if b0 >> 4 != _SOUND_FORMAT_EX_HEADER:
        body = 2 if b0 >> 4 == _SOUND_FORMAT_AAC else 1
        return [_legacy_audio(payload, b0)], [(body, len(payload))]
    packet_type, pos = _skip_modex(payload, 1, b0 & 0x0F)
    if packet_type == _AUDIO_MULTITRACK:
        mt_type, inner, tracks = _multitrack(payload, pos, _AUDIO_MULTITRACK, first_only, max_tracks)
        if not tracks:
            info = AudioInfo(
                codec=f"unknown(multitrack type {mt_type})",
                fourcc=None,
                enhanced=True,
                is_sequence_header=False,
                multitrack=True,
                packet_type=inner,
            )
            return [info], [(pos, len(payload))]
        infos = [_ex_audio_info(inner, fourcc, tid, True) for fourcc, tid, _, _ in tracks]
        return infos, [(start, end) for _, _, start, end in tracks]
    _need(payload, pos + 4, "audio FourCC")
    return [_ex_audio_info(packet_type, payload[pos : pos + 4], 0, False)], [(pos + 4, len(payload))]


def parse_audio(payload: bytes) -> AudioInfo:
    """Classify one audio tag body (an RTMP audio message payload).

    ``payload`` must be ``bytes`` (results are memoised by a short prefix
    of it). Reads only the header bytes. For a multitrack tag this describes the
    FIRST track (``multitrack`` is True); ``audio_tracks`` lists them all.
    Unknown sound formats, FourCCs and packet types give codec
    "unknown(...)", not an error.

    Raises MalformedTag if the payload is empty (including the E-RTMP
    "silence" message, which has no header at all: callers that care can
    test ``not payload`` first) or ends inside the header (an AAC tag
    without its packet type, an ExHeader without a FourCC, ...).
    """
    if not payload:
        raise MalformedTag("empty audio tag")
    key = audio_header_key(payload)
    if key is None:
        return _parse_audio(payload, True)[0][0]
    info = _AUDIO_CACHE.get(key)
    if info is None:
        info = _parse_audio(payload, True)[0][0]
        _AUDIO_CACHE[key] = info
    return info


def audio_tracks(payload: bytes, max_tracks: int | None = None) -> list[AudioInfo]:
    """One ``AudioInfo`` per track of an audio tag (a single one if not multitrack).

    Raises MalformedTag where ``parse_audio`` does, and also if any track is
    truncated; with ``max_tracks``, TooManyTracks as ``video_tracks``.
    """
    return _parse_audio(payload, False, max_tracks)[0]


def codec_data_span(payload: bytes, is_video: bool) -> tuple[int, int]:
    """(start, end) of the first track's codec data in an audio or video tag: what follows the FLV or
    E-RTMP header (packet type, FourCC, multitrack framing, ModEx prefixes).

    For legacy AVC-like video and AAC tags the span starts after the packet type and, for video,
    the composition time; for E-RTMP it starts right after the FourCC (and track framing), so a
    CodedFrames composition time is still at its start.
    Raises MalformedTag where ``parse_video``/``parse_audio`` do.
    """
    return (_parse_video if is_video else _parse_audio)(payload, True)[1][0]


# -- configuration records, for logs ------------------------------------------


def parse_avc_sequence_header(payload: bytes) -> dict[str, int]:
    """Read profile and level from an H.264 sequence header tag body.

    Accepts a legacy AVC tag (``0x17 0x00 ...``) or an E-RTMP ``avc1``
    SequenceStart (first track if multitrack). Returns ``version``,
    ``profile``, ``compatibility``, ``level``, ``nalu_length_size`` and
    ``sps_count`` from the AVCDecoderConfigurationRecord (ISO/IEC
    14496-15 5.3.3.1); width and height are not decoded.

    Raises MalformedTag if the tag is not an H.264 sequence header or the
    record is shorter than its fixed 6-byte head.
    """
    infos, bodies = _parse_video(payload, True)
    info = infos[0]
    if info.codec != "H264" or info.packet_type != _SEQUENCE_START:
        raise MalformedTag(f"not an H.264 sequence header: {info.codec} packet type {info.packet_type}")
    start, end = bodies[0]
    if end - start < 6:
        raise MalformedTag("AVCDecoderConfigurationRecord shorter than 6 bytes")
    return {
        "version": payload[start],
        "profile": payload[start + 1],
        "compatibility": payload[start + 2],
        "level": payload[start + 3],
        "nalu_length_size": (payload[start + 4] & 0x03) + 1,
        "sps_count": payload[start + 5] & 0x1F,
    }


_AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_CHANNELS = (None, 1, 2, 3, 4, 5, 6, 8)


def parse_aac_config(payload: bytes) -> dict[str, int | None]:
    """Read object type, sample rate and channels from an AAC sequence header tag body.

    Accepts a legacy AAC tag (``0xAF 0x00 ...``) or an E-RTMP ``mp4a``
    SequenceStart (first track if multitrack). Returns ``object_type``,
    ``sample_rate`` (None for a reserved frequency index) and ``channels``
    (None when the channel configuration is 0, i.e. given by a program
    config element, or reserved) from the AudioSpecificConfig
    (ISO/IEC 14496-3 1.6.2.1).

    Raises MalformedTag if the tag is not an AAC sequence header or the
    AudioSpecificConfig is truncated.
    """
    infos, bodies = _parse_audio(payload, True)
    info = infos[0]
    if info.codec != "AAC" or not info.is_sequence_header:
        raise MalformedTag(f"not an AAC sequence header: {info.codec} packet type {info.packet_type}")
    start, end = bodies[0]
    # The longest head (escaped object type and explicit frequency) is 43 bits.
    head = payload[start : min(end, start + 6)]
    bits = len(head) * 8
    value = int.from_bytes(head, "big")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > bits:
            raise MalformedTag("truncated AudioSpecificConfig")
        pos += n
        return (value >> (bits - pos)) & ((1 << n) - 1)

    object_type = read(5)
    if object_type == 31:
        object_type = 32 + read(6)
    index = read(4)
    if index == 15:
        sample_rate: int | None = read(24)
    else:
        sample_rate = _AAC_SAMPLE_RATES[index] if index < len(_AAC_SAMPLE_RATES) else None
    config = read(4)
    channels = _AAC_CHANNELS[config] if config < len(_AAC_CHANNELS) else None
    return {"object_type": object_type, "sample_rate": sample_rate, "channels": channels}
