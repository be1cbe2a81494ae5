"""The core's budgets against hostile input, one test class per budget, plus a hypothesis state machine.

Each budget is shown both ways: what an honest client sends passes, what an
attacker sends (a reference bomb, a nested aggregate, partial messages on
every chunk stream, a chunk-size-1 flood of empty messages, a multitrack
tag of thousands of tracks, a newline in flashVer) raises the typed error
that makes the server close the connection, in bounded time.
"""

from __future__ import annotations

import json
import math
import struct
import time
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0, amf3
from rtmpd.core.amf_types import DecodeBudget
from rtmpd.core.chunks import ChunkReader, ChunkWriter
from rtmpd.core.commands import decode_command, encode_command
from rtmpd.core.errors import (
    AMFBudgetExceeded,
    AMFDecodeError,
    LocalProtocolError,
    MalformedCommand,
    NestedAggregate,
    PartialMessagesTooLarge,
    RateLimitExceeded,
    RemoteProtocolError,
    TooManyTracks,
)
from rtmpd.core.events import CommandReceived, MediaReceived, MetadataReceived
from rtmpd.core.limits import OPTIONS, Limits
from rtmpd.core.messages import Message, MessageType, abort, split_aggregate
from rtmpd.core.rates import RateBudget
from rtmpd.core.text import client_text, escape_controls, url_without_query
from rtmpd.core.tracks import TrackCensus
from rtmpd.logs import format_json, format_text
from rtmpd.tap import Options
from tests.media_samples import aac_frame, avc_keyframe
from tests.test_session import CONNECT_PARAMS, Client, SessionTestCase, aggregate, drain, new_session


def amf0_reference_bomb(levels: int, leaf: bytes = b"x" * 16) -> bytes:
    """A strict array whose element i+1 is [ref i, ref i]: ``levels`` levels hold 2**levels leaves."""
    out = b"\x0a" + struct.pack(">I", levels + 1)
    out += b"\x0a\x00\x00\x00\x01" + b"\x02" + struct.pack(">H", len(leaf)) + leaf  # reference 1
    for i in range(1, levels + 1):
        out += b"\x0a\x00\x00\x00\x02" + (b"\x07" + struct.pack(">H", i)) * 2
    return out


def amf3_object_bomb(levels: int) -> bytes:
    """AMF3 dense arrays, each holding two references to the one before (object table index i)."""
    out = b"\x09" + bytes([(levels + 1) << 1 | 1]) + b"\x01"  # outer array: object 0
    out += b"\x09\x03\x01" + b"\x06\x21" + b"y" * 16  # object 1: ["yyyy..."]
    for i in range(1, levels + 1):
        out += b"\x09\x05\x01" + (b"\x09" + bytes([i << 1])) * 2
    return out


