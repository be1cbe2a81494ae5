"""Enhanced RTMP (veovera E-RTMP v1/v2) on the NetConnection: connect negotiation and reconnect requests.

Media tags are ``rtmpd.core.media``'s business; this module owns what the
enhanced ``connect`` command and the v2 reconnect request carry:

- ``client_capabilities`` reads what a client advertised in its ``connect``
  command object (``fourCcList``, ``videoFourCcInfoMap``,
  ``audioFourCcInfoMap``, ``capsEx``), ignoring malformed values: a client
  that gets these wrong is still a client.
- ``connect_result_properties`` is what rtmpd states in ``_result``. rtmpd
  is a relay: it forwards and records every codec untouched, so its FourCC
  maps say ``CanForward`` for the wildcard ``*`` (and for every FourCC the
  client named, for clients that do not look for the wildcard), and its
  ``capsEx`` says Reconnect, Multitrack, ModEx and TimestampNanoOffset
  (ModEx prefixes, nano offsets included, are relayed and recorded as sent).
- ``reconnect_request`` builds the ``onStatus`` that asks a client to
  reconnect (E-RTMP v2 "Reconnect Request"): a NetConnection ``onStatus``
  on message stream 0, transaction id 0, a null command object and an info
  object with ``level`` "status", ``code``
  "NetConnection.Connect.ReconnectRequest", a ``description`` and, when the
  client should move elsewhere, a ``tcUrl``.

Pure functions of their arguments; nothing here raises for any input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtmpd.core.commands import encode_command, status_info
from rtmpd.core.messages import Message

__all__ = [
    "CAPS_EX_MODEX",
    "CAPS_EX_MULTITRACK",
    "CAPS_EX_RECONNECT",
    "CAPS_EX_TIMESTAMP_NANO_OFFSET",
    "FOURCC_CAN_DECODE",
    "FOURCC_CAN_ENCODE",
    "FOURCC_CAN_FORWARD",
    "RECONNECT_REQUEST",
    "SERVER_CAPS_EX",
    "WILDCARD",
    "ClientCapabilities",
    "client_capabilities",
    "connect_result_properties",
    "reconnect_request",
]

#: CapsExMask bits (E-RTMP v2, "Enhancing NetConnection connect Command").
CAPS_EX_RECONNECT = 0x01
CAPS_EX_MULTITRACK = 0x02
CAPS_EX_MODEX = 0x04
CAPS_EX_TIMESTAMP_NANO_OFFSET = 0x08
#: What rtmpd states: it can ask for reconnects, and relays multitrack and ModEx (nano offsets too) untouched.
SERVER_CAPS_EX = CAPS_EX_RECONNECT | CAPS_EX_MULTITRACK | CAPS_EX_MODEX | CAPS_EX_TIMESTAMP_NANO_OFFSET

#: FourCcInfoMask bits of the ``[audio|video]FourCcInfoMap`` values.
FOURCC_CAN_DECODE = 0x01
FOURCC_CAN_ENCODE = 0x02
FOURCC_CAN_FORWARD = 0x04
#: The FourCC key (or ``fourCcList`` entry) that stands for every codec.
WILDCARD = "*"

RECONNECT_REQUEST = "NetConnection.Connect.ReconnectRequest"

_CONNECT_KEYS = ("fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx")
# A FourCC is four bytes; the wildcard is one character. Anything longer is not a codec name.
_MAX_FOURCC_LEN = 4
# Bound what one client's connect can make us keep and echo.
_MAX_FOURCCS = 64


@dataclass(frozen=True)
class ClientCapabilities:
    """What a client's ``connect`` said about Enhanced RTMP (all empty for a legacy client)."""

    #: True if the client sent any of the E-RTMP connect properties.
    enhanced: bool = False
    #: The ``capsEx`` bits (0 when absent or malformed).
    caps_ex: int = 0
    #: ``fourCcList`` entries (v1), in the client's order.
    fourcc_list: tuple[str, ...] = ()
    #: ``videoFourCcInfoMap`` / ``audioFourCcInfoMap``: FourCC -> FourCcInfoMask bits.
    video_fourccs: Mapping[str, int] = field(default_factory=dict)
    audio_fourccs: Mapping[str, int] = field(default_factory=dict)

    @property
    def reconnect(self) -> bool:
        """Whether the client said it handles ``NetConnection.Connect.ReconnectRequest``."""
        return bool(self.caps_ex & CAPS_EX_RECONNECT)

    @property
    def multitrack(self) -> bool:
        return bool(self.caps_ex & CAPS_EX_MULTITRACK)

    def summary(self) -> dict[str, Any] | None:
        """Plain values for a log line, or None for a legacy client."""
        if not self.enhanced:
            return None
        return {
            "capsEx": self.caps_ex,
            "fourCcList": list(self.fourcc_list),
            "videoFourCcInfoMap": dict(self.video_fourccs),
            "audioFourCcInfoMap": dict(self.audio_fourccs),
        }


