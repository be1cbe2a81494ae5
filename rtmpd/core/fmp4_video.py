"""What an MP4 video sample entry needs from an RTMP video sequence header: H.264, HEVC, AV1, VP9.

``rtmpd.core.fmp4`` hands these readers the codec data of a sequence
header (the FLV/E-RTMP tag header already stripped) and gets back a
``CodecConfig``: the sample entry's FourCC, its configuration box (the
record as sent), the RFC 6381 codec string an HLS playlist or a browser's
MSE wants, and the picture size. Layouts:

- H.264: AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1), picture
  size from its first SPS (ITU-T H.264 7.3.2.1.1, with frame cropping).
- HEVC: HEVCDecoderConfigurationRecord (14496-15 8.3.3.1), size from its SPS
  (ITU-T H.265 7.3.2.2, with the conformance window).
- AV1: AV1CodecConfigurationRecord (AV1-ISOBMFF 2.3), size from the sequence
  header OBU (AV1 5.5) in its configOBUs, or else in a keyframe.
- VP9: VPCodecConfigurationRecord (VP-codec ISO binding 2.2; Enhanced RTMP
  senders such as ffmpeg prefix it with the FullBox version and flags), size
  from a keyframe's uncompressed header (VP9 6.2).

The ``*_config`` readers raise ``Fmp4Error`` when a record is truncated or
is not what it claims to be, and the ``*_keyframe_size`` readers when a
frame header is; nothing else is raised for any input. A picture size the
config readers cannot find or read (an SPS of an unusual shape) is 0 x 0:
players take it from the bitstream.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from rtmpd.core.errors import Fmp4Error
from rtmpd.core.fmp4_boxes import CodecConfig, box, full_box

__all__ = [
    "av1_config",
    "av1_keyframe_size",
    "avc_config",
    "hevc_config",
    "vp9_config",
    "vp9_keyframe_size",
]


class _Bits:
    """A big-endian bit reader over a short byte string (headers of a few dozen bytes)."""

    def __init__(self, data: bytes, what: str) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._what = what
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self._size:
            raise Fmp4Error(f"truncated {self._what}")
        self.pos += n
        return (self._value >> (self._size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        """Exp-Golomb unsigned (H.264/H.265 ue(v))."""
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise Fmp4Error(f"bad exp-Golomb code in {self._what}")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def uvlc(self) -> int:
        """AV1 uvlc()."""
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return (1 << zeros) - 1 + self.u(zeros)


_EMULATION_PREVENTION = re.compile(b"\x00\x00\x03")


def _rbsp(nalu: bytes) -> bytes:
    """A NAL unit's payload without emulation-prevention bytes (00 00 03 -> 00 00)."""
    return _EMULATION_PREVENTION.sub(b"\x00\x00", nalu)


def _size(read: Callable[[bytes], tuple[int, int] | None], data: bytes) -> tuple[int, int]:
    """A picture size is informational (decoders take it from the bitstream): unreadable gives 0 x 0."""
    try:
        return read(data) or (0, 0)
    except Fmp4Error:
        return 0, 0


# -- H.264 --------------------------------------------------------------------------

# profile_idc values whose SPS carries chroma_format_idc and bit depths (H.264 7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def _avc_sps_size(sps: bytes) -> tuple[int, int]:
    bits = _Bits(_rbsp(sps[1:]), "H.264 SPS")
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma, separate = 1, 0
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma == 3:
            separate = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma == 3 else 8):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    left = right = top = bottom = 0
    if bits.u(1):
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    if separate or chroma == 0:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        unit_x = 2 if chroma in (1, 2) else 1
        unit_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (left + right)
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (top + bottom)
    return max(width, 0), max(height, 0)


def avc_config(record: bytes) -> CodecConfig:
    """``avc1`` + ``avcC`` from an AVCDecoderConfigurationRecord (the body of an AVC sequence header)."""
    if len(record) < 7 or record[0] != 1:
        raise Fmp4Error("not an AVCDecoderConfigurationRecord (version 1, at least 7 bytes)")
    width = height = 0
    if record[5] & 0x1F:
        if len(record) < 8:
            raise Fmp4Error("AVCDecoderConfigurationRecord: truncated SPS")
        (length,) = struct.unpack_from(">H", record, 6)
        sps = record[8 : 8 + length]
        if len(sps) != length or not sps:
            raise Fmp4Error("AVCDecoderConfigurationRecord: truncated SPS")
        width, height = _size(_avc_sps_size, sps)
    return CodecConfig(
        fourcc=b"avc1",
        config_box=box(b"avcC", record),
        codec_string=f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}",
        width=width,
        height=height,
    )


