"""LL-HLS sans-IO parts: the window, the segmenter, the playlist, blocking reload bookkeeping, names."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.classify import classify
from rtmpd.core.fmp4 import AUDIO_TRACK_ID, VIDEO_TRACK_ID
from rtmpd.core.fmp4_boxes import FLAGS_SYNC
from rtmpd.core.messages import Message, MessageType
from rtmpd.hls.blocking import ADVANCE_PART_LIMIT, Waiters, availability, too_far
from rtmpd.hls.names import (
    FileName,
    QueryError,
    credential_query,
    parse_file_name,
    parse_playlist_query,
    part_name,
    segment_name,
)
from rtmpd.hls.playlist import render_playlist
from rtmpd.hls.segmenter import Segmenter, declared_part_target
from rtmpd.hls.segments import Availability, Part, Window
from tests.test_fmp4 import ASC_48K_STEREO, AVCC_1080, aac_tag, all_samples, avc_tag

NAL = b"\x00\x00\x00\x02\x65\x88"


def stream_messages(frames: int, fps: int = 30, gop: int = 60, audio: bool = True, video: bool = True):
    """Configuration, then interleaved H.264 frames (a keyframe every ``gop``) and AAC frames, by time."""
    out = []
    if video:
        out.append(Message(MessageType.VIDEO, 0, 1, avc_tag(1, 0, AVCC_1080)))
    if audio:
        out.append(Message(MessageType.AUDIO, 0, 1, aac_tag(0, ASC_48K_STEREO)))
    events = []
    if video:
        for f in range(frames):
            key = f % gop == 0
            events.append((f * 1000 // fps, 1, avc_tag(1 if key else 2, 1, NAL + bytes([f % 256]))))
    if audio:
        end = frames * 1000 // fps
        a = 0
        while a * 1024 * 1000 // 48000 < end:
            events.append((a * 1024 * 1000 // 48000, 0, aac_tag(1, b"\x21\x00" + bytes([a % 256]))))
            a += 1
    for ts, is_video, payload in sorted(events, key=lambda e: (e[0], -e[1])):
        out.append(Message(MessageType.VIDEO if is_video else MessageType.AUDIO, ts, 1, payload))
    return out


def segmented(messages, window: Window | None = None, **kw) -> tuple[Window, Segmenter]:
    window = window or Window(100, part_segments=100)
    args = dict(epoch="e1", segment_target=1.0, part_target=0.25, anchor=1000.0)
    args.update(kw)
    segmenter = Segmenter(window, **args)
    for m in messages:
        segmenter.feed(m, classify(m))
    return window, segmenter


class SegmenterTests(SynchronousTestCase):
    def test_segments_start_at_keyframes_and_parts_keep_their_target(self):
        window, segmenter = segmented(stream_messages(300, gop=45))
        segmenter.finish()
        segments = list(window.segments)
        self.assertEqual([s.msn for s in segments], list(range(len(segments))))
        # 10 s with a keyframe every 1.5 s and a 1 s target: one segment per GOP.
        self.assertEqual(len(segments), 7)
        for segment in segments:
            self.assertTrue(segment.complete)
            self.assertTrue(segment.parts[0].independent)
            self.assertEqual(segment.data, b"".join(p.data for p in segment.parts))
            for part in segment.parts:
                self.assertLessEqual(part.duration, 0.25 + 1e-9)
            video = all_samples(segment.data)[VIDEO_TRACK_ID]
            self.assertEqual(video[0][3], FLAGS_SYNC)
        self.assertEqual([round(s.duration, 3) for s in segments[:-1]], [1.5] * 6)
        # PROGRAM-DATE-TIME: the anchor plus the segment's first timestamp.
        self.assertAlmostEqual(segments[1].start_time, 1000.0 + 1.5, places=3)

    def test_every_sample_is_muxed_once_in_order(self):
        window, segmenter = segmented(stream_messages(200))
        segmenter.finish()
        samples = all_samples(b"".join(s.data for s in window.segments))
        self.assertEqual(len(samples[VIDEO_TRACK_ID]), 200)
        self.assertEqual([s[5][-1] for s in samples[VIDEO_TRACK_ID]], [f % 256 for f in range(200)])
        self.assertEqual(samples[AUDIO_TRACK_ID][0][5][-1], 0)

    def test_nothing_before_the_first_keyframe(self):
        messages = stream_messages(120, gop=60)
        # Drop the first keyframe: the stream now starts mid-GOP.
        del messages[2]
        window, segmenter = segmented(messages)
        segmenter.finish()
        first = all_samples(window.segments[0].data)
        self.assertEqual(first[VIDEO_TRACK_ID][0][5][-1], 60)
        self.assertEqual(first[VIDEO_TRACK_ID][0][3], FLAGS_SYNC)
        # Audio before the first keyframe is not muxed either.
        self.assertGreaterEqual(first[AUDIO_TRACK_ID][0][0], 2000 * 48 - 1024)

    def test_audio_only_stream(self):
        window, segmenter = segmented(stream_messages(150, video=False), segment_target=2.0, part_target=0.5)
        segmenter.finish()
        self.assertEqual(len(window.segments), 3)
        for segment in list(window.segments)[:-1]:
            self.assertGreaterEqual(segment.duration, 2.0)
            self.assertTrue(all(p.independent for p in segment.parts))
            self.assertTrue(all(p.duration <= 0.5 for p in segment.parts))

    def test_init_segment_is_made_with_the_first_frame(self):
        window, _ = segmented(stream_messages(0))
        self.assertEqual(window.inits, {})
        window, _ = segmented(stream_messages(1))
        self.assertIn(b"moov", window.inits["e1"][:64] + window.inits["e1"])

    @settings(max_examples=15, deadline=None)
    @given(
        frames=st.integers(1, 120),
        gop=st.integers(1, 90),
        fps=st.sampled_from([24, 25, 30, 60]),
        part=st.sampled_from([0.2, 0.25, 0.5]),
        segment=st.sampled_from([0.5, 1.0, 2.0]),
        audio=st.booleans(),
    )
    def test_any_stream(self, frames, gop, fps, part, segment, audio):
        window, segmenter = segmented(
            stream_messages(frames, fps=fps, gop=gop, audio=audio), part_target=part, segment_target=segment
        )
        segmenter.finish()
        samples = all_samples(b"".join(s.data for s in window.segments))
        self.assertEqual(len(samples[VIDEO_TRACK_ID]), frames)
        frame = 1 / fps
        for segment_ in window.segments:
            # Each segment starts with a keyframe, and is longer than the target only up to its next one.
            self.assertEqual(all_samples(segment_.data)[VIDEO_TRACK_ID][0][3], FLAGS_SYNC)
            for p in segment_.parts:
                self.assertLessEqual(p.duration, max(declared_part_target(part), frame) + 1e-6)

    def test_parts_of_whole_frames_fill_the_segment(self):
        # 30 fps with millisecond timestamps (0, 33, 66, 100, ...), a keyframe a second: 0.5 s parts
        # are 15 frames (two per segment, not 14 + 15 + 1), 1/3 s parts 10 frames, 0.25 s parts 7.
        for part, frames in ((0.5, [15, 15]), (0.333, [10, 10, 10]), (0.25, [7, 7, 7, 7, 2])):
            window, _ = segmented(stream_messages(121, gop=30), part_target=part, segment_target=1.0)
            for segment in list(window.segments)[:-1]:
                counts = [len(all_samples(p.data)[VIDEO_TRACK_ID]) for p in segment.parts]
                self.assertEqual(counts, frames, part)
                self.assertTrue(all(p.duration <= declared_part_target(part) for p in segment.parts))


class WindowTests(SynchronousTestCase):
    def fill(self, window: Window, segments: int, parts: int = 2) -> None:
        for _ in range(segments):
            window.start_segment("e", 0.0, False)
            for i in range(parts):
                window.add_part(Part(bytes([i]), 0.5, i == 0))
            window.close_segment()

    def test_bounded_and_parts_dropped_away_from_the_edge(self):
        window = Window(3, spare=2, part_segments=2)
        self.fill(window, 10)
        self.assertEqual([s.msn for s in window.segments], [5, 6, 7, 8, 9])
        self.assertEqual([s.msn for s in window.listed()], [7, 8, 9])
        self.assertEqual([s.parts_dropped for s in window.segments], [True, True, True, False, False])
        self.assertEqual(window.segment(5).data, b"\x00\x01")
        self.assertEqual(window.part_availability(7, 0), Availability.GONE)
        self.assertEqual(window.part_data(9, 1), b"\x01")
        self.assertEqual(window.segment_availability(4), Availability.GONE)
        self.assertEqual(window.segment_availability(10), Availability.PENDING)

    def test_empty_segment_is_dropped(self):
        window = Window(3)
        window.start_segment("e", 0.0, False)
        self.assertIsNone(window.close_segment())
        self.assertEqual((len(window.segments), window.next_msn), (0, 0))

    def test_discontinuity_sequence_counts_what_left(self):
        window = Window(2, spare=0)
        self.fill(window, 2)
        window.start_segment("f", 0.0, True)
        window.add_part(Part(b"x", 0.5, True))
        window.close_segment()
        self.fill(window, 2)
        self.assertEqual(window.skipped_discontinuities(), 1)
        self.assertNotIn("e", window.inits)


class PlaylistTests(SynchronousTestCase):
    def test_ll_tags_parts_hint_and_credential(self):
        window, segmenter = segmented(stream_messages(100, gop=30))
        text = render_playlist(
            window, epoch="e1", segment_target=1.0, part_target=0.25, credential="exp=9&sig=ab"
        )
        lines = text.splitlines()
        self.assertEqual(lines[0], "#EXTM3U")
        self.assertIn("#EXT-X-TARGETDURATION:1", lines)
        # The declared part target is the configured one plus the 1 ms of RTMP's timestamp resolution.
        self.assertIn("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.753", lines)
        self.assertIn("#EXT-X-PART-INF:PART-TARGET=0.251", lines)
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:0", lines)
        self.assertIn('#EXT-X-MAP:URI="e1.mp4?exp=9&sig=ab"', lines)
        self.assertIn("#EXTINF:1,", lines)
        self.assertIn("e1.0.m4s?exp=9&sig=ab", lines)
        self.assertIn('#EXT-X-PART:DURATION=0.233,URI="e1.0.0.m4s?exp=9&sig=ab",INDEPENDENT=YES', lines)
        open_ = window.open
        self.assertEqual(
            lines[-1],
            f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="e1.{open_.msn}.{len(open_.parts)}.m4s?exp=9&sig=ab"',
        )
        self.assertEqual(sum(1 for line in lines if line.startswith("#EXT-X-PROGRAM-DATE-TIME:")), 4)

    def test_window_and_discontinuity(self):
        window = Window(2, spare=0)
        _, first = segmented(stream_messages(90, gop=30), window=window)
        first.finish()
        _, second = segmented(stream_messages(60, gop=30), window=window, epoch="e2", discontinuity=True)
        text = render_playlist(window, epoch="e2", segment_target=1.0, part_target=0.25)
        self.assertIn("#EXT-X-DISCONTINUITY\n", text)
        self.assertIn('#EXT-X-MAP:URI="e1.mp4"', text)
        self.assertIn('#EXT-X-MAP:URI="e2.mp4"', text)
        self.assertNotIn("e1.0.m4s", text)  # left the window


class BlockingTests(SynchronousTestCase):
    def window_with(self, complete: int, open_parts: int | None) -> Window:
        window = Window(10)
        for _ in range(complete):
            window.start_segment("e", 0.0, False)
            window.add_part(Part(b"p", 0.25, True))
            window.add_part(Part(b"p", 0.25, False))
            window.close_segment()
        if open_parts is not None:
            window.start_segment("e", 0.0, False)
            for _ in range(open_parts):
                window.add_part(Part(b"p", 0.25, False))
        return window

    def test_too_far(self):
        window = self.window_with(3, 1)  # segments 0..2 complete, 3 open with part 0
        self.assertFalse(too_far(window, 5, None))
        self.assertTrue(too_far(window, 6, None))
        self.assertFalse(too_far(window, 3, ADVANCE_PART_LIMIT))
        self.assertTrue(too_far(window, 3, ADVANCE_PART_LIMIT + 1))
        self.assertFalse(too_far(window, 4, ADVANCE_PART_LIMIT - 1))
        self.assertTrue(too_far(window, 4, ADVANCE_PART_LIMIT))
        self.assertFalse(too_far(window, 0, 99))
        empty = Window(3)
        self.assertFalse(too_far(empty, 0, 0))
        self.assertTrue(too_far(empty, 3, None))

    def test_waiters_settle_and_expire(self):
        window = self.window_with(1, 0)
        waiters = Waiters()
        waiters.add("seg1", 1, None, deadline=10.0)
        waiters.add("part", 1, 1, deadline=10.0)
        waiters.add("late", 1, 5, deadline=5.0)
        self.assertEqual(waiters.settled(window), [])
        self.assertEqual(waiters.next_deadline(), 5.0)
        window.add_part(Part(b"p", 0.25, True))
        self.assertEqual(waiters.settled(window), [])
        window.add_part(Part(b"p", 0.25, False))
        self.assertEqual(waiters.settled(window), [("part", Availability.READY)])
        window.close_segment()
        # Segment 1 ended with 2 parts: part 5 of it means part 0 of segment 2 (the spec).
        self.assertEqual(waiters.settled(window), [("seg1", Availability.READY)])
        window.start_segment("e", 0.0, False)
        window.add_part(Part(b"p", 0.25, True))
        self.assertEqual(waiters.settled(window), [("late", Availability.READY)])
        waiters.add("next", 2, 1, deadline=12.0)
        self.assertEqual(availability(window, 1, 7), Availability.READY)
        self.assertEqual(availability(window, 2, 1), Availability.PENDING)
        self.assertEqual(waiters.expired(11.9), [])
        self.assertEqual(waiters.expired(12.0), ["next"])
        self.assertEqual(len(waiters), 0)
        self.assertEqual(availability(window, 0, None), Availability.READY)


class NameTests(SynchronousTestCase):
    def test_files(self):
        self.assertEqual(parse_file_name("ab12.mp4"), FileName("ab12"))
        self.assertEqual(parse_file_name(segment_name("ab12", 7)), FileName("ab12", 7))
        self.assertEqual(parse_file_name(part_name("ab12", 7, 3)), FileName("ab12", 7, 3))
        for bad in ("ab12.7.mp4", "ab12.m4s", "../x.mp4", "AB.mp4", "a.1.2.3.m4s", "index.m3u8", ""):
            self.assertIsNone(parse_file_name(bad), bad)

    def test_playlist_query(self):
        q = parse_playlist_query("_HLS_msn=12&_HLS_part=3&exp=100&sig=abc&_HLS_skip=YES")
        self.assertEqual((q.msn, q.part, q.credential), (12, 3, "exp=100&sig=abc"))
        self.assertEqual(parse_playlist_query("").msn, None)
        for bad in ("_HLS_part=1", "_HLS_msn=-1", "_HLS_msn=x", "_HLS_msn=" + "9" * 20, "a=" + "b" * 3000):
            self.assertRaises(QueryError, parse_playlist_query, bad)
        self.assertEqual(credential_query("_HLS_msn=1&exp=5&sig=z"), "exp=5&sig=z")

    @settings(max_examples=50)
    @given(st.text(max_size=300))
    def test_any_query_parses_or_is_a_query_error(self, text):
        try:
            parse_playlist_query(text)
        except QueryError:
            pass
