"""Tests of rtmpd.core.media: classifying FLV audio/video tag bodies.

Tags are written out by hand from the legacy FLV specification v10.1 and
the Enhanced RTMP v2 specification (veovera), byte by byte, so the tests do
not share the module's constants.
"""

from __future__ import annotations

import struct
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rtmpd.core import media
from rtmpd.core.errors import MalformedTag
from rtmpd.core.flv import TAG_AUDIO, TAG_VIDEO, parse_flv
from rtmpd.core.media import (
    AudioInfo,
    VideoInfo,
    audio_tracks,
    parse_aac_config,
    parse_audio,
    parse_avc_sequence_header,
    parse_video,
    video_tracks,
)
from tests.support import IN_CI

# An AVCDecoderConfigurationRecord: version 1, High profile (100), compat 0,
# level 3.1, 4-byte NALU lengths, one 4-byte SPS, one 2-byte PPS.
AVC_RECORD = bytes([1, 100, 0, 31, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE])
# AudioSpecificConfig: AAC LC (2), 44100 Hz (index 4), stereo (2).
AAC_LC_44100_STEREO = bytes([0x12, 0x10])


def ex_video(frame_type: int, packet_type: int, rest: bytes = b"") -> bytes:
    """An E-RTMP video tag: IsExVideoHeader | frame type | packet type, then ``rest``."""
    return bytes([0x80 | (frame_type << 4) | packet_type]) + rest


def ex_audio(packet_type: int, rest: bytes = b"") -> bytes:
    """An E-RTMP audio tag: SoundFormat 9 | packet type, then ``rest``."""
    return bytes([0x90 | packet_type]) + rest


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


class LegacyVideoTests(SynchronousTestCase):
    def test_codec_ids_without_packet_type(self) -> None:
        names = {2: "H263", 3: "ScreenVideo", 4: "VP6", 5: "VP6A", 6: "ScreenVideo2"}
        for codec_id, name in names.items():
            info = parse_video(bytes([0x10 | codec_id, 0xAB, 0xCD]))
            self.assertEqual(
                info,
                VideoInfo(
                    codec=name,
                    fourcc=None,
                    enhanced=False,
                    frame_type=1,
                    is_keyframe=True,
                    is_sequence_header=False,
                    is_sequence_end=False,
                    is_metadata=False,
                    track_id=0,
                    multitrack=False,
                    packet_type=None,
                ),
            )

    def test_one_byte_tag_of_codec_without_packet_type_is_classified(self) -> None:
        # Nothing after the first byte is needed to classify VP6.
        self.assertEqual(parse_video(b"\x24").codec, "VP6")

    def test_frame_types(self) -> None:
        expected_keyframe = {1: True, 2: False, 3: False, 4: True}
        for frame_type, keyframe in expected_keyframe.items():
            info = parse_video(bytes([(frame_type << 4) | 2, 0]))
            self.assertEqual((info.frame_type, info.is_keyframe), (frame_type, keyframe))

    def test_avc_sequence_header(self) -> None:
        info = parse_video(b"\x17\x00\x00\x00\x00" + AVC_RECORD)
        self.assertEqual(info.codec, "H264")
        self.assertTrue(info.is_sequence_header)
        self.assertFalse(info.is_keyframe)
        self.assertFalse(info.is_sequence_end)
        self.assertEqual(info.packet_type, 0)
        self.assertFalse(info.enhanced)

    def test_avc_nalu_keyframe_and_inter_frame(self) -> None:
        key = parse_video(b"\x17\x01\x00\x00\x21\x00\x00\x00\x02\x65\x88")
        inter = parse_video(b"\x27\x01\x00\x00\x21\x00\x00\x00\x02\x41\x9a")
        self.assertEqual((key.is_keyframe, key.is_sequence_header, key.packet_type), (True, False, 1))
        self.assertEqual((inter.is_keyframe, inter.frame_type, inter.packet_type), (False, 2, 1))

    def test_avc_end_of_sequence(self) -> None:
        info = parse_video(b"\x17\x02\x00\x00\x00")
        self.assertTrue(info.is_sequence_end)
        self.assertFalse(info.is_keyframe)
        self.assertFalse(info.is_sequence_header)

    def test_avc_unknown_packet_type_is_not_an_error(self) -> None:
        info = parse_video(b"\x17\x09\x00\x00\x00")
        self.assertEqual((info.codec, info.packet_type, info.is_keyframe), ("H264", 9, False))

    def test_nonstandard_hevc_and_av1_ids_use_avc_layout(self) -> None:
        hevc = parse_video(b"\x1c\x00\x00\x00\x00\x01")
        av1 = parse_video(b"\x2d\x01\x00\x00\x00\x12\x00")
        self.assertEqual((hevc.codec, hevc.is_sequence_header), ("H265", True))
        self.assertEqual((av1.codec, av1.packet_type, av1.is_keyframe), ("AV1", 1, False))

    def test_unknown_codec_ids(self) -> None:
        for codec_id in (0, 1, 8, 9, 10, 11, 14, 15):
            info = parse_video(bytes([0x10 | codec_id, 0]))
            self.assertEqual(info.codec, f"unknown({codec_id})")
            self.assertIsNone(info.packet_type)

    def test_command_frame(self) -> None:
        # Frame type 5 carries a UI8 command where AVC has its packet type.
        info = parse_video(b"\x57\x00")
        self.assertEqual(info.frame_type, 5)
        self.assertFalse(info.is_keyframe)
        self.assertFalse(info.is_sequence_header)
        self.assertIsNone(info.packet_type)
        self.assertFalse(parse_video(b"\x52\x01").is_keyframe)

    def test_truncated(self) -> None:
        for payload in (b"", b"\x17", b"\x27", b"\x1c", b"\x2d"):
            with self.assertRaises(MalformedTag, msg=payload):
                parse_video(payload)


