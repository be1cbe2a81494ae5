"""What an MP4 audio sample entry needs from an RTMP audio sequence header: AAC and Opus.

- AAC: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) wrapped in an
  ``esds`` (14496-1 7.2.6.5/6: ES, DecoderConfig, DecoderSpecificInfo and
  SLConfig descriptors). The caller reads the config's rate and channels
  (``rtmpd.core.media.parse_aac_config``).
- Opus: the Ogg ``OpusHead`` (RFC 7845 5.1, little-endian) that Enhanced
  RTMP sends, turned into a ``dOps`` box (Opus in ISOBMFF 4.3.2,
  big-endian, version 0).

Raises ``Fmp4Error`` for a header that is truncated or not what it claims.
"""

from __future__ import annotations

import struct

from rtmpd.core.errors import Fmp4Error
from rtmpd.core.fmp4_boxes import CodecConfig, box, full_box

__all__ = ["OPUS_RATE", "aac_config", "opus_config"]


# -- AAC ----------------------------------------------------------------------------


def _descriptor(tag: int, body: bytes) -> bytes:
    """An MPEG-4 descriptor: tag, size in 7-bit groups (high bit = more follow), body."""
    size, groups = len(body), []
    while True:
        groups.append(size & 0x7F)
        size >>= 7
        if not size:
            break
    head = bytes(g | 0x80 for g in reversed(groups[1:])) + bytes((groups[0],))
    return bytes((tag,)) + head + body


_ES_DESCRIPTOR = 0x03
_DECODER_CONFIG = 0x04
_DECODER_SPECIFIC = 0x05
_SL_CONFIG = 0x06
_AUDIO_ISO_14496_3 = 0x40
_AUDIO_STREAM = 0x05


def aac_config(asc: bytes, object_type: int, sample_rate: int, channels: int) -> CodecConfig:
    """``mp4a`` + ``esds`` carrying the AudioSpecificConfig ``asc`` (already read by the caller)."""
    decoder_config = _descriptor(
        _DECODER_CONFIG,
        # streamType 5 (audio), upStream 0, reserved 1; bufferSizeDB, maxBitrate, avgBitrate unknown (0).
        struct.pack(">BB3sII", _AUDIO_ISO_14496_3, (_AUDIO_STREAM << 2) | 1, b"\0\0\0", 0, 0)
        + _descriptor(_DECODER_SPECIFIC, asc),
    )
    # ES_ID 0 and no dependence/URL/OCR flags; SLConfig predefined 2 (reserved for MP4 files).
    es = _descriptor(_ES_DESCRIPTOR, b"\x00\x00\x00" + decoder_config + _descriptor(_SL_CONFIG, b"\x02"))
    return CodecConfig(
        fourcc=b"mp4a",
        config_box=full_box(b"esds", 0, 0, es),
        codec_string=f"mp4a.40.{object_type}",
        sample_rate=sample_rate,
        channels=channels,
    )


# -- Opus ---------------------------------------------------------------------------

_OPUS_HEAD = struct.Struct("<8sBBHIhB")
OPUS_RATE = 48000


def opus_config(head: bytes) -> CodecConfig:
    """``Opus`` + ``dOps`` from an Ogg ``OpusHead`` identification header.

    The track's timescale is always 48 kHz (Opus decodes at 48 kHz whatever
    rate the input had, which ``InputSampleRate`` only records).
    """
    if len(head) < _OPUS_HEAD.size or not head.startswith(b"OpusHead"):
        raise Fmp4Error("not an OpusHead identification header")
    _, _, channels, pre_skip, input_rate, gain, family = _OPUS_HEAD.unpack_from(head)
    mapping = b""
    if family:
        mapping = head[_OPUS_HEAD.size : _OPUS_HEAD.size + 2 + channels]
        if len(mapping) != 2 + channels:
            raise Fmp4Error("OpusHead: truncated channel mapping table")
    dops = struct.pack(">BBHIhB", 0, channels, pre_skip, input_rate, gain, family) + mapping
    return CodecConfig(
        fourcc=b"Opus",
        config_box=box(b"dOps", dops),
        codec_string="opus",
        sample_rate=OPUS_RATE,
        channels=channels,
    )
