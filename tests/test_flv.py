"""Tests of rtmpd.core.flv: FLV header/tags, the incremental reader, script data.

Golden bytes are written out from the Adobe FLV specification v10.1 annex
E; Py3AMF (pyamf) is the independent decoder for the patched metadata.
"""

from __future__ import annotations

import struct

import pyamf
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0
from rtmpd.core.errors import LocalProtocolError, MalformedTag
from rtmpd.core.flv import (
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FLVReader,
    Tag,
    encode_header,
    encode_script_tag_payload,
    encode_tag,
    metadata_with_placeholders,
    parse_flv,
    patch_number,
    unwrap_set_data_frame,
)

HEADER = bytes.fromhex("464c5601 05 00000009 00000000")


def build_file(tags: list[tuple[int, int, bytes]]) -> tuple[bytes, list[Tag]]:
    """Encode ``tags`` after a header; return the file and the Tags a reader must find."""
    out = bytearray(encode_header(True, True))
    expected = []
    for tag_type, timestamp, payload in tags:
        expected.append(Tag(tag_type, timestamp, payload, len(out)))
        out += encode_tag(tag_type, timestamp, payload)
    return bytes(out), expected


SAMPLE_FILE, SAMPLE_TAGS = build_file(
    [
        (TAG_SCRIPT, 0, amf0.encode_many("onMetaData", amf0.ECMAArray({"width": 640.0}))),
        (TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f"),
        (TAG_AUDIO, 0, b"\xaf\x00\x12\x10"),
        (TAG_VIDEO, 40, b"\x17\x01\x00\x00\x00" + bytes(50)),
        (TAG_AUDIO, 0x01000000, b""),
        (TAG_VIDEO, 0xFFFFFFFF, b"\x27\x01\x00\x00\x00\x01"),
    ]
)

tag_lists = st.lists(
    st.tuples(
        st.sampled_from([TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT]),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=40),
    ),
    max_size=8,
)


class EncodeTests(SynchronousTestCase):
    def test_header_golden_bytes(self) -> None:
        self.assertEqual(encode_header(True, True), HEADER)
        self.assertEqual(encode_header(False, True), bytes.fromhex("464c5601 01 00000009 00000000"))
        self.assertEqual(encode_header(True, False), bytes.fromhex("464c5601 04 00000009 00000000"))
        self.assertEqual(encode_header(False, False), bytes.fromhex("464c5601 00 00000009 00000000"))

    def test_tag_golden_bytes(self) -> None:
        self.assertEqual(
            encode_tag(TAG_VIDEO, 0x1234, b"\xab\xcd"),
            bytes.fromhex("09 000002 001234 00 000000 abcd 0000000d"),
        )

    def test_extended_timestamp(self) -> None:
        # Low 24 bits first, then the upper 8 bits in TimestampExtended.
        self.assertEqual(
            encode_tag(TAG_AUDIO, 0x12345678, b"x"),
            bytes.fromhex("08 000001 345678 12 000000 78 0000000c"),
        )
        self.assertEqual(encode_tag(TAG_AUDIO, 0xFFFFFFFF, b"")[4:8], b"\xff\xff\xff\xff")
        self.assertEqual(encode_tag(TAG_AUDIO, 0x1000000, b"")[4:8], b"\x00\x00\x00\x01")

    def test_previous_tag_size(self) -> None:
        for size in (0, 1, 300, 70000):
            tag = encode_tag(TAG_SCRIPT, 0, bytes(size))
            self.assertEqual(len(tag), 11 + size + 4)
            self.assertEqual(struct.unpack(">I", tag[-4:])[0], 11 + size)
            self.assertEqual(int.from_bytes(tag[1:4], "big"), size)

    def test_refuses_what_it_cannot_encode(self) -> None:
        for tag_type, timestamp, payload in (
            (TAG_AUDIO, -1, b""),
            (TAG_AUDIO, 2**32, b""),
            (256, 0, b""),
            (-1, 0, b""),
            (TAG_VIDEO, 0, bytes(2**24)),
        ):
            with self.assertRaises(LocalProtocolError):
                encode_tag(tag_type, timestamp, payload)
        # The largest body still fits.
        self.assertEqual(encode_tag(TAG_VIDEO, 0, bytes(2**24 - 1))[1:4], b"\xff\xff\xff")


