"""Tests of rtmpd.core.fmp4 and its box and codec-configuration modules.

Oracles: pymp4 (an independent ISO BMFF parser) reads every box the muxer
writes; PyAV (FFmpeg's mov demuxer and decoders) and the ffmpeg/ffprobe
binaries read whole files muxed from real encoder output. Golden bytes are
written out from ISO/IEC 14496-12 (boxes), 14496-1/-3 (esds), 14496-15
(avcC/hvcC), AV1-ISOBMFF (av1C), the VP codec ISO binding (vpcC) and Opus
in ISOBMFF (dOps); the codec headers are what x264, x265, SVT-AV1 and
libvpx wrote for the sizes stated.

pymp4 1.4 misreads an avcC with the High-profile extension bytes (it does
not consume them and loses its place in the stream), so whole-file pymp4
parses use a Baseline avcC; real High-profile files are read box by box.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator

import av
from hypothesis import given, settings
from hypothesis import strategies as st
from pymp4.parser import MP4, Box
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rtmpd.core.classify import classify
from rtmpd.core.errors import Fmp4ConfigChanged, Fmp4Error, LocalProtocolError
from rtmpd.core.flv import TAG_AUDIO, TAG_VIDEO, parse_flv
from rtmpd.core.fmp4 import AUDIO_TRACK_ID, VIDEO_TRACK_ID, Fmp4Muxer
from rtmpd.core.fmp4_audio import aac_config, opus_config
from rtmpd.core.fmp4_boxes import (
    FLAGS_NON_SYNC,
    FLAGS_SYNC,
    TrackEntry,
    TrackRun,
    audio_sample_entry,
    box,
    fragment,
    full_box,
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
from rtmpd.core.messages import Message, MessageType
from tests.media_samples import AVC_SEQUENCE_HEADER
from tests.support import IN_CI, require

# -- codec headers real encoders wrote -------------------------------------------------

#: x264 Baseline 1920x1080 (coded as 1088 lines, cropped): AVCDecoderConfigurationRecord.
AVCC_1080 = bytes.fromhex("0142c028ffe100196742c028da01e0089f97011000000300100000030320f1832a01000468ce0fc8")
#: x265 Main 1920x1080 (conformance window): HEVCDecoderConfigurationRecord, VPS/SPS/PPS arrays.
HVCC_1080 = bytes.fromhex(
    "01016000000090000000000078f000fcfdf8f800000f03200001001840010c01ffff0160000003009000000300"
    "00030078959409210001002b420101016000000300900000030000030078a003c0801107cb965654a4c2f016"
    "8080000003008000000c8422000100064401c073c189"
)
#: SVT-AV1 642x362: AV1CodecConfigurationRecord with its sequence header OBU.
AV1C_642 = bytes.fromhex("81010c000a0c0200000d26281b4805f00080")
#: libvpx-vp9 profile 0 level 2.1 8-bit, as ffmpeg sends it: FullBox version 1 and flags, then the record.
VPCC_FULLBOX = bytes.fromhex("010000000015820202020000")
#: The start of a libvpx-vp9 642x362 keyframe (its uncompressed header).
VP9_KEYFRAME_642 = bytes.fromhex("8249834200281016960638241c184a1005b850")
#: AudioSpecificConfig: AAC LC, 48 kHz, stereo / 44.1 kHz, mono.
ASC_48K_STEREO = bytes.fromhex("1190")
ASC_44K_MONO = bytes.fromhex("1208")
OPUS_HEAD_STEREO = b"OpusHead" + bytes([1, 2]) + struct.pack("<HIhB", 312, 48000, 0, 0)

# -- FLV / Enhanced RTMP tag bodies (FLV spec annex E; veovera E-RTMP) ---------------------


def avc_tag(frame_type: int, packet_type: int, data: bytes, cto: int = 0, codec_id: int = 7) -> bytes:
    """A legacy AVC-style video tag: frame type/codec id, AVCPacketType, SI24 composition time, data."""
    return bytes([(frame_type << 4) | codec_id, packet_type]) + cto.to_bytes(3, "big", signed=True) + data


def ex_video(frame_type: int, packet_type: int, fourcc: bytes, body: bytes) -> bytes:
    """An Enhanced RTMP video tag: IsExHeader, frame type, packet type, FourCC, body."""
    return bytes([0x80 | (frame_type << 4) | packet_type]) + fourcc + body


def aac_tag(packet_type: int, data: bytes) -> bytes:
    return bytes([0xAF, packet_type]) + data


def ex_audio(packet_type: int, fourcc: bytes, body: bytes) -> bytes:
    return bytes([0x90 | packet_type]) + fourcc + body


def feed(muxer: Fmp4Muxer, type_id: int, timestamp: int, payload: bytes) -> None:
    message = Message(type_id, timestamp, 1, payload)
    muxer.add(message, classify(message))


def video(muxer: Fmp4Muxer, timestamp: int, payload: bytes) -> None:
    feed(muxer, MessageType.VIDEO, timestamp, payload)


def audio(muxer: Fmp4Muxer, timestamp: int, payload: bytes) -> None:
    feed(muxer, MessageType.AUDIO, timestamp, payload)


def h264_aac_muxer(timestamp: int = 0, asc: bytes = ASC_48K_STEREO, record: bytes = AVCC_1080) -> Fmp4Muxer:
    muxer = Fmp4Muxer()
    video(muxer, timestamp, avc_tag(1, 0, record))
    audio(muxer, timestamp, aac_tag(0, asc))
    return muxer


# -- reading boxes back -----------------------------------------------------------------


def children(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(type, whole box) for each box in data[start:end]; sizes must tile the range exactly."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        assert end - pos >= 8, f"{end - pos} stray bytes at {pos}"
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        assert 8 <= size <= end - pos, f"box {kind!r} of size {size} at {pos} overruns {end}"
        yield kind, data[pos : pos + size]
        pos += size


# Where each container's children start: box header, plus FullBox head and entry count for stsd/dref,
# plus the sample entry fields for a sample entry.
_CHILDREN_AT = {b"stsd": 16, b"dref": 16, b"avc1": 86, b"hvc1": 86, b"av01": 86, b"vp09": 86}
_CHILDREN_AT |= {b"mp4a": 36, b"Opus": 36}
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf"}


def find(data: bytes, *path: bytes) -> list[bytes]:
    """Every box at ``path`` (e.g. b"moov", b"trak", b"tkhd") below the top level of ``data``."""
    found = [whole for kind, whole in children(data) if kind == path[0]]
    for kind in path[1:]:
        found = [
            whole
            for parent in found
            for child_kind, whole in children(parent, _CHILDREN_AT.get(parent[4:8], 8))
            if child_kind == kind
        ]
    return found


def one(data: bytes, *path: bytes) -> bytes:
    found = find(data, *path)
    assert len(found) == 1, f"{len(found)} boxes at {path}"
    return found[0]


def parse_all(data: bytes) -> list:
    """pymp4's reading of a whole file or segment, which must end exactly at the end of ``data``."""
    boxes = MP4.parse(data)
    assert boxes and boxes[-1].end == len(data), f"pymp4 stopped at {boxes[-1].end if boxes else 0}"
    return boxes


