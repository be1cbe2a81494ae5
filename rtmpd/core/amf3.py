"""AMF3 encoding and decoding as plain functions (Adobe AMF3 specification).

RTMP meets AMF3 inside AMF0 (the avmplus marker 0x11) and in the AMF3
message types 15/16/17. The value mapping reuses the types of
``rtmpd.core.amf0``:

==============================  ==============================================
AMF3                            Python
==============================  ==============================================
undefined (0x00)                ``amf0.UNDEFINED``
null, false, true               ``None``, ``False``, ``True``
integer (0x04)                  ``int`` (29-bit signed)
double (0x05)                   ``float``
string (0x06)                   ``str``
XMLDocument (0x07), XML (0x0B)  ``amf0.XMLDocument`` (encoded as 0x07)
date (0x08)                     aware ``datetime`` in UTC
array (0x09)                    ``list`` when it has only a dense part, else
                                ``amf0.ECMAArray`` whose keys are the
                                associative keys plus the dense indexes as
                                decimal strings (as ActionScript itself sees
                                them); an empty ``ECMAArray`` encodes as an
                                empty array, which decodes as ``[]``
object (0x0A)                   ``amf0.TypedObject`` when its class name is
                                not empty, else ``dict``
ByteArray (0x0C)                ``bytes`` (``bytearray``/``memoryview`` also
                                encode to it)
vectors (0x0D-0x10)             ``list`` (decode only)
dictionary (0x11)               ``dict`` (decode only)
==============================  ==============================================

Externalizable objects are refused: their body is in a format only the
sending application knows. Decoding raises only ``AMFDecodeError``;
encoding raises only ``AMFEncodeError``.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

from rtmpd.core.amf_types import (
    DEFAULT_MAX_DEPTH,
    MAX_DEPTH_CEILING,
    UNDEFINED,
    DecodeBudget,
    ECMAArray,
    TypedObject,
    XMLDocument,
    datetime_to_ms,
    ms_to_datetime,
)
from rtmpd.core.errors import AMFDecodeError, AMFEncodeError

__all__ = ["Decoder", "decode", "encode"]

UNDEFINED_MARKER = 0x00
NULL = 0x01
FALSE = 0x02
TRUE = 0x03
INTEGER = 0x04
DOUBLE = 0x05
STRING = 0x06
XML_DOCUMENT = 0x07
DATE = 0x08
ARRAY = 0x09
OBJECT = 0x0A
XML = 0x0B
BYTE_ARRAY = 0x0C
VECTOR_INT = 0x0D
VECTOR_UINT = 0x0E
VECTOR_DOUBLE = 0x0F
VECTOR_OBJECT = 0x10
DICTIONARY = 0x11

INT_MIN = -(2**28)
INT_MAX = 2**28 - 1
_U29_LIMIT = 2**29

_DOUBLE = struct.Struct(">d")
#: Item format and size of the numeric vectors.
_VECTOR_ITEMS = {VECTOR_INT: ("i", 4), VECTOR_UINT: ("I", 4), VECTOR_DOUBLE: ("d", 8)}

#: Stands in the object table for an array whose associative part is being
#: read: until it ends we do not know whether the array becomes a list or an
#: ECMAArray, so a reference to it then is refused rather than guessed.
_PENDING = object()


# --------------------------------------------------------------------- decoding


class Decoder:
    """The reference tables of one AMF3 value sequence.

    AMF3 strings, complex objects and traits may refer back to earlier ones
    by index. Values decoded with the same ``Decoder`` share the tables; a
    fresh ``Decoder`` (what ``decode`` makes when given none) starts empty.
    After an ``AMFDecodeError`` the tables are in an unspecified state: use a
    new ``Decoder``.
    """

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.objects: list[Any] = []
        #: (class name, sealed member names, dynamic) per trait.
        self.traits: list[tuple[str, tuple[str, ...], bool]] = []
        #: (nodes, bytes) of each entry of ``objects`` once complete; None while it is being read.
        self._costs: list[tuple[int, int] | None] = []
        self._data = b""
        self._pos = 0
        self._max_depth = DEFAULT_MAX_DEPTH
        self._budget = DecodeBudget()

    def decode(
        self,
        data: bytes,
        offset: int = 0,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        budget: DecodeBudget | None = None,
    ) -> tuple[Any, int]:
        """Decode one AMF3 value at ``offset`` with these tables; see ``decode``."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        if not 0 <= max_depth <= MAX_DEPTH_CEILING:
            raise ValueError(f"max_depth must be in 0..{MAX_DEPTH_CEILING}")
        self._data = bytes(data)
        self._pos = offset
        self._max_depth = max_depth
        self._budget = budget if budget is not None else DecodeBudget.for_message(len(data))
        value = self._value(0)
        return value, self._pos

    # -- primitives

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise AMFDecodeError(f"AMF3 data truncated: needed {n} bytes at offset {self._pos}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def _remaining(self) -> int:
        return len(self._data) - self._pos

    def _byte(self) -> int:
        if self._pos >= len(self._data):
            raise AMFDecodeError(f"AMF3 data truncated at offset {self._pos}")
        b = self._data[self._pos]
        self._pos += 1
        return b

    def _u29(self) -> int:
        # Three bytes of 7 bits with a continuation flag, then one of 8 bits.
        n = 0
        for _ in range(3):
            b = self._byte()
            if b < 0x80:
                return (n << 7) | b
            n = (n << 7) | (b & 0x7F)
        return (n << 8) | self._byte()

    def _text(self, length: int) -> str:
        self._budget.charge(0, length)
        try:
            return self._take(length).decode("utf-8")
        except UnicodeDecodeError as e:
            raise AMFDecodeError(f"AMF3 string is not valid UTF-8: {e.reason}") from None

    def _length(self, header: int, item_size: int = 1) -> int:
        # Every length or count read from the wire is checked against the
        # bytes left before anything is allocated or looped over.
        count = header >> 1
        if count * item_size > self._remaining():
            raise AMFDecodeError(f"AMF3 length {count} exceeds the {self._remaining()} bytes left")
        return count

    def _string(self) -> str:
        header = self._u29()
        if not header & 1:
            text = self._lookup(self.strings, header >> 1, "string")
            self._budget.charge(0, len(text))
            return text
        length = self._length(header)
        if not length:
            return ""  # the empty string is never put in the table
        text = self._text(length)
        self.strings.append(text)
        return text

    def _lookup(self, table: list, index: int, what: str) -> Any:
        if index >= len(table):
            raise AMFDecodeError(f"AMF3 {what} reference {index} out of range")
        value = table[index]
        if value is _PENDING:
            raise AMFDecodeError("AMF3 reference to an array inside its own associative part")
        return value

    # -- values

    def _value(self, depth: int) -> Any:
        budget = self._budget
        budget.nodes -= 1
        if budget.nodes < 0:
            budget.charge(0, 0)  # raises AMFBudgetExceeded
        marker = self._byte()
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == NULL:
            return None
        if marker == FALSE:
            return False
        if marker == TRUE:
            return True
        if marker == INTEGER:
            n = self._u29()
            return n - _U29_LIMIT if n & 0x10000000 else n
        if marker == DOUBLE:
            return _DOUBLE.unpack(self._take(8))[0]
        if marker == STRING:
            return self._string()
        if marker not in _COMPLEX:
            raise AMFDecodeError(f"unknown AMF3 marker 0x{marker:02x} at offset {self._pos - 1}")
        header = self._u29()
        if not header & 1:
            index = header >> 1
            value = self._lookup(self.objects, index, "object")
            cost = self._costs[index]
            if cost is not None:  # None: an enclosing value (a cycle), which walkers stop at
                budget.charge(*cost)
            return value
        if marker in _NESTING:
            if depth + 1 > self._max_depth:
                raise AMFDecodeError(f"AMF3 value nested deeper than {self._max_depth} levels")
        # Every handler puts exactly one entry in ``objects``, before its children's.
        slot = len(self._costs)
        self._costs.append(None)
        nodes, size = budget.nodes + 1, budget.size
        value = _COMPLEX[marker](self, marker, header, depth + 1)
        self._costs[slot] = (nodes - budget.nodes, size - budget.size)
        return value

    def _xml(self, marker: int, header: int, depth: int) -> XMLDocument:
        value = XMLDocument(self._text(self._length(header)))
        self.objects.append(value)
        return value

    def _date(self, marker: int, header: int, depth: int) -> datetime:
        value = ms_to_datetime(_DOUBLE.unpack(self._take(8))[0])
        self.objects.append(value)
        return value

    def _byte_array(self, marker: int, header: int, depth: int) -> bytes:
        length = self._length(header)
        self._budget.charge(0, length)
        value = self._take(length)
        self.objects.append(value)
        return value

    def _numeric_vector(self, marker: int, header: int, depth: int) -> list:
        code, size = _VECTOR_ITEMS[marker]
        self._take(1)  # fixed-length flag: meaningless to Python
        count = self._length(header, size)
        self._budget.charge(count, 0)
        value = list(struct.unpack(f">{count}{code}", self._take(count * size)))
        self.objects.append(value)
        return value

    def _object_vector(self, marker: int, header: int, depth: int) -> list:
        self._take(1)  # fixed-length flag
        count = self._length(header)
        self._string()  # element type name: Python lists are untyped
        value: list = []
        self.objects.append(value)
        for _ in range(count):
            value.append(self._value(depth))
        return value

    def _dictionary(self, marker: int, header: int, depth: int) -> dict:
        count = self._length(header, 2)  # a key and a value take a byte each at least
        self._take(1)  # weak-keys flag
        value: dict = {}
        self.objects.append(value)
        for _ in range(count):
            key = self._value(depth)
            try:
                value[key] = self._value(depth)
            except TypeError:
                raise AMFDecodeError(
                    f"AMF3 dictionary key of type {type(key).__name__} is unhashable"
                ) from None
        return value

    def _array(self, marker: int, header: int, depth: int) -> list | ECMAArray:
        dense_count = self._length(header)
        slot = len(self.objects)
        self.objects.append(_PENDING)
        assoc = ECMAArray()
        while key := self._string():
            assoc[key] = self._value(depth)
        value: list | ECMAArray
        if not assoc:
            value = []
            self.objects[slot] = value
            for _ in range(dense_count):
                value.append(self._value(depth))
        else:
            value = assoc
            self.objects[slot] = value
            for i in range(dense_count):
                value[str(i)] = self._value(depth)
        return value

    def _object(self, marker: int, header: int, depth: int) -> dict | TypedObject:
        class_name, sealed, dynamic = self._traits(header)
        value: dict | TypedObject
        if class_name:
            value = TypedObject(class_name, {})
            members = value.values
        else:
            value = members = {}
        self.objects.append(value)
        for name in sealed:
            members[name] = self._value(depth)
        if dynamic:
            while key := self._string():
                members[key] = self._value(depth)
        return value

    def _traits(self, header: int) -> tuple[str, tuple[str, ...], bool]:
        if not header & 0b10:
            return self._lookup(self.traits, header >> 2, "traits")
        if header & 0b100:
            raise AMFDecodeError(f"AMF3 externalizable object of class {self._string()!r} cannot be decoded")
        dynamic = bool(header & 0b1000)
        count = header >> 4
        if count > self._remaining():
            raise AMFDecodeError(f"AMF3 traits claim {count} members in {self._remaining()} bytes")
        class_name = self._string()
        traits = (class_name, tuple(self._string() for _ in range(count)), dynamic)
        self.traits.append(traits)
        return traits


_COMPLEX = {
    XML_DOCUMENT: Decoder._xml,
    XML: Decoder._xml,
    DATE: Decoder._date,
    ARRAY: Decoder._array,
    OBJECT: Decoder._object,
    BYTE_ARRAY: Decoder._byte_array,
    VECTOR_INT: Decoder._numeric_vector,
    VECTOR_UINT: Decoder._numeric_vector,
    VECTOR_DOUBLE: Decoder._numeric_vector,
    VECTOR_OBJECT: Decoder._object_vector,
    DICTIONARY: Decoder._dictionary,
}
#: The markers whose values contain values, and so count towards max_depth.
_NESTING = frozenset({ARRAY, OBJECT, VECTOR_OBJECT, DICTIONARY})


def decode(
    data: bytes,
    offset: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    context: Decoder | None = None,
    budget: DecodeBudget | None = None,
) -> tuple[Any, int]:
    """Decode one AMF3 value starting at ``offset``; return ``(value, new_offset)``.

    ``context`` carries the reference tables from value to value of one AMF3
    sequence; without it each call starts with empty tables. References
    resolve to the very Python object decoded earlier.

    ``budget`` is the expansion budget to charge (shared with an enclosing
    AMF0 message); without one, ``DecodeBudget.for_message(len(data))``: a
    reference to a string or object counts everything it stands for each
    time it is used (see ``rtmpd.core.amf0.decode``).

    :raises AMFDecodeError: on truncation, an unknown marker, a bad reference,
        invalid UTF-8, an externalizable object, an unhashable dictionary key,
        a date outside years 1-9999, or nesting deeper than ``max_depth``;
        its subclass ``AMFBudgetExceeded`` past the expansion budget.
    :raises ValueError: when ``offset`` is negative or ``max_depth`` is not in
        0..200 (caller errors, not peer errors).
    """
    decoder = context if context is not None else Decoder()
    return decoder.decode(data, offset, max_depth=max_depth, budget=budget)


# --------------------------------------------------------------------- encoding


def encode(value: Any) -> bytes:
    """Return the AMF3 encoding of one value.

    ``int`` in -2**28..2**28-1 is an AMF3 integer, other ints are doubles.
    ``dict`` is an anonymous dynamic object, ``TypedObject`` a sealed object
    whose member names are its keys, ``ECMAArray`` an associative array,
    ``list``/``tuple`` a dense array, ``bytes``/``bytearray``/``memoryview``
    a ByteArray. Repeated strings are written as references; objects are not.

    :raises AMFEncodeError: for a type with no AMF3 form, a non-``str`` or
        empty dynamic key, a string or byte array of 2**28 bytes or more, an
        integer too large for a double, a string that is not valid Unicode, a
        cycle, or nesting past 200 levels.
    """
    encoder = _Encoder()
    encoder.write(value, 0)
    return b"".join(encoder.out)


def _u29(n: int) -> bytes:
    if not 0 <= n < _U29_LIMIT:
        raise AMFEncodeError(f"{n} does not fit in an AMF3 U29 (length or count too large)")
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n >> 7 | 0x80, n & 0x7F))
    if n < 0x200000:
        return bytes((n >> 14 | 0x80, n >> 7 & 0x7F | 0x80, n & 0x7F))
    return bytes((n >> 22 | 0x80, n >> 15 & 0x7F | 0x80, n >> 8 & 0x7F | 0x80, n & 0xFF))


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AMFEncodeError(f"string is not valid Unicode: {e}") from None