class LegacyAudioTests(SynchronousTestCase):
    def test_sound_formats(self) -> None:
        # SoundRate 3 (44 kHz), SoundSize 1, SoundType 1 (stereo): flags 0xF.
        expected = {
            0: ("PCM", 44100, 2),
            1: ("ADPCM", 44100, 2),
            2: ("MP3", 44100, 2),
            3: ("PCM", 44100, 2),
            4: ("Nellymoser", 16000, 1),
            5: ("Nellymoser", 8000, 1),
            6: ("Nellymoser", 44100, 2),
            7: ("G711A", 8000, 2),
            8: ("G711U", 8000, 2),
            11: ("Speex", 16000, 1),
            12: ("unknown(12)", 44100, 2),
            13: ("unknown(13)", 44100, 2),
            14: ("MP3", 8000, 2),
            15: ("unknown(15)", 44100, 2),
        }
        for sound_format, (codec, rate, channels) in expected.items():
            info = parse_audio(bytes([(sound_format << 4) | 0x0F, 0xFF]))
            self.assertEqual(
                info,
                AudioInfo(
                    codec=codec,
                    fourcc=None,
                    enhanced=False,
                    is_sequence_header=False,
                    track_id=0,
                    multitrack=False,
                    packet_type=None,
                    sample_rate=rate,
                    channels=channels,
                ),
                msg=f"sound format {sound_format}",
            )

    def test_rates_and_mono(self) -> None:
        # MP3, SoundType 0 (mono), each SoundRate.
        for rate_bits, rate in enumerate((5512, 11025, 22050, 44100)):
            info = parse_audio(bytes([0x20 | (rate_bits << 2) | 0x02]))
            self.assertEqual((info.sample_rate, info.channels), (rate, 1))

    def test_aac_config_and_raw(self) -> None:
        config = parse_audio(b"\xaf\x00" + AAC_LC_44100_STEREO)
        raw = parse_audio(b"\xaf\x01\x21\x10\x04")
        self.assertEqual((config.codec, config.is_sequence_header, config.packet_type), ("AAC", True, 0))
        self.assertEqual((raw.codec, raw.is_sequence_header, raw.packet_type), ("AAC", False, 1))
        # AAC's rate and channel flags are constants, not information.
        self.assertIsNone(config.sample_rate)
        self.assertIsNone(config.channels)

    def test_truncated(self) -> None:
        for payload in (b"", b"\xaf", b"\xa2"):
            with self.assertRaises(MalformedTag, msg=payload):
                parse_audio(payload)


