"""What a new recording file starts from, in either format, built from the stream's late-join cache.

An FLV file starts with its header, an onMetaData with placeholders and the
sequence headers (``rtmpd.recording.flvfile.build_prologue``); an MP4 file
with the sequence headers its muxer reads before the first sample
(``rtmpd.recording.mp4file.build_mp4_prologue``). Both come from the cache,
so every file (every segment) plays alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtmpd.core.flv import TAG_AUDIO, TAG_VIDEO
from rtmpd.core.messages import MessageType
from rtmpd.recording.flvfile import build_prologue, publisher_fields

if TYPE_CHECKING:
    from rtmpd.relay.latejoin import LateJoinCache

__all__ = ["FileStart", "file_start"]


@dataclass(frozen=True, slots=True)
class FileStart:
    """A new file's prologue (for the writer), its size in bytes, whether it has video, and the sequence
    headers it was configured with (an MP4 file needs a new file when one changes)."""

    prologue: Any
    size: int
    has_video: bool
    configs: frozenset[bytes]


def _present(value: Any) -> bool:
    return value is not None and value != ""


def file_start(
    cache: LateJoinCache, file_format: str, *, video_seen: bool, audio_seen: bool, keyframe_slots: int
) -> FileStart:
    """The start of a new ``file_format`` ("flv" or "mp4") file from ``cache``.

    ``video_seen``/``audio_seen``: whether the stream sent such frames
    already (a track known without a sequence header still counts).
    """
    # Decoded when it arrived, under the server's AMF limits: never decoded again here.
    metadata = publisher_fields(cache.metadata_values)
    codec_headers = cache.codec_headers()
    has_video = bool(cache.video_headers) or video_seen or _present(metadata.get("videocodecid"))
    has_audio = bool(cache.audio_headers) or audio_seen or _present(metadata.get("audiocodecid"))
    configs = frozenset(m.payload for m in codec_headers)
    if file_format == "mp4":
        # Imported here: a server that records FLV only never loads the MP4 muxer.
        from rtmpd.recording.mp4file import build_mp4_prologue

        return FileStart(build_mp4_prologue(codec_headers, has_video), 0, has_video, configs)
    headers = [(TAG_VIDEO if m.type_id == MessageType.VIDEO else TAG_AUDIO, m.payload) for m in codec_headers]
    prologue = build_prologue(
        metadata, headers, has_audio=has_audio, has_video=has_video, keyframe_slots=keyframe_slots
    )
    return FileStart(prologue, len(prologue.data), has_video, configs)
