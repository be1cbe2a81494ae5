"""The values AMF0 and AMF3 share: ``UNDEFINED``, ``ECMAArray``, ``XMLDocument``, ``TypedObject``, dates.

Both codecs import these from here, so neither imports the other for them
(AMF0 still calls AMF3 for its avmplus marker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rtmpd.core.errors import AMFBudgetExceeded, AMFDecodeError

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NODES",
    "DecodeBudget",
    "MAX_DEPTH_CEILING",
    "UNDEFINED",
    "ECMAArray",
    "TypedObject",
    "Undefined",
    "XMLDocument",
    "datetime_to_ms",
    "ms_to_datetime",
]

#: Default nesting limit; the same number as ``Limits.max_amf_depth``.
DEFAULT_MAX_DEPTH = 64

#: Each nesting level costs two Python frames; past this a deliberately
#: chosen ``max_depth`` could meet Python's recursion limit instead of ours.
MAX_DEPTH_CEILING = 200

#: Defaults of the expansion budget; the same numbers as ``Limits.max_amf_nodes``
#: and ``Limits.max_amf_decoded_bytes``.
DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_DECODED_BYTES = 8 * 1024 * 1024

#: How much a message may expand, per byte received and as a constant (``DecodeBudget.for_message``).
NODES_PER_BYTE = 2
NODES_SLACK = 256
BYTES_PER_BYTE = 16
BYTES_SLACK = 64 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DecodeBudget:
    """What one AMF message may still decode to: values (``nodes``) and string/byte bytes (``size``).

    The decoders charge every value they produce, and a reference the full
    cost of the value it refers to each time it is used, so what a decoded
    message costs anyone who walks it (``str``, re-encoding, logging) is
    bounded however its references are arranged. ``charge`` raises
    ``AMFBudgetExceeded`` when either count goes below zero. One budget is
    shared by an AMF0 message and every AMF3 value inside it.
    """

    __slots__ = ("nodes", "size")

    def __init__(self, nodes: int = DEFAULT_MAX_NODES, size: int = DEFAULT_MAX_DECODED_BYTES) -> None:
        self.nodes = nodes
        self.size = size

    @classmethod
    def for_message(
        cls, length: int, max_nodes: int = DEFAULT_MAX_NODES, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
    ) -> DecodeBudget:
        """The budget of a message of ``length`` bytes: what it may expand to grows with its size.

        Without references a message decodes to at most one value and one
        string byte per byte, so ``2 * length + 256`` values and
        ``16 * length + 64 KiB`` string bytes leave honest messages (repeated
        AMF3 keys, a shared object or two) far from the limit, while a few
        hundred bytes can no longer stand for ``max_nodes`` values: the work of
        decoding, walking and freeing a value stays proportional to the bytes
        received. ``max_nodes``/``max_bytes`` cap both (the bytes cap never
        below ``length``).
        """
        nodes = min(max_nodes, NODES_PER_BYTE * length + NODES_SLACK)
        size = max(length, min(max_bytes, BYTES_PER_BYTE * length + BYTES_SLACK))
        return cls(nodes, size)

    def charge(self, nodes: int, size: int) -> None:
        self.nodes -= nodes
        self.size -= size
        if self.nodes < 0 or self.size < 0:
            raise AMFBudgetExceeded(
                "AMF value expands past its budget (too many values or bytes, references counted each use)"
            )


class Undefined:
    """ActionScript ``undefined``; use the singleton ``UNDEFINED``."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()


class ECMAArray(dict):
    """An associative ("ECMA") array: a ``dict`` that encodes as marker 0x08."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


class XMLDocument(str):
    """The text of an XML document; encodes as marker 0x0F."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"XMLDocument({str.__repr__(self)})"


@dataclass(frozen=True)
class TypedObject:
    """An object of a registered ActionScript class.

    The attributes cannot be reassigned, but ``values`` is an ordinary dict
    (the decoder fills it in after registering the object, so that it can
    contain references to itself). Being a dict, it makes the instance
    unhashable.
    """

    class_name: str
    values: dict = field(default_factory=dict)


def datetime_to_ms(value: datetime) -> float:
    """Return milliseconds since the Unix epoch; a naive ``value`` is taken as UTC.

    Shared with the AMF3 encoder.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    # Integer arithmetic first, so that millisecond dates are exact.
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds / 1000


def ms_to_datetime(ms: float) -> datetime:
    """Return the aware UTC datetime ``ms`` milliseconds after the Unix epoch.

    Shared with the AMF3 decoder.

    :raises AMFDecodeError: when ``ms`` is not finite or outside the years
        1-9999 that ``datetime`` can represent.
    """
    if not math.isfinite(ms):
        raise AMFDecodeError("AMF date is not a finite number")
    # Whole milliseconds go in as an int: timedelta's float arithmetic would
    # lose microseconds on dates far from 1970.
    whole = math.floor(ms)
    try:
        return _EPOCH + timedelta(milliseconds=whole, microseconds=round((ms - whole) * 1000))
    except OverflowError:
        raise AMFDecodeError(f"AMF date {ms!r} ms is outside years 1-9999") from None
