"""WebSocket-fMP4 players in memory: fragments muxed once per stream and shared, late join from the GOP,
the slow-player policy per fragment, generations, and the sources' lifetime."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.fmp4 import AUDIO_TRACK_ID, Fmp4Muxer
from rtmpd.core.messages import MessageType
from rtmpd.http.flv.resource import parse_path
from rtmpd.http.fmp4.source import FMP4Player, Fragment, FragmentSources, starts_with_sync_sample
from rtmpd.http.jsonio import HTTPError
from rtmpd.relay.fanout import FLV_TAGS
from rtmpd.testing import MemoryServer
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

VIDEO, AUDIO = MessageType.VIDEO, MessageType.AUDIO


class FakePeer:
    """A WebSocket-fMP4 player's connection as the relay sees it, recording what it is sent."""

    chunk_size = FLV_TAGS
    over_queue_bound = False
    buffered_bytes = 0
    bytes_in = bytes_out = 0

    def __init__(self, conn_id: str, outbox) -> None:
        self.conn_id, self.peer_addr, self.app = conn_id, "127.0.0.1:1", "live"
        self.outbox = outbox
        self.congested = False
        self.queued: list[Fragment] = []
        self.sent: list[Fragment] = []
        self.closed: str | None = None

    def queue_media(self, data: Fragment) -> None:
        if not self.queued:
            self.outbox.mark(self)
        self.queued.append(data)

    def flush_media(self) -> None:
        self.sent += self.queued
        self.queued = []

    def send_command(self, message) -> None:
        pass

    def send_control(self, message) -> None:
        pass

    def close(self, reason: str) -> None:
        self.closed = reason


class Setup:
    def __init__(self, publish: bool = True) -> None:
        self.server = MemoryServer()
        self.prepared: list[bytes] = []
        self.sources = FragmentSources(self.server.registry, self._prepare)
        if publish:
            self.publish()

    def publish(self) -> None:
        self.publisher, self.sid = self.server.publisher("cam")

    def _prepare(self, data: bytes) -> tuple[str, bytes]:
        self.prepared.append(data)
        return ("framed", data)

    def headers(self) -> None:
        self.publisher.send_media(VIDEO, self.sid, 0, AVC_SEQUENCE_HEADER)
        self.publisher.send_media(AUDIO, self.sid, 0, AAC_SEQUENCE_HEADER)
        self.server.flush()

    def frames(self, count: int, keyframe_every: int = 30, start: int = 0) -> None:
        """``count`` video frames 33 ms apart, each followed by an audio frame."""
        for n in range(start, start + count):
            key = n % keyframe_every == 0
            payload = avc_keyframe(n) if key else avc_interframe(n)
            self.publisher.send_media(VIDEO, self.sid, n * 33, payload)
            self.publisher.send_media(AUDIO, self.sid, n * 33 + 10, aac_frame(n))
        self.server.flush()

    def player(self, conn_id: str) -> tuple[FMP4Player, FakePeer]:
        peer = FakePeer(conn_id, self.server.factory.outbox)
        player = FMP4Player(peer, self.server.registry.subscribe("live/cam"), "cam", self.sources)
        player.start()
        self.server.flush()
        return player, peer


def kinds(fragments: list[Fragment]) -> list[str]:
    return ["init" if f.data[4:8] == b"ftyp" else "key" if f.keyframe else "frag" for f in fragments]


