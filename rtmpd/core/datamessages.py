"""Data messages (types 18 and 15) as the session hands them out: AMF0, unwrapped, metadata typed.

The rules: the AMF3 format byte is dropped and a leading ``@setDataFrame``
removed, so what comes out is an AMF0 data message ready to relay;
``onMetaData`` comes as ``MetadataReceived`` whose ``values`` is a
``dict[str, Any]`` (keys of other types, which an AMF3 dictionary may
hold, are left out, so sorting or re-encoding the keys cannot fail);
anything else as ``DataReceived``. Decoding is bounded by the AMF depth and
expansion budget given.
"""

from __future__ import annotations

from typing import Any

from rtmpd.core import amf0
from rtmpd.core.events import DataReceived, MetadataReceived
from rtmpd.core.flv import unwrap_set_data_frame
from rtmpd.core.messages import Message, MessageType

__all__ = ["data_event"]

_DATA_AMF0 = int(MessageType.DATA_AMF0)
_DATA_AMF3 = int(MessageType.DATA_AMF3)


def data_event(message: Message, amf: dict[str, Any]) -> MetadataReceived | DataReceived:
    """The event of a data message; ``amf`` holds ``amf0.decode_all``'s limits.

    Raises AMFDecodeError (``AMFBudgetExceeded``) for values that cannot be decoded within them.
    """
    payload = message.payload
    if message.type_id == _DATA_AMF3:
        # The format selector byte; the values are AMF0 (with AMF3 switches).
        payload = payload[1:]
    unwrapped = unwrap_set_data_frame(payload)
    if unwrapped is not None:
        payload = unwrapped
    values = amf0.decode_all(payload, **amf)
    body = Message(_DATA_AMF0, message.timestamp, message.stream_id, payload)
    if values and values[0] == "onMetaData":
        meta = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
        if not all(isinstance(key, str) for key in meta):
            meta = {key: value for key, value in meta.items() if isinstance(key, str)}
        return MetadataReceived(body, meta)
    return DataReceived(body)
