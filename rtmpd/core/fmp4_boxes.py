"""ISO BMFF box layouts (ISO/IEC 14496-12) for fragmented MP4: pure functions of their arguments.

This module owns the bytes of every box ``rtmpd.core.fmp4`` writes, and
nothing of the media they describe:

- ``init_segment``: ``ftyp`` then ``moov`` (``mvhd``, one ``trak`` per track
  with empty sample tables, ``mvex``/``trex``), the file's (or the HLS
  ``EXT-X-MAP``'s) head;
- ``fragment``: one ``moof`` (``mfhd``, per track a ``traf`` with ``tfhd``,
  ``tfdt`` and ``trun``) and its ``mdat``, the samples of each track laid out
  one track after the other;
- ``CodecConfig``, ``visual_sample_entry``, ``audio_sample_entry``: what a
  sample entry is made of (``rtmpd.core.fmp4_video`` and ``fmp4_audio`` read
  the codec configurations);
- ``box``/``full_box``: the generic header helpers those modules use.

Choices that hold for every fragment: ``tfhd`` sets default-base-is-moof
(data offsets count from the ``moof``, as CMAF and the ``iso5`` brand
want), ``tfdt`` is version 1 (64-bit: decode times keep growing across the
RTMP 32-bit wrap), ``trun`` carries every sample's duration, size and flags,
and composition offsets only when one is non-zero (version 1, signed, when
one is negative). Movie and track durations are 0: fragments say them.

Arguments out of range for their fields raise ``LocalProtocolError`` (a bug
in the caller, never input from the network).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from rtmpd.core.errors import LocalProtocolError

__all__ = [
    "CodecConfig",
    "FLAGS_DISPOSABLE",
    "FLAGS_NON_SYNC",
    "FLAGS_SYNC",
    "TrackEntry",
    "TrackRun",
    "audio_sample_entry",
    "box",
    "fragment",
    "full_box",
    "init_segment",
    "visual_sample_entry",
]

_HEADER = struct.Struct(">I4s")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MAX_U32 = 0xFFFFFFFF

#: Sample flags (14496-12 8.8.3.1): sample_depends_on 2 (an I picture, depends on nothing).
FLAGS_SYNC = 0x02000000
#: sample_depends_on 1 (depends on others) and sample_is_non_sync_sample.
FLAGS_NON_SYNC = 0x01010000
#: Added to FLAGS_NON_SYNC for a frame nothing depends on (FLV "disposable inter frame"):
#: sample_is_depended_on 2.
FLAGS_DISPOSABLE = 0x00800000

_BRANDS = (b"iso5", b"iso6", b"mp41")
_MINOR_VERSION = 512
_MOVIE_TIMESCALE = 1000
# The unity matrix of tkhd/mvhd: {0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000}.
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4  # ISO 639-2 "und", three 5-bit letters - 0x60
_TKHD_ENABLED_IN_MOVIE = 0x000003
_VMHD_FLAGS = 0x000001
_URL_SELF_CONTAINED = 0x000001
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTO = 0x000800
_DPI_72 = 0x00480000


def box(kind: bytes, *payload: bytes) -> bytes:
    """A box: 32-bit size, four-character type, payload."""
    body = b"".join(payload)
    if len(body) + _HEADER.size > _MAX_U32:
        raise LocalProtocolError(f"{kind!r} box of {len(body)} bytes needs a 64-bit size")
    return _HEADER.pack(_HEADER.size + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with an 8-bit version and 24-bit flags."""
    if not (0 <= version <= 0xFF and 0 <= flags <= 0xFFFFFF):
        raise LocalProtocolError(f"{kind!r}: version {version} or flags {flags:#x} out of range")
    return box(kind, _U32.pack((version << 24) | flags), *payload)


