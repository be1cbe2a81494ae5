"""Send windows (``--send-window-ms``): a player's media waits up to the window to go out in one write.

``OutboxWindowTests`` drive ``rtmpd.relay.fanout.Outbox`` alone with a fake
clock and fake peers; ``ServerWindowTests`` run a publisher and players
through the in-memory server (``rtmpd.testing.MemoryServer``) and look at what
reached the players' transports and when.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.classify import MediaInfo
from rtmpd.core.messages import Message, MessageType
from rtmpd.relay.fanout import Outbox
from rtmpd.server.options import DEFAULT_SEND_WINDOW_MS
from rtmpd.tap import Options
from rtmpd.testing import MemoryServer
from tests.media_samples import aac_frame, avc_interframe, avc_keyframe

WINDOW = 0.020
FRAME = MediaInfo(MessageType.VIDEO)
KEYFRAME = MediaInfo(MessageType.VIDEO, is_keyframe=True)
HEADER = MediaInfo(MessageType.VIDEO, config_slot="header")
MESSAGE = Message(MessageType.VIDEO, 0, 1, b"x")


class FakePeer:
    """Queues like ``RTMPProtocol``: marks itself on the first queued piece, writes all of it on flush."""

    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        self.outbox = outbox
        self.clock = clock
        self.pending: list[bytes] = []
        #: (time, pieces) per write.
        self.writes: list[tuple[float, list[bytes]]] = []

    def queue_media(self, data: bytes) -> None:
        if not self.pending:
            self.outbox.mark(self)
        self.pending.append(data)

    def flush_media(self) -> None:
        if self.pending:
            self.writes.append((round(self.clock.seconds(), 6), self.pending))
            self.pending = []


class OutboxWindowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.outbox = Outbox(self.clock, WINDOW)
        self.peers = [FakePeer(self.outbox, self.clock) for _ in range(3)]

    def input(self, data: bytes, info: MediaInfo = FRAME) -> None:
        """One publisher input carrying one message, given to every peer."""
        self.outbox.hold()
        self.outbox.stream_message(None, MESSAGE, info)
        for peer in self.peers:
            peer.queue_media(data)
        self.outbox.release()

    def test_messages_of_one_window_go_out_in_one_write_per_peer(self) -> None:
        self.input(b"a")
        self.clock.advance(0.005)
        self.input(b"b")
        self.clock.advance(0.010)
        self.input(b"c")
        self.assertEqual([p.writes for p in self.peers], [[], [], []])
        self.clock.advance(0.0049)
        self.assertEqual([p.writes for p in self.peers], [[], [], []])
        self.clock.advance(0.0001)
        for peer in self.peers:
            self.assertEqual(peer.writes, [(round(self.clock.seconds(), 6), [b"a", b"b", b"c"])])
        # One timer for the whole fan-out, one pass over the peers.
        self.assertEqual((self.outbox.flushes, self.outbox.window_flushes), (1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_next_message_opens_the_next_window(self) -> None:
        self.input(b"a")
        self.clock.advance(WINDOW)
        self.clock.advance(0.003)
        self.input(b"b")
        self.clock.advance(WINDOW - 0.001)
        self.assertEqual(len(self.peers[0].writes), 1)
        self.clock.advance(0.001)
        self.assertEqual(self.peers[0].writes, [(WINDOW, [b"a"]), (round(2 * WINDOW + 0.003, 6), [b"b"])])

    def test_a_keyframe_goes_out_at_the_end_of_its_input_with_what_waited(self) -> None:
        self.input(b"a")
        self.clock.advance(0.004)
        self.input(b"key", KEYFRAME)
        for peer in self.peers:
            self.assertEqual(peer.writes, [(0.004, [b"a", b"key"])])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The window starts afresh after it.
        self.input(b"c")
        self.assertEqual(len(self.peers[0].writes), 1)
        self.clock.advance(WINDOW)
        self.assertEqual(self.peers[0].writes[-1], (round(0.004 + WINDOW, 6), [b"c"]))

    def test_a_sequence_header_does_not_wait(self) -> None:
        self.input(b"config", HEADER)
        self.assertEqual(self.peers[0].writes, [(0.0, [b"config"])])

    def test_an_urgent_message_no_player_took_does_not_end_the_next_window(self) -> None:
        self.outbox.hold()
        self.outbox.stream_message(None, MESSAGE, KEYFRAME)
        self.outbox.release()
        self.input(b"a")
        self.assertEqual(self.peers[0].writes, [])
        self.clock.advance(WINDOW)
        self.assertEqual(self.peers[0].writes, [(WINDOW, [b"a"])])

    def test_media_queued_outside_an_input_waits_for_the_window_too(self) -> None:
        self.peers[0].queue_media(b"a")
        self.clock.advance(WINDOW / 2)
        self.assertEqual(self.peers[0].writes, [])
        # A keyframe outside an input ends the window on the next reactor turn.
        self.outbox.stream_message(None, MESSAGE, KEYFRAME)
        self.peers[0].queue_media(b"key")
        self.clock.advance(0)
        self.assertEqual(self.peers[0].writes, [(WINDOW / 2, [b"a", b"key"])])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_window_is_todays_behaviour(self) -> None:
        self.outbox.window = 0.0
        self.input(b"a")
        self.input(b"b")
        self.assertEqual(self.peers[0].writes, [(0.0, [b"a"]), (0.0, [b"b"])])
        self.peers[0].queue_media(b"c")
        self.assertEqual(len(self.peers[0].writes), 2)
        self.clock.advance(0)
        self.assertEqual(self.peers[0].writes[-1], (0.0, [b"c"]))


class ServerWindowTests(SynchronousTestCase):
    """The window in the server: players' transports receive the window's media in one write."""

    def setUp(self) -> None:
        self.server = MemoryServer(ServerConfig(send_window=WINDOW))
        self.pub, self.sid = self.server.publisher()

    def writes_to(self, player) -> list:
        """The writes the server makes from now on on ``player``'s connection (the in-memory transport's
        ``writeSequence`` is one ``write`` of the joined pieces)."""
        calls: list[bytes] = []
        transport = player.server_protocol.transport
        write = transport.write
        transport.write = lambda data: (calls.append(data), write(data))[1]
        return calls

    def test_frames_wait_for_the_window_and_go_out_together(self) -> None:
        player, psid = self.server.player()
        self.pub.send_media(MessageType.VIDEO, self.sid, 0, avc_keyframe(1, size=500))
        self.server.flush()
        self.assertEqual(len(player.media(psid)), 1)  # the keyframe did not wait
        calls = self.writes_to(player)
        self.pub.send_media(MessageType.AUDIO, self.sid, 10, aac_frame(1))
        self.server.flush()
        self.pub.send_media(MessageType.VIDEO, self.sid, 33, avc_interframe(2, size=400))
        self.server.flush()
        self.assertEqual((len(player.media(psid)), calls), (1, []))
        self.server.advance(WINDOW)
        self.assertEqual(len(calls), 1)
        media = player.media(psid)
        self.assertEqual([m.timestamp for m in media], [0, 10, 33])

    def test_a_late_joiner_gets_its_burst_at_once(self) -> None:
        self.pub.send_media(MessageType.VIDEO, self.sid, 0, avc_keyframe(1, size=500))
        self.pub.send_media(MessageType.VIDEO, self.sid, 33, avc_interframe(2, size=400))
        self.server.flush()
        player, psid = self.server.player()  # no clock advance: nothing may wait for the window
        self.assertEqual([m.timestamp for m in player.media(psid)], [0, 33])

    def test_options_set_the_window(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.config().send_window, DEFAULT_SEND_WINDOW_MS / 1000)
        self.assertEqual(ServerConfig().send_window, 0.0)  # built in code: no window unless asked
        options = Options()
        options.parseOptions(["--send-window-ms", "12.5"])
        self.assertEqual(options.config().send_window, 0.0125)
        for bad in ("-1", "1001", "x"):
            with self.assertRaises(SystemExit):
                Options().parseOptions(["--send-window-ms", bad])