class ReaderTests(SynchronousTestCase):
    def test_parse_sample_file(self) -> None:
        flags, tags, trailing = parse_flv(SAMPLE_FILE)
        self.assertEqual((flags, trailing), (0x05, 0))
        self.assertEqual(tags, SAMPLE_TAGS)
        self.assertEqual(tags[0].offset, 13)
        self.assertEqual(tags[4].timestamp, 0x01000000)
        self.assertEqual(tags[5].timestamp, 0xFFFFFFFF)

    def test_byte_at_a_time(self) -> None:
        reader = FLVReader()
        tags = []
        for i in range(len(SAMPLE_FILE)):
            tags += reader.feed(SAMPLE_FILE[i : i + 1])
        self.assertEqual(tags, SAMPLE_TAGS)
        self.assertEqual((reader.pending_bytes, reader.header_flags, reader.version), (0, 5, 1))

    def test_header_state_before_and_after(self) -> None:
        reader = FLVReader()
        self.assertEqual(reader.feed(SAMPLE_FILE[:8]), [])
        self.assertIsNone(reader.header_flags)
        self.assertEqual(reader.pending_bytes, 8)
        reader.feed(SAMPLE_FILE[8:20])
        self.assertEqual(reader.header_flags, 5)
        self.assertEqual(reader.pending_bytes, 7)

    @settings(max_examples=200, deadline=None)
    @given(tag_lists, st.lists(st.integers(0, 2000), max_size=10))
    def test_any_split_gives_the_same_tags(self, tags, cuts) -> None:
        data, expected = build_file(tags)
        points = sorted({min(c, len(data)) for c in cuts})
        reader = FLVReader()
        found: list[Tag] = []
        start = 0
        for point in [*points, len(data)]:
            found += reader.feed(data[start:point])
            start = point
        self.assertEqual(found, expected)
        self.assertEqual(reader.pending_bytes, 0)
        self.assertEqual(parse_flv(data), (5, expected, 0))

    def test_truncated_file_gives_tags_up_to_the_cut(self) -> None:
        ends = [t.offset + 11 + len(t.payload) + 4 for t in SAMPLE_TAGS]
        for cut in range(9, len(SAMPLE_FILE) + 1):
            flags, tags, trailing = parse_flv(SAMPLE_FILE[:cut])
            complete = [t for t, end in zip(SAMPLE_TAGS, ends, strict=True) if end <= cut]
            self.assertEqual(tags, complete, msg=f"cut at {cut}")
            last_end = max([13, *(e for e in ends if e <= cut)]) if cut >= 13 else 9
            self.assertEqual(trailing, cut - last_end, msg=f"cut at {cut}")

    def test_shorter_than_header(self) -> None:
        for cut in range(9):
            with self.assertRaises(MalformedTag):
                parse_flv(SAMPLE_FILE[:cut])

    def test_corrupt_tag_size(self) -> None:
        second = SAMPLE_TAGS[1].offset
        for size in (0, 3, len(SAMPLE_TAGS[1].payload) + 1, 60):
            data = bytearray(SAMPLE_FILE)
            data[second + 1 : second + 4] = size.to_bytes(3, "big")
            with self.assertRaises(MalformedTag, msg=size):
                parse_flv(bytes(data))

    def test_size_past_the_end_reads_as_truncation(self) -> None:
        # A size pointing past the end of the file cannot be told from a
        # file cut while being written: the tags before it still come out.
        second = SAMPLE_TAGS[1].offset
        data = bytearray(SAMPLE_FILE)
        data[second + 1 : second + 4] = b"\xff\xff\xff"
        flags, tags, trailing = parse_flv(bytes(data))
        self.assertEqual(tags, SAMPLE_TAGS[:1])
        self.assertEqual(trailing, len(SAMPLE_FILE) - second)

    def test_corrupt_previous_tag_size(self) -> None:
        data = bytearray(SAMPLE_FILE)
        end = SAMPLE_TAGS[0].offset + 11 + len(SAMPLE_TAGS[0].payload)
        data[end + 3] ^= 1
        with self.assertRaises(MalformedTag):
            parse_flv(bytes(data))

    def test_bad_header(self) -> None:
        for data in (
            b"FLX" + SAMPLE_FILE[3:],
            SAMPLE_FILE[:5] + b"\x00\x00\x00\x08" + SAMPLE_FILE[9:],
            SAMPLE_FILE[:9] + b"\x00\x00\x00\x01" + SAMPLE_FILE[13:],
        ):
            with self.assertRaises(MalformedTag):
                parse_flv(data)

    def test_reserved_tag_bits(self) -> None:
        data = bytearray(SAMPLE_FILE)
        data[13] |= 0x40
        with self.assertRaises(MalformedTag):
            parse_flv(bytes(data))

    def test_data_offset_beyond_header_is_skipped(self) -> None:
        body = SAMPLE_FILE[9:]
        data = SAMPLE_FILE[:5] + struct.pack(">I", 9 + 7) + b"extras!" + body
        flags, tags, trailing = parse_flv(data)
        self.assertEqual(
            [(t.tag_type, t.payload) for t in tags], [(t.tag_type, t.payload) for t in SAMPLE_TAGS]
        )
        self.assertEqual(tags[0].offset, 13 + 7)
        reader = FLVReader()
        found = []
        for i in range(len(data)):
            found += reader.feed(data[i : i + 1])
        self.assertEqual(found, tags)

    def test_error_is_sticky(self) -> None:
        reader = FLVReader()
        with self.assertRaises(MalformedTag):
            reader.feed(b"NOT AN FLV FILE")
        with self.assertRaises(MalformedTag):
            reader.feed(SAMPLE_FILE)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200))
    def test_fuzz_raises_only_malformed_tag(self, data: bytes) -> None:
        for candidate in (data, HEADER + data, HEADER + b"\x09" + data):
            try:
                flags, tags, trailing = parse_flv(candidate)
            except MalformedTag:
                continue
            self.assertLessEqual(trailing, len(candidate))
            self.assertTrue(all(isinstance(t, Tag) for t in tags))

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, len(SAMPLE_FILE) - 1), st.integers(1, 255))
    def test_fuzz_flipped_byte(self, index: int, mask: int) -> None:
        data = bytearray(SAMPLE_FILE)
        data[index] ^= mask
        try:
            flags, tags, trailing = parse_flv(bytes(data))
        except MalformedTag:
            return
        self.assertLessEqual(len(tags), len(SAMPLE_TAGS))


