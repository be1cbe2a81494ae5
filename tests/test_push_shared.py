"""Push destinations that send the same bytes share one serialisation per message.

The unit tests prove ``publish_chunks`` and ``SharedChunks`` against the
chunk reader; the harness tests (``tests.test_push.Harness``: real client
and server code joined in memory) prove that destinations of one stream
get the very same ``bytes`` object per message while their timelines agree,
that one whose timeline diverged gets chunks of its own and still a clean
start, and that what the destinations deliver is unchanged by the sharing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0
from rtmpd.core.chunks import ChunkReader, ChunkWriter
from rtmpd.core.client import ClientSession, publish_chunks
from rtmpd.core.commands import encode_data
from rtmpd.core.errors import LocalProtocolError
from rtmpd.core.messages import Message, MessageType
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.destination import DestinationState
from rtmpd.remote.shared import SharedChunks
from tests.media_samples import aac_frame, avc_interframe
from tests.test_client_session import Media
from tests.test_push import Harness, media_summary

VIDEO = int(MessageType.VIDEO)
AUDIO = int(MessageType.AUDIO)


def read_back(data: bytes, chunk_size: int) -> list[Message]:
    """The messages a server reading at ``chunk_size`` gets from ``data``."""
    reader = ChunkReader()
    reader.feed(ChunkWriter().set_chunk_size(chunk_size))
    return reader.feed(data)


class PublishChunksTests(SynchronousTestCase):
    def test_reads_back_at_any_chunk_size_and_timestamp(self) -> None:
        payload = b"\x27\x01\x00\x00\x00" + bytes(range(256)) * 40
        for chunk_size in (128, 4096, 60_000):
            for timestamp in (0, 33, 0xFFFFFE, 0xFFFFFF, 2**32 - 1):
                data = publish_chunks(VIDEO, timestamp, payload, 1, chunk_size)
                self.assertEqual(read_back(data, chunk_size), [Message(VIDEO, timestamp, 1, payload)])

    def test_every_message_stands_alone(self) -> None:
        """A full header each time: a message reads back the same after any other (no header state)."""
        first = publish_chunks(AUDIO, 5000, aac_frame(1), 1, 4096)
        second = publish_chunks(AUDIO, 5020, aac_frame(2), 1, 4096)
        self.assertEqual(read_back(second, 4096), [Message(AUDIO, 5020, 1, aac_frame(2))])
        self.assertEqual(
            read_back(first + second, 4096),
            [Message(AUDIO, 5000, 1, aac_frame(1)), Message(AUDIO, 5020, 1, aac_frame(2))],
        )

    def test_metadata_as_amf0_with_set_data_frame(self) -> None:
        meta = encode_data("onMetaData", {"width": 640.0})
        amf3 = Message(int(MessageType.DATA_AMF3), 0, 0, b"\x00" + meta.payload)
        for message in (meta, amf3):
            (out,) = read_back(publish_chunks(message.type_id, 7, message.payload, 1, 4096), 4096)
            self.assertEqual(out.type_id, int(MessageType.DATA_AMF0))
            self.assertEqual(out.payload, amf0.encode("@setDataFrame") + meta.payload)

    def test_session_send_media_is_the_same_bytes(self) -> None:
        session = _publishing_session()
        message = Message(VIDEO, 40, 0, avc_interframe(3, 9000))
        self.assertEqual(
            session.send_media(message),
            publish_chunks(VIDEO, 40, message.payload, session.stream_id, session.chunk_size),
        )


class SharedChunksTests(SynchronousTestCase):
    def test_one_serialisation_per_distinct_form(self) -> None:
        message = Message(VIDEO, 1234, 9, avc_interframe(1, 5000))
        shared = SharedChunks(message)
        a = shared.chunks(0, 1, 4096)
        self.assertIs(shared.chunks(0, 1, 4096), a)
        b = shared.chunks(40, 1, 4096)
        c = shared.chunks(0, 2, 4096)
        d = shared.chunks(0, 1, 128)
        self.assertIs(shared.chunks(40, 1, 4096), b)
        self.assertIs(shared.chunks(0, 1, 4096), a)
        self.assertEqual(shared.forms, 4)
        self.assertEqual(len({a, b, c, d}), 4)
        for data, (ts, sid, size) in (
            (a, (0, 1, 4096)),
            (b, (40, 1, 4096)),
            (c, (0, 2, 4096)),
            (d, (0, 1, 128)),
        ):
            self.assertEqual(data, publish_chunks(VIDEO, ts, message.payload, sid, size))


def _publishing_session() -> ClientSession:
    """A publishing ClientSession, driven through the real conversation against an rtmpd server session."""
    client, _ = Media("test_media_and_metadata_reach_the_server").started()
    return client


class SendChunksTests(SynchronousTestCase):
    def test_refused_before_the_stream_started(self) -> None:
        session = ClientSession(mode="publish", app="live", tc_url="rtmp://h/live", stream_name="a")
        protocol = RTMPClientProtocol(session, _NoHandler(), None, 10.0)
        protocol.transport = StringTransport()
        self.assertRaises(LocalProtocolError, protocol.send_chunks, b"x")

    def test_written_in_order_behind_the_session_output_and_counted(self) -> None:
        session = _publishing_session()
        protocol = RTMPClientProtocol(session, _NoHandler(), None, 10.0)
        transport = protocol.transport = StringTransport()
        protocol._write(b"ack")  # what the session had queued goes first
        protocol.send_chunks(b"chunks")
        self.assertEqual(transport.value(), b"ackchunks")
        self.assertEqual(protocol.bytes_out, 9)


class _NoHandler:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def spy_sends(h: Harness) -> dict[int, list[bytes]]:
    """Record what each connection's ``send_chunks`` is handed (by client index), and still send it."""
    sent: dict[int, list[bytes]] = {}
    for index, client in enumerate(h.clients):
        sent[index] = []

        def send(data: bytes, client: RTMPClientProtocol = client, log: list[bytes] = sent[index]) -> None:
            log.append(data)
            RTMPClientProtocol.send_chunks(client, data)

        client.send_chunks = send  # type: ignore[method-assign]
    return sent


