"""The server's and the relay's defences against hostile clients (issue 11), on in-memory transports.

Connection limits, deadlines on a monotonic clock, the stream request
bound, the GOP cache's bounds, the late-join burst, the typed boundary and
listener isolation. The same attacks over real sockets against twistd are
in tests/test_hostile_server_real.py.
"""

from __future__ import annotations

import math
import resource

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.classify import MediaInfo
from rtmpd.core.handshake import ClientHandshake
from rtmpd.core.messages import Message, MessageType
from rtmpd.relay.latejoin import MAX_CARRIED, MESSAGE_OVERHEAD, LateJoinCache
from rtmpd.relay.listener import StreamListener
from rtmpd.server.admission import REFUSAL_LOG_WINDOW, Admission
from rtmpd.server.clock import MonotonicClock
from rtmpd.server.deadlines import CLOSE_GRACE
from rtmpd.server.options import DESCRIPTOR_RESERVE, default_max_connections
from rtmpd.server.service import RTMPService
from rtmpd.tap import Options
from rtmpd.testing import CommandFailed, MemoryServer, RTMPTestClient, result_of
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V = MessageType.AUDIO, MessageType.VIDEO
KEYFRAME = MediaInfo(MessageType.VIDEO, is_keyframe=True)
FRAME = MediaInfo(MessageType.VIDEO)


def formats(events: list[dict]) -> list[str]:
    return [e.get("log_format") for e in events]


