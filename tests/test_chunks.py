"""Tests for rtmpd.core.chunks: the RTMP chunk stream reader and writer.

Golden byte strings are written out by hand from the layout in the RTMP 1.0
spec, section 5.3.1, never produced by the writer under test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import messages
from rtmpd.core.chunks import ChunkReader, ChunkWriter, encode_basic_header, encode_message
from rtmpd.core.errors import (
    ChunkStreamError,
    InvalidChunkSize,
    LocalProtocolError,
    MalformedControlMessage,
    MessageTooLarge,
    RemoteProtocolError,
    TooManyChunkStreams,
)
from rtmpd.core.limits import Limits
from rtmpd.core.messages import Message


def h(text: str) -> bytes:
    """Bytes from hex with spaces, so goldens can be laid out field by field."""
    return bytes.fromhex(text)


def feed_bytewise(reader: ChunkReader, data: bytes) -> list[Message]:
    out: list[Message] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    return out


def feed_split(reader: ChunkReader, data: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    return out


def raw_fmt0(
    csid: int, ts: int, type_id: int, stream_id: int, payload: bytes, chunk_size: int, repeat_ext: bool
):
    """A type-0 chunked message built from the spec layout (test oracle, csid 3..63)."""
    field = min(ts, 0xFFFFFF)
    header = bytes([csid]) + field.to_bytes(3, "big") + len(payload).to_bytes(3, "big")
    header += bytes([type_id]) + stream_id.to_bytes(4, "little")
    ext = ts.to_bytes(4, "big") if ts >= 0xFFFFFF else b""
    out = header + ext + payload[:chunk_size]
    for off in range(chunk_size, len(payload), chunk_size):
        out += bytes([0xC0 | csid]) + (ext if repeat_ext else b"") + payload[off : off + chunk_size]
    return out


SCS_256 = h("02 000000 000004 01 00000000  00000100")  # Set Chunk Size 256 on csid 2


class BasicHeaderTests(SynchronousTestCase):
    GOLDEN = {
        2: h("02"),
        63: h("3f"),
        64: h("00 00"),
        319: h("00 ff"),
        320: h("01 00 01"),
        65599: h("01 ff ff"),
    }

    def test_encode(self) -> None:
        for csid, golden in self.GOLDEN.items():
            self.assertEqual(encode_basic_header(0, csid), golden)
            self.assertEqual(encode_basic_header(3, csid), bytes([golden[0] | 0xC0]) + golden[1:])

    def test_decode(self) -> None:
        for csid, golden in self.GOLDEN.items():
            reader = ChunkReader()
            data = golden + h("000010 000002 09 01000000") + b"hi"
            self.assertEqual(reader.feed(data), [Message(9, 16, 1, b"hi")], csid)
            # The reader keys its state by csid: a type-3 chunk on it now works.
            self.assertEqual(
                reader.feed(bytes([golden[0] | 0xC0]) + golden[1:] + b"yo"), [Message(9, 32, 1, b"yo")]
            )

    def test_three_byte_form_of_a_two_byte_csid(self) -> None:
        # 64 may also be written in the 3-byte form; it is the same chunk stream.
        reader = ChunkReader()
        reader.feed(h("00 00") + h("000005 000001 08 00000000") + b"a")
        self.assertEqual(reader.feed(h("c1 00 00") + b"b"), [Message(8, 10, 0, b"b")])

    def test_writer_uses_the_golden_forms(self) -> None:
        for csid, golden in self.GOLDEN.items():
            data = ChunkWriter().write(csid, Message(9, 16, 1, b"hi"))
            self.assertEqual(data, golden + h("000010 000002 09 01000000") + b"hi")

    def test_illegal(self) -> None:
        for fmt, csid in [(0, 0), (0, 1), (0, 65600), (0, -1), (4, 3), (-1, 3)]:
            self.assertRaises(LocalProtocolError, encode_basic_header, fmt, csid)
        for csid in (0, 1, 65600):
            self.assertRaises(LocalProtocolError, ChunkWriter().write, csid, Message(9, 0, 1, b""))
            self.assertRaises(LocalProtocolError, encode_message, csid, Message(9, 0, 1, b""), 128)


class MessageHeaderGoldenTests(SynchronousTestCase):
    # csid 3: a type-0 command, then type 1 (new length and type), type 2 (new delta), type 3 (all repeat).
    FMT0 = h("03 0003e8 000005 14 01000000") + b"hello"
    FMT1 = h("43 000021 000003 09") + b"abc"
    FMT2 = h("83 00000a") + b"def"
    FMT3 = h("c3") + b"ghi"
    MESSAGES = [
        Message(20, 1000, 1, b"hello"),
        Message(9, 1033, 1, b"abc"),
        Message(9, 1043, 1, b"def"),
        Message(9, 1053, 1, b"ghi"),
    ]

    def test_reader(self) -> None:
        reader = ChunkReader()
        out = []
        for chunk in (self.FMT0, self.FMT1, self.FMT2, self.FMT3):
            out += reader.feed(chunk)
        self.assertEqual(out, self.MESSAGES)

    def test_writer(self) -> None:
        writer = ChunkWriter()
        written = [writer.write(3, m) for m in self.MESSAGES]
        self.assertEqual(written, [self.FMT0, self.FMT1, self.FMT2, self.FMT3])

    def test_continuation_chunks(self) -> None:
        payload = bytes(range(256)) + bytes(44)
        golden = h("04 000000 00012c 09 01000000") + payload[:128] + h("c4") + payload[128:256]
        golden += h("c4") + payload[256:]
        self.assertEqual(ChunkWriter().write(4, Message(9, 0, 1, payload)), golden)
        self.assertEqual(encode_message(4, Message(9, 0, 1, payload), 128), golden)
        self.assertEqual(ChunkReader().feed(golden), [Message(9, 0, 1, payload)])

    def test_stream_id_little_endian(self) -> None:
        data = h("05 000000 000000 12 04030201")
        self.assertEqual(ChunkReader().feed(data), [Message(18, 0, 0x01020304, b"")])
        self.assertEqual(ChunkWriter().write(5, Message(18, 0, 0x01020304, b"")), data)

    def test_type3_new_message_reuses_the_delta(self) -> None:
        reader = ChunkReader()
        data = h("03 0003e8 000001 08 01000000 aa  83 000028 bb  c3 cc  c3 dd")
        self.assertEqual(
            reader.feed(data),
            [Message(8, 1000, 1, b"\xaa"), Message(8, 1040, 1, b"\xbb"), Message(8, 1080, 1, b"\xcc"),
             Message(8, 1120, 1, b"\xdd")],
        )  # fmt: skip

    def test_type3_after_type0_reuses_its_timestamp_as_delta(self) -> None:
        # Spec 5.3.1.2.4, librtmp and ffmpeg (nginx-rtmp would use 0): see chunks.py.
        data = h("03 000064 000001 08 01000000 aa  c3 bb")
        self.assertEqual(ChunkReader().feed(data), [Message(8, 100, 1, b"\xaa"), Message(8, 200, 1, b"\xbb")])

    def test_type1_keeps_the_stream_id(self) -> None:
        data = h("06 000000 000001 08 07000000 aa  46 000001 000002 09 bbcc")
        self.assertEqual(ChunkReader().feed(data), [Message(8, 0, 7, b"\xaa"), Message(9, 1, 7, b"\xbb\xcc")])

    def test_zero_length_messages(self) -> None:
        data = h("03 000001 000000 12 00000000  c3  83 000002")
        self.assertEqual(
            ChunkReader().feed(data), [Message(18, 1, 0, b""), Message(18, 2, 0, b""), Message(18, 4, 0, b"")]
        )

    def test_timestamp_wraps(self) -> None:
        data = h("03 ffffff 000001 08 01000000 fffffff0 aa  83 000020 bb  c3 cc")
        self.assertEqual(
            ChunkReader().feed(data),
            [Message(8, 0xFFFFFFF0, 1, b"\xaa"), Message(8, 0x10, 1, b"\xbb"), Message(8, 0x30, 1, b"\xcc")],
        )

    def test_bytes_received(self) -> None:
        reader = ChunkReader()
        reader.feed(self.FMT0[:3])
        reader.feed(self.FMT0[3:])
        reader.feed(self.FMT1)
        self.assertEqual(reader.bytes_received, len(self.FMT0) + len(self.FMT1))


class ExtendedTimestampTests(SynchronousTestCase):
    PAYLOAD = b"\xaa" * 200  # two chunks at the default chunk size

    def test_below_the_threshold(self) -> None:
        golden = h("04 fffffe 0000c8 09 01000000") + self.PAYLOAD[:128] + h("c4") + self.PAYLOAD[128:]
        message = Message(9, 0xFFFFFE, 1, self.PAYLOAD)
        self.assertEqual(ChunkWriter().write(4, message), golden)
        self.assertEqual(ChunkReader().feed(golden), [message])

    def check_extended(self, ts: int, ext: bytes) -> None:
        message = Message(9, ts, 1, self.PAYLOAD)
        head = h("04 ffffff 0000c8 09 01000000") + ext + self.PAYLOAD[:128]
        repeated = head + h("c4") + ext + self.PAYLOAD[128:]
        omitted = head + h("c4") + self.PAYLOAD[128:]
        self.assertEqual(ChunkWriter().write(4, message), repeated)
        self.assertEqual(encode_message(4, message, 128), repeated)
        for data in (repeated, omitted):
            self.assertEqual(ChunkReader().feed(data), [message])
            self.assertEqual(feed_bytewise(ChunkReader(), data), [message])

    def test_at_the_threshold(self) -> None:
        self.check_extended(0xFFFFFF, h("00ffffff"))

    def test_above_the_threshold(self) -> None:
        self.check_extended(0x1000000, h("01000000"))

    def test_max_timestamp(self) -> None:
        self.check_extended(0xFFFFFFFF, h("ffffffff"))

    def test_extended_delta(self) -> None:
        data = h("04 000000 000001 08 01000000 aa  84 ffffff 01000000 bb  44 ffffff 000002 09 02000000 ccdd")
        self.assertEqual(
            ChunkReader().feed(data),
            [
                Message(8, 0, 1, b"\xaa"),
                Message(8, 0x1000000, 1, b"\xbb"),
                Message(9, 0x3000000, 1, b"\xcc\xdd"),
            ],
        )
        writer = ChunkWriter()
        written = b"".join(writer.write(4, m) for m in ChunkReader().feed(data))
        self.assertEqual(written, data)

    def test_partial_prefix_match_is_payload(self) -> None:
        # No repeat, and the continuation payload starts like the extended timestamp:
        # the reader must wait for the 3rd byte, then see it is payload, under any split.
        payload = b"\x00" * 128 + h("0100ab") + b"\x00" * 10
        data = h("04 ffffff 00008d 09 01000000 01000000") + payload[:128] + h("c4") + payload[128:]
        expected = [Message(9, 0x1000000, 1, payload)]
        for cut in range(len(data) + 1):
            reader = ChunkReader()
            self.assertEqual(reader.feed(data[:cut]) + reader.feed(data[cut:]), expected, cut)

    def test_short_final_chunk_waits_while_ambiguous(self) -> None:
        # The last chunk is 2 bytes that match the extended timestamp's prefix: the
        # reader cannot tell yet, so it returns nothing until the next bytes decide.
        payload = b"\x00" * 128 + h("0100")
        data = h("04 ffffff 000082 09 01000000 01000000") + payload[:128] + h("c4") + payload[128:]
        reader = ChunkReader()
        self.assertEqual(reader.feed(data), [])
        self.assertEqual(reader.feed(h("05 000000 000000 12 00000000")), [Message(9, 0x1000000, 1, payload),
                                                                         Message(18, 0, 0, b"")])  # fmt: skip

    def test_type3_new_message_after_extended_header(self) -> None:
        head = h("04 ffffff 000001 08 01000000 01000000 aa")
        for second in (h("c4 01000000 bb"), h("c4 bb")):
            self.assertEqual(
                ChunkReader().feed(head + second),
                [Message(8, 0x1000000, 1, b"\xaa"), Message(8, 0x2000000, 1, b"\xbb")],
            )

    def test_writer_never_uses_type3_for_an_extended_delta(self) -> None:
        writer = ChunkWriter()
        writer.write(4, Message(8, 0, 1, b"a"))
        writer.write(4, Message(8, 0x1000000, 1, b"a"))
        self.assertEqual(writer.write(4, Message(8, 0x2000000, 1, b"a")), h("84 ffffff 01000000") + b"a")


class ControlTests(SynchronousTestCase):
    def test_set_chunk_size_applies_to_the_very_next_chunk(self) -> None:
        payload = bytes(range(200))
        data = SCS_256 + h("04 000000 0000c8 09 01000000") + payload  # one 200-byte chunk
        expected = [messages.set_chunk_size(256), Message(9, 0, 1, payload)]
        for cut in range(len(data) + 1):
            reader = ChunkReader()
            self.assertEqual(reader.feed(data[:cut]) + reader.feed(data[cut:]), expected, cut)
            self.assertEqual(reader.chunk_size, 256)

    def test_set_chunk_size_applies_inside_a_message_in_progress(self) -> None:
        # csid 4's first chunk was 128 bytes; its chunks after the Set Chunk Size are 256 long.
        payload = bytes(range(200)) * 2
        data = h("04 000000 000190 09 01000000") + payload[:128] + SCS_256 + h("c4") + payload[128:384]
        data += h("c4") + payload[384:]
        reader = ChunkReader()
        self.assertEqual(reader.feed(data), [messages.set_chunk_size(256), Message(9, 0, 1, payload)])

    def test_writer_set_chunk_size(self) -> None:
        writer = ChunkWriter()
        self.assertEqual(writer.set_chunk_size(256), SCS_256)
        self.assertEqual(writer.chunk_size, 256)
        payload = bytes(200)
        self.assertEqual(
            writer.write(4, Message(9, 0, 1, payload)), h("04 000000 0000c8 09 01000000") + payload
        )

    def test_writer_rejects_illegal_chunk_sizes(self) -> None:
        for size in (0, -1, 2**31):
            self.assertRaises(LocalProtocolError, ChunkWriter, size)
            self.assertRaises(LocalProtocolError, ChunkWriter().set_chunk_size, size)
            self.assertRaises(LocalProtocolError, encode_message, 3, Message(9, 0, 1, b""), size)

    def test_reader_rejects_illegal_chunk_sizes(self) -> None:
        for size in (0, 2**31, 2**32 - 1):
            data = h("02 000000 000004 01 00000000") + size.to_bytes(4, "big")
            self.assertRaises(InvalidChunkSize, ChunkReader().feed, data)

    def test_truncated_set_chunk_size(self) -> None:
        self.assertRaises(MalformedControlMessage, ChunkReader().feed, h("02 000000 000002 01 00000000 0100"))

    def test_abort_discards_the_partial_message(self) -> None:
        first = bytes(128)
        data = h("04 000000 0000c8 09 01000000") + first  # 128 of 200 bytes
        data += h("02 000000 000004 02 00000000 00000004")  # Abort csid 4
        data += h("c4") + b"\x01" * 128 + h("c4") + b"\x02" * 72  # type 3: a whole new message
        reader = ChunkReader()
        self.assertEqual(
            reader.feed(data), [messages.abort(4), Message(9, 0, 1, b"\x01" * 128 + b"\x02" * 72)]
        )

    def test_abort_of_unknown_chunk_stream_is_harmless(self) -> None:
        data = h("02 000000 000004 02 00000000 00000009")
        self.assertEqual(ChunkReader().feed(data), [messages.abort(9)])

    def test_interleaved_chunk_streams(self) -> None:
        a = b"A" * 200
        b = b"B" * 150
        data = h("04 000010 0000c8 08 01000000") + a[:128]
        data += h("06 000020 000096 09 01000000") + b[:128]
        data += h("c4") + a[128:]
        data += h("c6") + b[128:]
        expected = [Message(8, 16, 1, a), Message(9, 32, 1, b)]
        self.assertEqual(ChunkReader().feed(data), expected)
        self.assertEqual(feed_bytewise(ChunkReader(), data), expected)

    def test_whole_messages_in_one_read_equal_chunk_by_chunk_reading(self) -> None:
        # One read holding whole multi-chunk messages takes a shortcut (the continuation headers
        # checked at once); it must give what reading chunk by chunk gives, on short and long csids.
        for csid in (4, 63, 64, 320):
            writer = ChunkWriter(100)
            sent = [Message(9, 33 * i, 1, bytes([i]) * (250 + i)) for i in range(4)]
            data = b"".join(writer.write(csid, m) for m in sent)
            with self.subTest(csid=csid):
                self.assertEqual(reader_with_chunk_size(100).feed(data), sent)
                self.assertEqual(feed_bytewise(reader_with_chunk_size(100), data), sent)

    def test_a_continuation_header_of_another_stream_is_not_taken_for_payload(self) -> None:
        a = b"A" * 300
        data = h("04 000010 00012c 08 01000000") + a[:128] + h("c4") + a[128:256]
        # The third chunk of csid 4 is preceded by a whole one-chunk message on csid 6.
        data += h("06 000020 000003 09 01000000") + b"BBB" + h("c4") + a[256:]
        self.assertEqual(ChunkReader().feed(data), [Message(9, 32, 1, b"BBB"), Message(8, 16, 1, a)])


def reader_with_chunk_size(chunk_size: int) -> ChunkReader:
    reader = ChunkReader()
    reader.feed(ChunkWriter().set_chunk_size(chunk_size))
    return reader


class WriterHeaderChoiceTests(SynchronousTestCase):
    def fmts(self, sequence: list[Message]) -> list[int]:
        writer = ChunkWriter()
        return [writer.write(5, m)[0] >> 6 for m in sequence]

    def test_choices(self) -> None:
        sequence = [
            Message(9, 100, 1, b"xx"),  # first: 0
            Message(9, 133, 1, b"xx"),  # delta 33 after type 0: 2, never 3
            Message(9, 166, 1, b"yy"),  # same delta: 3
            Message(9, 200, 1, b"yy"),  # delta 34: 2
            Message(9, 234, 1, b"zzz"),  # length: 1
            Message(8, 268, 1, b"zzz"),  # type: 1
            Message(8, 268, 2, b"zzz"),  # stream id: 0
            Message(8, 100, 2, b"zzz"),  # backwards: 0
            Message(8, 100, 2, b"zzz"),  # delta 0 after type 0: 2
            Message(8, 100, 2, b"zzz"),  # delta 0 again: 3
        ]
        self.assertEqual(self.fmts(sequence), [0, 2, 3, 2, 1, 1, 0, 0, 2, 3])

    def test_wrap_is_backwards(self) -> None:
        self.assertEqual(self.fmts([Message(9, 2**32 - 1, 1, b""), Message(9, 5, 1, b"")]), [0, 0])

    def test_rejects_unsendable_messages(self) -> None:
        writer = ChunkWriter()
        for bad in (
            Message(256, 0, 1, b""),
            Message(-1, 0, 1, b""),
            Message(9, 2**32, 1, b""),
            Message(9, -1, 1, b""),
            Message(9, 0, 2**32, b""),
            Message(9, 0, 1, bytes(0x1000000)),
        ):
            self.assertRaises(LocalProtocolError, writer.write, 3, bad)
            self.assertRaises(LocalProtocolError, encode_message, 3, bad, 128)


class ReaderErrorTests(SynchronousTestCase):
    def test_header_before_type0(self) -> None:
        for first in (h("43 000000 000001 08"), h("83 000000"), h("c3")):
            self.assertRaises(ChunkStreamError, ChunkReader().feed, first + b"x")

    def test_media_limit_is_checked_at_the_header(self) -> None:
        header = h("04 000000 ffffff 08 01000000")
        self.assertEqual(len(header), 12)
        reader = ChunkReader(Limits(max_media_message_size=1024 * 1024))
        self.assertEqual(reader.feed(header[:11]), [])
        self.assertRaises(MessageTooLarge, reader.feed, header[11:])

    def test_raised_limit_takes_the_largest_wire_message(self) -> None:
        reader = ChunkReader(Limits(max_media_message_size=0xFFFFFF))
        self.assertEqual(
            reader.feed(h("02 000000 000004 01 00000000 7fffffff")), [messages.set_chunk_size(2**31 - 1)]
        )
        self.assertEqual(reader.feed(h("04 000000 ffffff 08 01000000")), [])
        payload = bytes(range(256)) * 0x10000
        out = []
        for off in range(0, 0xFFFFFF, 1 << 20):
            out += reader.feed(payload[off : min(off + (1 << 20), 0xFFFFFF)])
        self.assertEqual(out, [Message(8, 0, 1, payload[:0xFFFFFF])])

    def test_default_limit_refuses_the_largest_wire_message_at_its_header(self) -> None:
        self.assertRaises(MessageTooLarge, ChunkReader().feed, h("04 000000 ffffff 08 01000000"))

    def test_command_limit(self) -> None:
        limit = Limits().max_command_message_size
        self.assertEqual(ChunkReader().feed(h("03 000000") + limit.to_bytes(3, "big") + h("14 00000000")), [])
        over = h("03 000000") + (limit + 1).to_bytes(3, "big") + h("14 00000000")
        self.assertRaises(MessageTooLarge, ChunkReader().feed, over)
        # Type 1 headers are checked too.
        reader = ChunkReader()
        reader.feed(h("03 000000 000000 14 00000000"))
        self.assertRaises(
            MessageTooLarge, reader.feed, h("43 000000") + (limit + 1).to_bytes(3, "big") + h("14")
        )

    def test_too_many_chunk_streams(self) -> None:
        reader = ChunkReader(Limits(max_chunk_streams=64))
        basic_headers = [bytes([csid]) for csid in range(3, 64)] + [h("00 00"), h("00 01"), h("00 02")]
        self.assertEqual(len(basic_headers), 64)
        for basic in basic_headers:
            self.assertEqual(len(reader.feed(basic + h("000000 000000 12 00000000"))), 1)
        # Known chunk streams still work; a 65th does not.
        self.assertEqual(len(reader.feed(h("03 000000 000000 12 00000000"))), 1)
        self.assertRaises(TooManyChunkStreams, reader.feed, h("00 04 000000 000000 12 00000000"))

    def test_full_header_inside_a_message(self) -> None:
        start = h("04 000000 0000c8 09 01000000") + bytes(128)
        # Repeating length, type and stream id is taken as a continuation (as ffmpeg does).
        for same in (h("04 000005 0000c8 09 01000000"), h("44 000005 0000c8 09"), h("84 000005")):
            out = ChunkReader().feed(start + same + bytes(72))
            self.assertEqual(out, [Message(9, 0, 1, bytes(200))])
        for different in (
            h("04 000005 0000c9 09 01000000"),
            h("44 000005 0000c8 08"),
            h("04 000000 0000c8 09 02000000"),
        ):
            self.assertRaises(ChunkStreamError, ChunkReader().feed, start + different)


# -- properties ---------------------------------------------------------------------------------------------

CSIDS = st.sampled_from([2, 3, 4, 63, 64, 65, 319, 320, 4000, 65599])
TYPES = st.sampled_from([8, 9, 18, 20, 22, 15, 17])  # never 1 or 2: the reader acts on those
STREAM_IDS = st.sampled_from([0, 1, 2, 0x01020304, 2**32 - 1])
EDGE_TIMESTAMPS = [0, 1, 0xFFFFFE, 0xFFFFFF, 0x1000000, 2**31, 2**32 - 2, 2**32 - 1]
TIMESTAMPS = st.one_of(st.sampled_from(EDGE_TIMESTAMPS), st.integers(0, 2**32 - 1))
DELTAS = st.sampled_from([0, 1, 33, 40, 0xFFFFFE, 0xFFFFFF, 0x1000000, 2**32 - 1])
CHUNK_SIZES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 128, 4096]), st.integers(1, 700))
PAYLOADS = st.one_of(st.sampled_from([b"", b"\x00" * 130, b"\x01\x00\x00\x00" * 40]), st.binary(max_size=600))


@st.composite
def actions(draw):
    """A list of ("scs", size) and ("msg", csid, Message); timestamps often move by repeated deltas."""
    result = []
    ts = draw(TIMESTAMPS)
    payload = b""
    type_id, stream_id = 9, 1
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["scs", "abs", "delta", "delta", "same", "same"]))
        if kind == "scs":
            result.append(("scs", draw(CHUNK_SIZES)))
            continue
        if kind == "abs":
            ts = draw(TIMESTAMPS)
            type_id, stream_id = draw(TYPES), draw(STREAM_IDS)
            payload = draw(PAYLOADS)
        elif kind == "delta":
            ts = (ts + draw(DELTAS)) & 0xFFFFFFFF
            if draw(st.booleans()):
                payload = draw(PAYLOADS)
        else:
            ts = (ts + 33) & 0xFFFFFFFF
        result.append(("msg", draw(CSIDS), Message(type_id, ts, stream_id, payload)))
    return result


def write_actions(acts) -> tuple[bytes, list[Message]]:
    writer = ChunkWriter()
    data = []
    expected = []
    for act in acts:
        if act[0] == "scs":
            data.append(writer.set_chunk_size(act[1]))
            expected.append(messages.set_chunk_size(act[1]))
        else:
            data.append(writer.write(act[1], act[2]))
            expected.append(act[2])
    return b"".join(data), expected


def cut_points(data_len: int):
    return st.lists(st.integers(0, data_len), max_size=20)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(actions(), st.data())
    def test_round_trip_under_any_split(self, acts, data) -> None:
        stream, expected = write_actions(acts)
        self.assertEqual(ChunkReader().feed(stream), expected)
        cuts = data.draw(cut_points(len(stream)))
        self.assertEqual(feed_split(ChunkReader(), stream, cuts), expected)

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(3, 63), TIMESTAMPS, TYPES, STREAM_IDS, st.binary(max_size=400), st.booleans()
            ),
            min_size=1,
            max_size=5,
        ),
        st.sampled_from([1, 3, 4, 7, 128]),
        st.data(),
    )
    def test_extended_timestamp_repeated_or_not_under_any_split(self, specs, chunk_size, data) -> None:
        stream = (
            b"" if chunk_size == 128 else h("02 000000 000004 01 00000000") + chunk_size.to_bytes(4, "big")
        )
        expected = [] if chunk_size == 128 else [messages.set_chunk_size(chunk_size)]
        for csid, ts, type_id, stream_id, payload, repeat in specs:
            if ts >= 0xFFFFFF and not repeat:
                # Keep the no-repeat stream unambiguous: no continuation starts like the extended timestamp.
                first = ts.to_bytes(4, "big")[0]
                payload = bytearray(payload)
                for off in range(chunk_size, len(payload), chunk_size):
                    if payload[off] == first:
                        payload[off] ^= 0x80
                payload = bytes(payload)
            stream += raw_fmt0(csid, ts, type_id, stream_id, payload, chunk_size, repeat)
            expected.append(Message(type_id, ts, stream_id, payload))
        self.assertEqual(ChunkReader().feed(stream), expected)
        self.assertEqual(feed_split(ChunkReader(), stream, data.draw(cut_points(len(stream)))), expected)

    @settings(max_examples=150, deadline=None)
    @given(CSIDS, TYPES, TIMESTAMPS, STREAM_IDS, PAYLOADS, CHUNK_SIZES)
    def test_encode_message(self, csid, type_id, ts, stream_id, payload, chunk_size) -> None:
        message = Message(type_id, ts, stream_id, payload)
        encoded = encode_message(csid, message, chunk_size)
        self.assertIsInstance(encoded, bytes)
        self.assertEqual(encoded, ChunkWriter(chunk_size).write(csid, message))
        reader = ChunkReader()
        scs = messages.set_chunk_size(chunk_size)
        self.assertEqual(reader.feed(encode_message(2, scs, 128) + encoded), [scs, message])


# -- fuzz ---------------------------------------------------------------------------------------------------

SMALL_LIMITS = Limits(max_media_message_size=4096, max_command_message_size=512, max_chunk_streams=8)


def fuzz_feed(test: SynchronousTestCase, data: bytes, cuts: list[int], limits: Limits) -> None:
    reader = ChunkReader(limits)
    try:
        feed_split(reader, data, cuts)
    except RemoteProtocolError:
        pass
    # Anything else propagates and fails the test; memory stays bounded by the input.
    test.assertLessEqual(reader.bytes_received, len(data))


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=1000)
    @given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8), st.booleans())
    def test_random_bytes(self, data, cuts, small) -> None:
        fuzz_feed(self, data, cuts, SMALL_LIMITS if small else Limits())

    @settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
    @given(actions(), st.data())
    def test_mutated_streams(self, acts, data) -> None:
        stream = bytearray(write_actions(acts)[0])
        assume(stream)
        for _ in range(data.draw(st.integers(1, 6))):
            op = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
            at = data.draw(st.integers(0, len(stream) - 1)) if stream else 0
            if op == "flip" and stream:
                stream[at] ^= 1 << data.draw(st.integers(0, 7))
            elif op == "insert":
                stream[at:at] = data.draw(st.binary(min_size=1, max_size=8))
            elif op == "delete" and stream:
                del stream[at : at + data.draw(st.integers(1, 8))]
            elif stream:
                stream[at] = data.draw(st.sampled_from([0x00, 0x01, 0x3F, 0x40, 0x80, 0xC0, 0xC1, 0xFF]))
        cuts = data.draw(cut_points(len(stream)))
        fuzz_feed(self, bytes(stream), cuts, data.draw(st.sampled_from([SMALL_LIMITS, Limits()])))

    def test_payload_views_survive_a_reused_input_buffer(self) -> None:
        # A caller may pass a bytearray and then reuse it: messages must not change.
        buffer = bytearray(h("04 000000 0000c8 09 01000000") + b"A" * 128)
        reader = ChunkReader()
        self.assertEqual(reader.feed(buffer), [])
        buffer[:] = b"\x00" * len(buffer)
        out = reader.feed(bytearray(h("c4") + b"B" * 72))
        self.assertEqual(out, [Message(9, 0, 1, b"A" * 128 + b"B" * 72)])
        self.assertIsInstance(out[0].payload, bytes)