# -- sample entries -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """One track's sample entry ingredients (sizes are 0 while unknown)."""

    #: The sample entry's type: b"avc1", b"hvc1", b"av01", b"vp09", b"mp4a" or b"Opus".
    fourcc: bytes
    #: The codec configuration box that goes inside the sample entry (avcC, hvcC, av1C, vpcC, esds, dOps).
    config_box: bytes
    #: RFC 6381 ``codecs`` value, e.g. "avc1.64001f", "mp4a.40.2".
    codec_string: str
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{what} {value} does not fit 16 bits")
    return _U16.pack(value)


def visual_sample_entry(fourcc: bytes, width: int, height: int, *children: bytes) -> bytes:
    """A VisualSampleEntry (14496-12 12.1.3): 78 bytes of fields, then the codec's boxes."""
    fields = (
        bytes(6)  # reserved
        + _U16.pack(1)  # data_reference_index
        + bytes(16)  # pre_defined, reserved, pre_defined[3]
        + _u16(width, "width")
        + _u16(height, "height")
        + struct.pack(">III", _DPI_72, _DPI_72, 0)  # resolutions, reserved
        + _U16.pack(1)  # frame_count
        + bytes(32)  # compressorname: empty Pascal string
        + struct.pack(">Hh", 0x0018, -1)  # depth, pre_defined
    )
    return box(fourcc, fields, *children)


def audio_sample_entry(fourcc: bytes, channels: int, sample_rate: int, *children: bytes) -> bytes:
    """An AudioSampleEntry (14496-12 12.2.3, version 0): 28 bytes of fields, then the codec's boxes.

    ``samplerate`` is 16.16 fixed point: a rate above 65535 Hz is written as
    0 there (the track's ``mdhd`` timescale holds it, as 14496-12 allows).
    """
    rate = sample_rate << 16 if sample_rate <= 0xFFFF else 0
    fields = (
        bytes(6)
        + _U16.pack(1)  # data_reference_index
        + bytes(8)  # reserved
        + _u16(channels, "channelcount")
        + _U16.pack(16)  # samplesize
        + bytes(4)  # pre_defined, reserved
        + _U32.pack(rate)
    )
    return box(fourcc, fields, *children)


# -- init segment ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackEntry:
    """What the ``trak`` of one track says: its id, kind, timescale, picture size and sample entry."""

    track_id: int
    is_video: bool
    timescale: int
    sample_entry: bytes
    width: int = 0
    height: int = 0


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, _MOVIE_TIMESCALE, 0),  # creation, modification, timescale, duration
        struct.pack(">IH", 0x00010000, 0x0100),  # rate 1.0, volume 1.0
        bytes(10),  # reserved
        _MATRIX,
        bytes(24),  # pre_defined
        _U32.pack(next_track_id),
    )


def _tkhd(track: TrackEntry) -> bytes:
    return full_box(
        b"tkhd",
        0,
        _TKHD_ENABLED_IN_MOVIE,
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0),  # creation, modification, id, reserved, duration
        bytes(8),  # reserved
        struct.pack(">hhhH", 0, 0, 0 if track.is_video else 0x0100, 0),  # layer, group, volume, reserved
        _MATRIX,
        _u16(track.width, "width"),  # 16.16 fixed point: the integer part, then .0
        bytes(2),
        _u16(track.height, "height"),
        bytes(2),
    )


def _trak(track: TrackEntry) -> bytes:
    handler, name = (b"vide", b"VideoHandler\0") if track.is_video else (b"soun", b"SoundHandler\0")
    media_header = (
        full_box(b"vmhd", 0, _VMHD_FLAGS, bytes(8))  # graphicsmode, opcolor
        if track.is_video
        else full_box(b"smhd", 0, 0, bytes(4))  # balance, reserved
    )
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, _U32.pack(1), track.sample_entry),
        full_box(b"stts", 0, 0, _U32.pack(0)),
        full_box(b"stsc", 0, 0, _U32.pack(0)),
        full_box(b"stsz", 0, 0, _U32.pack(0), _U32.pack(0)),  # sample_size, sample_count
        full_box(b"stco", 0, 0, _U32.pack(0)),
    )
    dinf = box(b"dinf", full_box(b"dref", 0, 0, _U32.pack(1), full_box(b"url ", 0, _URL_SELF_CONTAINED)))
    mdia = box(
        b"mdia",
        full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0)),
        full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), name),
        box(b"minf", media_header, dinf, stbl),
    )
    return box(b"trak", _tkhd(track), mdia)