class SyncSampleTests(SynchronousTestCase):
    def test_reads_the_first_video_sample_flags(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(3)
        _, peer = setup.player("p1")
        fragments = [f.data for f in peer.sent[1:]]
        self.assertTrue(starts_with_sync_sample(fragments[0]))
        self.assertFalse(starts_with_sync_sample(fragments[1]))
        self.assertIsNone(starts_with_sync_sample(fragments[0], track_id=9))
        self.assertIsNone(starts_with_sync_sample(b"\x00\x00\x00\x08moof"))
        self.assertIsNone(starts_with_sync_sample(b"junk"))


class FragmentSourceTests(SynchronousTestCase):
    def test_fragments_are_made_and_framed_once_for_every_player(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(2)  # the init segment is made with the first fragment
        players = [setup.player(f"p{i}") for i in range(3)]
        flushes: list[int] = []
        real = Fmp4Muxer.flush

        def counting(muxer, **kwargs):
            data = real(muxer, **kwargs)
            flushes.append(len(data))
            return data

        self.patch(Fmp4Muxer, "flush", counting)
        before = len(setup.prepared)
        setup.frames(10, start=2)
        self.assertEqual(len(flushes), 10, "one fragment per video frame, made once")
        self.assertEqual(len(setup.prepared) - before, 10, "each framed once")
        sent = [peer.sent for _, peer in players]
        for other in sent[1:]:
            self.assertEqual(len(other), len(sent[0]))
            for a, b in zip(sent[0], other, strict=True):
                self.assertIs(a, b, "the same Fragment object for every player")
        self.assertEqual(list(setup.sources.sources), ["live/cam"], "one source for the stream")

    def test_a_late_joiner_gets_the_init_and_the_gop_at_once(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(40)  # keyframes at 0 and 30: the cache's GOP starts at frame 30
        _, first = setup.player("p1")
        self.assertEqual(kinds(first.sent)[:2], ["init", "key"])
        self.assertEqual(len(first.sent), 1 + 9, "init, then frames 30..38 (39 waits for its duration)")
        setup.frames(5, start=40)
        _, late = setup.player("p2")
        self.assertEqual(kinds(late.sent)[:2], ["init", "key"])
        self.assertIs(late.sent[0], first.sent[0], "one init segment")
        self.assertEqual(late.sent[1:], first.sent[1:], "the same GOP fragments")
        setup.frames(1, start=45)
        self.assertIs(late.sent[-1], first.sent[-1])

    def test_a_joiner_before_publish_waits_for_the_first_keyframe(self) -> None:
        setup = Setup(publish=False)
        _, peer = setup.player("p1")
        self.assertEqual(peer.sent, [])
        self.assertIsNone(setup.sources.sources["live/cam"].muxer, "nothing to mux yet")
        setup.publish()
        setup.headers()
        setup.frames(3)
        self.assertEqual(kinds(peer.sent), ["init", "key", "frag"])

    def test_a_congested_player_drops_to_the_next_keyframe_fragment(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(1)
        slow_player, slow = setup.player("slow")
        _, fast = setup.player("fast")
        setup.frames(5, keyframe_every=10, start=1)
        slow_player.in_burst = False
        slow.congested = True
        setup.frames(10, keyframe_every=10, start=6)  # keyframe at 10: its fragment comes after frame 11
        sent_while_congested = len(slow.sent)
        self.assertGreater(slow_player.dropped_frames, 0)
        slow.congested = False
        setup.frames(10, keyframe_every=10, start=16)
        resumed = slow.sent[sent_while_congested:]
        self.assertTrue(resumed[0].keyframe, "it resumes at a keyframe fragment")
        self.assertEqual(len(fast.sent), 1 + 25, "the other player got every fragment")
        self.assertIs(resumed[-1], fast.sent[-1])

    def test_unpublish_closes_and_the_last_player_out_frees_the_source(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(3)
        player, peer = setup.player("p1")
        self.assertEqual(list(setup.sources.sources), ["live/cam"])
        setup.server.registry.get("live/cam").stop()
        self.assertEqual(peer.closed, "stream unpublished")
        stream = player.stream
        player.stop()
        self.assertEqual(setup.sources.sources, {})
        self.assertNotIn(player, stream.players)

    def test_a_new_configuration_starts_a_generation_with_a_new_init(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(3)
        player, peer = setup.player("p1")
        changed = bytearray(AVC_SEQUENCE_HEADER)
        changed[-1] ^= 0x01  # another PPS byte: a different configuration
        setup.publisher.send_media(VIDEO, setup.sid, 100, bytes(changed))
        setup.server.flush()
        source = setup.sources.sources["live/cam"]
        self.assertEqual(source.generation, 2)
        setup.frames(3, start=4, keyframe_every=1)
        after = kinds(peer.sent)
        self.assertEqual(after.count("init"), 2)
        second = after.index("init", 1)
        self.assertEqual(after[second + 1], "key", "the new init, then a keyframe fragment")
        self.assertIsNot(peer.sent[second], peer.sent[0])
        self.assertEqual(player.generation, 2)

    def test_an_audio_only_stream_is_cut_every_100_ms(self) -> None:
        setup = Setup()
        setup.publisher.send_media(AUDIO, setup.sid, 0, AAC_SEQUENCE_HEADER)
        setup.server.flush()
        _, peer = setup.player("p1")
        for n in range(50):  # 21 ms a frame: about a second
            setup.publisher.send_media(AUDIO, setup.sid, n * 21, aac_frame(n))
        setup.server.flush()
        source = setup.sources.sources["live/cam"]
        self.assertEqual(kinds(peer.sent)[0], "init")
        self.assertTrue(all(f.keyframe for f in peer.sent))
        self.assertIn(len(peer.sent) - 1, range(8, 11))
        self.assertLess(source.muxer.pending(AUDIO_TRACK_ID)[0], 5, "at most 100 ms waits")

    def test_the_gop_is_bounded(self) -> None:
        setup = Setup()
        setup.headers()
        setup.frames(1)
        player, _ = setup.player("p1")
        source = setup.sources.sources["live/cam"]
        source._max_gop_bytes = 2000
        setup.frames(40, start=1)
        self.assertEqual(source.gop, [], "past the bound a joiner waits for the next keyframe")
        _, late = setup.player("p2")
        self.assertEqual(late.sent, [])
        setup.frames(22, start=41)  # keyframe at 60
        self.assertEqual(kinds(late.sent)[:2], ["init", "key"])
        self.assertLessEqual(source.gop_bytes, 2000)


class PathTests(SynchronousTestCase):
    def test_mp4_paths(self) -> None:
        self.assertEqual(parse_path("live", "cam.mp4", ".mp4"), ("live", "cam"))
        with self.assertRaises(HTTPError):
            parse_path("live", "cam.flv", ".mp4")
        with self.assertRaises(HTTPError):
            parse_path("live", ".mp4", ".mp4")
