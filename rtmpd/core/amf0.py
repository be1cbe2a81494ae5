"""AMF0 encoding and decoding as plain functions (Adobe AMF0 specification).

Bytes in, Python values out, and back. The value mapping:

==============================  ==============================================
AMF0                            Python
==============================  ==============================================
number (0x00)                   ``float`` (always, even for whole numbers)
boolean (0x01)                  ``bool``
string (0x02), long string      ``str``
object (0x03)                   ``dict``
null (0x05)                     ``None``
undefined (0x06)                ``UNDEFINED``
reference (0x07)                the very object decoded earlier
ECMA array (0x08)               ``ECMAArray`` (a ``dict``)
strict array (0x0A)             ``list`` (``tuple`` also encodes to it)
date (0x0B)                     aware ``datetime`` in UTC
XML document (0x0F)             ``XMLDocument`` (a ``str``)
typed object (0x10)             ``TypedObject``
avmplus object (0x11)           one AMF3 value, see ``rtmpd.core.amf3``
unsupported (0x0D)              ``UNDEFINED`` (decode only)
==============================  ==============================================

Movieclip (0x04) and recordset (0x0E) are reserved and refused. Decoding
raises only ``AMFDecodeError``; encoding raises only ``AMFEncodeError``.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

from rtmpd.core import amf3
from rtmpd.core.amf_types import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_NODES,
    MAX_DEPTH_CEILING,
    UNDEFINED,
    DecodeBudget,
    ECMAArray,
    TypedObject,
    Undefined,
    XMLDocument,
    datetime_to_ms,
    ms_to_datetime,
)
from rtmpd.core.errors import AMFDecodeError, AMFEncodeError

__all__ = [
    "UNDEFINED",
    "ECMAArray",
    "TypedObject",
    "Undefined",
    "XMLDocument",
    "decode",
    "decode_all",
    "encode",
    "encode_many",
]

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS_OBJECT = 0x11

#: Encoding deeper than this is surely a mistake, and would otherwise end
#: in a RecursionError.
_MAX_ENCODE_DEPTH = MAX_DEPTH_CEILING

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


# --------------------------------------------------------------------- encoding


def encode(value: Any) -> bytes:
    """Return the AMF0 encoding of one value.

    ``int`` is written as a double (precision is lost past 2**53), ``str`` as a
    long string when its UTF-8 exceeds 65535 bytes, a naive ``datetime`` is
    taken to be UTC. No references are written, so shared sub-values are
    written once per use.

    :raises AMFEncodeError: for a type with no AMF0 form, a non-``str`` or
        empty or over-long object key, a string that is not valid Unicode, an
        integer too large for a double, a cycle, or nesting past 200 levels.
    """
    out: list[bytes] = []
    _write(out, value, set(), 0)
    return b"".join(out)


def encode_many(*values: Any) -> bytes:
    """Return the concatenated AMF0 encodings of ``values`` (an RTMP command body).

    :raises AMFEncodeError: as ``encode``.
    """
    return b"".join(encode(v) for v in values)


def _write(out: list[bytes], value: Any, active: set[int], depth: int) -> None:
    # Order matters: bool before int, and the str/dict subclasses before
    # their base classes.
    if value is None:
        out.append(b"\x05")
    elif value is UNDEFINED:
        out.append(b"\x06")
    elif isinstance(value, bool):
        out.append(b"\x01\x01" if value else b"\x01\x00")
    elif isinstance(value, (int, float)):
        out.append(b"\x00" + _pack_double(value))
    elif isinstance(value, XMLDocument):
        data = _utf8(value)
        out.append(b"\x0f" + _pack_u32(len(data)) + data)
    elif isinstance(value, str):
        data = _utf8(value)
        if len(data) > 0xFFFF:
            out.append(b"\x0c" + _pack_u32(len(data)) + data)
        else:
            out.append(b"\x02" + _U16.pack(len(data)) + data)
    elif isinstance(value, datetime):
        out.append(b"\x0b" + _DATE.pack(datetime_to_ms(value), 0))
    elif isinstance(value, (dict, list, tuple, TypedObject)):
        _write_complex(out, value, active, depth + 1)
    else:
        raise AMFEncodeError(f"AMF0 cannot encode a {type(value).__name__}")


def _write_complex(out: list[bytes], value: Any, active: set[int], depth: int) -> None:
    if depth > _MAX_ENCODE_DEPTH:
        raise AMFEncodeError(f"value nested deeper than {_MAX_ENCODE_DEPTH} levels")
    # Only the containers currently being written are tracked: a value
    # reachable twice without a cycle is simply written twice.
    if id(value) in active:
        raise AMFEncodeError("cannot encode a value that contains itself")
    active.add(id(value))
    if isinstance(value, TypedObject):
        out.append(b"\x10" + _key(value.class_name, allow_empty=True))
        _write_properties(out, value.values, active, depth)
    elif isinstance(value, ECMAArray):
        out.append(b"\x08" + _pack_u32(len(value)))
        _write_properties(out, value, active, depth)
    elif isinstance(value, dict):
        out.append(b"\x03")
        _write_properties(out, value, active, depth)
    else:
        out.append(b"\x0a" + _pack_u32(len(value)))
        for item in value:
            _write(out, item, active, depth)
    active.discard(id(value))


def _write_properties(out: list[bytes], mapping: dict, active: set[int], depth: int) -> None:
    for key, item in mapping.items():
        out.append(_key(key, allow_empty=False))
        _write(out, item, active, depth)
    out.append(b"\x00\x00\x09")


def _key(key: Any, *, allow_empty: bool) -> bytes:
    if not isinstance(key, str):
        raise AMFEncodeError(f"AMF0 object keys must be str, not {type(key).__name__}")
    # An empty key followed by 0x09 is the object-end marker, so an empty
    # property name has no AMF0 form.
    if not key and not allow_empty:
        raise AMFEncodeError("AMF0 cannot encode an empty object key")
    data = _utf8(key)
    if len(data) > 0xFFFF:
        raise AMFEncodeError("AMF0 object key longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AMFEncodeError(f"string is not valid Unicode: {e}") from None


def _pack_double(number: int | float) -> bytes:
    try:
        return _DOUBLE.pack(float(number))
    except OverflowError:
        raise AMFEncodeError("integer too large for an AMF number") from None


def _pack_u32(n: int) -> bytes:
    if n > 0xFFFFFFFF:
        raise AMFEncodeError("more than 2**32-1 bytes or elements")
    return _U32.pack(n)


# --------------------------------------------------------------------- decoding


def decode(
    data: bytes,
    offset: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    budget: DecodeBudget | None = None,
) -> tuple[Any, int]:
    """Decode one AMF0 value starting at ``offset``.

    Returns ``(value, new_offset)``. References (0x07) resolve to the same
    Python object as the object, ECMA array, strict array or typed object
    decoded earlier in this call, in the order they started; each call has
    its own reference table.

    The expansion budget (``DecodeBudget.for_message``): the value may hold
    at most ``min(max_nodes, 2 * len(data) + 256)`` values and about
    ``min(max_bytes, 16 * len(data) + 64 KiB)`` bytes of strings, a
    reference counting everything the value it refers to holds each time it
    is used (a reference to an enclosing value, a cycle, counts one). So
    whoever walks the result (``str``, an encoder, a log line, freeing it)
    does work proportional to the bytes received. ``budget``, when given,
    replaces that budget (to share one, or to set one exactly).

    :raises AMFDecodeError: on truncation, an unknown or reserved marker, a
        bad reference, invalid UTF-8, a date outside years 1-9999, or objects
        and arrays nested more than ``max_depth`` deep; its subclass
        ``AMFBudgetExceeded`` past the expansion budget.
    :raises ValueError: when ``offset`` is negative or ``max_depth`` is not in
        0..200 (caller errors, not peer errors).
    """
    _check_args(offset, max_depth)
    if budget is None:
        budget = DecodeBudget.for_message(len(data), max_nodes, max_bytes)
    reader = _Reader(data, offset, max_depth, budget)
    return reader.read_top_level(), reader.pos


def decode_all(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    budget: DecodeBudget | None = None,
) -> list[Any]:
    """Decode consecutive AMF0 values until ``data`` is used up (an RTMP command body).

    Each value has its own reference table, as if ``decode`` were called
    once per value; the expansion budget is shared by all of them.

    :raises AMFDecodeError: as ``decode``; also when the bytes after the last
        complete value do not form a value.
    """
    _check_args(0, max_depth)
    if budget is None:
        budget = DecodeBudget.for_message(len(data), max_nodes, max_bytes)
    reader = _Reader(data, 0, max_depth, budget)
    values = []
    while reader.pos < len(reader.data):
        values.append(reader.read_top_level())
    return values


def _check_args(offset: int, max_depth: int) -> None:
    if offset < 0:
        raise ValueError("offset must not be negative")
    if not 0 <= max_depth <= MAX_DEPTH_CEILING:
        raise ValueError(f"max_depth must be in 0..{MAX_DEPTH_CEILING}")


class _Reader:
    """A cursor over one top-level value: its position and reference table."""

    def __init__(self, data: bytes, pos: int, max_depth: int, budget: DecodeBudget) -> None:
        # bytes(b) of a bytes object is free; anything else is copied once so
        # slices below are immutable bytes.
        self.data = bytes(data)
        self.pos = pos
        self.max_depth = max_depth
        self.budget = budget
        self.references: list[Any] = []
        #: (nodes, bytes) of each referenceable value once complete; None while it is being read.
        self.costs: list[tuple[int, int] | None] = []

    def read_top_level(self) -> Any:
        self.references = []
        self.costs = []
        return self.read_value(0)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AMFDecodeError(f"AMF0 data truncated: needed {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def text(self, length: int) -> str:
        if length:
            self.budget.charge(0, length)
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError as e:
            raise AMFDecodeError(f"AMF0 string is not valid UTF-8: {e.reason}") from None

    def read_value(self, depth: int) -> Any:
        budget = self.budget
        budget.nodes -= 1
        if budget.nodes < 0:
            budget.charge(0, 0)  # raises AMFBudgetExceeded
        marker = self.take(1)[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1) != b"\x00"
        if marker == STRING:
            return self.text(self.u16())
        if marker == LONG_STRING:
            return self.text(self.u32())
        if marker == NULL:
            return None
        if marker in (UNDEFINED_MARKER, UNSUPPORTED):
            # "Unsupported" means the sender had a value it could not
            # encode; undefined is the closest honest reading of that.
            return UNDEFINED
        if marker == XML_DOCUMENT:
            return XMLDocument(self.text(self.u32()))
        if marker == DATE:
            ms, _timezone = _DATE.unpack(self.take(10))
            return ms_to_datetime(ms)
        if marker == REFERENCE:
            index = self.u16()
            if index >= len(self.references):
                raise AMFDecodeError(f"AMF0 reference {index} to an object not yet decoded")
            cost = self.costs[index]
            if cost is not None:  # None: an enclosing value (a cycle), which walkers stop at
                budget.charge(*cost)
            return self.references[index]
        if marker in (OBJECT, ECMA_ARRAY, STRICT_ARRAY, TYPED_OBJECT):
            return self.read_complex(marker, depth + 1)
        if marker == AVMPLUS_OBJECT:
            return self.read_amf3(depth)
        if marker == OBJECT_END:
            raise AMFDecodeError(f"AMF0 object-end marker outside an object at offset {self.pos - 1}")
        raise AMFDecodeError(f"unsupported AMF0 marker 0x{marker:02x} at offset {self.pos - 1}")

    def read_complex(self, marker: int, depth: int) -> Any:
        if depth > self.max_depth:
            raise AMFDecodeError(f"AMF0 value nested deeper than {self.max_depth} levels")
        budget = self.budget
        slot = len(self.costs)
        self.costs.append(None)
        # The container's own node was charged by read_value: count it in its cost.
        nodes, size = budget.nodes + 1, budget.size
        value = self._read_complex(marker, depth)
        self.costs[slot] = (nodes - budget.nodes, size - budget.size)
        return value

    def _read_complex(self, marker: int, depth: int) -> Any:
        if marker == STRICT_ARRAY:
            count = self.u32()
            # Every element takes at least one byte: a count larger than what
            # is left is a lie, refused before any work is done.
            if count > len(self.data) - self.pos:
                raise AMFDecodeError(f"AMF0 strict array of {count} elements in fewer bytes")
            items: list[Any] = []
            self.references.append(items)
            for _ in range(count):
                items.append(self.read_value(depth))
            return items
        container: Any
        if marker == OBJECT:
            container = {}
            target = container
        elif marker == ECMA_ARRAY:
            # The count is ignored: encoders (old FMLE among them) write wrong
            # ones, and the end marker is what really ends the array.
            self.take(4)
            container = target = ECMAArray()
        else:
            container = TypedObject(self.text(self.u16()), {})
            target = container.values
        self.references.append(container)
        self.read_properties(target, depth)
        return container

    def read_properties(self, target: dict, depth: int) -> None:
        # Lenient: some encoders (in @setDataFrame/onMetaData) end the last
        # object with the end of the message instead of the end marker, or
        # with the empty key but no 0x09. A property cut in the middle is
        # still truncation.
        while self.pos < len(self.data):
            key = self.text(self.u16())
            if not key:
                if self.pos < len(self.data):
                    end = self.take(1)[0]
                    if end != OBJECT_END:
                        raise AMFDecodeError(f"AMF0 empty key followed by marker 0x{end:02x}, not object end")
                return
            target[key] = self.read_value(depth)

    def read_amf3(self, depth: int) -> Any:
        value, self.pos = amf3.decode(
            self.data, self.pos, max_depth=self.max_depth - depth, budget=self.budget
        )
        return value