class AMFExpansionTests(SynchronousTestCase):
    """References count at their full size each time they are used (``Limits.max_amf_nodes``/``_bytes``)."""

    def test_amf0_reference_bomb_is_refused_fast(self) -> None:
        data = amf0_reference_bomb(40)  # 2**40 leaves in 469 bytes
        start = time.perf_counter()
        with self.assertRaises(AMFBudgetExceeded):
            amf0.decode_all(data)
        self.assertLess(time.perf_counter() - start, 0.5)
        # The budget error is an AMFDecodeError, hence a RemoteProtocolError: the server closes.
        self.assertTrue(issubclass(AMFBudgetExceeded, AMFDecodeError))

    def test_a_reference_counts_everything_it_stands_for(self) -> None:
        # 10 levels: 2**10 leaves of 16 bytes, plus the arrays: 10,203 values and 32,752 bytes, exactly.
        bomb = amf0_reference_bomb(10)
        value = amf0.decode(bomb, budget=DecodeBudget(10_203, 32_752))[0]
        self.assertEqual(len(value[-1]), 2)
        with self.assertRaises(AMFBudgetExceeded):
            amf0.decode(bomb, budget=DecodeBudget(10_202, 32_752))
        with self.assertRaises(AMFBudgetExceeded):
            amf0.decode(bomb, budget=DecodeBudget(10_203, 32_751))

    def test_the_budget_grows_with_the_message_not_with_references(self) -> None:
        # 139 bytes may stand for 2 * 139 + 256 values: not the 10,203 this one would.
        with self.assertRaises(AMFBudgetExceeded):
            amf0.decode(amf0_reference_bomb(10))
        self.assertEqual(DecodeBudget.for_message(139).nodes, 2 * 139 + 256)
        # The cap holds for large messages; the byte budget never refuses a message without references.
        self.assertEqual(DecodeBudget.for_message(8_000_000, max_nodes=100_000).nodes, 100_000)
        self.assertEqual(DecodeBudget.for_message(8_000_000, max_bytes=1000).size, 8_000_000)
        strings = amf0.encode_many(*["s" * 60_000] * 100)  # 6 MB of text in 6 MB: fits
        self.assertEqual(len(amf0.decode_all(strings)), 100)

    def test_honest_values_and_cycles_decode(self) -> None:
        connect = amf0.encode_many("connect", 1.0, CONNECT_PARAMS)
        self.assertEqual(amf0.decode_all(connect, max_nodes=20)[2], CONNECT_PARAMS)
        # An object that refers to itself: the reference counts one, and encoders refuse the cycle.
        cyclic = b"\x03\x00\x04self\x07\x00\x00\x00\x00\x09"
        value = amf0.decode(cyclic, max_nodes=2)[0]
        self.assertIs(value["self"], value)

    def test_amf3_object_and_string_references(self) -> None:
        with self.assertRaises(AMFBudgetExceeded):
            amf3.decode(amf3_object_bomb(40))
        self.assertEqual(len(amf3.decode(amf3_object_bomb(4))[0]), 5)
        # One 1000-byte string, then 10,000 references to it: 10 MB of text from 21 kB.
        string_bomb = b"\x09" + amf3._u29(10_001 << 1 | 1) + b"\x01"  # a dense array of 10,001
        string_bomb += b"\x06" + amf3._u29(1000 << 1 | 1) + b"s" * 1000 + b"\x06\x00" * 10_000
        with self.assertRaises(AMFBudgetExceeded):
            amf3.decode(string_bomb)
        value = amf3.decode(string_bomb, budget=DecodeBudget(100_000, 10_001_000))[0]
        self.assertEqual(len(value), 10_001)

    def test_avmplus_values_share_the_message_budget(self) -> None:
        one = b"\x11" + amf3_object_bomb(6)
        # Alone, each fits; as many values of one message they exceed one shared budget.
        amf0.decode_all(one, budget=DecodeBudget(1000, 10_000))
        with self.assertRaises(AMFBudgetExceeded):
            amf0.decode_all(one * 4, budget=DecodeBudget(1000, 10_000))

    def test_connect_bomb_is_a_typed_error_in_the_session(self) -> None:
        session, client = SessionTestCase().handshaken()
        params = (
            b"\x03\x00\x03app\x02\x00\x04live\x00\x08flashVer" + amf0_reference_bomb(30) + b"\x00\x00\x09"
        )
        body = amf0.encode_many("connect", 1.0) + params
        session.receive_data(client.send(3, Message(MessageType.COMMAND_AMF0, 0, 0, body)))
        with self.assertRaises(AMFBudgetExceeded):
            drain(session)
        with self.assertRaises(LocalProtocolError):
            session.receive_data(b"\x00")


class MetadataKeyTests(SessionTestCase):
    def test_amf3_dictionary_with_mixed_keys_gives_str_keys(self) -> None:
        session, client = self.connected()
        # onMetaData whose object is an AMF3 dictionary {1: "a", "width": 2}.
        dictionary = b"\x11\x05\x00" + b"\x04\x01\x06\x03a" + b"\x06\x0bwidth\x04\x02"
        body = amf0.encode("onMetaData") + b"\x11" + dictionary
        events = self.feed(session, client.send(4, Message(MessageType.DATA_AMF0, 0, 1, body)))
        self.assertEqual(len(events), 1)
        self.assertIsInstance(events[0], MetadataReceived)
        self.assertEqual(events[0].values, {"width": 2})
        self.assertEqual(sorted(events[0].values), ["width"])