class EnhancedVideoTests(SynchronousTestCase):
    FOURCCS = {
        b"avc1": "H264",
        b"hvc1": "H265",
        b"av01": "AV1",
        b"vp09": "VP9",
        b"vp08": "VP8",
        b"vvc1": "VVC",
    }

    def test_fourccs(self) -> None:
        for fourcc, codec in self.FOURCCS.items():
            info = parse_video(ex_video(1, 1, fourcc + b"\x00\x00\x00\x01"))
            self.assertEqual(
                info,
                VideoInfo(
                    codec=codec,
                    fourcc=fourcc.decode(),
                    enhanced=True,
                    frame_type=1,
                    is_keyframe=True,
                    is_sequence_header=False,
                    is_sequence_end=False,
                    is_metadata=False,
                    track_id=0,
                    multitrack=False,
                    packet_type=1,
                ),
            )

    def test_sequence_start(self) -> None:
        info = parse_video(ex_video(1, 0, b"hvc1\x01\x02\x03"))
        self.assertEqual((info.codec, info.is_sequence_header, info.is_keyframe), ("H265", True, False))
        self.assertEqual(info.packet_type, 0)

    def test_coded_frames_and_coded_frames_x(self) -> None:
        for packet_type in (1, 3):
            key = parse_video(ex_video(1, packet_type, b"av01\x12\x00"))
            inter = parse_video(ex_video(2, packet_type, b"av01\x12\x00"))
            self.assertTrue(key.is_keyframe)
            self.assertFalse(inter.is_keyframe)
            self.assertEqual((key.packet_type, inter.frame_type), (packet_type, 2))
            self.assertFalse(key.is_sequence_header)

    def test_generated_keyframe_is_a_keyframe(self) -> None:
        self.assertTrue(parse_video(ex_video(4, 1, b"vp09\x00")).is_keyframe)

    def test_sequence_end(self) -> None:
        info = parse_video(ex_video(1, 2, b"vp09"))
        self.assertTrue(info.is_sequence_end)
        self.assertFalse(info.is_keyframe)
        self.assertFalse(info.is_sequence_header)

    def test_metadata(self) -> None:
        # Frame type is ignored for Metadata, even 5 (command).
        for frame_type in (1, 5):
            info = parse_video(ex_video(frame_type, 4, b"hvc1\x02\x00\x09colorInfo\x03\x00\x00\x09"))
            self.assertTrue(info.is_metadata)
            self.assertFalse(info.is_keyframe)
            self.assertEqual((info.codec, info.packet_type), ("H265", 4))

    def test_mpeg2ts_sequence_start(self) -> None:
        info = parse_video(ex_video(1, 5, b"av01\x80\x04\x01\x02\x03\x04"))
        self.assertEqual((info.codec, info.packet_type), ("AV1", 5))
        self.assertTrue(info.is_sequence_header)
        self.assertFalse(info.is_keyframe)

    def test_command_frame_has_no_fourcc(self) -> None:
        info = parse_video(ex_video(5, 1, b"\x00"))
        self.assertEqual((info.codec, info.fourcc, info.frame_type), ("unknown(command)", None, 5))
        self.assertFalse(info.is_keyframe)
        self.assertTrue(info.enhanced)

    def test_unknown_fourcc_is_not_an_error(self) -> None:
        info = parse_video(ex_video(1, 1, b"xyz1\x00"))
        self.assertEqual((info.codec, info.fourcc), ("unknown(xyz1)", "xyz1"))
        binary = parse_video(ex_video(1, 1, b"\x00\xff\x01\x02"))
        self.assertEqual(binary.codec, "unknown(0x00ff0102)")

    def test_unknown_packet_type_still_has_fourcc(self) -> None:
        info = parse_video(ex_video(1, 9, b"hvc1\x00"))
        self.assertEqual((info.codec, info.packet_type), ("H265", 9))
        self.assertFalse(info.is_keyframe)
        self.assertFalse(info.is_sequence_header)

    def test_modex_prefix(self) -> None:
        # ModEx: size-1 = 2 (3 bytes of TimestampOffsetNano), then type 0 |
        # real packet type 1 (CodedFrames), then the FourCC.
        payload = ex_video(1, 7, b"\x02\x00\x01\x00\x01hvc1\x00\x00\x00")
        info = parse_video(payload)
        self.assertEqual((info.codec, info.packet_type, info.is_keyframe), ("H265", 1, True))

    def test_chained_and_16_bit_modex(self) -> None:
        # First ModEx with UI8 255 -> a UI16 size follows (here 299 + 1 bytes).
        long_data = b"\xff" + struct.pack(">H", 299) + bytes(300)
        payload = ex_video(1, 7, long_data + b"\x07" + b"\x02\x00\x01\x02" + b"\x00" + b"av01")
        info = parse_video(payload)
        self.assertEqual((info.codec, info.packet_type), ("AV1", 0))
        self.assertTrue(info.is_sequence_header)

    def test_multitrack_one_track(self) -> None:
        # OneTrack (0) | inner CodedFrames (1), FourCC, track id 3, then data.
        payload = ex_video(1, 6, b"\x01hvc1\x03\x00\x00\x00\x01")
        info = parse_video(payload)
        self.assertEqual((info.codec, info.track_id, info.multitrack), ("H265", 3, True))
        self.assertEqual((info.packet_type, info.is_keyframe), (1, True))
        self.assertEqual(video_tracks(payload), [info])

    def test_multitrack_many_tracks(self) -> None:
        # ManyTracks (1) | inner SequenceStart (0), shared FourCC, then
        # (track id, UI24 size, data) per track.
        payload = ex_video(1, 6, b"\x10avc1" + b"\x00" + u24(2) + b"\x01\x64" + b"\x01" + u24(1) + b"\x01")
        first = parse_video(payload)
        self.assertEqual((first.codec, first.track_id, first.is_sequence_header), ("H264", 0, True))
        tracks = video_tracks(payload)
        self.assertEqual([t.track_id for t in tracks], [0, 1])
        self.assertTrue(all(t.codec == "H264" and t.multitrack for t in tracks))

    def test_multitrack_many_tracks_many_codecs(self) -> None:
        payload = ex_video(
            1, 6, b"\x21" + b"hvc1\x00" + u24(3) + b"abc" + b"av01\x01" + u24(0) + b"vp09\x02" + u24(1) + b"z"
        )
        tracks = video_tracks(payload)
        self.assertEqual([(t.codec, t.track_id) for t in tracks], [("H265", 0), ("AV1", 1), ("VP9", 2)])
        self.assertEqual(parse_video(payload), tracks[0])
        self.assertTrue(all(t.is_keyframe for t in tracks))

    def test_multitrack_truncated_track(self) -> None:
        payload = ex_video(1, 6, b"\x11hvc1" + b"\x00" + u24(2) + b"ab" + b"\x01" + u24(5) + b"ab")
        # The first track is whole: the hot path classifies it.
        self.assertEqual(parse_video(payload).track_id, 0)
        with self.assertRaises(MalformedTag):
            video_tracks(payload)
        with self.assertRaises(MalformedTag):
            parse_video(ex_video(1, 6, b"\x11hvc1\x00" + u24(10) + b"ab"))

    def test_nested_multitrack_is_malformed(self) -> None:
        with self.assertRaises(MalformedTag):
            parse_video(ex_video(1, 6, b"\x06hvc1\x00"))

    def test_reserved_multitrack_type(self) -> None:
        info = parse_video(ex_video(1, 6, b"\x51\x00\x00"))
        self.assertEqual(
            (info.codec, info.multitrack, info.fourcc), ("unknown(multitrack type 5)", True, None)
        )

    def test_truncated(self) -> None:
        for payload in (
            b"\x90",
            b"\x90hv",
            b"\x91hvc",
            ex_video(1, 7),
            ex_video(1, 7, b"\x02\x00\x00"),
            ex_video(1, 7, b"\xff\x00"),
            ex_video(1, 6),
            ex_video(1, 6, b"\x01hvc1"),
            ex_video(1, 6, b"\x11hvc1\x00\x00"),
            ex_video(1, 6, b"\x21hv"),
        ):
            with self.assertRaises(MalformedTag, msg=payload.hex()):
                parse_video(payload)