# -- HEVC ---------------------------------------------------------------------------

_HEVC_SPS = 33
_HVCC_HEAD = 23


def _hevc_sps_size(sps: bytes) -> tuple[int, int]:
    bits = _Bits(_rbsp(sps[2:]), "HEVC SPS")
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)  # sps_max_sub_layers_minus1
    bits.u(1)  # sps_temporal_id_nesting_flag
    bits.u(88)  # general profile: space, tier, idc, compatibility flags, constraint flags
    bits.u(8)  # general_level_idc
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.u(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile_present, level_present in present:
        bits.u(88 if profile_present else 0)
        bits.u(8 if level_present else 0)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()
    if chroma == 3:
        bits.u(1)  # separate_colour_plane_flag
    width, height = bits.ue(), bits.ue()
    if bits.u(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        sub_w = 2 if chroma in (1, 2) else 1
        sub_h = 2 if chroma == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return max(width, 0), max(height, 0)


def _hevc_codec_string(record: bytes) -> str:
    space = record[1] >> 6
    tier = "H" if record[1] & 0x20 else "L"
    profile = record[1] & 0x1F
    # Compatibility flags: bit-reversed, hex without leading zeros (14496-15 annex E.3).
    compat = int(f"{int.from_bytes(record[2:6], 'big'):032b}"[::-1], 2)
    constraints = record[6:12].rstrip(b"\x00")
    text = f"hvc1.{('', 'A', 'B', 'C')[space]}{profile}.{compat:X}.{tier}{record[12]}"
    return text + "".join(f".{byte:X}" for byte in constraints)


def hevc_config(record: bytes) -> CodecConfig:
    """``hvc1`` + ``hvcC`` from an HEVCDecoderConfigurationRecord."""
    if len(record) < _HVCC_HEAD or record[0] != 1:
        raise Fmp4Error("not an HEVCDecoderConfigurationRecord (version 1, at least 23 bytes)")
    width = height = 0
    pos = _HVCC_HEAD
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise Fmp4Error("HEVCDecoderConfigurationRecord: truncated array")
        nal_type = record[pos] & 0x3F
        (count,) = struct.unpack_from(">H", record, pos + 1)
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise Fmp4Error("HEVCDecoderConfigurationRecord: truncated NAL unit")
            (length,) = struct.unpack_from(">H", record, pos)
            nalu = record[pos + 2 : pos + 2 + length]
            if len(nalu) != length:
                raise Fmp4Error("HEVCDecoderConfigurationRecord: truncated NAL unit")
            pos += 2 + length
            if nal_type == _HEVC_SPS and not width and length > 2:
                width, height = _size(_hevc_sps_size, nalu)
    return CodecConfig(
        fourcc=b"hvc1",
        config_box=box(b"hvcC", record),
        codec_string=_hevc_codec_string(record),
        width=width,
        height=height,
    )


# -- AV1 ----------------------------------------------------------------------------

_OBU_SEQUENCE_HEADER = 1


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise Fmp4Error("truncated AV1 OBU size")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    return value, pos


def _av1_sequence_header(obus: bytes) -> bytes | None:
    """The payload of the first sequence header OBU in a run of OBUs, or None."""
    pos = 0
    while pos < len(obus):
        header = obus[pos]
        obu_type = (header >> 3) & 0x0F
        pos += 2 if header & 0x04 else 1  # obu_extension_flag
        if header & 0x02:  # obu_has_size_field
            size, pos = _leb128(obus, pos)
        else:
            size = len(obus) - pos
        if obu_type == _OBU_SEQUENCE_HEADER:
            payload = obus[pos : pos + size]
            if len(payload) != size:
                raise Fmp4Error("truncated AV1 sequence header OBU")
            return payload
        pos += size
    return None


def _av1_size(sequence_header: bytes) -> tuple[int, int]:
    bits = _Bits(sequence_header, "AV1 sequence header")
    bits.u(3)  # seq_profile
    bits.u(1)  # still_picture
    if bits.u(1):  # reduced_still_picture_header
        bits.u(5)  # seq_level_idx[0]
    else:
        decoder_model = initial_delay = False
        delay_bits = 0
        if bits.u(1):  # timing_info_present_flag
            bits.u(64)  # num_units_in_display_tick, time_scale
            if bits.u(1):  # equal_picture_interval
                bits.uvlc()
            decoder_model = bool(bits.u(1))
            if decoder_model:
                delay_bits = bits.u(5) + 1  # buffer_delay_length_minus_1
                bits.u(32 + 5 + 5)  # num_units_in_decoding_tick, two length fields
        initial_delay = bool(bits.u(1))
        for _ in range(bits.u(5) + 1):  # operating_points_cnt_minus_1
            bits.u(12)  # operating_point_idc
            if bits.u(5) > 7:  # seq_level_idx
                bits.u(1)  # seq_tier
            if decoder_model and bits.u(1):
                bits.u(2 * delay_bits + 1)  # decoder/encoder buffer delay, low_delay_mode_flag
            if initial_delay and bits.u(1):
                bits.u(4)
    width_bits, height_bits = bits.u(4) + 1, bits.u(4) + 1
    return bits.u(width_bits) + 1, bits.u(height_bits) + 1


def av1_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """The picture size from a sequence header OBU in an AV1 temporal unit, or None if it has none."""
    sequence_header = _av1_sequence_header(frame)
    return None if sequence_header is None else _av1_size(sequence_header)


def av1_config(record: bytes) -> CodecConfig:
    """``av01`` + ``av1C`` from an AV1CodecConfigurationRecord."""
    if len(record) < 4 or record[0] != 0x81:
        raise Fmp4Error("not an AV1CodecConfigurationRecord (marker and version 1, at least 4 bytes)")
    profile, level = record[1] >> 5, record[1] & 0x1F
    tier = "H" if record[2] & 0x80 else "M"
    depth = (12 if record[2] & 0x20 else 10) if record[2] & 0x40 else 8
    size = _size(av1_keyframe_size, record[4:])
    return CodecConfig(
        fourcc=b"av01",
        config_box=box(b"av1C", record),
        codec_string=f"av01.{profile}.{level:02d}{tier}.{depth:02d}",
        width=size[0],
        height=size[1],
    )


# -- VP9 ----------------------------------------------------------------------------

_VP9_SYNC_CODE = 0x498342
_VP9_CS_RGB = 7


def vp9_config(body: bytes) -> CodecConfig:
    """``vp09`` + ``vpcC`` from a VPCodecConfigurationRecord, with or without its FullBox head."""
    # A bare record's third byte holds the bit depth (8, 10 or 12) in its high nibble, so it is never 0:
    # 01 00 00 00 can only be the FullBox head (version 1, flags 0) that ffmpeg sends.
    record = body[4:] if body[:4] == b"\x01\x00\x00\x00" else body
    if len(record) < 8:
        raise Fmp4Error("VPCodecConfigurationRecord shorter than 8 bytes")
    return CodecConfig(
        fourcc=b"vp09",
        config_box=full_box(b"vpcC", 1, 0, record),
        codec_string=f"vp09.{record[0]:02d}.{record[1]:02d}.{record[2] >> 4:02d}",
    )


def vp9_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """The frame size from a VP9 keyframe's uncompressed header (None if it is not a keyframe)."""
    bits = _Bits(frame[:16], "VP9 frame header")
    if bits.u(2) != 2:  # frame_marker
        raise Fmp4Error("not a VP9 frame (bad frame marker)")
    profile = bits.u(1)
    profile |= bits.u(1) << 1
    if profile == 3:
        bits.u(1)
    if bits.u(1) or bits.u(1):  # show_existing_frame, or frame_type non-key
        return None
    bits.u(2)  # show_frame, error_resilient_mode
    if bits.u(24) != _VP9_SYNC_CODE:
        raise Fmp4Error("VP9 keyframe without its sync code")
    if profile >= 2:
        bits.u(1)  # ten_or_twelve_bit
    if bits.u(3) != _VP9_CS_RGB:
        bits.u(1)  # color_range
        if profile in (1, 3):
            bits.u(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        bits.u(1)
    return bits.u(16) + 1, bits.u(16) + 1