class CommandTests(SynchronousTestCase):
    def test_long_command_name_is_refused_without_echoing_it(self) -> None:
        message = encode_command("x" * 70_000, 1.0)
        with self.assertRaises(MalformedCommand) as caught:
            decode_command(message)
        self.assertLess(len(str(caught.exception)), 100)
        self.assertEqual(decode_command(encode_command("y" * 256, 1.0)).name, "y" * 256)

    def test_non_finite_transaction_id_is_refused(self) -> None:
        for txn in (math.nan, math.inf, -math.inf):
            with self.assertRaises(MalformedCommand):
                decode_command(encode_command("deleteStream", txn, None, 1.0))
        self.assertEqual(decode_command(encode_command("deleteStream", 4.0, None, 1.0)).transaction_id, 4.0)


class AggregateTests(SessionTestCase):
    def test_nested_aggregate_is_refused_before_any_copy(self) -> None:
        inner = aggregate(0, 1, [(9, 0, avc_keyframe())]).payload
        outer = aggregate(0, 1, [(9, 0, avc_keyframe()), (22, 0, inner)])
        with self.assertRaises(NestedAggregate):
            split_aggregate(outer)

    def test_deeply_nested_megabyte_aggregate_is_refused_at_once(self) -> None:
        payload = avc_keyframe()
        for _ in range(5000):  # 5000 levels would recurse past Python's limit if unwrapped
            payload = aggregate(0, 1, [(22, 0, payload)]).payload if len(payload) < 1 << 20 else payload
        session, client = self.connected()
        start = time.perf_counter()
        session.receive_data(client.send(4, Message(MessageType.AGGREGATE, 0, 1, payload[: 1 << 20])))
        with self.assertRaises((NestedAggregate, RemoteProtocolError)):
            drain(session)
        self.assertLess(time.perf_counter() - start, 1.0)

    def test_parts_count_against_the_message_rate(self) -> None:
        session, client = self.connected(command_messages_per_second=10, rate_window=1)
        parts = [(8, i, aac_frame(i)) for i in range(50)]
        session.receive_data(client.send(4, aggregate(0, 1, parts)), now=0.0)
        with self.assertRaises(RateLimitExceeded):
            drain(session)

    def test_honest_aggregate_is_split(self) -> None:
        session, client = self.connected()
        parts = [(9, 0, avc_keyframe()), (8, 20, aac_frame())]
        events = self.feed(session, client.send(4, aggregate(1000, 1, parts)))
        self.assertEqual([type(e) for e in events], [MediaReceived, MediaReceived])
        self.assertEqual([e.message.timestamp for e in events], [1000, 1020])


class PartialMessageTests(SynchronousTestCase):
    def _start(self, writer: ChunkWriter, csid: int, length: int) -> bytes:
        """The first 128-byte chunk of a ``length``-byte video message on ``csid``."""
        return writer.write(csid, Message(9, 0, 1, bytes(length)))[: 1 + 11 + 128]

    def test_partial_messages_on_many_chunk_streams_share_one_budget(self) -> None:
        limits = Limits(max_partial_message_bytes=3_000_000)
        reader, writer = ChunkReader(limits), ChunkWriter()
        reader.feed(self._start(writer, 4, 1_000_000) + self._start(writer, 5, 1_000_000))
        with self.assertRaises(PartialMessagesTooLarge):
            reader.feed(self._start(writer, 6, 1_000_001) + self._start(writer, 7, 1_000_000))

    def test_completed_and_aborted_messages_give_their_budget_back(self) -> None:
        reader, writer = ChunkReader(Limits(max_partial_message_bytes=1000)), ChunkWriter()
        for _ in range(10):
            self.assertEqual(len(reader.feed(writer.write(4, Message(9, 0, 1, bytes(900))))), 1)
        reader.feed(self._start(writer, 5, 900))
        reader.feed(writer.write(2, abort(5)))
        self.assertEqual(len(reader.feed(writer.write(6, Message(9, 0, 1, bytes(900))))), 1)

    def test_default_fits_an_honest_keyframe_with_audio_interleaved(self) -> None:
        reader, writer = ChunkReader(), ChunkWriter()
        self.assertEqual(len(reader.feed(writer.set_chunk_size(4096))), 1)
        data = writer.write(6, Message(9, 0, 1, bytes(8 * 1024 * 1024 - 1)))
        cut = 12 + 4096 + 24 * (1 + 4096)  # a chunk boundary, where the audio message slips in
        messages = reader.feed(data[:cut] + writer.write(4, Message(8, 0, 1, aac_frame())))
        messages += reader.feed(data[cut:])
        self.assertEqual([m.type_id for m in messages], [8, 9])


