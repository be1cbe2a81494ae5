"""HTTP-FLV players in memory: FLV tags made once per message for all of them, from the same fan-out."""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.flv import FLVReader, encode_header, encode_tag
from rtmpd.core.messages import Message, MessageType
from rtmpd.http.flv.peer import socket_transport
from rtmpd.http.limits import ConnectionCap
from rtmpd.relay import stream as stream_module
from rtmpd.relay.fanout import FLV_TAGS, Outbox, serialise
from rtmpd.relay.player import Player
from rtmpd.testing import MemoryServer
from tests.media_samples import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER, avc_interframe, avc_keyframe


class FakeFLVPeer:
    """The relay's view of an HTTP-FLV player, recording what it is written."""

    chunk_size = FLV_TAGS
    congested = False
    over_queue_bound = False
    buffered_bytes = 0
    bytes_in = bytes_out = 0

    def __init__(self, conn_id: str, outbox: Outbox) -> None:
        self.conn_id, self.peer_addr, self.app = conn_id, "127.0.0.1:1", "live"
        self.outbox = outbox
        self.queued: list[bytes] = []
        self.written = bytearray(encode_header(True, True))

    def queue_media(self, data: bytes) -> None:
        self.queued.append(data)
        self.outbox.mark(self)

    def flush_media(self) -> None:
        self.written += b"".join(self.queued)
        self.queued = []

    def send_command(self, message) -> None:
        pass

    def send_control(self, message) -> None:
        pass


class FLVFanOutTests(SynchronousTestCase):
    def test_serialise_as_flv_tag(self) -> None:
        message = Message(MessageType.VIDEO, 123456, 1, b"\x17\x01abc")
        self.assertEqual(serialise(message, 5, FLV_TAGS), encode_tag(9, 123456, b"\x17\x01abc"))

    def test_http_players_share_one_tag_per_message_and_get_a_late_join(self) -> None:
        server = MemoryServer()
        publisher, sid = server.publisher("cam")
        publisher.send_media(MessageType.VIDEO, sid, 0, AVC_SEQUENCE_HEADER)
        publisher.send_media(MessageType.AUDIO, sid, 0, AAC_SEQUENCE_HEADER)
        publisher.send_media(MessageType.VIDEO, sid, 0, avc_keyframe())
        server.flush()
        stream = server.registry.get("live/cam")
        peers = [FakeFLVPeer(f"h{i}", server.factory.outbox) for i in range(3)]
        for peer in peers:
            Player(peer, 1, stream, "cam").start(False)
        made: list[int] = []
        real = stream_module.serialise

        def counting(message, stream_id, chunk_size):
            made.append(chunk_size)
            return real(message, stream_id, chunk_size)

        self.patch(stream_module, "serialise", counting)
        for n in range(1, 4):
            publisher.send_media(MessageType.VIDEO, sid, 33 * n, avc_interframe(n))
        server.flush()
        self.assertEqual(made, [FLV_TAGS] * 3, "one FLV tag per message for all three players")
        for peer in peers:
            tags = FLVReader().feed(bytes(peer.written))
            self.assertEqual(
                [t.payload[:2] for t in tags if t.tag_type == 9],
                [b"\x17\x00", b"\x17\x01", b"\x27\x01", b"\x27\x01", b"\x27\x01"],
            )
            self.assertEqual([t.timestamp for t in tags if t.tag_type == 9][-3:], [33, 66, 99])


class SocketTransportTests(SynchronousTestCase):
    """HTTP-FLV writes reach ``rtmpd.fastwrite`` through the connection cap's forwarding wrapper."""

    def test_forwarding_wrappers_are_looked_through(self) -> None:
        inner = StringTransport()
        outer = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        outer.transport = inner
        twice = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        twice.transport = outer
        self.assertIs(socket_transport(twice), inner)
        self.assertIs(socket_transport(inner), inner)
        self.assertIsNone(socket_transport(None))

    def test_a_wrapper_that_changes_bytes_is_kept(self) -> None:
        tls = TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)
        tls.transport = StringTransport()
        self.assertIs(socket_transport(tls), tls)

    def test_the_http_listeners_cap_is_a_forwarding_wrapper(self) -> None:
        self.assertTrue(issubclass(ConnectionCap, WrappingFactory))
        self.assertIs(ConnectionCap.protocol.write, ProtocolWrapper.write)
        self.assertIs(ConnectionCap.protocol.writeSequence, ProtocolWrapper.writeSequence)