def _flags(value: Any) -> int | None:
    """A non-negative integral AMF number as an int; None for anything else (bools, NaN, strings...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        return None
    value = int(value)
    return value if 0 <= value <= 0xFFFFFFFF else None


def _fourcc(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_FOURCC_LEN else None


def _info_map(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, flags in value.items():
        name, mask = _fourcc(key), _flags(flags)
        if name is not None and mask is not None and len(out) < _MAX_FOURCCS:
            out[name] = mask
    return out


def client_capabilities(params: Mapping[str, Any]) -> ClientCapabilities:
    """Read the E-RTMP properties of a ``connect`` command object; malformed ones count as absent."""
    if not any(key in params for key in _CONNECT_KEYS):
        return ClientCapabilities()
    raw_list = params.get("fourCcList")
    fourccs: list[str] = []
    if isinstance(raw_list, (list, tuple)):
        for entry in raw_list:
            name = _fourcc(entry)
            if name is not None and name not in fourccs and len(fourccs) < _MAX_FOURCCS:
                fourccs.append(name)
    return ClientCapabilities(
        enhanced=True,
        caps_ex=_flags(params.get("capsEx")) or 0,
        fourcc_list=tuple(fourccs),
        video_fourccs=_info_map(params.get("videoFourCcInfoMap")),
        audio_fourccs=_info_map(params.get("audioFourCcInfoMap")),
    )


def connect_result_properties(client: ClientCapabilities) -> dict[str, Any]:
    """The E-RTMP properties of rtmpd's ``connect`` ``_result`` (merged into its properties object).

    A legacy client gets nothing new. An enhanced one gets ``capsEx`` (what
    rtmpd supports, not an echo of the client's bits: the client works out
    what both sides support), FourCC maps giving ``CanForward`` to ``*``
    and to every FourCC the client named in its maps, and, for a v1
    client that sent ``fourCcList``, that list back: rtmpd forwards all of
    them.
    """
    if not client.enhanced:
        return {}
    video = {WILDCARD: float(FOURCC_CAN_FORWARD)}
    video.update((name, float(FOURCC_CAN_FORWARD)) for name in client.video_fourccs if name != WILDCARD)
    audio = {WILDCARD: float(FOURCC_CAN_FORWARD)}
    audio.update((name, float(FOURCC_CAN_FORWARD)) for name in client.audio_fourccs if name != WILDCARD)
    properties: dict[str, Any] = {
        "capsEx": float(SERVER_CAPS_EX),
        "videoFourCcInfoMap": video,
        "audioFourCcInfoMap": audio,
    }
    if client.fourcc_list:
        properties["fourCcList"] = list(client.fourcc_list)
    return properties


def reconnect_request(tc_url: str | None = None, description: str = "The server is restarting.") -> Message:
    """The ``onStatus(NetConnection.Connect.ReconnectRequest)`` command, on message stream 0.

    Without ``tc_url`` the client reconnects to the tcUrl it used; with
    one (absolute, or relative to its current tcUrl) it moves there.
    """
    extra = {"tcUrl": tc_url} if tc_url else {}
    return encode_command("onStatus", 0, None, status_info("status", RECONNECT_REQUEST, description, **extra))
