"""The benchmark's test stream: generated once with ffmpeg into a cached FLV file, then read as tags.

The stream is what the issue prescribes: 1280x720 at 30 fps H.264 with a
keyframe every 2 s at about 3 Mb/s (x264 in CBR mode with filler, so the
rate holds whatever the picture), and AAC at 48 kHz stereo. It is encoded
once and replayed by the publisher, so every run and both servers relay
exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass

from rtmpd.core.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, parse_flv

__all__ = ["MediaFile", "cache_dir", "ensure_media", "load_media"]

DEFAULT_SECONDS = 30

_VIDEO_FILTER = "testsrc2=size=1280x720:rate=30"
_AUDIO_FILTER = "sine=frequency=440:sample_rate=48000"
_ENCODE = [
    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
    "-b:v", "3M", "-maxrate", "3M", "-bufsize", "3M", "-x264-params", "nal-hrd=cbr:force-cfr=1",
    "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
    "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000",
]  # fmt: skip


def cache_dir() -> str:
    """Where generated media is kept between runs: $RTMPD_BENCH_CACHE, else ~/.cache/rtmpd-bench."""
    explicit = os.environ.get("RTMPD_BENCH_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rtmpd-bench")


def ensure_media(seconds: int = DEFAULT_SECONDS, directory: str | None = None) -> str:
    """Return the path of the test stream, encoding it with ffmpeg first if it is not cached.

    The file name carries a hash of the encoding arguments, so changing them
    makes a new file. Raises RuntimeError if ffmpeg is missing or fails.
    """
    directory = directory or cache_dir()
    args = ["-f", "lavfi", "-i", _VIDEO_FILTER, "-f", "lavfi", "-i", _AUDIO_FILTER,
            "-t", str(seconds), *_ENCODE]
    digest = hashlib.sha256(" ".join(args).encode()).hexdigest()[:12]
    path = os.path.join(directory, f"720p30-3M-{seconds}s-{digest}.flv")
    if os.path.exists(path):
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed: it generates the benchmark's test stream")
    os.makedirs(directory, exist_ok=True)
    partial = path + ".partial"
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args, "-f", "flv", partial]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed to encode the test stream: {result.stderr.strip()}")
    # Renamed only when complete, so an interrupted encode is never mistaken for the stream.
    os.replace(partial, path)
    return path


@dataclass(frozen=True, slots=True)
class MediaTag:
    """One tag to publish: RTMP message type, timestamp (ms), payload, and whether it is a header."""

    type_id: int
    timestamp: int
    payload: bytes
    #: Metadata and sequence headers: published once, not on every loop of the file.
    is_header: bool


@dataclass(frozen=True)
class MediaFile:
    path: str
    tags: list[MediaTag]
    #: Duration of one pass (ms): the offset added to timestamps on each loop.
    period_ms: int
    #: Audio+video payload bytes per second: the rate a player must receive to keep real time.
    payload_rate: float


def _is_header(tag_type: int, payload: bytes) -> bool:
    if tag_type == TAG_SCRIPT:
        return True
    if len(payload) < 2:
        return False
    if tag_type == TAG_VIDEO:
        return payload[0] & 0x0F == 7 and payload[1] == 0  # AVC sequence header
    if tag_type == TAG_AUDIO:
        return payload[0] >> 4 == 10 and payload[1] == 0  # AAC AudioSpecificConfig
    return False


def _is_end_of_sequence(tag_type: int, payload: bytes) -> bool:
    return tag_type == TAG_VIDEO and len(payload) >= 2 and payload[0] & 0x0F == 7 and payload[1] == 2


def load_media(path: str) -> MediaFile:
    """Read the FLV file into publishable tags. Raises MalformedTag for a corrupt file.

    The AVC end-of-sequence tag that ends the file is left out: the file is
    looped, so the stream never ends.
    """
    with open(path, "rb") as f:
        _, tags, _ = parse_flv(f.read())
    out = [MediaTag(t.tag_type & 0x1F, t.timestamp, t.payload, _is_header(t.tag_type & 0x1F, t.payload))
           for t in tags
           if t.tag_type & 0x1F in (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT)
           and not _is_end_of_sequence(t.tag_type & 0x1F, t.payload)]
    last = max(t.timestamp for t in out)
    # One video frame after the last tag: the next pass starts where a frame would.
    period = last + 34
    media_bytes = sum(len(t.payload) for t in out if not t.is_header)
    return MediaFile(path, out, period, media_bytes / (period / 1000))