class SharedPushTests(SynchronousTestCase):
    def three_destinations(self) -> tuple[Harness, Any, int]:
        h = Harness(self)
        for i in range(3):
            h.push.add("live/*", f"rtmp://127.0.0.1/out/{{name}}-{i}")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 10_000)
        self.assertEqual([d["state"] for d in h.push.destinations()], ["publishing"] * 3)
        return h, pub, sid

    def test_destinations_on_one_timeline_get_the_same_bytes_object(self) -> None:
        h, pub, sid = self.three_destinations()
        sent = spy_sends(h)
        h.send_gop(pub, sid, 12_000, frames=5, config=False)
        self.assertEqual(len(sent[0]), 9)
        for a, b, c in zip(sent[0], sent[1], sent[2], strict=True):
            self.assertIs(a, b)
            self.assertIs(a, c)
        # And all three destinations got the same media, from a keyframe at 0.
        players = [h.server.player(f"a-{i}", app="out")[0] for i in range(3)]
        h.send_gop(pub, sid, 14_000, frames=2, config=False)
        summaries = [media_summary(p) for p in players]
        self.assertEqual(summaries[0], summaries[1])
        self.assertEqual(summaries[0], summaries[2])
        self.assertEqual([k for _, _, k in summaries[0]][:4], ["data", "aheader", "header", "key"])

    def test_a_diverged_timeline_gets_chunks_of_its_own_and_a_clean_start(self) -> None:
        h, pub, sid = self.three_destinations()
        h.send_gop(pub, sid, 12_000, frames=2, config=False)  # a new GOP in the cache
        h.push.restart(rule_id=3)  # reconnects: its timeline starts at 0 from the new GOP
        h.server.flush()
        destination = h.push.destination("live/a", 3)
        self.assertEqual(destination.state, DestinationState.PUBLISHING)
        player, _ = h.server.player("a-2", app="out")
        sent = spy_sends(h)  # clients 0, 1 and the new 3 (2 is the closed one)
        for i in range(3):
            pub.send_media(VIDEO, sid, 12_200 + i * 33, avc_interframe(i))
        h.server.flush()
        first, second, renewed = sent[0], sent[1], sent[3]
        self.assertEqual(len(first), 3)
        self.assertEqual(len(renewed), 3)
        for a, b, c in zip(first, second, renewed, strict=True):
            self.assertIs(a, b)
            self.assertNotEqual(a, c)
        summary = media_summary(player)
        self.assertEqual([k for _, _, k in summary][:4], ["data", "aheader", "header", "key"])
        video = [ts for t, ts, k in summary if t == VIDEO and k != "header"]
        self.assertEqual(video, [0, 33, 200, 233, 266], "the renewed connection starts at 0")
        # The others go on on their timeline from the first GOP.
        self.assertEqual([read_back(d, 4096)[0].timestamp for d in first], [2200, 2233, 2266])

    def test_timelines_that_match_again_share_again(self) -> None:
        h = Harness(self)
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}-0")
        pub, sid = h.publisher("a")
        h.send_gop(pub, sid, 0)
        # A second rule later: it starts from the cached GOP at 0 too, so it is on the same timeline.
        h.push.add("live/*", "rtmp://127.0.0.1/out/{name}-1")
        h.server.flush()
        sent = spy_sends(h)
        pub.send_media(VIDEO, sid, 165, avc_interframe(5))
        h.server.flush()
        self.assertEqual(len(sent[0]), 1)
        self.assertIs(sent[0][0], sent[1][0])
        # A new publisher within the grace: both continue from the same point, still sharing.
        pub.transport.loseConnection()
        h.server.flush()
        h.server.advance(3)
        pub2, sid2 = h.publisher("a")
        h.send_gop(pub2, sid2, 0)
        sent = spy_sends(h)
        pub2.send_media(VIDEO, sid2, 200, avc_interframe(6))
        h.server.flush()
        self.assertEqual(len(sent[0]), 1)
        self.assertIs(sent[0][0], sent[1][0])

    def test_a_paused_destination_queues_its_chunks_and_sends_them_in_order(self) -> None:
        h, pub, sid = self.three_destinations()
        player, _ = h.server.player("a-1", app="out")
        slow = h.clients[1]
        slow.pauseProducing()
        h.send_gop(pub, sid, 12_000, frames=4, config=False)
        destination = h.push.destination("live/a", 2)
        self.assertEqual(len(destination._queue), 7)
        self.assertEqual(destination.stats()["queued_bytes"], sum(len(d) for d, _ in destination._queue))
        slow.resumeProducing()
        h.server.flush()
        self.assertEqual(destination.stats()["queued_bytes"], 0)
        summary = media_summary(player)
        video = [ts for t, ts, k in summary if t == VIDEO and k in ("key", "inter")]
        self.assertEqual(video[-4:], [2000, 2033, 2066, 2099])
        self.assertEqual(video, sorted(video))