class _Encoder:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.strings: dict[str, int] = {}
        self.active: set[int] = set()

    def string(self, text: str) -> None:
        if not text:
            self.out.append(b"\x01")
        elif text in self.strings:
            self.out.append(_u29(self.strings[text] << 1))
        else:
            data = _utf8(text)
            self.out.append(_u29(len(data) << 1 | 1) + data)
            self.strings[text] = len(self.strings)

    def key(self, key: Any) -> None:
        if not isinstance(key, str):
            raise AMFEncodeError(f"AMF3 member names must be str, not {type(key).__name__}")
        self.string(key)

    def dynamic_members(self, mapping: dict, depth: int) -> None:
        for key, item in mapping.items():
            # The empty name ends the dynamic members.
            if key == "":
                raise AMFEncodeError("AMF3 cannot encode an empty dynamic member name")
            self.key(key)
            self.write(item, depth)
        self.out.append(b"\x01")

    def write(self, value: Any, depth: int) -> None:
        # bool before int, subclasses before their bases.
        out = self.out
        if value is None:
            out.append(b"\x01")
        elif value is UNDEFINED:
            out.append(b"\x00")
        elif isinstance(value, bool):
            out.append(b"\x03" if value else b"\x02")
        elif isinstance(value, int) and INT_MIN <= value <= INT_MAX:
            out.append(b"\x04" + _u29(value & 0x1FFFFFFF))
        elif isinstance(value, (int, float)):
            try:
                out.append(b"\x05" + _DOUBLE.pack(float(value)))
            except OverflowError:
                raise AMFEncodeError("integer too large for an AMF number") from None
        elif isinstance(value, XMLDocument):
            data = _utf8(value)
            out.append(b"\x07" + _u29(len(data) << 1 | 1) + data)
        elif isinstance(value, str):
            out.append(b"\x06")
            self.string(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            out.append(b"\x0c" + _u29(len(data) << 1 | 1) + data)
        elif isinstance(value, datetime):
            out.append(b"\x08\x01" + _DOUBLE.pack(datetime_to_ms(value)))
        elif isinstance(value, (dict, list, tuple, TypedObject)):
            self.complex(value, depth + 1)
        else:
            raise AMFEncodeError(f"AMF3 cannot encode a {type(value).__name__}")

    def complex(self, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH_CEILING:
            raise AMFEncodeError(f"value nested deeper than {MAX_DEPTH_CEILING} levels")
        if id(value) in self.active:
            raise AMFEncodeError("cannot encode a value that contains itself")
        self.active.add(id(value))
        out = self.out
        if isinstance(value, TypedObject):
            names = list(value.values)
            # Inline object, inline traits, sealed only: 0b0011 | count << 4.
            out.append(b"\x0a" + _u29(len(names) << 4 | 0b0011))
            self.string(value.class_name)
            for name in names:
                self.key(name)
            for item in value.values.values():
                self.write(item, depth)
        elif isinstance(value, ECMAArray):
            out.append(b"\x09\x01")  # no dense part
            self.dynamic_members(value, depth)
        elif isinstance(value, dict):
            # Inline object, inline traits, dynamic, no sealed members, and
            # the empty class name of an anonymous object.
            out.append(b"\x0a\x0b\x01")
            self.dynamic_members(value, depth)
        else:
            out.append(b"\x09" + _u29(len(value) << 1 | 1) + b"\x01")
            for item in value:
                self.write(item, depth)
        self.active.discard(id(value))
