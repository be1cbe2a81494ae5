"""The Twisted side of LL-HLS without sockets: muxers started from the late-join cache, waits, idle stop."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.messages import Message, MessageType
from rtmpd.hls.live import HLSMuxers, HLSSettings
from rtmpd.hls.segments import Availability
from rtmpd.relay.registry import Publication, StreamRegistry
from tests.test_fmp4 import AVCC_1080, avc_tag
from tests.test_hls import stream_messages


class LiveHLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = StreamRegistry(ServerConfig(), self.clock.seconds)
        settings = HLSSettings(idle_timeout=20.0, part_duration=0.25)
        self.muxers = HLSMuxers(self.registry, settings, self.clock, lambda: 5000.0)
        self.muxers.start()
        self.addCleanup(self.muxers.stop)

    def publish(self, key: str = "live/cam"):
        peer = SimpleNamespace(conn_id="c1", peer_addr="127.0.0.1:1")
        return self.registry.publish(key, Publication(peer, 1, key.split("/")[1], "", 0.0, 0.0))

    def relay(self, stream, messages) -> None:
        for m in messages:
            stream.relay(m)

    def test_not_live_is_none(self):
        self.assertIsNone(self.muxers.get("live/cam"))

    def test_starts_from_the_late_join_cache_at_a_keyframe(self):
        stream = self.publish()
        messages = stream_messages(100, gop=60)
        early = [m for m in messages if m.timestamp < 2500]
        self.relay(stream, early)  # the GOP cache now starts at frame 60 (2 s)
        live = self.muxers.get("live/cam")
        self.assertEqual(self.muxers.get("live/cam"), live)
        self.assertEqual(live.window.inits.keys(), {live.epoch})
        first = live.window.segments[0]
        self.assertTrue(first.parts[0].independent)
        self.assertAlmostEqual(first.start_time - live.segmenter.anchor, 2.0, places=2)
        self.relay(stream, messages[len(early) :])
        self.assertGreater(len(live.window.segments[0].parts), 1)

    def test_a_wait_is_answered_when_the_part_is_made_or_times_out(self):
        stream = self.publish()
        messages = stream_messages(200, gop=30)
        self.relay(stream, messages[:5])
        live = self.muxers.get("live/cam")
        answered = []
        live.wait(1, None, 3.0).addCallback(answered.append)
        self.assertEqual(answered, [])
        self.relay(stream, [m for m in messages[5:] if m.timestamp < 2500])  # segment 1 ends at 2 s
        self.assertEqual(answered, [Availability.READY])
        late = []
        live.wait(live.window.next_msn + 1, None, 3.0).addCallback(late.append)
        self.clock.advance(2.9)
        self.assertEqual(late, [])
        self.clock.advance(0.1)
        self.assertEqual(late, [None])
        self.assertEqual(len(live.waiters), 0)

    def test_media_answers_are_shared_until_the_window_changes(self):
        from rtmpd.hls.access import PlayPermissions
        from rtmpd.hls.answers import HLSAnswers
        from rtmpd.hls.names import part_name
        from rtmpd.http.jsonio import HTTPError

        stream = self.publish()
        messages = stream_messages(600, gop=30)
        self.relay(stream, messages[:5])
        live = self.muxers.get("live/cam")
        answers = HLSAnswers(self.muxers, PlayPermissions(lambda: None, self.clock.seconds))
        self.relay(stream, [m for m in messages[5:] if m.timestamp < 1500])
        name = part_name(live.epoch, 0, 0)
        first = answers.answer(["live", "cam", name], "", "127.0.0.1")
        self.assertEqual(first.body, live.window.part_data(0, 0))
        self.assertIs(answers.answer(["live", "cam", name], "", "127.0.0.1"), first)
        # Once segment 0 has left the window, its part is gone: nothing remembered answers it.
        self.relay(stream, [m for m in messages if 1500 <= m.timestamp < 19000])
        with self.assertRaises(HTTPError) as e:
            answers.answer(["live", "cam", name], "", "127.0.0.1")
        self.assertEqual(e.exception.status, 404)

    def test_cancelled_wait_is_forgotten(self):
        stream = self.publish()
        self.relay(stream, stream_messages(10))
        live = self.muxers.get("live/cam")
        d = live.wait(5, None, 3.0)
        d.addErrback(lambda f: None)
        d.cancel()
        self.assertEqual(len(live.waiters), 0)

    def test_unwatched_muxer_stops(self):
        stream = self.publish()
        self.relay(stream, stream_messages(10))
        self.muxers.get("live/cam")
        self.clock.advance(15)
        self.muxers.get("live/cam")
        self.clock.advance(15)
        self.assertIn("live/cam", self.muxers.live)
        self.clock.advance(10)
        self.assertNotIn("live/cam", self.muxers.live)

    def test_republish_is_a_new_generation_with_a_discontinuity(self):
        stream = self.publish()
        self.relay(stream, stream_messages(90, gop=30))
        live = self.muxers.get("live/cam")
        first_epoch = live.epoch
        self.registry.unpublish(stream, stream.publisher)
        self.assertIsNone(live.segmenter)
        self.assertTrue(all(s.complete for s in live.window.segments))
        stream = self.publish()
        self.relay(stream, stream_messages(90, gop=30))
        self.assertNotEqual(live.epoch, first_epoch)
        new = [s for s in live.window.segments if s.epoch == live.epoch]
        self.assertTrue(new[0].discontinuity)
        self.assertEqual(new[0].msn, max(s.msn for s in live.window.segments if s.epoch == first_epoch) + 1)
        self.assertIn(first_epoch, live.window.inits)

    def test_changed_configuration_starts_a_new_generation_mid_stream(self):
        stream = self.publish()
        messages = stream_messages(120, gop=30)
        first = [m for m in messages if m.timestamp < 2000]
        self.relay(stream, first)
        live = self.muxers.get("live/cam")
        epoch, anchor = live.epoch, live.segmenter.anchor
        other = avc_tag(1, 0, AVCC_1080[:-1] + bytes([AVCC_1080[-1] ^ 1]))
        with capturedLogs() as logs:
            stream.relay(Message(MessageType.VIDEO, 2000, 1, other))
        self.assertEqual(
            [e["log_format"] for e in logs if "restarts" in e["log_format"]], ["HLS muxer restarts: {error}"]
        )
        self.assertNotEqual(live.epoch, epoch)
        self.relay(stream, messages[len(first) :])
        new = [s for s in live.window.segments if s.epoch == live.epoch]
        self.assertTrue(new and new[0].discontinuity)
        # The stream goes on: the new generation keeps its media-time-to-wall-time anchor.
        self.assertAlmostEqual(live.segmenter.anchor, anchor, places=1)
        self.assertAlmostEqual(new[0].start_time, anchor + 2.0, places=1)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str):
        from rtmpd.tap import Options

        options = Options()
        options.parseOptions(list(args))
        return options

    def test_hls_needs_http_and_consistent_durations(self):
        with self.assertRaises(SystemExit) as caught:
            self.parse("--hls")
        self.assertIn("--hls needs --http", str(caught.exception))
        with self.assertRaises(SystemExit) as caught:
            self.parse("--http", "tcp:0", "--hls", "--hls-part-duration", "2", "--hls-segment-duration", "1")
        self.assertIn("--hls-part-duration", str(caught.exception))
        with self.assertRaises(SystemExit):
            self.parse("--http", "tcp:0", "--hls", "--hls-window", "0")
        options = self.parse("--http", "tcp:0", "--hls", "--hls-segment-duration", "2", "--hls-window", "4")
        from rtmpd.tap.hls import hls_settings

        self.assertEqual(
            hls_settings(options), HLSSettings(segment_duration=2.0, part_duration=0.333, window=4)
        )