class RateTests(SessionTestCase):
    def test_command_flood_before_publish_is_refused(self) -> None:
        session, client = self.connected(command_messages_per_second=100, rate_window=10)
        ping = client.send(2, Message(4, 0, 0, struct.pack(">HI", 6, 1)))
        session.receive_data(ping * 999, now=0.0)
        drain(session)
        with self.assertRaises(RateLimitExceeded):
            session.receive_data(ping * 10, now=0.0)

    def test_the_same_messages_spread_over_time_pass(self) -> None:
        session, client = self.connected(command_messages_per_second=100, rate_window=10)
        ping = client.send(2, Message(4, 0, 0, struct.pack(">HI", 6, 1)))
        for second in range(30):
            session.receive_data(ping * 100, now=float(second))
            drain(session)

    def test_a_clock_stepping_back_refills_nothing(self) -> None:
        budget = RateBudget(Limits(command_messages_per_second=1, rate_window=2))
        budget.spend(100.0, 2, 0)
        with self.assertRaises(RateLimitExceeded):
            budget.spend(50.0, 1, 0)

    def test_after_a_step_back_time_counts_from_the_new_clock(self) -> None:
        budget = RateBudget(Limits(command_messages_per_second=1, rate_window=2))
        budget.spend(3600.0, 2, 0)
        budget.spend(0.0, 0, 0)  # the clock stepped back an hour
        budget.spend(2.0, 2, 0)  # two seconds later, two seconds' worth is back

    def test_chunk_size_one_flood_of_empty_messages_after_publish(self) -> None:
        session, client = self.connected()
        self.feed(session, client.command("publish", 5, None, "key", "live", stream_id=1))
        self.feed(session, client.writer.set_chunk_size(1))
        flood = client.send(4, Message(8, 0, 1, b"")) + client.send(4, Message(8, 0, 1, b""))
        flood += client.send(4, Message(8, 0, 1, b"")) * 20_000  # type-3 headers: one byte a message
        start = time.perf_counter()
        with self.assertRaises(RateLimitExceeded):
            for second in range(100):
                session.receive_data(flood, now=second / 10)
                drain(session)
        self.assertLess(time.perf_counter() - start, 5.0)

    def test_a_real_high_bitrate_stream_passes(self) -> None:
        # 60 s of 50 Mb/s video at 60 fps with 48 kHz AAC, in 4096-byte chunks: far from the media budget.
        session, client = self.connected()
        self.feed(session, client.command("publish", 5, None, "key", "live", stream_id=1))
        self.feed(session, client.writer.set_chunk_size(4096))
        frame = avc_keyframe(size=50_000_000 // 8 // 60)
        for second in range(60):
            data = b"".join(client.send(6, Message(9, second * 1000 + i * 16, 1, frame)) for i in range(60))
            data += b"".join(
                client.send(4, Message(8, second * 1000 + i * 21, 1, aac_frame())) for i in range(47)
            )
            session.receive_data(data, now=float(second))
            self.assertEqual(len(drain(session)), 107)

    def test_without_time_nothing_is_checked(self) -> None:
        session, client = self.connected(command_messages_per_second=1, rate_window=1)
        ping = client.send(2, Message(4, 0, 0, struct.pack(">HI", 6, 1)))
        session.receive_data(ping * 100)
        drain(session)


def multitrack_video(tracks: list[tuple[bytes, int]], packet_type: int = 1) -> bytes:
    """An E-RTMP multitrack video tag, ManyTracksManyCodecs, each track 3 bytes of data."""
    body = bytes([0x80 | 0x10 | 6, 0x20 | packet_type])
    for fourcc, track_id in tracks:
        body += fourcc + bytes([track_id]) + b"\x00\x00\x03abc"
    return body


class TrackTests(SessionTestCase):
    def test_a_tag_of_thousands_of_tracks_is_refused(self) -> None:
        census = TrackCensus(max_tracks=32, max_codecs=16)
        payload = multitrack_video([(b"hvc1", 1)] * 5000)
        start = time.perf_counter()
        with self.assertRaises(TooManyTracks):
            census.video(payload)
        self.assertLess(time.perf_counter() - start, 0.05)

    def test_new_fourccs_past_the_cap_are_refused(self) -> None:
        census = TrackCensus(max_tracks=32, max_codecs=3)
        for fourcc in (b"hvc1", b"av01", b"vp09"):
            census.video(b"\x91" + fourcc + bytes(10))
        with self.assertRaises(TooManyTracks):
            census.video(b"\x91ZZZZ" + bytes(10))
        self.assertEqual(len(census.fourccs), 3)

    def test_honest_multitrack_passes_and_legacy_is_not_looked_at(self) -> None:
        session, client = self.connected()
        tag = multitrack_video([(b"hvc1", 0), (b"av01", 1), (b"hvc1", 2)])
        events = self.feed(session, client.send(6, Message(9, 0, 1, tag)))
        self.assertEqual([type(e) for e in events], [MediaReceived])
        self.feed(session, client.send(6, Message(9, 40, 1, avc_keyframe())))
        self.assertEqual(session._census.tracks, {(True, 0), (True, 1), (True, 2)})

    def test_multitrack_amplification_closes_the_session(self) -> None:
        session, client = self.connected()
        tag = multitrack_video([(struct.pack(">I", i), i & 0xFF) for i in range(5000)])
        session.receive_data(client.send(6, Message(9, 0, 1, tag)))
        with self.assertRaises(TooManyTracks):
            drain(session)


class ClientTextTests(SynchronousTestCase):
    def test_control_characters_are_escaped_and_length_bounded(self) -> None:
        forged = "FMLE/3.0\n2026-12-03T13:00:00.000+00:00 [info] Manhole login user=root\x1b[2J\x9b\u2028"
        text = client_text(forged)
        self.assertNotIn("\n", text)
        self.assertFalse(any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u2028" for c in text))
        self.assertIn("\\n2026", text)
        self.assertEqual(len(client_text("a" * 70_000, 100)), 100 + len("…(+69900 chars)"))
        self.assertEqual(escape_controls("a\\b"), "a\\\\b")  # an escape always stands for a character

    def test_non_strings_are_shown_in_bounded_time(self) -> None:
        value: Any = ["leaf"]
        for _ in range(60):
            value = [value, value]
        start = time.perf_counter()
        self.assertLess(len(client_text(value)), 300)
        self.assertLess(time.perf_counter() - start, 0.1)
        self.assertEqual(client_text({1: 2, "a": 3}), "{1: 2, 'a': 3}")

    def test_url_without_query(self) -> None:
        self.assertEqual(url_without_query("rtmp://h/live?token=s3cret&e=1"), "rtmp://h/live")
        self.assertEqual(url_without_query(["rtmp://h"]), "")


class LogLineTests(SynchronousTestCase):
    def event(self, **fields: Any) -> dict[str, Any]:
        return {"log_format": "connect command", "log_level": LogLevel.info, "log_time": 0.0, **fields}

    def test_text_line_cannot_be_forged_or_grow(self) -> None:
        forged = "x\n1970-01-01T00:00:00.000+00:00 [info] Manhole login user=root\r\x1b]0;pwned\x07"
        line = format_text(self.event(flashVer=forged, name="n" * 70_000, nested={"k": [forged] * 1000}))
        self.assertEqual(line.count("\n"), 1)
        self.assertNotIn("\x1b", line)
        self.assertLess(len(line), 20_000)

    def test_json_line_is_valid_and_bounded(self) -> None:
        line = format_json(self.event(flashVer="a\n\x1b\x9b", name="n" * 70_000))
        self.assertEqual(line.count("\n"), 1)
        self.assertNotIn("\x9b", line)
        record = json.loads(line)
        self.assertEqual(record["flashVer"], "a\n\x1b\x9b")
        self.assertLess(len(line), 2000)


class LimitOptionTests(SynchronousTestCase):
    def test_every_new_limit_has_an_option(self) -> None:
        options = Options()
        options.parseOptions(["--media-byte-rate", "0", "--max-tracks", "8", "--max-amf-nodes", "500"])
        limits = options.config().limits
        self.assertEqual(
            (limits.media_bytes_per_second, limits.max_tracks, limits.max_amf_nodes), (0, 8, 500)
        )
        fields = {field for _, field, _ in OPTIONS}
        self.assertTrue({"max_partial_message_bytes", "command_messages_per_second", "max_codecs"} <= fields)
        self.assertTrue(fields <= set(Limits.__dataclass_fields__))


# -- a whole session fed adversarial messages -------------------------------------------------------------

_keys = st.text(min_size=1, max_size=8)  # AMF0 has no empty key
_amf_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_keys, kids, max_size=4),
    max_leaves=20,
)
_names = st.sampled_from(
    ["connect", "createStream", "publish", "play", "deleteStream", "FCUnpublish", "x" * 300]
)