class EnhancedAudioTests(SynchronousTestCase):
    FOURCCS = {
        b"Opus": "Opus",
        b"fLaC": "FLAC",
        b"ac-3": "AC3",
        b"ec-3": "EAC3",
        b"mp4a": "AAC",
        b".mp3": "MP3",
    }

    def test_fourccs(self) -> None:
        for fourcc, codec in self.FOURCCS.items():
            info = parse_audio(ex_audio(1, fourcc + b"\xfc\xff"))
            self.assertEqual(
                info,
                AudioInfo(
                    codec=codec,
                    fourcc=fourcc.decode(),
                    enhanced=True,
                    is_sequence_header=False,
                    track_id=0,
                    multitrack=False,
                    packet_type=1,
                    sample_rate=None,
                    channels=None,
                ),
            )

    def test_opus_sequence_start(self) -> None:
        info = parse_audio(ex_audio(0, b"Opus" + b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"))
        self.assertEqual((info.codec, info.is_sequence_header, info.packet_type), ("Opus", True, 0))

    def test_opus_coded_frames_and_sequence_end(self) -> None:
        coded = parse_audio(ex_audio(1, b"Opus\xfc\xff\xfe"))
        end = parse_audio(ex_audio(2, b"Opus"))
        self.assertEqual((coded.is_sequence_header, coded.packet_type), (False, 1))
        self.assertEqual((end.is_sequence_header, end.packet_type), (False, 2))

    def test_multichannel_config(self) -> None:
        # Native order (1), 6 channels, channel mask UI32.
        info = parse_audio(ex_audio(4, b"Opus\x01\x06\x00\x00\x00\x3f"))
        self.assertEqual((info.codec, info.packet_type, info.is_sequence_header), ("Opus", 4, False))

    def test_multitrack(self) -> None:
        payload = ex_audio(5, b"\x11Opus" + b"\x00" + u24(2) + b"\xfc\xff" + b"\x01" + u24(1) + b"\xfc")
        first = parse_audio(payload)
        self.assertEqual(
            (first.codec, first.multitrack, first.track_id, first.packet_type), ("Opus", True, 0, 1)
        )
        self.assertEqual([t.track_id for t in audio_tracks(payload)], [0, 1])

    def test_multitrack_one_track_and_many_codecs(self) -> None:
        one = parse_audio(ex_audio(5, b"\x00mp4a\x02\x12\x10"))
        self.assertEqual((one.codec, one.track_id, one.is_sequence_header), ("AAC", 2, True))
        many = audio_tracks(ex_audio(5, b"\x21" + b"Opus\x00" + u24(1) + b"x" + b"ac-3\x01" + u24(0)))
        self.assertEqual([(t.codec, t.track_id) for t in many], [("Opus", 0), ("AC3", 1)])

    def test_modex(self) -> None:
        info = parse_audio(ex_audio(7, b"\x02\x00\x00\x10\x01Opus\xfc"))
        self.assertEqual((info.codec, info.packet_type), ("Opus", 1))

    def test_unknown_fourcc_is_not_an_error(self) -> None:
        info = parse_audio(ex_audio(1, b"vorb\x00"))
        self.assertEqual((info.codec, info.fourcc), ("unknown(vorb)", "vorb"))

    def test_truncated(self) -> None:
        for payload in (
            b"\x90",
            b"\x91Op",
            ex_audio(5),
            ex_audio(5, b"\x11Opus\x00\x00"),
            ex_audio(7, b"\x05"),
        ):
            with self.assertRaises(MalformedTag, msg=payload.hex()):
                parse_audio(payload)

    def test_nested_multitrack_is_malformed(self) -> None:
        with self.assertRaises(MalformedTag):
            parse_audio(ex_audio(5, b"\x05Opus\x00"))


class ConfigRecordTests(SynchronousTestCase):
    def test_avc_legacy(self) -> None:
        self.assertEqual(
            parse_avc_sequence_header(b"\x17\x00\x00\x00\x00" + AVC_RECORD),
            {
                "version": 1,
                "profile": 100,
                "compatibility": 0,
                "level": 31,
                "nalu_length_size": 4,
                "sps_count": 1,
            },
        )

    def test_avc_enhanced_and_multitrack(self) -> None:
        self.assertEqual(parse_avc_sequence_header(ex_video(1, 0, b"avc1" + AVC_RECORD))["level"], 31)
        multi = ex_video(1, 6, b"\x10avc1\x00" + u24(len(AVC_RECORD)) + AVC_RECORD)
        self.assertEqual(parse_avc_sequence_header(multi)["profile"], 100)

    def test_avc_rejects_other_tags(self) -> None:
        for payload in (
            b"\x17\x01\x00\x00\x00" + AVC_RECORD,
            b"\x1c\x00\x00\x00\x00" + AVC_RECORD,
            ex_video(1, 0, b"hvc1" + AVC_RECORD),
            b"\x17\x00\x00\x00\x00\x01\x64\x00",
            b"\x17\x00",
            # A first track of 3 bytes does not hold the record after it.
            ex_video(1, 6, b"\x10avc1\x00" + u24(3) + AVC_RECORD),
        ):
            with self.assertRaises(MalformedTag, msg=payload.hex()):
                parse_avc_sequence_header(payload)

    def test_aac_legacy_and_enhanced(self) -> None:
        expected = {"object_type": 2, "sample_rate": 44100, "channels": 2}
        self.assertEqual(parse_aac_config(b"\xaf\x00" + AAC_LC_44100_STEREO), expected)
        self.assertEqual(parse_aac_config(ex_audio(0, b"mp4a" + AAC_LC_44100_STEREO)), expected)

    def test_aac_escaped_object_type_and_explicit_rate(self) -> None:
        # object type 31 -> 32 + 6 bits (10 -> 42), index 15 -> 24-bit rate, channel config 7 (8 channels).
        bits = "11111" + "001010" + "1111" + format(44056, "024b") + "0111"
        bits += "0" * (-len(bits) % 8)
        config = int(bits, 2).to_bytes(len(bits) // 8, "big")
        self.assertEqual(
            parse_aac_config(b"\xaf\x00" + config), {"object_type": 42, "sample_rate": 44056, "channels": 8}
        )

    def test_aac_reserved_values_give_none(self) -> None:
        # HE-AAC (5), index 13 (reserved), channel config 0 (from a PCE).
        bits = int("00101" + "1101" + "0000" + "000", 2).to_bytes(2, "big")
        self.assertEqual(
            parse_aac_config(b"\xaf\x00" + bits), {"object_type": 5, "sample_rate": None, "channels": None}
        )

    def test_aac_rejects_other_tags(self) -> None:
        for payload in (
            b"\xaf\x01\x12\x10",
            b"\x2f\x00\x12\x10",
            b"\xaf\x00\x12",
            b"\xaf\x00\xf8\x00",
            b"\xaf\x00",
        ):
            with self.assertRaises(MalformedTag, msg=payload.hex()):
                parse_aac_config(payload)


# Payloads biased towards the interesting first bytes (E-RTMP headers,
# ModEx, multitrack) so that random bytes reach the deep paths.
interesting_first_byte = st.sampled_from(
    [0x17, 0x27, 0x57, 0x1C, 0xAF, 0x90, 0x91, 0x95, 0x96, 0x97, 0xD6, 0xD1]
)
payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda b, rest: bytes([b]) + rest, interesting_first_byte, st.binary(max_size=64)),
    st.builds(
        lambda b, mt, rest: bytes([b, mt]) + rest,
        st.sampled_from([0x96, 0x95, 0x97]),
        st.sampled_from([0x00, 0x01, 0x10, 0x11, 0x20, 0x21, 0x06, 0x05]),
        st.binary(max_size=64),
    ),
)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=1500, deadline=None)
    @given(payloads)
    def test_random_bytes_give_info_or_malformed_tag(self, payload: bytes) -> None:
        for function, kind in (
            (parse_video, VideoInfo),
            (parse_audio, AudioInfo),
            (video_tracks, list),
            (audio_tracks, list),
            (parse_avc_sequence_header, dict),
            (parse_aac_config, dict),
        ):
            try:
                result = function(payload)
            except MalformedTag:
                continue
            self.assertIsInstance(result, kind)

    @settings(max_examples=1000, deadline=None)
    @given(payloads)
    def test_memoised_results_equal_a_fresh_parse(self, payload: bytes) -> None:
        # The hot path memoises by prefix; it must never change an answer.
        for cached, fresh in (
            (parse_video, lambda p: media._parse_video(p, True)[0][0]),
            (parse_audio, lambda p: media._parse_audio(p, True)[0][0]),
        ):
            try:
                expected = fresh(payload)
            except MalformedTag:
                with self.assertRaises(MalformedTag):
                    cached(payload)
                continue
            self.assertEqual(cached(payload), expected)
            self.assertEqual(cached(payload), expected)

    @settings(max_examples=300, deadline=None)
    @given(payloads)
    def test_tracks_start_with_the_first_track(self, payload: bytes) -> None:
        for first, every in ((parse_video, video_tracks), (parse_audio, audio_tracks)):
            try:
                tracks = every(payload)
            except MalformedTag:
                continue
            self.assertEqual(tracks[0], first(payload))