def pymp4(whole: bytes, exact: bool = True):
    """pymp4's reading of one box; unless told otherwise, it must have read every byte of it."""
    parsed = Box.parse(whole)
    assert not exact or parsed.end == len(whole), (parsed.end, len(whole))
    return parsed


def fragments_of(data: bytes) -> list[tuple[bytes, bytes]]:
    """(moof, mdat) pairs of a run of fragments."""
    boxes = list(children(data))
    assert [k for k, _ in boxes] == [b"moof", b"mdat"] * (len(boxes) // 2), [k for k, _ in boxes]
    return [(boxes[i][1], boxes[i + 1][1]) for i in range(0, len(boxes), 2)]


def read_samples(moof: bytes, mdat: bytes) -> dict[int, dict]:
    """Per track id: tfdt, trun version, and (duration, size, flags, cto, data) of each sample, via pymp4."""
    parsed = parse_all(moof + mdat)
    out = {}
    for traf in (c for c in parsed[0].children if c.type == b"traf"):
        tfhd, tfdt, trun = traf.children
        assert tfhd.flags.default_base_is_moof and tfdt.version == 1
        pos, samples = trun.data_offset, []
        for info in trun.sample_info:
            flags = info.sample_flags
            raw = (
                {"NOTDEPENDS": 2, "DEPENDS": 1, "UNKNOWN": 0}[str(flags.sample_depends_on)] << 24
                | {"DISPOSABLE": 2, "NOTDISPOSABLE": 1, "UNKNOWN": 0}[str(flags.sample_is_depended_on)] << 22
                | int(flags.sample_is_non_sync_sample) << 16
            )
            cto = info.sample_composition_time_offsets or 0
            data = (moof + mdat)[pos : pos + info.sample_size]
            samples.append((info.sample_duration, info.sample_size, raw, cto, data))
            pos += info.sample_size
        out[tfhd.track_ID] = {"tfdt": tfdt.baseMediaDecodeTime, "version": trun.version, "samples": samples}
    return out


def all_samples(muxed: bytes) -> dict[int, list[tuple[int, int, int, int, int, bytes]]]:
    """Per track: (decode time, duration, size, flags, cto, data) of every sample in a run of fragments,
    checking that each fragment's tfdt continues the previous one."""
    tracks: dict[int, list] = {}
    for moof, mdat in fragments_of(muxed):
        for track_id, run in read_samples(moof, mdat).items():
            samples = tracks.setdefault(track_id, [])
            if samples:
                last = samples[-1]
                assert run["tfdt"] == last[0] + last[1], (track_id, run["tfdt"], last)
            dts = run["tfdt"]
            for sample in run["samples"]:
                samples.append((dts, *sample))
                dts += sample[0]
    return tracks


# -- box layouts ------------------------------------------------------------------------


class BoxLayoutTests(SynchronousTestCase):
    """Sizes, versions and flags of each box, against the byte layouts of the specifications."""

    def test_box_and_full_box_headers(self):
        self.assertEqual(box(b"free", b"ab", b"c"), b"\x00\x00\x00\x0bfreeabc")
        self.assertEqual(full_box(b"test", 1, 0x020304), b"\x00\x00\x00\x0ctest\x01\x02\x03\x04")
        self.assertRaises(LocalProtocolError, full_box, b"test", 256, 0)
        self.assertRaises(LocalProtocolError, full_box, b"test", 0, 1 << 24)

    def test_ftyp(self):
        entry = visual_sample_entry(b"avc1", 16, 16, box(b"avcC", AVCC_1080))
        init = init_segment([TrackEntry(1, True, 90000, entry, 16, 16)])
        kind, ftyp = next(children(init))
        self.assertEqual(ftyp, b"\x00\x00\x00\x1cftypiso5\x00\x00\x02\x00iso5iso6mp41")

    def test_init_segment_h264_aac(self):
        muxer = h264_aac_muxer()
        init = muxer.init_segment()
        self.assertEqual([k for k, _ in children(init)], [b"ftyp", b"moov"])
        parsed = parse_all(init)
        self.assertEqual(parsed[0].major_brand, b"iso5")
        moov = one(init, b"moov")
        self.assertEqual([k for k, _ in children(moov, 8)], [b"mvhd", b"trak", b"trak", b"mvex"])

        mvhd = pymp4(one(init, b"moov", b"mvhd"))
        self.assertEqual((mvhd.end, mvhd.version, mvhd.timescale, mvhd.duration), (108, 0, 1000, 0))
        self.assertEqual(mvhd.next_track_ID, 3)

        tkhds = [pymp4(b) for b in find(init, b"moov", b"trak", b"tkhd")]
        self.assertEqual([(t.end, t.version, t.flags) for t in tkhds], [(92, 0, 3), (92, 0, 3)])
        self.assertEqual([t.track_ID for t in tkhds], [VIDEO_TRACK_ID, AUDIO_TRACK_ID])
        self.assertEqual((tkhds[0].width, tkhds[0].height, tkhds[0].volume), (1920 << 16, 1080 << 16, 0))
        self.assertEqual((tkhds[1].width, tkhds[1].height, tkhds[1].volume), (0, 0, 0x0100))

        mdhds = find(init, b"moov", b"trak", b"mdia", b"mdhd")
        self.assertEqual([pymp4(b).timescale for b in mdhds], [90000, 48000])
        for mdhd in mdhds:
            self.assertEqual((len(mdhd), mdhd[8], mdhd[-4:]), (32, 0, b"\x55\xc4\x00\x00"))  # v0, "und"
        hdlrs = [pymp4(b) for b in find(init, b"moov", b"trak", b"mdia", b"hdlr")]
        self.assertEqual([h.handler_type for h in hdlrs], [b"vide", b"soun"])

        minf = (b"moov", b"trak", b"mdia", b"minf")
        vmhd = one(init, *minf, b"vmhd")
        self.assertEqual(vmhd, full_box(b"vmhd", 0, 1, bytes(8)))
        self.assertEqual(len(vmhd), 20)
        self.assertEqual(one(init, *minf, b"smhd"), b"\x00\x00\x00\x10smhd" + bytes(8))
        for dref in find(init, *minf, b"dinf", b"dref"):
            self.assertEqual(dref, full_box(b"dref", 0, 0, b"\x00\x00\x00\x01", full_box(b"url ", 0, 1)))

        stbl = (*minf, b"stbl")
        for name, size in ((b"stts", 16), (b"stsc", 16), (b"stco", 16), (b"stsz", 20)):
            for found in find(init, *stbl, name):
                self.assertEqual(found, full_box(name, 0, 0, bytes(size - 12)))
        # pymp4 reads no boxes inside an mp4a entry: it stops before the esds.
        stsds = [pymp4(b, exact=False) for b in find(init, *stbl, b"stsd")]
        self.assertEqual([len(s.entries) for s in stsds], [1, 1])
        avc1, mp4a = stsds[0].entries[0], stsds[1].entries[0]
        self.assertEqual((avc1.format, avc1.width, avc1.height, avc1.depth), (b"avc1", 1920, 1080, 24))
        self.assertEqual((avc1.avc_data.profile, avc1.avc_data.level), (0x42, 40))
        self.assertEqual(one(init, *stbl, b"stsd", b"avc1", b"avcC"), box(b"avcC", AVCC_1080))
        self.assertEqual((mp4a.format, mp4a.channels, mp4a.sampling_rate), (b"mp4a", 2, 48000))
        self.assertEqual(len(one(init, *stbl, b"stsd", b"avc1")), 86 + 8 + len(AVCC_1080))

        trexes = [pymp4(b) for b in find(init, b"moov", b"mvex", b"trex")]
        self.assertEqual(
            [(t.end, t.track_ID, t.default_sample_description_index) for t in trexes],
            [(32, 1, 1), (32, 2, 1)],
        )
        self.assertEqual([(t.default_sample_duration, t.default_sample_size) for t in trexes], [(0, 0)] * 2)

    def test_sample_entry_sizes(self):
        self.assertEqual(len(visual_sample_entry(b"avc1", 1, 1)), 86)
        self.assertEqual(len(audio_sample_entry(b"mp4a", 2, 44100)), 36)
        entry = audio_sample_entry(b"mp4a", 2, 44100)
        self.assertEqual(struct.unpack_from(">HHHHI", entry, 24), (2, 16, 0, 0, 44100 << 16))
        # A rate over 16.16's integer range is left to the mdhd timescale.
        self.assertEqual(audio_sample_entry(b"mp4a", 2, 96000)[-4:], bytes(4))
        self.assertRaises(LocalProtocolError, visual_sample_entry, b"avc1", 70000, 1)

    def test_init_segment_needs_distinct_nonzero_ids(self):
        entry = visual_sample_entry(b"avc1", 1, 1)
        self.assertRaises(LocalProtocolError, init_segment, [])
        self.assertRaises(LocalProtocolError, init_segment, [TrackEntry(0, True, 90000, entry)])
        self.assertRaises(LocalProtocolError, init_segment, [TrackEntry(1, True, 90000, entry)] * 2)

    def test_fragment_golden(self):
        run = TrackRun(
            7, 0x1_0000_0000, [(3000, 3, FLAGS_SYNC, 0), (3000, 2, FLAGS_NON_SYNC, 0)], [b"abc", b"de"]
        )
        expected = (
            "00000070 6d6f6f66"  # moof, 112 bytes
            "00000010 6d666864 00000000 00000005"  # mfhd v0, sequence 5
            "00000058 74726166"  # traf
            "00000010 74666864 00020000 00000007"  # tfhd default-base-is-moof, track 7
            "00000014 74666474 01000000 0000000100000000"  # tfdt v1, 64-bit time
            "0000002c 7472756e 00000701 00000002 00000078"  # trun v0: offset, duration, size, flags
            "00000bb8 00000003 02000000"
            "00000bb8 00000002 01010000"
            "0000000d 6d646174 6162636465"  # mdat
        )
        self.assertEqual(fragment(5, [run]).hex(), expected.replace(" ", ""))

    def test_fragment_composition_offsets_and_trun_version(self):
        positive = TrackRun(1, 0, [(3000, 1, FLAGS_SYNC, 6000), (3000, 1, FLAGS_NON_SYNC, 0)], [b"a", b"b"])
        trun = pymp4(one(fragment(1, [positive]), b"moof", b"traf", b"trun"))
        self.assertEqual((trun.version, trun.end), (0, 12 + 8 + 2 * 16))
        self.assertTrue(trun.flags.sample_composition_time_offsets_present)
        negative = TrackRun(1, 0, [(3000, 1, FLAGS_SYNC, 0), (3000, 1, FLAGS_NON_SYNC, -3000)], [b"a", b"b"])
        trun = pymp4(one(fragment(1, [negative]), b"moof", b"traf", b"trun"))
        self.assertEqual(trun.version, 1)
        self.assertEqual([s.sample_composition_time_offsets for s in trun.sample_info], [0, -3000])

    def test_fragment_data_offsets_of_two_tracks(self):
        runs = [
            TrackRun(1, 90, [(3000, 4, FLAGS_SYNC, 0)], [b"vvvv"]),
            TrackRun(2, 48, [(1024, 2, FLAGS_SYNC, 0), (1024, 3, FLAGS_SYNC, 0)], [b"aa", b"bbb"]),
        ]
        muxed = fragment(9, runs)
        parsed = parse_all(muxed)
        self.assertEqual(parsed[0].children[0].sequence_number, 9)
        samples = read_samples(*next(iter(fragments_of(muxed))))
        self.assertEqual([s[4] for s in samples[1]["samples"]], [b"vvvv"])
        self.assertEqual([s[4] for s in samples[2]["samples"]], [b"aa", b"bbb"])
        self.assertEqual((samples[1]["tfdt"], samples[2]["tfdt"]), (90, 48))

    def test_fragment_needs_samples(self):
        self.assertRaises(LocalProtocolError, fragment, 1, [])
        self.assertRaises(LocalProtocolError, fragment, 1, [TrackRun(1, 0, [], [])])


class CodecConfigTests(SynchronousTestCase):
    """Each codec's configuration box, codec string and picture size."""

    def test_avc(self):
        config = avc_config(AVCC_1080)
        self.assertEqual(config.fourcc, b"avc1")
        self.assertEqual(config.config_box, box(b"avcC", AVCC_1080))
        self.assertEqual((config.codec_string, config.width, config.height), ("avc1.42c028", 1920, 1080))

    def test_avc_unreadable_sps_gives_no_size(self):
        # The hand-made header of the relay tests has a 4-byte SPS: the record is fine, the size unknown.
        config = avc_config(AVC_SEQUENCE_HEADER[5:])
        self.assertEqual((config.codec_string, config.width, config.height), ("avc1.64001f", 0, 0))

    def test_avc_bad_records(self):
        self.assertRaises(Fmp4Error, avc_config, b"")
        self.assertRaises(Fmp4Error, avc_config, b"\x02" + AVCC_1080[1:])
        self.assertRaises(Fmp4Error, avc_config, AVCC_1080[:10])

    def test_hevc(self):
        config = hevc_config(HVCC_1080)
        self.assertEqual((config.fourcc, config.config_box), (b"hvc1", box(b"hvcC", HVCC_1080)))
        self.assertEqual((config.codec_string, config.width, config.height), ("hvc1.1.6.L120.90", 1920, 1080))
        self.assertRaises(Fmp4Error, hevc_config, HVCC_1080[:22])
        self.assertRaises(Fmp4Error, hevc_config, HVCC_1080[:40])

    def test_av1(self):
        config = av1_config(AV1C_642)
        self.assertEqual((config.fourcc, config.config_box), (b"av01", box(b"av1C", AV1C_642)))
        self.assertEqual((config.codec_string, config.width, config.height), ("av01.0.01M.08", 642, 362))
        # Without configOBUs the size is unknown until a keyframe carries a sequence header.
        self.assertEqual((av1_config(AV1C_642[:4]).width, av1_config(AV1C_642[:4]).height), (0, 0))
        temporal_unit = b"\x12\x00" + AV1C_642[4:] + b"\x32\x01\x00"  # TD, sequence header, a frame OBU
        self.assertEqual(av1_keyframe_size(temporal_unit), (642, 362))
        self.assertIsNone(av1_keyframe_size(b"\x12\x00\x32\x01\x00"))
        self.assertRaises(Fmp4Error, av1_config, b"\x01" + AV1C_642[1:])

    def test_vp9(self):
        config = vp9_config(VPCC_FULLBOX)
        expected = bytes.fromhex("00000014 76706343 01000000 0015820202020000".replace(" ", ""))
        self.assertEqual(
            (config.fourcc, config.config_box, config.codec_string), (b"vp09", expected, "vp09.00.21.08")
        )
        self.assertEqual(vp9_config(VPCC_FULLBOX[4:]).config_box, expected)  # the bare record
        self.assertEqual(vp9_keyframe_size(VP9_KEYFRAME_642), (642, 362))
        inter = bytes([0x86]) + VP9_KEYFRAME_642[1:]  # frame_type 1
        self.assertIsNone(vp9_keyframe_size(inter))
        self.assertRaises(Fmp4Error, vp9_config, VPCC_FULLBOX[:11])
        self.assertRaises(Fmp4Error, vp9_keyframe_size, b"\x02\x49")

    def test_esds_golden(self):
        config = aac_config(ASC_48K_STEREO, 2, 48000, 2)
        expected = (
            "00000027 65736473 00000000"  # esds v0
            "0319 0000 00"  # ES_Descriptor, 25 bytes: ES_ID 0, no flags
            "0411 40 15 000000 00000000 00000000"  # DecoderConfig: MPEG-4 audio, audio stream
            "0502 1190"  # DecoderSpecificInfo: the AudioSpecificConfig
            "060102"  # SLConfig predefined 2
        )
        self.assertEqual(config.config_box.hex(), expected.replace(" ", ""))
        self.assertEqual((config.fourcc, config.codec_string), (b"mp4a", "mp4a.40.2"))

    def test_esds_long_descriptor_sizes(self):
        # Sizes of 128 and more take two 7-bit groups, the first with its high bit set.
        asc = bytes(range(200))
        esds = aac_config(asc, 2, 48000, 2).config_box
        self.assertEqual(esds[12:15], bytes([0x03, 0x81, 0x61]))  # ES: 3 + 219 + 3 = 225
        self.assertEqual(esds[18:21], bytes([0x04, 0x81, 0x58]))  # DecoderConfig: 13 + 203 = 216
        self.assertEqual(esds[34:37], bytes([0x05, 0x81, 0x48]))  # DecoderSpecificInfo: 200
        self.assertEqual(esds[37:237], asc)
        self.assertEqual(esds[237:], bytes([0x06, 0x01, 0x02]))
        self.assertEqual(struct.unpack_from(">I", esds)[0], len(esds))

    def test_dops_golden(self):
        config = opus_config(OPUS_HEAD_STEREO)
        self.assertEqual(config.config_box.hex(), "00000013644f7073000201380000bb80000000")
        self.assertEqual(
            (config.fourcc, config.codec_string, config.sample_rate, config.channels),
            (b"Opus", "opus", 48000, 2),
        )
        surround = (
            b"OpusHead"
            + bytes([1, 6])
            + struct.pack("<HIhB", 312, 44100, -256, 1)
            + bytes([4, 2, 0, 4, 1, 2, 3, 5])
        )
        self.assertEqual(
            opus_config(surround).config_box[8:],
            bytes([0, 6, 0x01, 0x38, 0, 0, 0xAC, 0x44, 0xFF, 0x00, 1, 4, 2, 0, 4, 1, 2, 3, 5]),
        )
        self.assertRaises(Fmp4Error, opus_config, surround[:-1])
        self.assertRaises(Fmp4Error, opus_config, b"OpusTags" + OPUS_HEAD_STEREO[8:])

    @settings(max_examples=300, deadline=None)
    @given(
        st.binary(max_size=64),
        st.sampled_from(
            [
                avc_config,
                hevc_config,
                av1_config,
                vp9_config,
                opus_config,
                vp9_keyframe_size,
                av1_keyframe_size,
            ]
        ),
    )
    def test_readers_raise_only_fmp4_error(self, data, reader):
        for candidate in (data, AVCC_1080[:6] + data, HVCC_1080[:23] + data, AV1C_642[:4] + data):
            try:
                reader(candidate)
            except Fmp4Error:
                pass


# -- the muxer --------------------------------------------------------------------------


class MuxerTests(SynchronousTestCase):
    """What ``Fmp4Muxer`` does with each kind of message, read back with pymp4."""

    def muxed(self, muxer: Fmp4Muxer, *parts: bytes) -> dict[int, list]:
        return all_samples(b"".join(parts))

    def test_tracks_and_codec_strings(self):
        muxer = h264_aac_muxer(asc=ASC_44K_MONO)
        (v, a) = muxer.tracks
        self.assertEqual(
            (v.track_id, v.kind, v.codec, v.codec_string, v.timescale),
            (1, "video", "H264", "avc1.42c028", 90000),
        )
        self.assertEqual((v.width, v.height), (1920, 1080))
        self.assertEqual((a.track_id, a.kind, a.codec, a.codec_string), (2, "audio", "AAC", "mp4a.40.2"))
        self.assertEqual((a.timescale, a.sample_rate, a.channels), (44100, 44100, 1))

    def test_samples_durations_and_flags(self):
        muxer = h264_aac_muxer()
        video(muxer, 0, avc_tag(1, 1, b"K0"))
        audio(muxer, 0, aac_tag(1, b"a0"))
        video(muxer, 40, avc_tag(2, 1, b"P1"))
        audio(muxer, 21, aac_tag(1, b"a1"))
        video(muxer, 80, avc_tag(3, 1, b"B2"))  # disposable
        out = self.muxed(muxer, muxer.flush(final=True))
        self.assertEqual(
            out[1],
            [
                (0, 3600, 2, FLAGS_SYNC, 0, b"K0"),
                (3600, 3600, 2, FLAGS_NON_SYNC, 0, b"P1"),
                (7200, 3600, 2, FLAGS_NON_SYNC | 0x00800000, 0, b"B2"),
            ],
        )
        self.assertEqual(out[2], [(0, 1008, 2, FLAGS_SYNC, 0, b"a0"), (1008, 1008, 2, FLAGS_SYNC, 0, b"a1")])

    def test_last_sample_waits_for_its_duration(self):
        muxer = h264_aac_muxer()
        video(muxer, 0, avc_tag(1, 1, b"K0"))
        self.assertEqual(muxer.flush(), b"")
        video(muxer, 40, avc_tag(2, 1, b"P1"))
        video(muxer, 80, avc_tag(2, 1, b"P2"))
        self.assertEqual(muxer.pending(VIDEO_TRACK_ID), (2, 7200))
        first = muxer.flush()
        self.assertEqual(muxer.pending(VIDEO_TRACK_ID), (0, 0))
        video(muxer, 120, avc_tag(1, 1, b"K3"))  # add the keyframe, then flush: it opens the next fragment
        second = muxer.flush()
        third = muxer.flush(final=True)
        self.assertEqual(muxer.flush(final=True), b"")
        per_fragment = [read_samples(*f)[1]["samples"] for f in fragments_of(first + second + third)]
        self.assertEqual([[s[4] for s in f] for f in per_fragment], [[b"K0", b"P1"], [b"P2"], [b"K3"]])
        self.assertEqual(per_fragment[2][0][0], 3600)  # the last one takes its predecessor's duration
        self.assertEqual(muxer.fragments, 3)
        mfhds = [pymp4(one(f, b"moof", b"mfhd")) for f in (first, second, third)]
        self.assertEqual([m.sequence_number for m in mfhds], [1, 2, 3])
        all_samples(first + second + third)  # tfdt continuity

    def test_default_durations_of_a_lone_sample(self):
        for setup, frame, expected in (
            (avc_tag(1, 0, AVCC_1080), avc_tag(1, 1, b"K"), 3000),
            (aac_tag(0, ASC_48K_STEREO), aac_tag(1, b"a"), 1024),
            (ex_audio(0, b"Opus", OPUS_HEAD_STEREO), ex_audio(1, b"Opus", b"o"), 960),
        ):
            muxer = Fmp4Muxer()
            type_id = MessageType.VIDEO if setup[0] & 0x0F == 7 else MessageType.AUDIO
            feed(muxer, type_id, 0, setup)
            feed(muxer, type_id, 5, frame)
            (samples,) = self.muxed(muxer, muxer.flush(final=True)).values()
            self.assertEqual(samples[0][1], expected)

    def test_composition_offsets(self):
        muxer = h264_aac_muxer()
        video(muxer, 0, avc_tag(1, 1, b"I", cto=80))
        video(muxer, 40, avc_tag(2, 1, b"P", cto=120))
        video(muxer, 80, avc_tag(2, 1, b"B", cto=-40))
        muxed = muxer.flush(final=True)
        self.assertEqual(pymp4(one(muxed, b"moof", b"traf", b"trun")).version, 1)
        self.assertEqual([s[4] for s in self.muxed(muxer, muxed)[1]], [7200, 10800, -3600])

    def test_enhanced_rtmp_hevc(self):
        muxer = Fmp4Muxer()
        video(muxer, 0, ex_video(1, 0, b"hvc1", HVCC_1080))
        video(muxer, 0, ex_video(1, 1, b"hvc1", (80).to_bytes(3, "big") + b"KEY"))  # CodedFrames: SI24 first
        video(muxer, 40, ex_video(2, 3, b"hvc1", b"INTER"))  # CodedFramesX: no composition time
        video(muxer, 80, ex_video(2, 2, b"hvc1", b""))  # SequenceEnd
        (track,) = muxer.tracks
        self.assertEqual((track.codec, track.codec_string), ("H265", "hvc1.1.6.L120.90"))
        init = muxer.init_segment()
        self.assertEqual(
            one(init, b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"hvc1", b"hvcC"),
            box(b"hvcC", HVCC_1080),
        )
        out = self.muxed(muxer, muxer.flush(final=True))[1]
        self.assertEqual(
            [(s[3], s[4], s[5]) for s in out], [(FLAGS_SYNC, 7200, b"KEY"), (FLAGS_NON_SYNC, 0, b"INTER")]
        )

    def test_enhanced_rtmp_h264_and_mp4a(self):
        muxer = Fmp4Muxer()
        video(muxer, 0, ex_video(1, 0, b"avc1", AVCC_1080))
        audio(muxer, 0, ex_audio(0, b"mp4a", ASC_44K_MONO))
        video(muxer, 0, ex_video(1, 1, b"avc1", (0).to_bytes(3, "big") + b"K"))
        audio(muxer, 10, ex_audio(1, b"mp4a", b"raw"))
        self.assertEqual([t.codec for t in muxer.tracks], ["H264", "AAC"])
        self.assertEqual(muxer.tracks[1].timescale, 44100)
        out = self.muxed(muxer, muxer.flush(final=True))
        self.assertEqual((out[1][0][5], out[2][0][5]), (b"K", b"raw"))

    def test_av1_temporal_delimiter_is_dropped(self):
        muxer = Fmp4Muxer()
        video(muxer, 0, ex_video(1, 0, b"av01", AV1C_642))
        video(muxer, 0, ex_video(1, 1, b"av01", b"\x12\x00\x32\x01\x00"))
        out = self.muxed(muxer, muxer.flush(final=True))[1]
        self.assertEqual(out[0][5], b"\x32\x01\x00")
        self.assertEqual((muxer.tracks[0].width, muxer.tracks[0].height), (642, 362))

    def test_vp9_size_from_first_keyframe(self):
        muxer = Fmp4Muxer()
        video(muxer, 0, ex_video(1, 0, b"vp09", VPCC_FULLBOX))
        self.assertEqual(muxer.tracks[0].width, 0)
        video(muxer, 0, ex_video(1, 1, b"vp09", VP9_KEYFRAME_642))
        init = muxer.init_segment()
        self.assertEqual(pymp4(one(init, b"moov", b"trak", b"tkhd")).width, 642 << 16)
        self.assertEqual(
            one(init, b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"vp09", b"vpcC"),
            vp9_config(VPCC_FULLBOX).config_box,
        )

    def test_opus(self):
        muxer = Fmp4Muxer()
        audio(muxer, 0, ex_audio(0, b"Opus", OPUS_HEAD_STEREO))
        audio(muxer, 0, ex_audio(4, b"Opus", b"\x01\x02"))  # MultichannelConfig: no sample
        audio(muxer, 0, ex_audio(1, b"Opus", b"o0"))
        audio(muxer, 20, ex_audio(1, b"Opus", b"o1"))
        self.assertEqual(muxer.tracks[0].timescale, 48000)
        out = self.muxed(muxer, muxer.flush(final=True))[2]
        self.assertEqual([(s[0], s[1], s[5]) for s in out], [(0, 960, b"o0"), (960, 960, b"o1")])

    def test_audio_rounding_has_no_drift(self):
        muxer = h264_aac_muxer(asc=ASC_44K_MONO)
        for ms in (0, 23, 46, 70):
            audio(muxer, ms, aac_tag(1, b"a"))
        out = self.muxed(muxer, muxer.flush())[2]
        # round(ms * 44.1): 0, 1014, 2029, 3087; durations are their differences.
        self.assertEqual([(s[0], s[1]) for s in out], [(0, 1014), (1014, 1015), (2029, 1058)])

    def test_decode_times_continue_across_the_32_bit_wrap(self):
        start = 2**32 - 50
        muxer = h264_aac_muxer(start)
        parts = []
        for i in range(4):
            video(muxer, (start + 40 * i) % 2**32, avc_tag(1 if i == 0 else 2, 1, bytes([i])))
            parts.append(muxer.flush())
        parts.append(muxer.flush(final=True))
        out = self.muxed(muxer, *parts)[1]
        self.assertEqual([s[0] for s in out], [(start + 40 * i) * 90 for i in range(4)])
        self.assertEqual({s[1] for s in out}, {3600})

    def test_timestamps_going_back_are_raised_to_the_previous_one(self):
        muxer = h264_aac_muxer()
        video(muxer, 100, avc_tag(1, 1, b"a"))
        video(muxer, 80, avc_tag(2, 1, b"b"))
        video(muxer, 140, avc_tag(2, 1, b"c"))
        out = self.muxed(muxer, muxer.flush(final=True))[1]
        self.assertEqual([(s[0], s[1]) for s in out], [(9000, 0), (9000, 3600), (12600, 3600)])

    def test_a_jump_too_long_for_a_duration_is_cut_short(self):
        muxer = h264_aac_muxer()
        video(muxer, 0, avc_tag(1, 1, b"a"))
        video(muxer, 2**30, avc_tag(2, 1, b"b"))  # 12 days: 9.7e10 ticks at 90 kHz
        out = self.muxed(muxer, muxer.flush(final=True))[1]
        self.assertEqual(out[0][1], 0xFFFFFFFF)
        self.assertEqual(out[1][0], 0xFFFFFFFF)

    def test_flush_one_track(self):
        muxer = h264_aac_muxer()
        for ms in (0, 40):
            video(muxer, ms, avc_tag(1 if ms == 0 else 2, 1, b"v"))
            audio(muxer, ms, aac_tag(1, b"a"))
        audio_only = muxer.flush(track_ids={AUDIO_TRACK_ID})
        self.assertEqual(list(read_samples(*fragments_of(audio_only)[0])), [AUDIO_TRACK_ID])
        self.assertEqual(muxer.pending(VIDEO_TRACK_ID), (1, 3600))
        self.assertEqual(list(read_samples(*fragments_of(muxer.flush())[0])), [VIDEO_TRACK_ID])

    def test_what_is_skipped(self):
        muxer = Fmp4Muxer()
        video(muxer, 0, avc_tag(1, 1, b"too early"))  # no sequence header yet
        audio(muxer, 0, aac_tag(1, b"too early"))
        video(muxer, 0, avc_tag(1, 0, AVCC_1080))
        video(muxer, 0, avc_tag(2, 1, b"before the keyframe"))
        video(muxer, 0, avc_tag(1, 1, b""))  # no data
        audio(muxer, 0, bytes([0x2F]) + b"mp3")
        video(muxer, 0, bytes([0x14]) + b"vp6")
        audio(muxer, 0, ex_audio(1, b"fLaC", b"flac"))
        # E-RTMP multitrack, one track (AvMultitrackType 0), CodedFrames, avc1, track id 1.
        video(muxer, 0, bytes([0x80 | 0x10 | 6, 0x01]) + b"avc1" + b"\x01" + bytes(3) + b"mt")
        feed(muxer, MessageType.DATA_AMF0, 0, b"\x02\x00\x0aonMetaData")
        video(muxer, 0, avc_tag(1, 2, b""))  # end of sequence
        self.assertEqual(
            dict(muxer.skipped),
            {
                "no sequence header": 2,
                "before the first keyframe": 1,
                "empty frame": 1,
                "unsupported codec": 3,
                "multitrack": 1,
            },
        )
        self.assertEqual(muxer.flush(final=True), b"")

    def test_sequence_headers(self):
        muxer = Fmp4Muxer()
        self.assertRaises(LocalProtocolError, muxer.init_segment)
        video(muxer, 0, avc_tag(1, 0, AVC_SEQUENCE_HEADER[5:]))
        video(muxer, 0, avc_tag(1, 0, AVCC_1080))  # no sample yet: replaces the first
        self.assertEqual(muxer.tracks[0].width, 1920)
        video(muxer, 0, avc_tag(1, 0, AVCC_1080))  # a repeat is ignored
        video(muxer, 0, avc_tag(1, 1, b"K"))
        self.assertRaises(Fmp4ConfigChanged, video, muxer, 40, avc_tag(1, 0, AVC_SEQUENCE_HEADER[5:]))
        self.assertRaises(Fmp4ConfigChanged, video, muxer, 40, ex_video(1, 0, b"hvc1", HVCC_1080))
        self.assertEqual(muxer.tracks[0].codec_string, "avc1.42c028")
        init = muxer.init_segment()
        audio(muxer, 40, aac_tag(0, ASC_48K_STEREO))  # after the init segment: not in it
        audio(muxer, 40, aac_tag(1, b"a"))
        self.assertEqual(muxer.skipped["track not in the init segment"], 1)
        self.assertEqual(len(muxer.tracks), 1)
        self.assertEqual(muxer.init_segment(), init)

    def test_config_change_after_init_even_without_samples(self):
        muxer = h264_aac_muxer()
        muxer.init_segment()
        self.assertRaises(Fmp4ConfigChanged, audio, muxer, 0, aac_tag(0, ASC_44K_MONO))

    def test_bad_input_raises_fmp4_error_and_changes_nothing(self):
        muxer = h264_aac_muxer()
        video(muxer, 0, avc_tag(1, 1, b"K"))
        video(muxer, 40, avc_tag(2, 1, b"P"))
        self.assertRaises(Fmp4Error, video, muxer, 80, bytes([0x27, 0x01, 0x00]))  # ends in its header
        self.assertRaises(Fmp4Error, video, muxer, 80, ex_video(2, 1, b"avc1", b"\x00"))  # SI24 cut short
        self.assertRaises(Fmp4Error, audio, Fmp4Muxer(), 0, aac_tag(0, b"\x17"))  # truncated ASC
        self.assertRaises(Fmp4Error, audio, Fmp4Muxer(), 0, aac_tag(0, b"\x16\x90"))  # reserved rate index 13
        self.assertRaises(Fmp4Error, video, Fmp4Muxer(), 0, ex_video(1, 0, b"av01", b"\x00"))
        self.assertEqual(muxer.pending(VIDEO_TRACK_ID), (1, 3600))
        out = self.muxed(muxer, muxer.flush(final=True))[1]
        self.assertEqual([s[5] for s in out], [b"K", b"P"])


# -- properties -------------------------------------------------------------------------

_EVENT = st.tuples(
    st.booleans(),  # video (else audio)
    st.integers(0, 70),  # ms since the previous message
    st.integers(1, 40),  # size
    st.booleans(),  # keyframe
    st.integers(-60, 200),  # composition time (ms)
    st.sampled_from(["none", "none", "flush", "flush one"]),
)
_START = st.one_of(st.integers(2**32 - 2000, 2**32 - 1), st.integers(0, 2**32 - 1))


class PropertyTests(SynchronousTestCase):
    """Any stream of frames: pymp4 reads back exactly the samples, durations, flags and times sent."""

    @settings(max_examples=150, deadline=None)
    @given(_START, st.lists(_EVENT, max_size=60), st.sampled_from([ASC_44K_MONO, ASC_48K_STEREO]))
    def test_any_stream(self, start, events, asc):
        rate = 44100 if asc == ASC_44K_MONO else 48000
        muxer = h264_aac_muxer(start, asc)
        init = muxer.init_segment()
        self.assertEqual([b.type for b in parse_all(init)], [b"ftyp", b"moov"])
        parts, ms = [], start
        sent: dict[int, list] = {VIDEO_TRACK_ID: [], AUDIO_TRACK_ID: []}
        for i, (is_video, delta, size, key, cto, action) in enumerate(events):
            ms += delta
            data = i.to_bytes(2, "big") * ((size + 1) // 2)
            if is_video:
                video(muxer, ms % 2**32, avc_tag(1 if key else 2, 1, data, cto))
                if key or sent[VIDEO_TRACK_ID]:  # a video track starts at its first keyframe
                    sent[VIDEO_TRACK_ID].append(
                        (ms * 90, FLAGS_SYNC if key else FLAGS_NON_SYNC, cto * 90, data)
                    )
            else:
                audio(muxer, ms % 2**32, aac_tag(1, data))
                sent[AUDIO_TRACK_ID].append(((ms * rate + 500) // 1000, FLAGS_SYNC, 0, data))
            if action == "flush":
                parts.append(muxer.flush())
            elif action == "flush one":
                parts.append(muxer.flush(track_ids=[VIDEO_TRACK_ID if is_video else AUDIO_TRACK_ID]))
        parts.append(muxer.flush(final=True))
        got = all_samples(b"".join(parts))
        sequence_numbers = [
            parse_all(moof)[0].children[0].sequence_number for moof, _ in fragments_of(b"".join(parts))
        ]
        self.assertEqual(sequence_numbers, list(range(1, len(sequence_numbers) + 1)))
        for track_id, default in ((VIDEO_TRACK_ID, 3000), (AUDIO_TRACK_ID, 1024)):
            expected, previous = [], None
            for n, (dts, flags, cto, data) in enumerate(sent[track_id]):
                if n + 1 < len(sent[track_id]):
                    duration = sent[track_id][n + 1][0] - dts
                else:
                    duration = previous or default  # a last sample never gets 0
                expected.append((dts, duration, len(data), flags, cto, data))
                previous = duration
            self.assertEqual(got.get(track_id, []), expected)

    @settings(max_examples=50, deadline=None)
    @given(_START, st.lists(st.tuples(st.integers(0, 70), st.booleans()), min_size=1, max_size=30))
    def test_cutting_at_keyframes_starts_every_fragment_with_one(self, start, frames):
        muxer = h264_aac_muxer(start)
        parts, ms = [], start
        for i, (delta, key) in enumerate(frames):
            ms += delta
            video(muxer, ms % 2**32, avc_tag(1 if key or i == 0 else 2, 1, b"f"))
            if key:
                parts.append(muxer.flush())
        parts.append(muxer.flush(final=True))
        for moof, mdat in fragments_of(b"".join(parts)):
            first = read_samples(moof, mdat)[VIDEO_TRACK_ID]["samples"][0]
            self.assertEqual(first[2], FLAGS_SYNC)


# -- real media -------------------------------------------------------------------------


def ffmpeg9() -> str:
    """The ffmpeg 9 binary imageio-ffmpeg ships (HEVC, AV1, VP9, Opus in Enhanced RTMP FLV)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # not installed, or no binary for this platform
        message = f"imageio-ffmpeg (ffmpeg 9) is not available: {e}"
        if IN_CI:
            raise AssertionError(message) from e
        raise SkipTest(message) from e


FPS = 25
SECONDS = 3
WIDTH, HEIGHT = 320, 180  # 180 lines: H.264 and HEVC crop them from a padded picture


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class RealMediaTests(SynchronousTestCase):
    """Real encoders' FLV -> rtmpd's FLV reader and classifier -> the muxer -> FFmpeg decodes it cleanly."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="rtmpd-fmp4-")
        self.addCleanup(shutil.rmtree, self.dir)

    def encode(self, ffmpeg: str, video_args: list[str], audio_args: list[str], rate: int) -> str:
        path = os.path.join(self.dir, "in.flv")
        result = run(
            [
                ffmpeg,
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size={WIDTH}x{HEIGHT}:rate={FPS}",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency=440:sample_rate={rate}",
                "-t",
                str(SECONDS),
                "-pix_fmt",
                "yuv420p",
                *video_args,
                *audio_args,
                "-f",
                "flv",
                path,
            ]
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return path

    def mux(self, flv: str, shift: int = 0) -> tuple[str, Fmp4Muxer, dict[int, int]]:
        """Mux an FLV file, cut at each keyframe: the MP4's path, the muxer, and frames per tag type."""
        with open(flv, "rb") as f:
            _, tags, _ = parse_flv(f.read())
        muxer, parts, frames, init = Fmp4Muxer(), [], {TAG_VIDEO: 0, TAG_AUDIO: 0}, None
        for tag in tags:
            if tag.tag_type not in (TAG_VIDEO, TAG_AUDIO):
                continue
            message = Message(tag.tag_type, (tag.timestamp + shift) % 2**32, 1, tag.payload)
            info = classify(message)
            muxer.add(message, info)
            if not info.is_config and info.first is not None and info.first.packet_type in (1, 3):
                frames[tag.tag_type] += 1
            if info.is_keyframe:
                init = init or muxer.init_segment()
                parts.append(muxer.flush())
        parts.append(muxer.flush(final=True))
        path = os.path.join(self.dir, "out.mp4")
        with open(path, "wb") as f:
            f.write(init + b"".join(parts))
        self.assertEqual(dict(muxer.skipped), {})
        self.assertGreater(muxer.fragments, 1)
        return path, muxer, frames

    def check_with_pyav(self, path: str, codecs: tuple[str, str], frames: dict[int, int]) -> bool:
        """PyAV demuxes and decodes every packet with no error: right codecs, size, frame count, duration.

        The duration is the span of the decoded pictures' presentation times plus one frame (FFmpeg
        counts a fragmented track's duration from time 0, whatever its first tfdt). Returns whether
        any packet had a composition offset (pts != dts).
        """
        with av.logging.Capture() as logs, av.open(path) as container:
            v, a = container.streams.video[0], container.streams.audio[0]
            self.assertEqual((v.codec_context.name, a.codec_context.name), codecs)
            pictures, audio_frames, reordered = [], 0, False
            for packet in container.demux():
                if packet.size == 0:
                    continue
                reordered = reordered or packet.pts != packet.dts
                for frame in packet.decode():
                    if packet.stream.index == v.index:
                        pictures.append(frame)
                    else:
                        audio_frames += 1
            pictures.extend(v.codec_context.decode(None))  # drain the reorder buffer
            time_base = v.time_base
        self.assertEqual([entry for entry in logs if entry[0] <= av.logging.ERROR], [])
        self.assertEqual(len(pictures), frames[TAG_VIDEO])
        self.assertEqual({(p.width, p.height) for p in pictures}, {(WIDTH, HEIGHT)})
        self.assertGreaterEqual(audio_frames, frames[TAG_AUDIO] - 2)  # a decoder may swallow priming
        times = [p.pts for p in pictures]
        self.assertEqual(len(set(times)), len(times))
        duration = float((max(times) - min(times)) * time_base) + 1 / FPS
        self.assertLessEqual(abs(duration - frames[TAG_VIDEO] / FPS), 1 / FPS)
        return reordered

    def check_ffmpeg_decodes(self, ffmpeg: str, path: str) -> None:
        result = run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"])
        self.assertEqual((result.returncode, result.stderr), (0, ""))

    def test_h264_aac_from_debian_ffmpeg(self):
        ffmpeg, ffprobe = require("ffmpeg"), require("ffprobe")
        flv = self.encode(ffmpeg, ["-c:v", "libx264", "-bf", "2", "-g", "30"], ["-c:a", "aac"], 44100)
        path, muxer, frames = self.mux(flv)
        self.assertEqual(frames[TAG_VIDEO], FPS * SECONDS)
        self.assertEqual(
            [(t.codec, t.width, t.height) for t in muxer.tracks], [("H264", WIDTH, HEIGHT), ("AAC", 0, 0)]
        )
        self.check_ffmpeg_decodes(ffmpeg, path)
        probe = run([ffprobe, "-v", "error", "-show_streams", "-of", "json", path])
        self.assertEqual((probe.returncode, probe.stderr), (0, ""))
        streams = json.loads(probe.stdout)["streams"]
        self.assertEqual([s["codec_name"] for s in streams], ["h264", "aac"])
        self.assertEqual(
            (streams[0]["width"], streams[0]["height"], int(streams[1]["sample_rate"])),
            (WIDTH, HEIGHT, 44100),
        )
        self.assertLessEqual(abs(float(streams[0]["duration"]) - SECONDS), 1 / FPS)
        reordered = self.check_with_pyav(path, ("h264", "aac"), frames)
        self.assertTrue(reordered, "B-frames should give composition offsets")

    def test_h264_aac_across_the_timestamp_wrap(self):
        ffmpeg = require("ffmpeg")
        flv = self.encode(ffmpeg, ["-c:v", "libx264", "-bf", "2", "-g", "30"], ["-c:a", "aac"], 48000)
        path, muxer, frames = self.mux(flv, shift=2**32 - 1500)  # the clock wraps 1.5 s in
        self.check_ffmpeg_decodes(ffmpeg, path)
        self.check_with_pyav(path, ("h264", "aac"), frames)
        with open(path, "rb") as f:
            last_tfdt = list(read_samples(*fragments_of(f.read()[len(muxer.init_segment()) :])[-1]).values())
        self.assertGreater(last_tfdt[0]["tfdt"], 2**32)

    def modern(self, video_args: list[str], codecs: tuple[str, str], name: str) -> None:
        ffmpeg = ffmpeg9()
        flv = self.encode(ffmpeg, video_args, ["-c:a", "libopus", "-b:a", "48k"], 48000)
        path, muxer, frames = self.mux(flv)
        self.assertEqual([t.codec for t in muxer.tracks], [name, "Opus"])
        self.assertEqual((muxer.tracks[0].width, muxer.tracks[0].height), (WIDTH, HEIGHT))
        self.check_ffmpeg_decodes(ffmpeg, path)
        self.check_with_pyav(path, codecs, frames)

    def test_hevc_opus(self):
        x265 = f"log-level=error:keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=3"
        self.modern(
            ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", x265], ("hevc", "opus"), "H265"
        )

    def test_av1_opus(self):
        self.modern(
            ["-c:v", "libsvtav1", "-preset", "12", "-g", str(FPS), "-svtav1-params", "scd=0"],
            ("libdav1d", "opus"),
            "AV1",
        )

    def test_vp9_opus(self):
        self.modern(
            ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", str(FPS)],
            ("vp9", "opus"),
            "VP9",
        )
