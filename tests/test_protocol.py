"""RTMPProtocol over in-memory transports: connect sequence, acknowledgements, timeouts, protocol errors."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.config import ServerConfig
from rtmpd.core.commands import encode_command
from rtmpd.core.handshake import ClientHandshake
from rtmpd.core.limits import Limits
from rtmpd.core.messages import (
    Acknowledgement,
    Message,
    MessageType,
    PeerBandwidthLimit,
    SetPeerBandwidth,
    UserControl,
    UserControlEvent,
    WindowAckSize,
    user_control,
    window_ack_size,
)
from rtmpd.testing import MemoryServer, RTMPTestClient, result_of
from tests.media_samples import avc_keyframe


class ConnectSequenceTests(SynchronousTestCase):
    def test_connect_sends_window_ack_peer_bandwidth_and_chunk_size_before_result(self) -> None:
        server = MemoryServer(ServerConfig(window_ack_size=2_500_000, chunk_size=60_000))
        client, _ = server.connect_client()
        server.flush()
        d = client.connect("live")
        server.flush()
        result_of(d)
        self.assertIn(WindowAckSize(2_500_000), client.controls)
        self.assertIn(SetPeerBandwidth(2_500_000, PeerBandwidthLimit.DYNAMIC), client.controls)
        self.assertEqual(client.peer_chunk_size(), 60_000)
        kinds = [m.type_id for m in client.messages]
        self.assertLess(kinds.index(MessageType.SET_CHUNK_SIZE), kinds.index(MessageType.COMMAND_AMF0))

    def test_digest_handshake_client_is_accepted(self) -> None:
        server = MemoryServer()
        client, _ = server.connect_client(RTMPTestClient(digest=True))
        server.flush()
        self.assertTrue(client.handshake.server_digest_valid)
        d = client.connect("live")
        server.flush()
        self.assertEqual(result_of(d).args[0]["code"], "NetConnection.Connect.Success")

    def test_acknowledgements_follow_the_peer_window(self) -> None:
        server = MemoryServer()
        client, _ = server.connect_client()
        server.flush()
        result = client.connect("live")
        server.flush()
        result_of(result)
        client.send(2, window_ack_size(10_000))
        d = client.create_stream()
        server.flush()
        sid = result_of(d)
        d = client.publish(sid, "ack")
        server.flush()
        result_of(d)
        for i in range(10):
            client.send_media(MessageType.VIDEO, sid, i * 33, avc_keyframe(i, size=3000))
            server.flush()
        acks = [c for c in client.controls if isinstance(c, Acknowledgement)]
        self.assertGreaterEqual(len(acks), 2)
        self.assertEqual(acks, sorted(acks, key=lambda a: a.sequence_number))
        self.assertLessEqual(acks[-1].sequence_number, client.server_protocol.bytes_in)

    def test_client_chunk_size_change_is_honoured(self) -> None:
        server = MemoryServer()
        client, _ = server.connect_client(RTMPTestClient(chunk_size=50))
        server.flush()
        d = client.connect("live")
        server.flush()
        self.assertEqual(result_of(d).args[0]["code"], "NetConnection.Connect.Success")
        self.assertEqual(client.server_protocol.session.peer_chunk_size, 50)


class FailureTests(SynchronousTestCase):
    def raw_connection(self, config: ServerConfig | None = None):
        server = MemoryServer(config)
        protocol = server.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return server, protocol, transport

    def handshaken(self, config: ServerConfig | None = None):
        server, protocol, transport = self.raw_connection(config)
        hs = ClientHandshake()
        protocol.dataReceived(hs.initial())
        c2 = hs.receive(transport.value())
        protocol.dataReceived(c2)
        transport.clear()
        return server, protocol, transport

    def test_handshake_timeout_aborts_and_is_cleared_after_handshake(self) -> None:
        server, protocol, transport = self.raw_connection(ServerConfig(limits=Limits(handshake_timeout=2)))
        with capturedLogs() as events:
            server.clock.advance(2.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn("Handshake timed out", [e["log_format"] for e in events])
        server, protocol, transport = self.handshaken(ServerConfig(limits=Limits(handshake_timeout=2)))
        server.clock.advance(60)
        self.assertFalse(transport.disconnecting)

    def test_garbage_instead_of_handshake_is_a_typed_error(self) -> None:
        server, protocol, transport = self.raw_connection()
        with capturedLogs() as events:
            protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        errors = [e for e in events if e["log_format"] == "Protocol error"]
        self.assertEqual(errors[0]["error"], "HandshakeError")
        self.assertEqual(errors[0]["conn_id"], protocol.conn_id)

    def test_illegal_chunk_sizes_close_the_connection(self) -> None:
        for size in (0, 2**31):
            server, protocol, transport = self.handshaken()
            payload = Message(MessageType.SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big"))
            from rtmpd.core.chunks import ChunkWriter

            with capturedLogs() as events:
                protocol.dataReceived(ChunkWriter().write(2, payload))
            self.assertTrue(transport.disconnecting, size)
            self.assertEqual(
                [e["error"] for e in events if e["log_format"] == "Protocol error"], ["InvalidChunkSize"]
            )

    def test_oversized_message_is_refused_at_the_header(self) -> None:
        server, protocol, transport = self.handshaken()
        # fmt 0 header on csid 4: timestamp 0, the largest length the wire allows (16 MiB - 1), type 9
        # (video), stream 1; no payload follows.
        header = bytes([0x04]) + (0).to_bytes(3, "big") + (0xFFFFFF).to_bytes(3, "big") + b"\x09"
        with capturedLogs() as events:
            protocol.dataReceived(header + (1).to_bytes(4, "little"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [e["error"] for e in events if e["log_format"] == "Protocol error"], ["MessageTooLarge"]
        )

    def test_malformed_amf_in_connect(self) -> None:
        server, protocol, transport = self.handshaken()
        from rtmpd.core.chunks import ChunkWriter

        bad = Message(
            MessageType.COMMAND_AMF0,
            0,
            0,
            b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03app\x02\x00\xff",
        )
        with capturedLogs() as events:
            protocol.dataReceived(ChunkWriter().write(3, bad))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [e["error"] for e in events if e["log_format"] == "Protocol error"], ["AMFDecodeError"]
        )

    def test_unexpected_exception_in_a_responder_is_logged_and_answered(self) -> None:
        server = MemoryServer()
        client, _ = server.connect_client()
        server.flush()
        d = client.connect("live")
        server.flush()
        result_of(d)

        def broken(command):
            raise ZeroDivisionError("boom")

        client.server_protocol.commands.rtmp_getStreamLength = broken
        with capturedLogs() as events:
            d = client.call("getStreamLength", None, "x")
            server.flush()
        failure = self.failureResultOf(d)
        self.assertEqual(failure.value.info["code"], "NetConnection.Call.Failed")
        logged = [e for e in events if e["log_format"] == "Command failed unexpectedly"]
        self.assertEqual(len(logged), 1)
        self.assertTrue(logged[0]["log_failure"].check(ZeroDivisionError))
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertTrue(client.connected_transport)

    def test_publish_before_connect_is_logged(self) -> None:
        server, protocol, transport = self.handshaken()
        from rtmpd.core.chunks import ChunkWriter

        with capturedLogs() as events:
            protocol.dataReceived(
                ChunkWriter().write(3, encode_command("publish", 0, None, "x", stream_id=1))
            )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [e["error"] for e in events if e["log_format"] == "Protocol error"], ["CommandBeforeConnect"]
        )


class BoundaryTests(SynchronousTestCase):
    """Every error while one input is handled ends in one place, typed or not."""

    def test_unexpected_exception_while_relaying_closes_cleanly_and_logs_once(self) -> None:
        server = MemoryServer()
        pub, sid = server.publisher()
        player, _ = server.player()
        protocol = pub.server_protocol

        def broken(message):
            raise ZeroDivisionError("relay bug")

        protocol.net_streams[sid].stream.relay = broken
        with capturedLogs() as events:
            pub.send_media(MessageType.VIDEO, sid, 0, avc_keyframe(1))
            pub.send_media(MessageType.VIDEO, sid, 33, avc_keyframe(2))
            server.flush()
        logged = [e for e in events if e["log_format"] == "Unexpected error while handling client input"]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["conn_id"], protocol.conn_id)
        self.assertTrue(logged[0]["log_failure"].check(ZeroDivisionError))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        closed = [e for e in events if e["log_format"] == "Connection closed"]
        self.assertEqual([e["reason"] for e in closed], ["internal error"])
        self.assertFalse(pub.connected_transport)
        self.assertTrue(player.connected_transport)

    def test_answers_made_before_a_protocol_error_are_written_first(self) -> None:
        # A ping, then a bad message, in one read: the pong, then _error where RTMP has one, then close.
        bad_messages = [
            (encode_command("createStream", 2), ["_error"]),  # before connect
            (window_ack_size(0), []),  # no status code: no _error
        ]
        for bad, answers in bad_messages:
            server = MemoryServer()
            protocol = server.factory.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            client = RTMPTestClient()
            client.makeConnection(StringTransport())
            protocol.dataReceived(client.transport.value())
            client.transport.clear()
            client.dataReceived(transport.value())
            transport.clear()
            data = client.transport.value()
            data += client.writer.write(2, user_control(UserControlEvent.PING_REQUEST, 42))
            data += client.writer.write(3 if answers else 2, bad)
            protocol.dataReceived(data)
            self.assertTrue(transport.disconnecting)
            client.dataReceived(transport.value())
            self.assertEqual(client.controls, [UserControl(UserControlEvent.PING_RESPONSE, 42)])
            self.assertEqual([c.name for c in client.commands], answers)
            kinds = [m.type_id for m in client.messages]
            self.assertEqual(kinds, [MessageType.USER_CONTROL] + [MessageType.COMMAND_AMF0] * len(answers))

    def test_handshake_and_connect_in_one_read_clear_the_timer(self) -> None:
        server = MemoryServer(ServerConfig(limits=Limits(handshake_timeout=2), chunk_size=5000))
        protocol = server.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        hs = ClientHandshake()
        protocol.dataReceived(hs.initial())
        c2 = hs.receive(transport.value())
        connect = encode_command("connect", 1, {"app": "live"})
        from rtmpd.core.chunks import ChunkWriter

        protocol.dataReceived(c2 + ChunkWriter().write(3, connect))
        self.assertTrue(protocol.session_open)
        self.assertEqual(protocol.app, "live")
        self.assertEqual(protocol.chunk_size, 5000)
        self.assertEqual(protocol.session.chunk_size, 5000)
        server.clock.advance(60)
        self.assertFalse(transport.disconnecting)