try:
    import imageio_ffmpeg

    FFMPEG: str | None = imageio_ffmpeg.get_ffmpeg_exe()
except Exception:  # not installed, or no binary for this platform
    FFMPEG = None


class FFmpegInteropTests(SynchronousTestCase):
    """Tags written by a real Enhanced RTMP muxer (FFmpeg 9's FLV muxer, from imageio-ffmpeg)."""

    def setUp(self) -> None:
        if FFMPEG is None:
            message = "imageio-ffmpeg (ffmpeg 9) is not installed"
            if IN_CI:
                self.fail(message)
            raise SkipTest(message)

    def mux(self, video: list[str], audio: list[str]) -> list:
        command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"]
        command += ["testsrc=size=64x64:rate=10", "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "1"]
        command += ["-g", "5", *video, *audio, "-f", "flv", "pipe:1"]
        result = subprocess.run(command, capture_output=True, check=True, timeout=60)
        flags, tags, trailing = parse_flv(result.stdout)
        self.assertEqual((flags, trailing), (0x05, 0))
        return tags

    def check(self, tags: list, video_codec: str, audio_codec: str, enhanced: bool) -> None:
        videos = [media.parse_video(t.payload) for t in tags if t.tag_type == TAG_VIDEO]
        audios = [media.parse_audio(t.payload) for t in tags if t.tag_type == TAG_AUDIO]
        self.assertTrue(videos[0].is_sequence_header)
        self.assertTrue(audios[0].is_sequence_header)
        # 10 frames with a keyframe every 5.
        self.assertEqual(sum(v.is_keyframe for v in videos), 2)
        self.assertEqual({v.codec for v in videos}, {video_codec})
        self.assertEqual({a.codec for a in audios}, {audio_codec})
        self.assertTrue(
            all(v.enhanced == enhanced and a.enhanced == enhanced for v in videos for a in audios)
        )

    def test_h264_aac(self) -> None:
        tags = self.mux(["-c:v", "libx264"], ["-c:a", "aac"])
        self.check(tags, "H264", "AAC", False)
        header = next(t.payload for t in tags if t.tag_type == TAG_VIDEO)
        self.assertEqual(parse_avc_sequence_header(header)["version"], 1)
        config = next(t.payload for t in tags if t.tag_type == TAG_AUDIO)
        self.assertEqual(parse_aac_config(config), {"object_type": 2, "sample_rate": 48000, "channels": 1})

    def test_hevc_opus(self) -> None:
        tags = self.mux(["-c:v", "libx265", "-x265-params", "log-level=none"], ["-c:a", "libopus"])
        self.check(tags, "H265", "Opus", True)

    def test_av1_flac(self) -> None:
        tags = self.mux(["-c:v", "libaom-av1", "-cpu-used", "8"], ["-c:a", "flac"])
        self.check(tags, "AV1", "FLAC", True)

    def test_vp9_ac3(self) -> None:
        tags = self.mux(["-c:v", "libvpx-vp9", "-deadline", "realtime"], ["-c:a", "ac3"])
        self.check(tags, "VP9", "AC3", True)