def address(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class AdmissionTests(SynchronousTestCase):
    def test_total_and_per_address_limits_and_release(self) -> None:
        admission = Admission(max_connections=3, max_per_address=2)
        with capturedLogs() as events:
            self.assertTrue(admission.admit("10.0.0.1", 0))
            self.assertTrue(admission.admit("10.0.0.1", 0))
            self.assertFalse(admission.admit("10.0.0.1", 0))
            self.assertTrue(admission.admit("10.0.0.2", 0))
            self.assertFalse(admission.admit("10.0.0.3", 0))
        self.assertEqual((admission.total, admission.by_address), (3, {"10.0.0.1": 2, "10.0.0.2": 1}))
        refused = [e for e in events if e["log_format"] == "Connection refused: {limit} reached"]
        self.assertEqual([e["limit"] for e in refused], ["max-connections-per-address", "max-connections"])
        admission.release("10.0.0.1")
        admission.release("10.0.0.2")
        self.assertEqual((admission.total, admission.by_address), (1, {"10.0.0.1": 1}))
        self.assertTrue(admission.admit("10.0.0.3", 0))

    def test_no_limit_and_unix_sockets(self) -> None:
        admission = Admission(max_connections=0, max_per_address=1)
        for _ in range(1000):
            self.assertTrue(admission.admit("", 0))
        self.assertEqual(admission.by_address, {})

    def test_a_flood_of_refusals_is_one_line_then_one_summary(self) -> None:
        admission = Admission(max_connections=0, max_per_address=1)
        admission.admit("10.0.0.9", 0)
        with capturedLogs() as events:
            for i in range(10_000):
                self.assertFalse(admission.admit("10.0.0.9", i / 1000))
            admission.flush_refusals(5)
            self.assertEqual(len(events), 1)
            admission.flush_refusals(REFUSAL_LOG_WINDOW + 1)
        self.assertEqual(len(events), 2)
        self.assertEqual(events[1]["log_format"], "Connections refused: {limit} reached")
        self.assertEqual(events[1]["refused"], 9_999)

    def test_refusals_of_many_addresses_are_tracked_in_bounded_memory(self) -> None:
        admission = Admission(max_connections=1, max_per_address=0)
        admission.admit("10.0.0.1", 0)
        with capturedLogs() as events:
            for i in range(5000):
                admission.admit(f"10.1.{i // 256}.{i % 256}", 0)
        self.assertLessEqual(len(admission._refusals), 1025)
        self.assertLessEqual(len(events), 1025)


class FactoryLimitTests(SynchronousTestCase):
    def test_build_protocol_refuses_past_the_limits_and_counts_lost_connections_out(self) -> None:
        server = MemoryServer(ServerConfig(max_connections=10, max_connections_per_address=2))
        factory = server.factory
        first = factory.buildProtocol(address("10.0.0.1"))
        second = factory.buildProtocol(address("10.0.0.1"))
        self.assertIsNotNone(first)
        self.assertIsNotNone(second)
        self.assertIsNone(factory.buildProtocol(address("10.0.0.1")))
        self.assertIsNotNone(factory.buildProtocol(address("10.0.0.2")))
        first.makeConnection(StringTransport())
        first.connectionLost()
        self.assertIsNotNone(factory.buildProtocol(address("10.0.0.1")))
        self.assertEqual(factory.admission.total, 3)


class DeadlineTests(SynchronousTestCase):
    config = ServerConfig(connect_timeout=5, idle_timeout=8)

    def handshaken(self, server: MemoryServer):
        protocol = server.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        hs = ClientHandshake()
        protocol.dataReceived(hs.initial())
        protocol.dataReceived(hs.receive(transport.value()))
        return protocol, transport

    def test_connect_deadline(self) -> None:
        server = MemoryServer(self.config)
        protocol, transport = self.handshaken(server)
        server.clock.advance(4)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            server.clock.advance(1.5)
        self.assertTrue(protocol.aborted)
        timed_out = [e for e in events if e["log_format"] == "Connect timed out"]
        self.assertEqual(len(timed_out), 1)
        self.assertEqual((timed_out[0]["conn_id"], timed_out[0]["timeout"]), (protocol.conn_id, 5))

    def test_idle_deadline_from_connect_and_after_the_last_play(self) -> None:
        server = MemoryServer(self.config)
        idle, _ = server.session()
        player, sid = server.player()
        server.advance(7)
        self.assertTrue(idle.connected_transport)
        with capturedLogs() as events:
            server.advance(1.5)
        self.assertFalse(idle.connected_transport)
        self.assertEqual(formats(events).count("Idle connection timed out"), 1)
        # The player waits for a publisher: it plays, it is not idle.
        server.advance(60)
        self.assertTrue(player.connected_transport)
        player.notify("closeStream", stream_id=sid)
        server.flush()
        server.advance(7.5)
        self.assertTrue(player.connected_transport)
        server.advance(1.5)
        self.assertFalse(player.connected_transport)

    def test_publisher_is_not_idle(self) -> None:
        server = MemoryServer(self.config)
        pub, sid = server.publisher()
        for i in range(30):
            pub.send_media(A, sid, i * 1000, aac_frame(i))
            server.advance(1)
        self.assertTrue(pub.connected_transport)

    def test_closing_connection_that_does_not_read_is_aborted_after_the_grace(self) -> None:
        server = MemoryServer(self.config)
        protocol, transport = self.handshaken(server)
        protocol.close("test")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(protocol.aborted)
        server.clock.advance(CLOSE_GRACE + 1)
        self.assertTrue(protocol.aborted)


class MonotonicClockTests(SynchronousTestCase):
    """The sweep judges on a monotonic clock: wall-clock steps neither fire nor suspend timeouts."""

    def setUp(self) -> None:
        self.wall = Clock()
        self.wall.advance(1_700_000_000)
        self.mono = 1000.0
        self.clock = MonotonicClock(self.wall, lambda: self.mono)
        config = ServerConfig(idle_timeout=8, publisher_timeout=10)
        self.service = RTMPService(config, self.clock)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.pumps: list[iosim.IOPump] = []

    def tick(self, seconds: float, wall_step: float = 0.0) -> None:
        """``seconds`` pass (monotonic and wall), and the wall clock steps by ``wall_step`` too."""
        self.mono += seconds
        self.wall.advance(seconds + wall_step)
        self.flush()

    def flush(self) -> None:
        while [pump.flush() for pump in self.pumps].count(True):
            pass

    def client(self) -> RTMPTestClient:
        client = RTMPTestClient()
        server_protocol = self.service.factory.buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(lambda: server_protocol, lambda: client, clock=self.wall)
        self.pumps.append(pump)
        self.flush()
        client.connect("live")
        self.flush()
        return client

    def test_reading_is_wall_time_moving_monotonically(self) -> None:
        self.assertAlmostEqual(self.clock.seconds(), 1_700_000_000)
        self.mono += 5
        self.wall.advance(-100)
        self.assertAlmostEqual(self.clock.seconds(), 1_700_000_005)

    def test_a_step_forward_fires_no_timeout(self) -> None:
        idle = self.client()
        pub = self.client()
        sid = result_of_flushed(self, pub.create_stream())
        result_of_flushed(self, pub.publish(sid, "cam"))
        pub.send_media(A, sid, 0, aac_frame(0))
        self.tick(1, wall_step=3600)
        self.tick(1)
        self.assertTrue(idle.connected_transport)
        self.assertTrue(pub.connected_transport)
        # Real time still counts: the idle one goes after its 8 s, the publisher after its 10 s.
        self.tick(6.5)
        self.assertFalse(idle.connected_transport)
        self.assertTrue(pub.connected_transport)
        self.tick(3)
        self.assertFalse(pub.connected_transport)

    def test_a_step_back_does_not_suspend_timeouts(self) -> None:
        idle = self.client()
        other = self.client()
        self.tick(1, wall_step=-3600)
        # The reactor's timers wait for the wall clock to catch up; input still runs the sweep.
        for _ in range(9):
            self.tick(1)
        self.assertTrue(idle.connected_transport)
        other.notify("_checkbw")
        self.flush()
        self.assertFalse(idle.connected_transport)
        self.assertFalse(other.connected_transport)


def result_of_flushed(test: MonotonicClockTests, d):
    test.flush()
    return result_of(d)


class StreamRequestTests(SynchronousTestCase):
    def test_create_stream_past_the_bound_is_refused_and_closes(self) -> None:
        server = MemoryServer(ServerConfig(max_stream_requests=5))
        client, _ = server.session()  # one createStream
        for _ in range(4):
            stream_id = server.settle(client.create_stream())
            client.notify("deleteStream", float(stream_id))
        with capturedLogs() as events:
            d = client.create_stream()
            server.flush()
        failure = self.failureResultOf(d, CommandFailed)
        self.assertEqual(failure.value.info["code"], "NetConnection.Call.Failed")
        self.assertFalse(client.connected_transport)
        refused = [e for e in events if e["log_format"] == "Command refused"]
        self.assertEqual(len(refused), 1)

    def test_play_counts(self) -> None:
        server = MemoryServer(ServerConfig(max_stream_requests=4))
        client, sid = server.session()
        for _ in range(3):
            server.settle(client.play(sid, "x"))
        d = client.play(sid, "x")
        server.flush()
        self.assertEqual(self.failureResultOf(d, CommandFailed).value.info["code"], "NetStream.Play.Failed")
        self.assertFalse(client.connected_transport)


def video(ts: int, size: int = 10) -> Message:
    return Message(V, ts, 1, bytes(size))


class GopCacheBoundTests(SynchronousTestCase):
    def cache(self, **bounds) -> LateJoinCache:
        settings = {"gop_enabled": True, "max_bytes": 1024 * 1024, "max_duration_ms": 30_000}
        settings.update(bounds)
        return LateJoinCache(**settings)

    def test_equal_timestamp_keyframes_carry_a_bounded_tail(self) -> None:
        cache = self.cache()
        for _ in range(10_000):
            cache.add_frame(video(0), KEYFRAME)
            self.assertLessEqual(len(cache.gop), MAX_CARRIED + 1)
        self.assertEqual(len(cache.gop), MAX_CARRIED + 1)
        self.assertEqual(cache.gop_bytes, (MAX_CARRIED + 1) * (10 + MESSAGE_OVERHEAD))

    def test_a_keyframe_over_the_byte_bound_is_not_cached(self) -> None:
        cache = self.cache(max_bytes=1000)
        cache.add_frame(video(0, 2000), KEYFRAME)
        self.assertEqual(cache.gop, [])
        cache.add_frame(video(33), FRAME)
        self.assertEqual(cache.gop, [])

    def test_empty_frames_count_their_overhead(self) -> None:
        cache = self.cache(max_bytes=100 * MESSAGE_OVERHEAD)
        cache.add_frame(video(0, 0), KEYFRAME)
        for i in range(98):
            cache.add_frame(video(1 + i, 0), FRAME)
        self.assertEqual(len(cache.gop), 99)
        self.assertEqual(cache.gop_bytes, 99 * MESSAGE_OVERHEAD)
        cache.add_frame(video(200, 0), FRAME)
        cache.add_frame(video(201, 0), FRAME)
        self.assertEqual(cache.gop, [])

    def test_message_cap(self) -> None:
        cache = self.cache(max_messages=50)
        cache.add_frame(video(0), KEYFRAME)
        for i in range(49):
            cache.add_frame(video(i + 1), FRAME)
        self.assertEqual(len(cache.gop), 50)
        cache.add_frame(video(100), FRAME)
        self.assertEqual(cache.gop, [])

    def test_late_joiner_never_gets_more_than_the_bound(self) -> None:
        limit = 256 * 1024
        server = MemoryServer(ServerConfig(gop_cache_max_bytes=limit))
        pub, sid = server.publisher()
        pub.send_media(V, sid, 0, AVC_SEQUENCE_HEADER)
        for i in range(2000):
            pub.send_media(V, sid, 0, avc_keyframe(i, size=1000))
        for _ in range(2000):
            pub.send_media(V, sid, 1, b"\x27\x01\x00\x00\x00")
        server.flush()
        player, psid = server.player()
        sent = sum(len(m.payload) for m in player.media(psid))
        self.assertLess(sent, limit)


class LateJoinBurstTests(SynchronousTestCase):
    """The burst fills the socket by design: that is not slowness."""

    def setUp(self) -> None:
        self.server = MemoryServer()
        self.pub, self.sid = self.server.publisher()
        self.pub.send_media(A, self.sid, 0, AAC_SEQUENCE_HEADER)
        self.pub.send_media(V, self.sid, 0, AVC_SEQUENCE_HEADER)
        self.pub.send_media(V, self.sid, 0, avc_keyframe(0, size=5000))
        for i in range(1, 20):
            self.pub.send_media(V, self.sid, i * 33, avc_interframe(i))
        self.server.flush()

    def frames(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            self.pub.send_media(V, self.sid, i * 33, avc_interframe(i))
        self.server.flush()

    def test_frames_after_the_burst_reach_a_player_whose_socket_the_burst_filled(self) -> None:
        player, psid = self.server.player()
        conn = player.server_protocol
        received = len(player.media(psid))
        conn.pauseProducing()  # what the transport does when the burst fills the socket
        self.frames(20, 10)
        self.assertEqual(len(player.media(psid)), received + 10)
        conn.resumeProducing()
        self.frames(30, 1)
        # After the socket drained once, a full socket is slowness again.
        conn.pauseProducing()
        self.frames(31, 5)
        self.assertEqual(len(player.media(psid)), received + 11)

    def test_beyond_the_queue_bound_during_the_burst_is_slowness(self) -> None:
        player, psid = self.server.player()
        conn = player.server_protocol
        conn.pauseProducing()
        conn.bytes_since_pause = conn.config.max_queue_bytes
        received = len(player.media(psid))
        self.frames(20, 5)
        self.assertEqual(len(player.media(psid)), received)

    def test_a_second_play_with_output_unsent_gets_no_second_burst(self) -> None:
        player, psid = self.server.player()
        conn = player.server_protocol
        before = len(player.media(psid))
        self.patch(type(conn), "buffered_bytes", property(lambda self: self.config.max_queue_bytes))
        self.server.settle(player.play(psid, "test"))
        # The configuration again, no GOP.
        again = player.media(psid)[before:]
        self.assertEqual([m.payload for m in again], [AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER])


class TypedBoundaryTests(SynchronousTestCase):
    def test_commands_with_bad_values_get_typed_refusals(self) -> None:
        server = MemoryServer()
        client, _ = server.session()
        with capturedLogs() as events:
            for name, value in (("FCUnpublish", ""), ("deleteStream", math.nan), ("deleteStream", -math.inf)):
                d = client.call(name, None, value)
                server.flush()
                self.assertEqual(
                    self.failureResultOf(d, CommandFailed).value.info["code"], "NetConnection.Call.Failed"
                )
        self.assertTrue(client.connected_transport)
        self.assertNotIn("Command failed unexpectedly", formats(events))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_metadata_with_keys_of_mixed_types_and_non_finite_sizes(self) -> None:
        server = MemoryServer()
        pub, sid = server.publisher()
        stream = server.registry.get("live/test")
        values = {"width": math.nan, "height": math.inf, 1: "one", "x" * 10_000: 2}
        with capturedLogs() as events:
            stream.set_metadata(Message(MessageType.DATA_AMF0, 0, sid, b""), values)
            pub.server_protocol._metadata(Message(MessageType.DATA_AMF0, 0, sid, b""), values)
        self.assertEqual((stream.stats.width, stream.stats.height), (None, None))
        received = next(e for e in events if e["log_format"] == "Metadata received")
        self.assertLessEqual(max(map(len, received["fields"])), 64)
        self.assertIn("<int>", received["fields"])
        self.assertTrue(pub.connected_transport)

    def test_an_unexpected_exception_is_logged_once_and_closes_cleanly(self) -> None:
        server = MemoryServer()
        pub, sid = server.publisher()
        conn = pub.server_protocol

        def broken(message):
            raise ZeroDivisionError("bug")

        self.patch(conn, "_media", broken)
        with capturedLogs() as events:
            pub.send_media(V, sid, 0, avc_keyframe(0))
            pub.send_media(V, sid, 33, avc_interframe(1))
            server.flush()
        failures = [e for e in events if e["log_format"] == "Unexpected error while handling client input"]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["conn_id"], conn.conn_id)
        self.assertFalse(pub.connected_transport)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class RaisingListener(StreamListener):
    def __init__(self) -> None:
        self.messages = 0

    def stream_message(self, stream, message, info) -> None:
        self.messages += 1
        raise RuntimeError("recorder broke")


class ListenerIsolationTests(SynchronousTestCase):
    def test_the_message_a_listener_fails_on_still_reaches_every_player(self) -> None:
        server = MemoryServer()
        listener = RaisingListener()
        server.registry.listeners.append(listener)
        pub, sid = server.publisher()
        players = [server.player() for _ in range(3)]
        with capturedLogs() as events:
            pub.send_media(V, sid, 0, avc_keyframe(0))
            pub.send_media(V, sid, 33, avc_interframe(1))
            server.flush()
        self.assertEqual(listener.messages, 1)
        for player, psid in players:
            self.assertEqual([m.timestamp for m in player.media(psid)], [0, 33])
        failed = [e for e in events if e["log_format"] == "Stream listener failed; detached from this stream"]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["log_level"].name, "error")
        self.assertTrue(pub.connected_transport)
        self.flushLoggedErrors(RuntimeError)


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = Options()
        options.parseOptions([])
        config = options.config()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.assertEqual(config.max_connections, default_max_connections())
        if soft != resource.RLIM_INFINITY:
            self.assertEqual(config.max_connections, soft - min(DESCRIPTOR_RESERVE, soft // 4))
        self.assertEqual(config.max_connections_per_address, 0)
        self.assertEqual((config.connect_timeout, config.idle_timeout), (90.0, 120.0))
        self.assertEqual(config.max_stream_requests, 128)

    def test_values(self) -> None:
        options = Options()
        options.parseOptions(
            [
                "--max-connections", "0",
                "--max-connections-per-address", "8",
                "--connect-timeout", "3",
                "--idle-timeout", "4.5",
                "--max-stream-requests", "9",
                "--gop-cache-messages", "500",
            ]
        )  # fmt: skip
        config = options.config()
        self.assertEqual(
            (
                config.max_connections,
                config.max_connections_per_address,
                config.connect_timeout,
                config.idle_timeout,
                config.max_stream_requests,
                config.gop_cache_max_messages,
            ),
            (0, 8, 3.0, 4.5, 9, 500),
        )

    def test_bad_values_are_refused(self) -> None:
        for args in (["--connect-timeout", "0"], ["--idle-timeout", "inf"], ["--max-connections", "-1"]):
            with self.assertRaises(SystemExit):
                Options().parseOptions(args)