class AdversarialSession(RuleBasedStateMachine):
    """A ServerSession fed a mix of honest and hostile messages: only typed errors ever escape.

    Invariants: ``receive_data``/``next_event`` raise only ``RemoteProtocolError`` subclasses while the
    session is alive and only ``LocalProtocolError`` once it failed; time only moves forward.
    """

    def __init__(self) -> None:
        super().__init__()
        limits = Limits(
            command_messages_per_second=50,
            command_bytes_per_second=20_000,
            rate_window=1,
            max_partial_message_bytes=50_000,
            max_amf_nodes=2_000,
            max_tracks=4,
            max_codecs=3,
        )
        self.session = new_session(**{k: getattr(limits, k) for k in limits.__dataclass_fields__})
        self.client = Client()
        self.now = 0.0
        self.failed = False
        self.feed(self.client.hello())
        self.feed(self.client.take(self.session.data_to_send()))

    def feed(self, data: bytes) -> None:
        try:
            self.session.receive_data(data, now=self.now)
            while (event := self.session.next_event()) is not None:
                if isinstance(event, CommandReceived) and event.command.name == "connect":
                    if not self.session.session_open:
                        self.session.accept_connect("live", {})
        except RemoteProtocolError:
            assert not self.failed
            self.failed = True
        except LocalProtocolError:
            assert self.failed

    @rule(name=_names, txn=st.floats(), args=st.lists(_amf_values, max_size=3), stream_id=st.integers(0, 3))
    def command(self, name: str, txn: float, args: list, stream_id: int) -> None:
        self.feed(self.client.command(name, txn, *args, stream_id=stream_id))

    @rule(levels=st.integers(1, 40))
    def reference_bomb(self, levels: int) -> None:
        body = amf0.encode_many("connect", 1.0) + amf0_reference_bomb(levels)
        self.feed(self.client.send(3, Message(MessageType.COMMAND_AMF0, 0, 0, body)))

    @rule(data=st.binary(max_size=300), type_id=st.sampled_from([8, 9, 15, 17, 18, 20, 22, 1, 2, 4, 5]))
    def raw_message(self, data: bytes, type_id: int) -> None:
        self.feed(self.client.send(4, Message(type_id, 0, 1, data)))

    @rule(tracks=st.lists(st.tuples(st.binary(min_size=4, max_size=4), st.integers(0, 255)), max_size=40))
    def multitrack(self, tracks: list) -> None:
        self.feed(self.client.send(6, Message(9, 0, 1, multitrack_video(tracks))))

    @rule(depth=st.integers(1, 4))
    def nested_aggregate(self, depth: int) -> None:
        payload = avc_keyframe()
        for _ in range(depth):
            payload = aggregate(0, 1, [(22 if _ else 9, 0, payload)]).payload
        self.feed(self.client.send(4, Message(22, 0, 1, payload)))

    @rule(size=st.integers(1, 300), count=st.integers(1, 200))
    def small_chunks(self, size: int, count: int) -> None:
        self.feed(self.client.writer.set_chunk_size(size))
        self.feed(b"".join(self.client.send(5, Message(8, 0, 1, b"")) for _ in range(count)))

    @rule(data=st.binary(max_size=500))
    def garbage(self, data: bytes) -> None:
        self.feed(data)

    @rule(seconds=st.floats(0, 5))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.failed)
    @rule()
    def failed_session_refuses_input(self) -> None:
        try:
            self.session.receive_data(b"\x03")
        except LocalProtocolError:
            return
        raise AssertionError("a failed session took input")

    @invariant()
    def bounded(self) -> None:
        reader = self.session._reader
        if reader is not None:
            assert reader._in_progress <= 50_000


class AdversarialSessionTests(SynchronousTestCase):
    def test_only_typed_errors_escape(self) -> None:
        run_state_machine_as_test(
            AdversarialSession,
            settings=settings(
                max_examples=60,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
