"""Caps on what an Enhanced RTMP publisher's tags may name: tracks and distinct codecs.

E-RTMP multitrack lets one tag carry many tracks, and every E-RTMP tag names
a FourCC; a server that keeps something per track or per codec (late-join
configuration, log lines, statistics) would grow with whatever a publisher
invents. ``TrackCensus`` keeps the (kind, track id) pairs and FourCCs one
connection has used and raises ``TooManyTracks`` past ``Limits.max_tracks``
or ``Limits.max_codecs``, and for a multitrack tag of more than
``max_tracks`` track entries.

Legacy (non-E-RTMP) tags never reach it; an E-RTMP tag with a FourCC
already seen costs one slice and one set lookup. Tags whose header cannot
be read are left to the relay (media is relayed untouched).
"""

from __future__ import annotations

from collections.abc import Iterable

from rtmpd.core.errors import MalformedTag, TooManyTracks
from rtmpd.core.media import audio_tracks, video_tracks

__all__ = ["TrackCensus"]

_VIDEO_MULTITRACK = 6
_AUDIO_MULTITRACK = 5
_MODEX = 7
_FRAME_COMMAND = 5


class TrackCensus:
    """The tracks and codecs one publishing connection has used, with caps.

    ``video(payload)`` / ``audio(payload)`` are called with every E-RTMP
    video tag (first byte has the 0x80 bit) and audio tag (SoundFormat 9).
    They raise ``TooManyTracks``; nothing else.
    """

    __slots__ = ("max_tracks", "max_codecs", "tracks", "fourccs")

    def __init__(self, max_tracks: int, max_codecs: int) -> None:
        self.max_tracks = max_tracks
        self.max_codecs = max_codecs
        #: (is_video, track id) pairs seen.
        self.tracks: set[tuple[bool, int]] = set()
        #: FourCCs seen (raw 4 bytes), audio and video together.
        self.fourccs: set[bytes] = set()

    def video(self, payload: bytes) -> None:
        b0 = payload[0]
        packet_type = b0 & 0x0F
        if packet_type != _VIDEO_MULTITRACK and packet_type != _MODEX:
            if (b0 >> 4) & 0x07 == _FRAME_COMMAND:
                return  # a command frame carries no FourCC
            fourcc = payload[1:5]
            if fourcc not in self.fourccs:
                self._note(True, ((fourcc, 0),))
            return
        self._multitrack(True, payload)

    def audio(self, payload: bytes) -> None:
        packet_type = payload[0] & 0x0F
        if packet_type != _AUDIO_MULTITRACK and packet_type != _MODEX:
            fourcc = payload[1:5]
            if fourcc not in self.fourccs:
                self._note(False, ((fourcc, 0),))
            return
        self._multitrack(False, payload)

    def _multitrack(self, is_video: bool, payload: bytes) -> None:
        try:
            infos = (video_tracks if is_video else audio_tracks)(payload, max_tracks=self.max_tracks)
        except MalformedTag:
            return  # relayed untouched; the relay logs what it cannot read
        pairs: list[tuple[bytes, int]] = []
        for info in infos:
            fourcc = info.fourcc
            if fourcc is None:
                continue
            raw = bytes.fromhex(fourcc[2:]) if fourcc.startswith("0x") else fourcc.encode("ascii")
            pairs.append((raw, info.track_id))
        self._note(is_video, pairs)

    def _note(self, is_video: bool, pairs: Iterable[tuple[bytes, int]]) -> None:
        for fourcc, track_id in pairs:
            if len(fourcc) == 4 and fourcc not in self.fourccs:
                if len(self.fourccs) >= self.max_codecs:
                    raise TooManyTracks(f"more than {self.max_codecs} distinct codecs (FourCCs)")
                self.fourccs.add(fourcc)
            track = (is_video, track_id)
            if track not in self.tracks:
                if len(self.tracks) >= self.max_tracks:
                    raise TooManyTracks(f"more than {self.max_tracks} tracks")
                self.tracks.add(track)
