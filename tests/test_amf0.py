"""Tests of rtmpd.core.amf0: golden bytes, round trips, Py3AMF as an oracle, fuzzing."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0
from rtmpd.core.amf0 import UNDEFINED, ECMAArray, TypedObject, XMLDocument
from rtmpd.core.errors import AMFDecodeError, AMFEncodeError, RemoteProtocolError

with warnings.catch_warnings():
    # Py3AMF imports a deprecated defusedxml module; not our concern.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyamf

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    """Bytes from hex written with spaces for readability."""
    return bytes.fromhex(text)


def d(value: float) -> str:
    """The hex of an AMF double."""
    return struct.pack(">d", value).hex()


#: The body of the ``connect`` command ffmpeg 5.1 sends when it plays
#: rtmp://127.0.0.1:42909/live/test, captured from the wire (message type 20).
FFMPEG_CONNECT = h(
    "020007636f6e6e656374003ff00000000000000300036170700200046c6976650008666c61736856657202000d4c4e5820"
    "392c302c3132342c320005746355726c02001b72746d703a2f2f3132372e302e302e313a34323930392f6c69766500046670"
    "61640100000c6361706162696c697469657300402e000000000000000b617564696f436f646563730040afce000000000000"
    "0b766964656f436f6465637300406f800000000000000d766964656f46756e6374696f6e003ff0000000000000000009"
)


class GoldenTests(SynchronousTestCase):
    """Each AMF0 type marker against bytes written out by hand."""

    def assertGolden(self, value: object, encoded: bytes) -> None:
        self.assertEqual(amf0.encode(value), encoded)
        decoded, offset = amf0.decode(encoded)
        self.assertEqual(offset, len(encoded))
        self.assertEqual(repr(decoded), repr(value))

    def test_ffmpeg_connect(self) -> None:
        values = amf0.decode_all(FFMPEG_CONNECT)
        self.assertEqual(
            values,
            [
                "connect",
                1.0,
                {
                    "app": "live",
                    "flashVer": "LNX 9,0,124,2",
                    "tcUrl": "rtmp://127.0.0.1:42909/live",
                    "fpad": False,
                    "capabilities": 15.0,
                    "audioCodecs": 4071.0,
                    "videoCodecs": 252.0,
                    "videoFunction": 1.0,
                },
            ],
        )
        self.assertIs(type(values[1]), float)
        order = "app flashVer tcUrl fpad capabilities audioCodecs videoCodecs videoFunction"
        self.assertEqual(list(values[2]), order.split())
        self.assertEqual(amf0.encode_many(*values), FFMPEG_CONNECT)

    def test_number(self) -> None:
        self.assertGolden(1.5, h("00" + d(1.5)))
        self.assertGolden(-0.0, h("00 8000000000000000"))
        value, _ = amf0.decode(h("00 3ff0000000000000"))
        self.assertIs(type(value), float)
        self.assertEqual(amf0.encode(1), h("00 3ff0000000000000"))

    def test_number_nan_and_infinity(self) -> None:
        self.assertEqual(amf0.decode(h("00 7ff0000000000000"))[0], float("inf"))
        nan, _ = amf0.decode(amf0.encode(float("nan")))
        self.assertNotEqual(nan, nan)

    def test_int_beyond_2_53_is_a_double(self) -> None:
        self.assertEqual(amf0.encode(2**53 + 1), amf0.encode(float(2**53)))
        self.assertEqual(amf0.encode(2**64), h("00" + d(2.0**64)))

    def test_boolean(self) -> None:
        self.assertGolden(True, h("01 01"))
        self.assertGolden(False, h("01 00"))
        # Any non-zero byte is true.
        self.assertIs(amf0.decode(h("01 7f"))[0], True)

    def test_string(self) -> None:
        self.assertGolden("abc", h("02 0003 616263"))
        self.assertGolden("", h("02 0000"))
        self.assertGolden("é€", h("02 0005 c3a9 e282ac"))

    def test_string_longest_short_form(self) -> None:
        text = "x" * 0xFFFF
        self.assertGolden(text, h("02 ffff") + text.encode())

    def test_long_string(self) -> None:
        text = "x" * 0x10000
        self.assertGolden(text, h("0c 00010000") + text.encode())
        # The limit is on UTF-8 bytes, not characters.
        text = "é" * 0x8000
        self.assertEqual(amf0.encode(text)[:5], h("0c 00010000"))

    def test_object(self) -> None:
        self.assertGolden({"a": 1.0, "b": None}, h("03 0001 61 00" + d(1.0) + "0001 62 05 000009"))
        self.assertGolden({}, h("03 000009"))

    def test_null_and_undefined(self) -> None:
        self.assertGolden(None, h("05"))
        self.assertGolden(UNDEFINED, h("06"))
        self.assertFalse(UNDEFINED)
        self.assertEqual(repr(UNDEFINED), "UNDEFINED")
        self.assertIs(amf0.Undefined(), UNDEFINED)

    def test_reference_to_earlier_object(self) -> None:
        # [ {"a": null}, <reference 1> ]: index 0 is the outer array itself.
        value, _ = amf0.decode(h("0a 00000002 03 0001 61 05 000009 07 0001"))
        self.assertEqual(value, [{"a": None}, {"a": None}])
        self.assertIs(value[0], value[1])

    def test_reference_to_self(self) -> None:
        value, _ = amf0.decode(h("03 0004 73656c66 07 0000 000009"))
        self.assertIs(value["self"], value)
        # A decoded cycle cannot be encoded again.
        self.assertRaises(AMFEncodeError, amf0.encode, value)

    def test_reference_order_is_start_order(self) -> None:
        # Outer object (0) starts before inner array (1) and ECMA array (2).
        data = h("03 0001 61 0a 00000001 08 00000000 000009 0001 62 07 0002 0001 63 07 0001 000009")
        value, _ = amf0.decode(data)
        self.assertIs(value["b"], value["a"][0])
        self.assertIs(value["c"], value["a"])

    def test_reference_out_of_range(self) -> None:
        self.assertRaises(AMFDecodeError, amf0.decode, h("0a 00000001 07 0001"))

    def test_reference_table_is_per_top_level_value(self) -> None:
        self.assertRaises(AMFDecodeError, amf0.decode_all, h("03 000009 07 0000"))

    def test_dates_and_strings_are_not_referenced(self) -> None:
        # The date and string do not take reference slots: index 1 is the object.
        value, _ = amf0.decode(h("0a 00000003 0b" + d(0.0) + "0000 03 000009 07 0001"))
        self.assertIs(value[1], value[2])

    def test_ecma_array(self) -> None:
        self.assertGolden(ECMAArray({"a": True}), h("08 00000001 0001 61 0101 000009"))
        self.assertGolden(ECMAArray(), h("08 00000000 000009"))

    def test_ecma_array_wrong_count_is_ignored(self) -> None:
        for count in ("00000000", "00000063", "ffffffff"):
            value, _ = amf0.decode(h("08" + count + "0001 61 0101 0001 62 0100 000009"))
            self.assertEqual(value, ECMAArray({"a": True, "b": False}))

    def test_object_ended_by_end_of_data(self) -> None:
        # Sloppy @setDataFrame senders: no end marker, or no 0x09 after the empty key.
        for tail in ("", "0000"):
            values = amf0.decode_all(h("02 000d 40736574446174614672616d65 08 00000001 0001 61 0101" + tail))
            self.assertEqual(values, ["@setDataFrame", ECMAArray({"a": True})])
            value, _ = amf0.decode(h("03 0001 61 05" + tail))
            self.assertEqual(value, {"a": None})

    def test_object_end_marker_misplaced(self) -> None:
        self.assertRaises(AMFDecodeError, amf0.decode, h("09"))
        self.assertRaises(AMFDecodeError, amf0.decode, h("03 0001 61 09"))
        self.assertRaises(AMFDecodeError, amf0.decode, h("03 0000 05"))

    def test_strict_array(self) -> None:
        self.assertGolden([1.0, "a"], h("0a 00000002 00" + d(1.0) + "02 0001 61"))
        self.assertEqual(amf0.encode((1.0, "a")), amf0.encode([1.0, "a"]))
        self.assertGolden([], h("0a 00000000"))

    def test_date(self) -> None:
        moment = datetime(2020, 1, 1, tzinfo=UTC)
        self.assertGolden(moment, h("0b" + d(1577836800000.0) + "0000"))
        self.assertEqual(amf0.encode(datetime(2020, 1, 1)), amf0.encode(moment))
        plus_two = timezone(timedelta(hours=2))
        self.assertEqual(amf0.encode(datetime(2020, 1, 1, 2, tzinfo=plus_two)), amf0.encode(moment))
        # The time-zone field is read and ignored.
        self.assertEqual(amf0.decode(h("0b" + d(1577836800000.0) + "ffc4"))[0], moment)
        self.assertGolden(datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), h("0b" + d(-1.0) + "0000"))

    def test_date_outside_datetime_range(self) -> None:
        for ms in (8.64e15, -8.64e15, float("nan"), float("inf")):
            self.assertRaises(AMFDecodeError, amf0.decode, h("0b" + d(ms) + "0000"))

    def test_xml_document(self) -> None:
        self.assertGolden(XMLDocument("<a/>"), h("0f 00000004 3c612f3e"))
        self.assertIs(type(amf0.decode(h("0f 00000000"))[0]), XMLDocument)

    def test_typed_object(self) -> None:
        self.assertGolden(TypedObject("Foo", {"q": 1.0}), h("10 0003 466f6f 0001 71 00" + d(1.0) + "000009"))

    def test_avmplus_switch(self) -> None:
        self.assertEqual(amf0.decode(h("11 04 7f")), (127, 3))
        values = amf0.decode_all(h("11 0a 0b 01 03 61 04 01 01 02 0001 7a"))
        self.assertEqual(values, [{"a": 1}, "z"])

    def test_unsupported_decodes_to_undefined(self) -> None:
        self.assertIs(amf0.decode(h("0d"))[0], UNDEFINED)

    def test_reserved_and_unknown_markers(self) -> None:
        for marker in ("04", "0e", "12", "ff"):
            self.assertRaises(AMFDecodeError, amf0.decode, h(marker + "00000000"))

    def test_decode_at_offset(self) -> None:
        data = h("05 02 0001 61 06")
        self.assertEqual(amf0.decode(data, 1), ("a", 5))
        self.assertEqual(amf0.decode(bytearray(data), 5), (UNDEFINED, 6))
        self.assertEqual(amf0.decode_all(memoryview(data)), [None, "a", UNDEFINED])
        self.assertRaises(AMFDecodeError, amf0.decode, data, 6)
        self.assertRaises(ValueError, amf0.decode, data, -1)

    def test_decode_all_empty(self) -> None:
        self.assertEqual(amf0.decode_all(b""), [])


class DecodeErrorTests(SynchronousTestCase):
    def test_errors_are_remote_protocol_errors(self) -> None:
        self.assertTrue(issubclass(AMFDecodeError, RemoteProtocolError))

    def test_invalid_utf8(self) -> None:
        for data in (
            "02 0001 ff",
            "02 0002 c3 28",
            "0c 00000001 80",
            "03 0001 ff 05 000009",
            "02 0003 eda080",
        ):
            self.assertRaises(AMFDecodeError, amf0.decode, h(data))

    def test_every_truncation_fails(self) -> None:
        # Strict arrays, unlike objects, have no lenient end.
        data = amf0.encode(["connect", 1.0, True, None, datetime(2020, 1, 1), [XMLDocument("x")], "é" * 3])
        for end in range(len(data)):
            self.assertRaises(AMFDecodeError, amf0.decode, data[:end])

    def test_truncated_property(self) -> None:
        # 03 | 0003 "key" | 02 0005 "value" | 0000 09: cut inside the property
        # or between the empty key's two bytes.
        data = amf0.encode({"key": "value"})
        for end in [*range(2, 14), 15]:
            self.assertRaises(AMFDecodeError, amf0.decode, data[:end])

    def test_trailing_garbage(self) -> None:
        self.assertRaises(AMFDecodeError, amf0.decode_all, amf0.encode("ok") + b"\x02\x00")
        self.assertRaises(AMFDecodeError, amf0.decode_all, amf0.encode("ok") + b"\xff")

    def test_huge_strict_array_fails_fast(self) -> None:
        data = h("0a ffffffff 05 05 05 05 05")
        tracemalloc.start()
        try:
            self.assertRaises(AMFDecodeError, amf0.decode, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 100_000)

    def test_huge_string_lengths(self) -> None:
        self.assertRaises(AMFDecodeError, amf0.decode, h("0c ffffffff 6161"))
        self.assertRaises(AMFDecodeError, amf0.decode, h("0f ffffffff 6161"))
        self.assertRaises(AMFDecodeError, amf0.decode, h("02 ffff 6161"))

    def test_deep_nesting_is_refused(self) -> None:
        arrays = h("0a 00000001") * 10_000 + h("05")
        self.assertRaises(AMFDecodeError, amf0.decode, arrays)
        objects = h("03 0001 61") * 10_000 + h("05")
        self.assertRaises(AMFDecodeError, amf0.decode, objects)
        ecma = h("08 00000001 0001 61") * 10_000 + h("05")
        self.assertRaises(AMFDecodeError, amf0.decode, ecma)

    def test_max_depth_boundary(self) -> None:
        def nested(n: int) -> bytes:
            return h("0a 00000001") * n + h("05")

        self.assertEqual(amf0.decode(nested(64))[1], 64 * 5 + 1)
        self.assertRaises(AMFDecodeError, amf0.decode, nested(65))
        self.assertEqual(amf0.decode(nested(3), max_depth=3)[1], 16)
        self.assertRaises(AMFDecodeError, amf0.decode, nested(4), max_depth=3)
        self.assertIsNone(amf0.decode(h("05"), max_depth=0)[0])
        self.assertRaises(AMFDecodeError, amf0.decode, nested(1), max_depth=0)
        self.assertEqual(amf0.decode(nested(200), max_depth=200)[1], 1001)
        self.assertRaises(ValueError, amf0.decode, nested(1), max_depth=201)
        self.assertRaises(ValueError, amf0.decode_all, nested(1), max_depth=-1)

    def test_depth_counts_through_avmplus_switch(self) -> None:
        # 63 AMF0 arrays, then an AMF3 array holding an AMF3 array: 65 levels.
        data = h("0a 00000001") * 63 + h("11 09 03 01 09 01 01")
        self.assertRaises(AMFDecodeError, amf0.decode, data)
        self.assertEqual(amf0.decode(data[:-3] + h("01"))[1], len(data) - 2)


class EncodeErrorTests(SynchronousTestCase):
    def test_unsupported_types(self) -> None:
        for value in (b"bytes", {1, 2}, object(), 1j, datetime(2020, 1, 1).date()):
            self.assertRaises(AMFEncodeError, amf0.encode, value)
        self.assertRaises(AMFEncodeError, amf0.encode_many, "ok", object())

    def test_bad_keys(self) -> None:
        self.assertRaises(AMFEncodeError, amf0.encode, {1: "x"})
        self.assertRaises(AMFEncodeError, amf0.encode, {"": "x"})
        self.assertRaises(AMFEncodeError, amf0.encode, ECMAArray({"k" * 0x10000: 1}))
        self.assertRaises(AMFEncodeError, amf0.encode, TypedObject("C", {None: 1}))
        self.assertEqual(amf0.encode({"k" * 0xFFFF: None})[:3], h("03 ffff"))

    def test_unencodable_strings_and_numbers(self) -> None:
        self.assertRaises(AMFEncodeError, amf0.encode, "\ud800")
        self.assertRaises(AMFEncodeError, amf0.encode, {"\udfff": 1})
        self.assertRaises(AMFEncodeError, amf0.encode, 10**400)

    def test_cycles(self) -> None:
        looped: list = [1.0]
        looped.append({"back": looped})
        self.assertRaises(AMFEncodeError, amf0.encode, looped)
        mapping: dict = {}
        mapping["me"] = ECMAArray({"again": mapping})
        self.assertRaises(AMFEncodeError, amf0.encode, mapping)

    def test_shared_value_without_cycle_is_written_twice(self) -> None:
        shared = {"k": 1.0}
        self.assertEqual(amf0.decode(amf0.encode([shared, shared]))[0], [shared, shared])

    def test_too_deep_to_encode(self) -> None:
        value: list = []
        for _ in range(5000):
            value = [value]
        self.assertRaises(AMFEncodeError, amf0.encode, value)


# ----------------------------------------------------------------- properties


def _long_strings() -> st.SearchStrategy[str]:
    # Past 65535 UTF-8 bytes, mixing 1- and 3-byte characters around the limit.
    return st.builds(
        lambda ch, n: ch * n, st.sampled_from(["a", "é", "€", "😀"]), st.integers(16_384, 70_000)
    )


scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
    st.text(),
    st.datetimes(timezones=st.just(UTC)).map(
        lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000, fold=0)
    ),
    st.text().map(XMLDocument),
)
keys = st.text(min_size=1, max_size=20)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(keys, children, max_size=5),
        st.dictionaries(keys, children, max_size=5).map(ECMAArray),
        st.builds(TypedObject, st.text(max_size=10), st.dictionaries(keys, children, max_size=4)),
    )


values = st.recursive(scalars, _containers, max_leaves=20)


def expected(value: object) -> object:
    """What decoding the encoding of ``value`` must give."""
    if isinstance(value, bool) or value is None or value is UNDEFINED:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [expected(v) for v in value]
    if isinstance(value, TypedObject):
        return TypedObject(value.class_name, {k: expected(v) for k, v in value.values.items()})
    if isinstance(value, dict):
        return type(value)({k: expected(v) for k, v in value.items()})
    return value


class RoundTripTests(SynchronousTestCase):
    # repr() compares exact types (1.0 vs 1, ECMAArray vs dict), key order,
    # and the sign of zero.

    @settings(max_examples=150, deadline=None)
    @given(values)
    def test_encode_decode(self, value: object) -> None:
        data = amf0.encode(value)
        decoded, offset = amf0.decode(data)
        self.assertEqual(offset, len(data))
        self.assertEqual(repr(decoded), repr(expected(value)))
        self.assertEqual(amf0.encode(decoded), data)

    @settings(max_examples=30, deadline=None)
    @given(_long_strings())
    def test_long_strings(self, text: str) -> None:
        data = amf0.encode([text])
        self.assertEqual(data[5], 0x0C if len(text.encode()) > 0xFFFF else 0x02)
        self.assertEqual(amf0.decode(data)[0], [text])

    @settings(max_examples=50, deadline=None)
    @given(st.lists(values, max_size=5))
    def test_encode_many_decode_all(self, many: list) -> None:
        self.assertEqual(repr(amf0.decode_all(amf0.encode_many(*many))), repr([expected(v) for v in many]))


# Py3AMF as an oracle. Restrictions, each for a Py3AMF quirk: no dates (it
# decodes them naive and registers them as references, which the AMF0 spec
# does not), no undefined/XML/typed objects (its own classes), no keys over
# 65535 bytes (it writes their length as 32 bits), and no NaN (not equal to
# itself in the comparison), and no -0.0 (it decodes it as the int 0).
oracle_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False).map(lambda x: x + 0.0),
    st.integers(-(2**53), 2**53),
    st.text(),
)
oracle_values = st.recursive(
    oracle_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(min_size=1, max_size=20), children, max_size=5),
    ),
    max_leaves=20,
)


def plain(value: object) -> object:
    """Py3AMF's values with its int-for-whole-numbers and ASObject undone."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class Py3AMFDifferentialTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(st.lists(oracle_values, min_size=1, max_size=4))
    def test_py3amf_decodes_ours(self, many: list) -> None:
        theirs = list(pyamf.decode(amf0.encode_many(*many), encoding=pyamf.AMF0))
        self.assertEqual(repr(plain(theirs)), repr(expected(many)))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(oracle_values, min_size=1, max_size=4))
    def test_we_decode_py3amf(self, many: list) -> None:
        data = pyamf.encode(*many, encoding=pyamf.AMF0).getvalue()
        self.assertEqual(repr(amf0.decode_all(data)), repr(expected(many)))

    def test_we_decode_py3amf_references(self) -> None:
        shared = {"k": 1}
        data = pyamf.encode([shared, [shared, shared]], encoding=pyamf.AMF0).getvalue()
        self.assertIn(b"\x07", data)
        (value,) = amf0.decode_all(data)
        self.assertEqual(value, [{"k": 1.0}, [{"k": 1.0}, {"k": 1.0}]])
        self.assertIs(value[0], value[1][0])
        self.assertIs(value[0], value[1][1])

    def test_py3amf_long_string(self) -> None:
        text = "€" * 30_000
        self.assertEqual(amf0.decode_all(pyamf.encode(text, encoding=pyamf.AMF0).getvalue()), [text])
        self.assertEqual(list(pyamf.decode(amf0.encode(text), encoding=pyamf.AMF0)), [text])


# ----------------------------------------------------------------- fuzzing


def decode_all_or_error(data: bytes) -> list | None:
    """Decode; an AMFDecodeError is an acceptable answer, any other exception fails the test."""
    try:
        return amf0.decode_all(data)
    except AMFDecodeError:
        return None


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.one_of(st.just(FFMPEG_CONNECT), values.map(amf0.encode))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x07, 0x09, 0x0A, 0x11, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


class FuzzTests(SynchronousTestCase):
    @FUZZ
    @given(st.binary(max_size=200))
    def test_random_bytes(self, data: bytes) -> None:
        result = decode_all_or_error(data)
        self.assertTrue(result is None or isinstance(result, list))

    @FUZZ
    @given(mutated())
    def test_mutated_encodings(self, data: bytes) -> None:
        result = decode_all_or_error(data)
        self.assertTrue(result is None or isinstance(result, list))

    @FUZZ
    @given(st.binary(max_size=100))
    def test_random_bytes_after_avmplus_marker(self, data: bytes) -> None:
        try:
            value, offset = amf0.decode(b"\x11" + data)
        except AMFDecodeError:
            return
        self.assertLessEqual(offset, len(data) + 1)