def init_segment(tracks: Sequence[TrackEntry]) -> bytes:
    """``ftyp`` + ``moov`` declaring ``tracks`` (ids must be distinct and non-zero)."""
    ids = [t.track_id for t in tracks]
    if not tracks or 0 in ids or len(set(ids)) != len(ids):
        raise LocalProtocolError(f"an init segment needs tracks with distinct non-zero ids, got {ids}")
    ftyp = box(b"ftyp", _BRANDS[0], _U32.pack(_MINOR_VERSION), *_BRANDS)
    trex = [
        # default sample description 1; no default duration, size or flags: every trun says them.
        full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0))
        for t in tracks
    ]
    moov = box(b"moov", _mvhd(max(ids) + 1), *(_trak(t) for t in tracks), box(b"mvex", *trex))
    return ftyp + moov


# -- fragments ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackRun:
    """One track's samples in a fragment.

    ``samples`` holds (duration, size, flags, composition offset) per sample,
    in decode order; ``data`` is their bytes, concatenated in that order.
    """

    track_id: int
    base_decode_time: int
    samples: Sequence[tuple[int, int, int, int]]
    data: Sequence[bytes]


def _traf(run: TrackRun, data_offset: int) -> bytes:
    count = len(run.samples)
    with_cto = any(s[3] for s in run.samples)
    version = 1 if any(s[3] < 0 for s in run.samples) else 0
    flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS | (_TRUN_CTO if with_cto else 0)
    if with_cto:
        table = struct.pack(
            ">" + ("IIIi" if version else "IIII") * count, *(v for s in run.samples for v in s)
        )
    else:
        table = struct.pack(">" + "III" * count, *(v for s in run.samples for v in s[:3]))
    return box(
        b"traf",
        full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, _U32.pack(run.track_id)),
        full_box(b"tfdt", 1, 0, _U64.pack(run.base_decode_time)),
        full_box(b"trun", version, flags, struct.pack(">Ii", count, data_offset), table),
    )


def fragment(sequence_number: int, runs: Sequence[TrackRun]) -> bytes:
    """``moof`` + ``mdat`` for ``runs`` (tracks with samples only), data in the order of ``runs``.

    Raises LocalProtocolError if ``runs`` is empty, a run has no samples or
    a value does not fit its field.
    """
    if not runs or not all(r.samples for r in runs):
        raise LocalProtocolError("a fragment needs at least one sample in every track run")
    sizes = [sum(map(len, r.data)) for r in runs]
    total = sum(sizes)
    mdat_header = _HEADER.size if total + _HEADER.size <= _MAX_U32 else _HEADER.size + _U64.size
    mfhd = full_box(b"mfhd", 0, 0, _U32.pack(sequence_number))
    # The data offsets depend on the moof's size, which does not depend on their values.
    moof_size = _HEADER.size + len(mfhd) + sum(len(_traf(r, 0)) for r in runs)
    offset = moof_size + mdat_header
    trafs = []
    for run, size in zip(runs, sizes, strict=True):
        if offset > 0x7FFFFFFF:
            raise LocalProtocolError(f"data offset {offset} does not fit the trun's 32-bit field")
        trafs.append(_traf(run, offset))
        offset += size
    moof = box(b"moof", mfhd, *trafs)
    if mdat_header == _HEADER.size:
        head = _HEADER.pack(_HEADER.size + total, b"mdat")
    else:  # size 1: a 64-bit largesize follows the type
        head = _HEADER.pack(1, b"mdat") + _U64.pack(mdat_header + total)
    return b"".join((moof, head, *(chunk for run in runs for chunk in run.data)))
