"""Bad input against a live ``twistd -n rtmpd``: each on its own connection, while a stream plays.

Every test starts a server (handshake timeout 2 s), an ffmpeg publisher and
an ffmpeg player of that stream, then misbehaves on a raw TCP connection
built from ``rtmpd.core`` (handshake, chunk writer, AMF0). Each bad
connection must get a clear log line naming its conn_id and be closed by
the server; the player of the live stream must keep decoding throughout.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import Any

from rtmpd.core import amf0
from rtmpd.core.chunks import ChunkWriter
from rtmpd.core.commands import Command, encode_command
from rtmpd.core.messages import CONTROL_CSID, Message, MessageType
from rtmpd.testing import CommandFailed
from tests.test_relay_real import FPS, RealClientTestCase, SocketRTMPClient

#: Random bytes that are not a chunk stream: fmt 3 on a chunk stream that never had a header.
_GARBAGE = bytes([0xC5]) + random.Random(20240601).randbytes(4095)


class BadInputTestCase(RealClientTestCase):
    server_args = ("--handshake-timeout", "2", "--max-message-size", str(8 * 1024 * 1024))

    def setUp(self) -> None:
        super().setUp()
        self.publisher = self.publish("live", 60)
        self.wait_live("live")
        self.player = self.ffmpeg_player("live")
        self.player.wait_frames(FPS // 2)

    def assertStreamStillFlows(self) -> None:
        """The publisher is still connected and the player decodes another half second of video."""
        self.assertIsNone(self.publisher.poll(), "the publisher was disconnected")
        self.player.wait_frames(self.player.frames + FPS // 2, timeout=10)
        self.assertEqual(self.player.errors(), [])

    def raw(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def conn_id(self, sock_or_client: Any) -> str:
        """The server's conn_id for one of our connections, from its "Connection accepted" line."""
        if isinstance(sock_or_client, SocketRTMPClient):
            peer = sock_or_client.peer_addr
        else:
            peer = f"127.0.0.1:{sock_or_client.getsockname()[1]}"
        return self.server.wait_for_msg("Connection accepted", 10, peer_addr=peer)["conn_id"]

    def assertClosedByServer(self, sock: socket.socket, timeout: float = 10.0) -> None:
        """The server closes the connection (EOF or reset) within ``timeout``; what it sent is ignored."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            self.assertGreater(remaining, 0, "the server did not close the connection")
            sock.settimeout(remaining)
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except ConnectionResetError:
                return

    def protocol_error(self, conn_id: str, error: str) -> dict[str, Any]:
        event = self.server.wait_for_msg("Protocol error", 10, conn_id=conn_id)
        self.assertEqual(event["error"], error, event)
        self.assertEqual(event["level"], "warn")
        self.assertTrue(event["detail"], event)
        closed = self.server.wait_for_msg("Connection closed", 10, conn_id=conn_id)
        self.assertIn(error, closed["reason"])
        return event

    def after_handshake(self) -> SocketRTMPClient:
        client = self.socket_client()
        client.handshake()
        return client

    def connected(self) -> SocketRTMPClient:
        client = self.after_handshake()
        client.wait(client.protocol.connect("live"))
        return client

    def send_raw_message(self, client: SocketRTMPClient, csid: int, message: Message) -> None:
        client.sock.sendall(ChunkWriter().write(csid, message))


class HandshakeTests(BadInputTestCase):
    def test_http_request_instead_of_handshake(self) -> None:
        sock = self.raw()
        conn_id = self.conn_id(sock)
        sock.sendall(b"GET /live/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        event = self.protocol_error(conn_id, "HandshakeError")
        self.assertIn("HTTP", event["detail"])
        self.assertClosedByServer(sock)
        self.assertStreamStillFlows()

    def test_binary_garbage_instead_of_handshake(self) -> None:
        sock = self.raw()
        conn_id = self.conn_id(sock)
        sock.sendall(b"\x00" + _GARBAGE)
        self.protocol_error(conn_id, "HandshakeError")
        self.assertClosedByServer(sock)
        self.assertStreamStillFlows()

    def test_truncated_handshake_times_out(self) -> None:
        sock = self.raw()
        conn_id = self.conn_id(sock)
        sent_at = time.monotonic()
        sock.sendall(b"\x03" + bytes(700))  # C0 and half of C1, then silence
        event = self.server.wait_for_msg("Handshake timed out", 10, conn_id=conn_id)
        self.assertEqual(event["timeout"], 2)
        self.assertClosedByServer(sock)
        self.assertGreater(time.monotonic() - sent_at, 1.5)
        self.server.wait_for_msg("Connection closed", 10, conn_id=conn_id, reason="handshake timeout")
        self.assertStreamStillFlows()


class ChunkStreamTests(BadInputTestCase):
    def test_garbage_after_the_handshake(self) -> None:
        client = self.after_handshake()
        client.sock.sendall(_GARBAGE)
        self.protocol_error(self.conn_id(client), "ChunkStreamError")
        self.assertClosedByServer(client.sock)
        self.assertStreamStillFlows()

    def test_message_headers_claiming_16_mib(self) -> None:
        # The 24-bit length field's largest value: 16 MiB - 1 bytes, refused at the header for a
        # command (limit 256 KiB) and for video (limit 8 MiB here), before anything is buffered.
        for type_id in (MessageType.COMMAND_AMF0, MessageType.VIDEO):
            client = self.connected()
            header = bytes([0x03]) + bytes(3) + (0xFFFFFF).to_bytes(3, "big") + bytes([type_id]) + bytes(4)
            client.sock.sendall(header + bytes(100))
            event = self.protocol_error(self.conn_id(client), "MessageTooLarge")
            self.assertIn(str(0xFFFFFF), event["detail"])
            self.assertClosedByServer(client.sock)
        self.assertStreamStillFlows()

    def test_set_chunk_size_zero_and_two_to_the_31(self) -> None:
        for size in (0, 2**31):
            client = self.connected()
            message = Message(MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size))
            self.send_raw_message(client, CONTROL_CSID, message)
            self.protocol_error(self.conn_id(client), "InvalidChunkSize")
            self.assertClosedByServer(client.sock)
        self.assertStreamStillFlows()


class CommandTests(BadInputTestCase):
    def test_malformed_amf_in_connect(self) -> None:
        client = self.after_handshake()
        # "connect", 1.0, then an object whose property value has marker 0x42 (no such AMF0 type).
        payload = amf0.encode_many("connect", 1.0) + b"\x03\x00\x03app\x42\x00\x00\x09"
        self.send_raw_message(client, 3, Message(MessageType.COMMAND_AMF0, 0, 0, payload))
        self.protocol_error(self.conn_id(client), "AMFDecodeError")
        self.assertClosedByServer(client.sock)
        self.assertStreamStillFlows()

    def test_publish_before_connect(self) -> None:
        client = self.after_handshake()
        answer = client.protocol.wait_for(lambda item: isinstance(item, Command) and item.name == "_error")
        self.send_raw_message(client, 3, encode_command("publish", 0, None, "live", "live", stream_id=1))
        error = client.wait(answer)
        self.assertEqual(error.args[0]["code"], "NetConnection.Call.Failed")
        self.protocol_error(self.conn_id(client), "CommandBeforeConnect")
        self.assertClosedByServer(client.sock)
        # Nothing was taken from the live publisher.
        self.assertStreamStillFlows()

    def test_play_of_a_name_with_dotdot(self) -> None:
        client = self.connected()
        stream_id = client.wait(client.protocol.create_stream())
        refused = client.protocol.play(stream_id, "../live")
        failure = self.assertRaises(CommandFailed, client.wait, refused)
        self.assertEqual(failure.info["level"], "error")
        self.assertTrue(failure.info["code"].startswith("NetStream.Play."), failure.info)
        conn_id = self.conn_id(client)
        event = self.server.wait_for_msg("Command refused", 10, conn_id=conn_id, command="play")
        self.assertIn("..", event["reason"])
        self.assertClosedByServer(client.sock)
        self.server.wait_for_msg("Connection closed", 10, conn_id=conn_id)
        self.assertEqual([e for e in self.server.messages("Subscriber added") if e["conn_id"] == conn_id], [])
        self.assertStreamStillFlows()


class ConnectionChurnTests(BadInputTestCase):
    def test_200_connections_opened_and_dropped(self) -> None:
        peers = []
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            peers.append(f"127.0.0.1:{sock.getsockname()[1]}")
            if i % 2:
                sock.sendall(b"\x03" + bytes(i))  # the start of a handshake
            if i % 4 == 3:
                # A reset instead of a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for peer in peers:
            conn_id = self.server.wait_for_msg("Connection accepted", 10, peer_addr=peer)["conn_id"]
            self.server.wait_for_msg("Connection closed", 10, conn_id=conn_id)
        self.assertStreamStillFlows()
        # A new player is served as usual.
        client = self.socket_client()
        client.start_playing("live")
        client.pump_until(lambda: any(m.type_id == MessageType.VIDEO for m in client.protocol.media()), 10)
        self.assertEqual(self.server.errors(), [])
