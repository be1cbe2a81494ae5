"""core.classify: one MediaInfo per message, decided once, never raising."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.classify import CONFIG, DATA, HEADER, MediaInfo, classify
from rtmpd.core.messages import Message, MessageType
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)
from tests.test_media import ex_audio, ex_video, u24

A, V = MessageType.AUDIO, MessageType.VIDEO


def classify_payload(type_id: int, payload: bytes, primary: int = 0) -> MediaInfo:
    return classify(Message(type_id, 0, 1, payload), primary)


class LegacyTests(SynchronousTestCase):
    def test_avc_sequence_header_fills_the_header_slot(self) -> None:
        info = classify_payload(V, AVC_SEQUENCE_HEADER)
        self.assertEqual((info.config_slot, info.is_keyframe, info.is_config), (HEADER, False, True))
        self.assertEqual(info.first.codec, "H264")

    def test_keyframe_and_interframe(self) -> None:
        self.assertTrue(classify_payload(V, avc_keyframe(1)).is_keyframe)
        inter = classify_payload(V, avc_interframe(1))
        self.assertEqual((inter.is_keyframe, inter.config_slot, inter.error), (False, None, None))

    def test_aac(self) -> None:
        self.assertEqual(classify_payload(A, AAC_SEQUENCE_HEADER).config_slot, HEADER)
        frame = classify_payload(A, aac_frame(3))
        self.assertEqual((frame.config_slot, frame.is_keyframe, frame.first.codec), (None, False, "AAC"))

    def test_the_common_case_is_memoised(self) -> None:
        # The same header bytes with other frame data: the very same object, no allocation.
        self.assertIs(classify_payload(V, avc_interframe(1)), classify_payload(V, avc_interframe(2, size=9)))

    def test_memo_depends_on_the_primary_track(self) -> None:
        # A legacy tag is track 0: it starts a GOP only when track 0 is the primary video track.
        self.assertTrue(classify_payload(V, avc_keyframe(), primary=0).is_keyframe)
        self.assertFalse(classify_payload(V, avc_keyframe(), primary=1).is_keyframe)

    def test_data_messages(self) -> None:
        self.assertIs(classify(Message(MessageType.DATA_AMF0, 0, 1, b"\x02\x00\x01x"), 0), DATA)


class EnhancedTests(SynchronousTestCase):
    def test_video_metadata_and_multichannel_config_fill_the_config_slot(self) -> None:
        self.assertEqual(
            classify_payload(V, ex_video(1, 4, b"hvc1\x02\x00\x09colorInfo")).config_slot, CONFIG
        )
        self.assertEqual(classify_payload(A, ex_audio(4, b"Opus\x00\x02")).config_slot, CONFIG)

    def test_multitrack_keyframe_counts_only_for_the_primary_track(self) -> None:
        # ManyTracks, CodedFrames, shared FourCC; tracks 1 and 2 are keyframes (frame type 1).
        payload = ex_video(1, 6, b"\x11avc1" + b"\x01" + u24(1) + b"a" + b"\x02" + u24(1) + b"b")
        self.assertEqual(classify_payload(V, payload, primary=2).track_ids, [1, 2])
        self.assertTrue(classify_payload(V, payload, primary=2).is_keyframe)
        self.assertFalse(classify_payload(V, payload, primary=0).is_keyframe)

    def test_multitrack_sequence_start_configures_every_track(self) -> None:
        payload = ex_video(1, 6, b"\x10avc1" + b"\x00" + u24(2) + b"\x01\x64" + b"\x01" + u24(1) + b"\x01")
        info = classify_payload(V, payload)
        self.assertEqual((info.config_slot, info.track_ids), (HEADER, [0, 1]))

    def test_truncated_later_track_keeps_the_first(self) -> None:
        payload = ex_video(1, 6, b"\x11hvc1" + b"\x00" + u24(2) + b"ab" + b"\x01" + u24(5) + b"ab")
        self.assertEqual(classify_payload(V, payload).track_ids, [0])


class MalformedTests(SynchronousTestCase):
    def test_empty_and_truncated_tags_carry_the_error(self) -> None:
        for type_id, payload in ((V, b""), (A, b""), (V, b"\x17"), (V, ex_video(1, 1, b"hv"))):
            info = classify_payload(type_id, payload)
            self.assertEqual((info.tracks, info.is_keyframe, info.config_slot), ((), False, None))
            self.assertIsInstance(info.error, str)

    @given(st.sampled_from([A, V]), st.binary(max_size=64), st.integers(0, 255))
    def test_never_raises(self, type_id: int, payload: bytes, primary: int) -> None:
        info = classify_payload(type_id, payload, primary)
        self.assertEqual(info.type_id, type_id)
        self.assertTrue(info.error is not None or info.tracks)