class SetDataFrameTests(SynchronousTestCase):
    def test_unwraps_byte_exact(self) -> None:
        rest = amf0.encode_many("onMetaData", amf0.ECMAArray({"width": 1280.0, "encoder": "obs"}))
        # An ECMA array with a wrong count must survive: nothing is re-encoded.
        rest = rest[:14] + b"\x00\x00\x00\x63" + rest[18:]
        self.assertEqual(unwrap_set_data_frame(amf0.encode("@setDataFrame") + rest), rest)

    def test_long_string_form(self) -> None:
        payload = b"\x0c\x00\x00\x00\x0d@setDataFrame" + amf0.encode("onMetaData")
        self.assertEqual(unwrap_set_data_frame(payload), amf0.encode("onMetaData"))

    def test_other_payloads(self) -> None:
        for payload in (
            b"",
            amf0.encode_many("onMetaData", amf0.ECMAArray({})),
            amf0.encode_many("@setDataFrameX", "onMetaData"),
            amf0.encode_many(1.0, "@setDataFrame"),
            b"\x02\x00\x0d@setData",
            b"\x02\x00\x02\xff\xfe",
        ):
            self.assertIsNone(unwrap_set_data_frame(payload), msg=payload)

    def test_nothing_after(self) -> None:
        self.assertEqual(unwrap_set_data_frame(amf0.encode("@setDataFrame")), b"")

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=40))
    def test_fuzz(self, tail: bytes) -> None:
        for payload in (tail, b"\x02" + tail, amf0.encode("@setDataFrame") + tail):
            result = unwrap_set_data_frame(payload)
            self.assertTrue(result is None or payload.endswith(result))


