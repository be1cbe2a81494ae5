"""Renders a stream's LL-HLS media playlist from its ``Window``, sans-IO.

One playlist serves both kinds of client: LL-HLS clients read
``EXT-X-PART``, ``EXT-X-PRELOAD-HINT`` and ``EXT-X-SERVER-CONTROL``; classic
clients ignore those tags (RFC 8216 says unknown tags are ignored) and play
the complete segments (``EXTINF``). Every URL is relative and carries the
client's credential query. ``EXT-X-PROGRAM-DATE-TIME`` gives each segment's
wall time, from which players measure their latency.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from rtmpd.hls.names import init_name, part_name, segment_name
from rtmpd.hls.segmenter import declared_part_target
from rtmpd.hls.segments import Window

__all__ = ["VERSION", "render_playlist", "target_duration"]

#: EXT-X-MAP in a playlist without I-frames needs version 6; nothing here needs more.
VERSION = 6
#: PART-HOLD-BACK in part targets: the spec asks for at least 2, and recommends 3.
PART_HOLD_BACK_PARTS = 3


def target_duration(window: Window, segment_target: float) -> int:
    """EXT-X-TARGETDURATION: the longest segment so far (or the target), rounded up, at least 1."""
    return max(1, math.ceil(max(window.longest, segment_target) - 1e-9))


def _with(uri: str, credential: str) -> str:
    return f"{uri}?{credential}" if credential else uri


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: float) -> str:
    return f"{value:.5f}".rstrip("0").rstrip(".") if value else "0"


def render_playlist(
    window: Window, *, epoch: str, segment_target: float, part_target: float, credential: str = ""
) -> str:
    """The media playlist. ``epoch`` is the generation being made (named by the preload hint);
    ``credential`` is the query copied onto every URL (already encoded)."""
    listed = window.listed()
    declared = declared_part_target(part_target)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(window, segment_target)}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={_seconds(PART_HOLD_BACK_PARTS * declared)}",
        f"#EXT-X-PART-INF:PART-TARGET={_seconds(declared)}",
        f"#EXT-X-MEDIA-SEQUENCE:{listed[0].msn if listed else window.next_msn}",
    ]
    discontinuities = window.skipped_discontinuities()
    if discontinuities:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}")
    mapped = None
    for segment in listed:
        if segment.discontinuity and segment is not listed[0]:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.epoch != mapped:
            lines.append(f'#EXT-X-MAP:URI="{_with(init_name(segment.epoch), credential)}"')
            mapped = segment.epoch
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(segment.start_time)}")
        if not segment.parts_dropped:
            for index, part in enumerate(segment.parts):
                uri = _with(part_name(segment.epoch, segment.msn, index), credential)
                independent = ",INDEPENDENT=YES" if part.independent else ""
                lines.append(f'#EXT-X-PART:DURATION={_seconds(part.duration)},URI="{uri}"{independent}')
        if segment.complete:
            lines.append(f"#EXTINF:{_seconds(segment.duration)},")
            lines.append(_with(segment_name(segment.epoch, segment.msn), credential))
    open_ = window.open
    if open_ is not None:
        hint = part_name(open_.epoch, open_.msn, len(open_.parts))
    else:
        hint = part_name(epoch, window.next_msn, 0)
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{_with(hint, credential)}"')
    return "\n".join(lines) + "\n"
