"""Fuzz the audio/video tag readers (legacy FLV, Enhanced RTMP, ModEx, multitrack) and the classifier.

``parse_video``/``parse_audio`` and the track lists may raise only
MalformedTag; ``classify`` never raises; the track census raises only
TooManyTracks (and bounds what it keeps); the config-record readers only
MalformedTag.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

from fuzz._harness import run  # noqa: E402

with atheris.instrument_imports():
    from rtmpd.core import media
    from rtmpd.core.classify import classify
    from rtmpd.core.errors import MalformedTag, TooManyTracks
    from rtmpd.core.messages import Message
    from rtmpd.core.tracks import TrackCensus


def target(data: bytes) -> None:
    if not data:
        return
    is_video = bool(data[0] & 1)
    payload = data[1:]
    info = classify(Message(9 if is_video else 8, 0, 1, payload), data[0] >> 1)
    assert info.error is not None or info.tracks
    census = TrackCensus(max_tracks=4, max_codecs=3)
    for read in (
        media.parse_video if is_video else media.parse_audio,
        media.video_tracks if is_video else media.audio_tracks,
        media.parse_avc_sequence_header if is_video else media.parse_aac_config,
        lambda p: media.codec_data_span(p, is_video),
    ):
        try:
            read(payload)
        except MalformedTag:
            pass
    if payload and ((payload[0] & 0x80) if is_video else (payload[0] >> 4 == 9)):
        try:
            (census.video if is_video else census.audio)(payload)
        except TooManyTracks:
            pass
    assert len(census.tracks) <= 4 and len(census.fourccs) <= 3


if __name__ == "__main__":
    run(target, (MalformedTag,))
