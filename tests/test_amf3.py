"""Tests of rtmpd.core.amf3: golden bytes, references, round trips, Py3AMF as an oracle, fuzzing."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0, amf3
from rtmpd.core.amf0 import UNDEFINED, ECMAArray, TypedObject, XMLDocument
from rtmpd.core.errors import AMFDecodeError, AMFEncodeError

with warnings.catch_warnings():
    # Py3AMF imports a deprecated defusedxml module; not our concern.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyamf

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def d(value: float) -> str:
    return struct.pack(">d", value).hex()


def decoded(data: bytes) -> object:
    """Decode one value that must use up ``data`` exactly."""
    value, offset = amf3.decode(data)
    if offset != len(data):
        raise AssertionError(f"decoded {offset} of {len(data)} bytes")
    return value


class IntegerTests(SynchronousTestCase):
    GOLDEN = [
        (0, "04 00"),
        (127, "04 7f"),
        (128, "04 81 00"),
        (0x3FFF, "04 ff 7f"),
        (0x4000, "04 81 80 00"),
        (0x1FFFFF, "04 ff ff 7f"),
        (0x200000, "04 80 c0 80 00"),
        (0x0FFFFFFF, "04 bf ff ff ff"),
        (-1, "04 ff ff ff ff"),
        (-(2**28), "04 c0 80 80 00"),
    ]

    def test_golden(self) -> None:
        for number, encoded in self.GOLDEN:
            self.assertEqual(amf3.encode(number), h(encoded), number)
            value = decoded(h(encoded))
            self.assertIs(type(value), int)
            self.assertEqual(value, number)

    def test_outside_29_bits_is_a_double(self) -> None:
        self.assertEqual(amf3.encode(2**28), h("05" + d(2.0**28)))
        self.assertEqual(amf3.encode(-(2**28) - 1), h("05" + d(-(2.0**28) - 1)))
        self.assertRaises(AMFEncodeError, amf3.encode, 10**400)

    def test_non_minimal_u29_is_read(self) -> None:
        # 0x80 0x01: a redundant leading group, still 1.
        self.assertEqual(decoded(h("04 80 01")), 1)


class ScalarTests(SynchronousTestCase):
    def test_constants(self) -> None:
        for value, encoded in ((UNDEFINED, "00"), (None, "01"), (False, "02"), (True, "03")):
            self.assertEqual(amf3.encode(value), h(encoded))
            self.assertIs(decoded(h(encoded)), value)

    def test_double(self) -> None:
        self.assertEqual(amf3.encode(1.5), h("05" + d(1.5)))
        self.assertEqual(decoded(h("05" + d(1.0))), 1.0)
        self.assertIs(type(decoded(h("05" + d(1.0)))), float)

    def test_string(self) -> None:
        self.assertEqual(amf3.encode("abc"), h("06 07 616263"))
        self.assertEqual(amf3.encode(""), h("06 01"))
        self.assertEqual(decoded(h("06 05 c3a9")), "é")

    def test_xml(self) -> None:
        self.assertEqual(amf3.encode(XMLDocument("<a/>")), h("07 09 3c612f3e"))
        for marker in ("07", "0b"):
            value = decoded(h(marker + "09 3c612f3e"))
            self.assertIs(type(value), XMLDocument)
            self.assertEqual(value, "<a/>")

    def test_date(self) -> None:
        moment = datetime(2020, 1, 1, tzinfo=UTC)
        self.assertEqual(amf3.encode(moment), h("08 01" + d(1577836800000.0)))
        self.assertEqual(amf3.encode(datetime(2020, 1, 1)), amf3.encode(moment))
        self.assertEqual(decoded(h("08 01" + d(1577836800000.0))), moment)
        self.assertRaises(AMFDecodeError, amf3.decode, h("08 01" + d(float("nan"))))

    def test_date_reference(self) -> None:
        value = decoded(h("09 05 01 08 01" + d(0.0) + "08 02"))
        self.assertEqual(value[0], datetime(1970, 1, 1, tzinfo=UTC))
        self.assertIs(value[0], value[1])

    def test_byte_array(self) -> None:
        self.assertEqual(amf3.encode(b"\x01\x02\x03"), h("0c 07 010203"))
        self.assertEqual(amf3.encode(bytearray(b"\x01")), amf3.encode(memoryview(b"\x01")))
        self.assertEqual(decoded(h("0c 07 010203")), b"\x01\x02\x03")
        value = decoded(h("09 05 01 0c 03 ff 0c 02"))
        self.assertIs(value[0], value[1])


class StringReferenceTests(SynchronousTestCase):
    def test_repeated_string_is_a_reference(self) -> None:
        data = h("09 09 01 06 07 616263 06 00 06 01 06 01")
        self.assertEqual(amf3.encode(["abc", "abc", "", ""]), data)
        self.assertEqual(decoded(data), ["abc", "abc", "", ""])

    def test_empty_string_is_never_referenced(self) -> None:
        # "" first, then "abc": reference 0 is "abc".
        self.assertEqual(decoded(h("09 07 01 06 01 06 07 616263 06 00")), ["", "abc", "abc"])

    def test_keys_and_class_names_share_the_table(self) -> None:
        # Class name "a" (0), member "b" (1); the string value refers to both.
        data = h("09 07 01 0a 13 03 61 03 62 04 01 06 00 06 02")
        self.assertEqual(decoded(data), [TypedObject("a", {"b": 1}), "a", "b"])

    def test_bad_string_reference(self) -> None:
        self.assertRaises(AMFDecodeError, amf3.decode, h("06 00"))
        self.assertRaises(AMFDecodeError, amf3.decode, h("09 05 01 06 03 61 06 02"))

    def test_context_carries_tables_across_values(self) -> None:
        context = amf3.Decoder()
        data = h("06 07 616263 06 00")
        value, offset = amf3.decode(data, context=context)
        self.assertEqual((value, offset), ("abc", 5))
        self.assertEqual(amf3.decode(data, offset, context=context), ("abc", 7))
        self.assertEqual(context.strings, ["abc"])
        # Without the context the reference has nothing to point at.
        self.assertRaises(AMFDecodeError, amf3.decode, data, offset)


class ObjectTests(SynchronousTestCase):
    def test_dynamic_object(self) -> None:
        data = h("0a 0b 01 03 61 04 01 03 62 06 03 78 01")
        self.assertEqual(amf3.encode({"a": 1, "b": "x"}), data)
        value = decoded(data)
        self.assertIs(type(value), dict)
        self.assertEqual(list(value.items()), [("a", 1), ("b", "x")])

    def test_typed_sealed_object(self) -> None:
        data = h("0a 23 05 5074 03 78 03 79 04 01 04 02")
        self.assertEqual(amf3.encode(TypedObject("Pt", {"x": 1, "y": 2})), data)
        self.assertEqual(decoded(data), TypedObject("Pt", {"x": 1, "y": 2}))

    def test_trait_reference(self) -> None:
        # Two Pt objects; the second reuses traits 0 (header 0b01).
        value = decoded(h("09 05 01 0a 23 05 5074 03 78 03 79 04 01 04 02 0a 01 04 03 04 04"))
        self.assertEqual(value, [TypedObject("Pt", {"x": 1, "y": 2}), TypedObject("Pt", {"x": 3, "y": 4})])

    def test_anonymous_sealed_object_is_a_dict(self) -> None:
        value = decoded(h("09 05 01 0a 13 01 03 78 04 01 0a 01 04 02"))
        self.assertEqual(value, [{"x": 1}, {"x": 2}])
        self.assertIs(type(value[0]), dict)

    def test_sealed_and_dynamic_members(self) -> None:
        value = decoded(h("0a 1b 03 43 03 73 04 01 03 64 04 02 01"))
        self.assertEqual(value, TypedObject("C", {"s": 1, "d": 2}))

    def test_object_reference(self) -> None:
        value = decoded(h("09 05 01 0a 0b 01 03 61 04 01 01 0a 02"))
        self.assertEqual(value, [{"a": 1}, {"a": 1}])
        self.assertIs(value[0], value[1])

    def test_object_refers_to_itself(self) -> None:
        value = decoded(h("0a 0b 01 03 6d 0a 00 01"))
        self.assertIs(value["m"], value)
        self.assertRaises(AMFEncodeError, amf3.encode, value)

    def test_bad_references(self) -> None:
        self.assertRaises(AMFDecodeError, amf3.decode, h("0a 02"))
        self.assertRaises(AMFDecodeError, amf3.decode, h("0a 05"))  # traits reference 1 of none

    def test_externalizable_is_refused(self) -> None:
        self.assertRaises(AMFDecodeError, amf3.decode, h("0a 07 07 466f6f 01"))

    def test_too_many_sealed_members(self) -> None:
        # 2**25-1 members announced in a handful of bytes.
        self.assertRaises(AMFDecodeError, amf3.decode, h("0a ff ff ff f3 01 03 61"))


class ArrayTests(SynchronousTestCase):
    def test_dense(self) -> None:
        data = h("09 07 01 04 01 04 02 04 03")
        self.assertEqual(amf3.encode([1, 2, 3]), data)
        self.assertEqual(amf3.encode((1, 2, 3)), data)
        self.assertEqual(decoded(data), [1, 2, 3])
        self.assertEqual(decoded(h("09 01 01")), [])

    def test_associative(self) -> None:
        data = h("09 01 03 61 04 01 01")
        self.assertEqual(amf3.encode(ECMAArray({"a": 1})), data)
        value = decoded(data)
        self.assertIs(type(value), ECMAArray)
        self.assertEqual(value, {"a": 1})

    def test_mixed(self) -> None:
        value = decoded(h("09 05 03 61 04 01 01 04 07 04 08"))
        self.assertEqual(value, ECMAArray({"a": 1, "0": 7, "1": 8}))

    def test_dense_part_may_contain_itself(self) -> None:
        value = decoded(h("09 03 01 09 00"))
        self.assertIs(value[0], value)

    def test_reference_inside_associative_part_is_refused(self) -> None:
        self.assertRaises(AMFDecodeError, amf3.decode, h("09 01 03 61 09 00 01"))

    def test_count_larger_than_data(self) -> None:
        tracemalloc.start()
        try:
            self.assertRaises(AMFDecodeError, amf3.decode, h("09 ff ff ff ff 01 01 01"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 100_000)


class VectorAndDictionaryTests(SynchronousTestCase):
    def test_int_vectors(self) -> None:
        self.assertEqual(decoded(h("0d 05 00 ffffffff 00000001")), [-1, 1])
        self.assertEqual(decoded(h("0e 05 01 ffffffff 00000001")), [0xFFFFFFFF, 1])

    def test_double_vector(self) -> None:
        self.assertEqual(decoded(h("0f 03 00" + d(1.5))), [1.5])

    def test_object_vector(self) -> None:
        self.assertEqual(decoded(h("10 05 00 01 04 01 06 03 61")), [1, "a"])

    def test_vector_reference(self) -> None:
        value = decoded(h("09 05 01 0d 03 00 00000002 0d 02"))
        self.assertIs(value[0], value[1])

    def test_vector_count_larger_than_data(self) -> None:
        for marker in ("0d", "0e", "0f", "10"):
            self.assertRaises(AMFDecodeError, amf3.decode, h(marker + "ff ff ff 7f 00 00000000"))

    def test_dictionary(self) -> None:
        self.assertEqual(decoded(h("11 05 00 06 03 6b 04 01 04 02 03")), {"k": 1, 2: True})

    def test_dictionary_unhashable_key(self) -> None:
        self.assertRaises(AMFDecodeError, amf3.decode, h("11 03 00 09 01 01 04 01"))
        self.assertRaises(AMFDecodeError, amf3.decode, h("11 03 00 11 00 04 01"))


class ErrorTests(SynchronousTestCase):
    def test_unknown_marker(self) -> None:
        for marker in ("12", "7f", "ff"):
            self.assertRaises(AMFDecodeError, amf3.decode, h(marker + "01"))

    def test_invalid_utf8(self) -> None:
        for data in ("06 03 ff", "07 03 80", "0a 0b 01 03 ff 01 01"):
            self.assertRaises(AMFDecodeError, amf3.decode, h(data))

    def test_every_truncation_fails(self) -> None:
        data = amf3.encode(
            [
                TypedObject("C", {"s": "é", "n": -5}),
                {"d": [1.5, b"xy", datetime(2020, 1, 1)]},
                ECMAArray({"k": 1}),
            ]
        )
        for end in range(len(data)):
            self.assertRaises(AMFDecodeError, amf3.decode, data[:end])

    def test_lengths_beyond_data(self) -> None:
        for data in ("06 ff ff ff ff", "0c ff ff ff ff 00", "07 7f 61", "11 ff ff ff ff 00"):
            self.assertRaises(AMFDecodeError, amf3.decode, h(data))

    def test_deep_nesting_is_refused(self) -> None:
        self.assertRaises(AMFDecodeError, amf3.decode, h("09 03 01") * 10_000 + h("01"))
        self.assertRaises(AMFDecodeError, amf3.decode, h("0a 0b 01 03 61") * 10_000 + h("01"))
        self.assertRaises(AMFDecodeError, amf3.decode, h("10 03 00 01") * 10_000 + h("01"))
        self.assertRaises(AMFDecodeError, amf3.decode, h("11 03 00 04 01") * 10_000 + h("01"))

    def test_max_depth_boundary(self) -> None:
        self.assertEqual(amf3.decode(h("09 03 01") * 64 + h("01"))[1], 193)
        self.assertRaises(AMFDecodeError, amf3.decode, h("09 03 01") * 65 + h("01"))
        self.assertEqual(amf3.decode(h("04 01"), max_depth=0), (1, 2))
        self.assertRaises(AMFDecodeError, amf3.decode, h("09 01 01"), max_depth=0)
        self.assertRaises(ValueError, amf3.decode, h("01"), max_depth=201)
        self.assertRaises(ValueError, amf3.decode, h("01"), -1)

    def test_encode_errors(self) -> None:
        for value in ({1, 2}, object(), 1j, {1: "x"}, {"": 1}, ECMAArray({"": 1}), TypedObject("C", {2: 1})):
            self.assertRaises(AMFEncodeError, amf3.encode, value)
        self.assertRaises(AMFEncodeError, amf3.encode, "\ud800")
        looped: list = []
        looped.append(looped)
        self.assertRaises(AMFEncodeError, amf3.encode, looped)
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        self.assertRaises(AMFEncodeError, amf3.encode, deep)


class AvmplusSwitchTests(SynchronousTestCase):
    def test_amf0_command_with_amf3_argument(self) -> None:
        data = (
            amf0.encode_many("onStatus", 0.0, None) + b"\x11" + amf3.encode({"code": "ok", "list": [1, "ok"]})
        )
        self.assertEqual(amf0.decode_all(data), ["onStatus", 0.0, None, {"code": "ok", "list": [1, "ok"]}])

    def test_each_switch_has_a_fresh_context(self) -> None:
        self.assertEqual(amf0.decode_all(h("11 06 03 61 11 06 03 61")), ["a", "a"])
        self.assertRaises(AMFDecodeError, amf0.decode_all, h("11 06 03 61 11 06 00"))

    def test_switch_inside_amf0_object(self) -> None:
        value, _ = amf0.decode(h("03 0001 78 11 09 05 01 04 01 04 02 000009"))
        self.assertEqual(value, {"x": [1, 2]})


# ----------------------------------------------------------------- properties

scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from(["", "shared", "é€😀"]),  # repeats exercise string references
    st.binary(max_size=20),
    st.text(max_size=20).map(XMLDocument),
    st.datetimes(timezones=st.just(UTC)).map(
        lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000, fold=0)
    ),
)
keys = st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(["shared", "k"]))


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
        st.dictionaries(keys, children, min_size=1, max_size=5).map(ECMAArray),
        st.builds(
            TypedObject,
            st.text(min_size=1, max_size=8),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
    )


values = st.recursive(scalars, _containers, max_leaves=20)


def expected(value: object) -> object:
    """What decoding the AMF3 encoding of ``value`` must give."""
    if isinstance(value, bool) or value is None or value is UNDEFINED:
        return value
    if isinstance(value, int):
        return value if amf3.INT_MIN <= value <= amf3.INT_MAX else float(value)
    if isinstance(value, (list, tuple)):
        return [expected(v) for v in value]
    if isinstance(value, TypedObject):
        return TypedObject(value.class_name, {k: expected(v) for k, v in value.values.items()})
    if isinstance(value, dict):
        return type(value)({k: expected(v) for k, v in value.items()})
    return value


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(values)
    def test_encode_decode(self, value: object) -> None:
        data = amf3.encode(value)
        self.assertEqual(repr(decoded(data)), repr(expected(value)))
        self.assertEqual(amf3.encode(decoded(data)), data)

    @settings(max_examples=50, deadline=None)
    @given(values)
    def test_through_amf0_switch(self, value: object) -> None:
        (result,) = amf0.decode_all(b"\x11" + amf3.encode(value))
        self.assertEqual(repr(result), repr(expected(value)))


# Py3AMF as an AMF3 oracle, for the plain types it maps the same way. Its
# decoder turns whole doubles into ints, so numbers are compared as floats,
# and -0.0 into the int 0, so -0.0 is left out (x + 0.0 makes it 0.0).
oracle_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False).map(lambda x: x + 0.0),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(min_size=1, max_size=10), children, max_size=5),
    ),
    max_leaves=20,
)


def plain(value: object) -> object:
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
    @given(oracle_values)
    def test_py3amf_decodes_ours(self, value: object) -> None:
        (theirs,) = pyamf.decode(amf3.encode(value), encoding=pyamf.AMF3)
        self.assertEqual(repr(plain(theirs)), repr(plain(value)))

    @settings(max_examples=100, deadline=None)
    @given(oracle_values)
    def test_we_decode_py3amf(self, value: object) -> None:
        self.assertEqual(
            repr(plain(decoded(pyamf.encode(value, encoding=pyamf.AMF3).getvalue()))), repr(plain(value))
        )


# ----------------------------------------------------------------- fuzzing

#: Encodings rich in references, traits and vectors, which ``encode`` never writes.
SEEDS = [
    h("09 05 01 0a 23 05 5074 03 78 03 79 04 01 04 02 0a 01 04 03 04 04"),
    h("09 05 01 0a 0b 01 03 61 04 01 01 0a 02"),
    h("09 05 03 61 04 01 01 04 07 04 08"),
    h("09 09 01 06 07 616263 06 00 06 01 06 01"),
    h("0a 1b 03 43 03 73 04 01 03 64 04 02 01"),
    h("09 05 01 08 01" + d(0.0) + "08 02"),
    h("0d 05 00 ffffffff 00000001"),
    h("10 05 00 01 04 01 06 03 61"),
    h("11 05 00 06 03 6b 04 01 04 02 03"),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.one_of(st.sampled_from(SEEDS), values.map(amf3.encode))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x07, 0x09, 0x0A, 0x11, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


class FuzzTests(SynchronousTestCase):
    def assertDecodesOrRefuses(self, data: bytes) -> None:
        try:
            _, offset = amf3.decode(data)
        except AMFDecodeError:
            return
        self.assertLessEqual(offset, len(data))

    @FUZZ
    @given(st.binary(max_size=200))
    def test_random_bytes(self, data: bytes) -> None:
        self.assertDecodesOrRefuses(data)

    @FUZZ
    @given(mutated())
    def test_mutated_encodings(self, data: bytes) -> None:
        self.assertDecodesOrRefuses(data)