class MetadataTests(SynchronousTestCase):
    PUBLISHER = {
        "width": 1280.0,
        "height": 720.0,
        "encoder": "obs-output module (libobs version 29.0.2)",
        "stereo": True,
        "duration": 99.0,
        "filesize": 12.0,
        "keyframes": {"times": [1.0]},
        "videocodecid": 7.0,
        "nested": {"a": 1.0},
    }

    def test_script_tag_payload(self) -> None:
        payload = encode_script_tag_payload("onMetaData", amf0.ECMAArray({"width": 640.0}))
        self.assertEqual(amf0.decode_all(payload), ["onMetaData", {"width": 640.0}])
        self.assertEqual(payload[:13], b"\x02\x00\x0aonMetaData")

    def test_placeholders_patch_and_decode(self) -> None:
        payload, offsets = metadata_with_placeholders(self.PUBLISHER, keyframe_slots=3)
        self.assertEqual(
            set(offsets),
            {"duration", "filesize"}
            | {f"keyframes.{name}.{i}" for name in ("times", "filepositions") for i in range(3)},
        )
        buf = bytearray(payload)
        patch_number(buf, offsets["duration"], 12.5)
        patch_number(buf, offsets["filesize"], 987654.0)
        for i in range(3):
            patch_number(buf, offsets[f"keyframes.times.{i}"], 2.0 * i)
            patch_number(buf, offsets[f"keyframes.filepositions.{i}"], 1000.0 + i)
        self.assertEqual(len(buf), len(payload))

        name, metadata = amf0.decode_all(bytes(buf))
        self.assertEqual(name, "onMetaData")
        self.assertIsInstance(metadata, amf0.ECMAArray)
        self.assertEqual(metadata["duration"], 12.5)
        self.assertEqual(metadata["filesize"], 987654.0)
        self.assertEqual(
            metadata["keyframes"], {"times": [0.0, 2.0, 4.0], "filepositions": [1000.0, 1001.0, 1002.0]}
        )
        # The publisher's other fields are kept, its duration/filesize/keyframes replaced.
        for key in ("width", "height", "encoder", "stereo", "videocodecid", "nested"):
            self.assertEqual(metadata[key], self.PUBLISHER[key])
        self.assertEqual(list(metadata)[:3], ["duration", "filesize", "keyframes"])

        other_name, other = list(pyamf.decode(bytes(buf), encoding=pyamf.AMF0))
        self.assertEqual(other_name, "onMetaData")
        self.assertEqual(other["duration"], 12.5)
        self.assertEqual(other["filesize"], 987654)
        self.assertEqual(list(other["keyframes"]["times"]), [0, 2, 4])
        self.assertEqual(list(other["keyframes"]["filepositions"]), [1000, 1001, 1002])
        self.assertEqual(other["encoder"], self.PUBLISHER["encoder"])

    def test_without_keyframes(self) -> None:
        payload, offsets = metadata_with_placeholders({"width": 320.0})
        self.assertEqual(set(offsets), {"duration", "filesize"})
        self.assertEqual(
            amf0.decode_all(payload), ["onMetaData", {"duration": 0.0, "filesize": 0.0, "width": 320.0}]
        )
        self.assertNotIn("keyframes", amf0.decode_all(metadata_with_placeholders(self.PUBLISHER)[0])[1])

    def test_unencodable_values_are_dropped(self) -> None:
        payload, offsets = metadata_with_placeholders(
            {"ok": "yes", "bad": object(), "": 1.0, 7: 2.0, "surrogate": "\ud800", "huge": 10**400}
        )
        self.assertEqual(
            amf0.decode_all(payload), ["onMetaData", {"duration": 0.0, "filesize": 0.0, "ok": "yes"}]
        )

    def test_inside_an_encoded_tag(self) -> None:
        payload, offsets = metadata_with_placeholders({}, keyframe_slots=1)
        tag = bytearray(encode_tag(TAG_SCRIPT, 0, payload))
        patch_number(tag, 11 + offsets["duration"], 3.25)
        (parsed,) = parse_flv(HEADER + bytes(tag))[1]
        self.assertEqual(amf0.decode_all(parsed.payload)[1]["duration"], 3.25)

    @settings(max_examples=50, deadline=None)
    @given(
        st.dictionaries(
            st.text(max_size=12),
            st.one_of(st.floats(allow_nan=False), st.text(max_size=20), st.booleans(), st.none()),
            max_size=8,
        ),
        st.integers(0, 20),
    )
    def test_offsets_hold_for_any_metadata(self, metadata: dict, slots: int) -> None:
        payload, offsets = metadata_with_placeholders(metadata, keyframe_slots=slots)
        buf = bytearray(payload)
        for i, offset in enumerate(offsets.values()):
            patch_number(buf, offset, float(i + 1))
        decoded = amf0.decode_all(bytes(buf))[1]
        self.assertEqual(decoded["duration"], 1.0)
        self.assertEqual(decoded["filesize"], 2.0)
        if slots:
            self.assertEqual(decoded["keyframes"]["times"], [float(3 + i) for i in range(slots)])
            self.assertEqual(
                decoded["keyframes"]["filepositions"], [float(3 + slots + i) for i in range(slots)]
            )

    def test_negative_slots(self) -> None:
        with self.assertRaises(LocalProtocolError):
            metadata_with_placeholders({}, keyframe_slots=-1)

    def test_patch_number_checks_its_offset(self) -> None:
        payload, offsets = metadata_with_placeholders({})
        buf = bytearray(payload)
        for offset in (0, offsets["duration"] - 1, len(buf) - 7, len(buf)):
            with self.assertRaises(LocalProtocolError, msg=offset):
                patch_number(buf, offset, 1.0)
        self.assertEqual(bytes(buf), payload)
