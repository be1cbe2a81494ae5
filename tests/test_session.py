"""rtmpd.core.session.ServerSession driven with bytes alone: no transport, no reactor, no clock.

The peer is made of the core's own client pieces (``ClientHandshake``,
``ChunkWriter``, ``ChunkReader``, ``encode_command``); the test plays the
adapter: it feeds the session, takes its events one at a time, answers with
``send_command``/``send_control``, and decodes what the session wrote.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0
from rtmpd.core.chunks import ChunkReader, ChunkWriter, encode_message
from rtmpd.core.commands import Command, decode_command, encode_command, encode_data, on_status, status_info
from rtmpd.core.errors import (
    CommandBeforeConnect,
    InvalidWindowAckSize,
    LocalProtocolError,
    MalformedControlMessage,
    NestedAggregate,
    RemoteProtocolError,
)
from rtmpd.core.events import (
    BufferLengthSet,
    CommandReceived,
    DataReceived,
    HandshakeCompleted,
    MediaReceived,
    MessageIgnored,
    MetadataReceived,
    PeerChunkSizeChanged,
)
from rtmpd.core.handshake import HANDSHAKE_SIZE, ClientHandshake
from rtmpd.core.limits import Limits
from rtmpd.core.messages import (
    Acknowledgement,
    Message,
    MessageType,
    SetChunkSize,
    UserControl,
    UserControlEvent,
    WindowAckSize,
    parse_control,
    user_control,
    window_ack_size,
)
from rtmpd.core.session import ServerSession
from tests.media_samples import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    aac_frame,
    avc_interframe,
    avc_keyframe,
)

A, V = MessageType.AUDIO, MessageType.VIDEO
CONNECT_PARAMS = {"app": "live", "tcUrl": "rtmp://localhost/live", "objectEncoding": 0.0}


def fixed_random(n: int) -> bytes:
    """Deterministic filler, so the server's S1 (and so the client's C2) is the same every run."""
    return bytes(i * 7 & 0xFF for i in range(n))


def new_session(**limits: Any) -> ServerSession:
    return ServerSession(Limits(**limits), 1234, random_bytes=fixed_random)


def drain(session: ServerSession, *, accept: bool = False) -> list[Any]:
    """Every event the session has; ``accept``: the first ``connect`` is accepted, as a responder does."""
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
        connect = isinstance(event, CommandReceived) and event.command.name == "connect"
        if accept and connect and not session.session_open:
            session.accept_connect("live", event.command.command_object)
    return events


def aggregate(timestamp: int, stream_id: int, parts: list[tuple[int, int, bytes]]) -> Message:
    """An Aggregate message of FLV-style tags ``(type, timestamp, body)``."""
    payload = b""
    for type_id, ts, body in parts:
        header = bytes([type_id]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        header += bytes([ts >> 24]) + bytes(3)
        payload += header + body + (11 + len(body)).to_bytes(4, "big")
    return Message(MessageType.AGGREGATE, timestamp, stream_id, payload)


class Client:
    """The peer, made of the core's client pieces: it makes bytes and reads the session's."""

    def __init__(self, *, digest: bool = False) -> None:
        self.handshake = ClientHandshake(epoch=99, random_bytes=fixed_random, digest=digest)
        self.writer = ChunkWriter()
        self.reader = ChunkReader(Limits(max_command_message_size=16 * 1024 * 1024))
        self.received: list[Message] = []

    def hello(self) -> bytes:
        return self.handshake.initial()

    def take(self, data: bytes) -> bytes:
        """Read bytes from the server; return what the client has to answer (C2, once)."""
        reply = b""
        if not self.handshake.done:
            reply = self.handshake.receive(data)
            if not self.handshake.done:
                return reply
            data = self.handshake.leftover
        self.received += self.reader.feed(data)
        return reply

    def send(self, csid: int, message: Message) -> bytes:
        return self.writer.write(csid, message)

    def command(self, name: str, txn: float, obj: Any = None, *args: Any, stream_id: int = 0) -> bytes:
        return self.send(8 if stream_id else 3, encode_command(name, txn, obj, *args, stream_id=stream_id))

    def commands(self) -> list[Command]:
        kinds = (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3)
        return [decode_command(m) for m in self.received if m.type_id in kinds]

    def controls(self) -> list[Any]:
        return [parse_control(m) for m in self.received if m.type_id <= 6]


class SessionTestCase(SynchronousTestCase):
    def handshaken(self, *, digest: bool = False, **limits: Any) -> tuple[ServerSession, Client]:
        session, client = new_session(**limits), Client(digest=digest)
        hello = client.hello()
        session.receive_data(hello)
        self.assertEqual(drain(session), [])
        s0s1s2 = session.data_to_send()
        self.assertEqual(len(s0s1s2), 1 + 2 * HANDSHAKE_SIZE)
        c2 = client.take(s0s1s2)
        session.receive_data(c2)
        self.sent = len(hello) + len(c2)
        self.assertEqual(drain(session), [HandshakeCompleted(digest=digest)])
        self.assertTrue(session.handshake_done)
        return session, client

    def connected(self, **limits: Any) -> tuple[ServerSession, Client]:
        session, client = self.handshaken(**limits)
        connect = client.command("connect", 1, CONNECT_PARAMS)
        self.sent += len(connect)
        session.receive_data(connect)
        self.assertEqual(
            drain(session, accept=True), [CommandReceived(Command("connect", 1.0, CONNECT_PARAMS, ()))]
        )
        return session, client

    def feed(self, session: ServerSession, data: bytes) -> list[Any]:
        self.sent += len(data)
        session.receive_data(data)
        return drain(session)


class PublishTests(SessionTestCase):
    def test_a_whole_publish(self) -> None:
        session, client = self.handshaken()
        self.assertFalse(session.session_open)

        # connect: the test is the responder, so it opens the session and answers.
        events = self.feed(session, client.command("connect", 1, CONNECT_PARAMS))
        self.assertEqual(events, [CommandReceived(Command("connect", 1.0, CONNECT_PARAMS, ()))])
        session.accept_connect("live", CONNECT_PARAMS)
        self.assertEqual(
            (session.app, session.connect_params, session.session_open), ("live", CONNECT_PARAMS, True)
        )
        info = status_info("status", "NetConnection.Connect.Success")
        client.take(
            session.send_control(window_ack_size(2_500_000))
            + session.set_chunk_size(4096)
            + session.send_command(encode_command("_result", 1, {"fmsVer": "FMS/3,5,7,7009"}, info))
        )
        self.assertEqual(client.controls(), [WindowAckSize(2_500_000), SetChunkSize(4096)])
        self.assertEqual(client.commands()[0].args, (info,))
        self.assertEqual(session.chunk_size, 4096)

        events = self.feed(session, client.command("createStream", 2))
        self.assertEqual(events, [CommandReceived(Command("createStream", 2.0, None, ()))])
        client.take(session.send_command(encode_command("_result", 2, None, 1.0)))
        self.assertEqual(client.commands()[-1].args, (1.0,))

        events = self.feed(session, client.command("publish", 0, None, "key", "live", stream_id=1))
        self.assertEqual(events, [CommandReceived(Command("publish", 0.0, None, ("key", "live"), 1))])
        client.take(session.send_command(on_status(1, "status", "NetStream.Publish.Start")))
        self.assertEqual(client.commands()[-1].stream_id, 1)

        # @setDataFrame onMetaData arrives unwrapped, as an AMF0 data message with its object.
        meta = {"width": 1280.0, "height": 720.0, "videocodecid": 7.0}
        events = self.feed(
            session, client.send(5, encode_data("@setDataFrame", "onMetaData", meta, stream_id=1))
        )
        expected = Message(MessageType.DATA_AMF0, 0, 1, amf0.encode_many("onMetaData", meta))
        self.assertEqual(events, [MetadataReceived(expected, meta)])
        self.assertIs(type(events[0].message.payload), bytes)

        frames = [
            Message(A, 0, 1, AAC_SEQUENCE_HEADER),
            Message(V, 0, 1, AVC_SEQUENCE_HEADER),
            Message(V, 0, 1, avc_keyframe(1, size=5000)),
            Message(A, 23, 1, aac_frame(1)),
            Message(V, 33, 1, avc_interframe(1)),
        ]
        data = b"".join(client.send(4 if m.type_id == A else 6, m) for m in frames)
        self.assertEqual(self.feed(session, data), [MediaReceived(m) for m in frames])

        # An aggregate: its tags come out one by one, rebased on the aggregate's timestamp.
        parts = [(V, 500, avc_interframe(2)), (A, 510, aac_frame(2)), (V, 533, avc_interframe(3))]
        events = self.feed(session, client.send(6, aggregate(66, 1, parts)))
        self.assertEqual(
            events,
            [
                MediaReceived(Message(V, 66, 1, avc_interframe(2))),
                MediaReceived(Message(A, 76, 1, aac_frame(2))),
                MediaReceived(Message(V, 99, 1, avc_interframe(3))),
            ],
        )
        self.assertEqual({type(e.message.payload) for e in events}, {bytes})

        cue = amf0.encode_many("onCuePoint", {"name": "x"})
        events = self.feed(session, client.send(5, Message(MessageType.DATA_AMF0, 100, 1, cue)))
        self.assertEqual(events, [DataReceived(Message(MessageType.DATA_AMF0, 100, 1, cue))])

        events = self.feed(session, client.command("deleteStream", 3, None, 1.0))
        self.assertEqual(events, [CommandReceived(Command("deleteStream", 3.0, None, (1.0,)))])
        # Nothing was answered by the session itself after the handshake: no ping, no window set.
        self.assertEqual(session.data_to_send(), b"")
        self.assertEqual(session.bytes_received, self.sent)

    def test_amf3_data_and_set_data_frame(self) -> None:
        session, client = self.connected()
        body = amf0.encode_many("@setDataFrame", "onMetaData", {"duration": 0.0})
        events = self.feed(session, client.send(5, Message(MessageType.DATA_AMF3, 7, 1, b"\x00" + body)))
        unwrapped = amf0.encode_many("onMetaData", {"duration": 0.0})
        self.assertEqual(
            events, [MetadataReceived(Message(MessageType.DATA_AMF0, 7, 1, unwrapped), {"duration": 0.0})]
        )

    def test_metadata_without_an_object(self) -> None:
        session, client = self.connected()
        events = self.feed(session, client.send(5, encode_data("onMetaData", stream_id=1)))
        self.assertEqual(events, [MetadataReceived(encode_data("onMetaData", stream_id=1), {})])

    def test_peer_chunk_size_and_ignored_messages(self) -> None:
        session, client = self.connected()
        events = self.feed(session, client.writer.set_chunk_size(300))
        self.assertEqual(events, [PeerChunkSizeChanged(300)])
        self.assertEqual(session.peer_chunk_size, 300)
        shared = Message(MessageType.SHARED_OBJECT_AMF0, 0, 0, b"\x00\x01so")
        self.assertEqual(self.feed(session, client.send(3, shared)), [MessageIgnored(shared)])
        big = Message(V, 0, 1, avc_keyframe(size=1000))
        self.assertEqual(self.feed(session, client.send(6, big)), [MediaReceived(big)])


class PlayTests(SessionTestCase):
    def test_a_whole_play(self) -> None:
        session, client = self.handshaken(digest=True)
        self.assertTrue(client.handshake.server_digest_valid)
        self.assertEqual(session.handshake.digest_scheme, 0)

        self.feed(session, client.command("connect", 1, CONNECT_PARAMS))
        session.accept_connect("live", CONNECT_PARAMS)
        client.take(
            session.set_chunk_size(4096) + session.send_command(encode_command("_result", 1, None, {}))
        )
        self.assertEqual(
            self.feed(session, client.command("createStream", 2)),
            [CommandReceived(Command("createStream", 2.0, None, ()))],
        )
        client.take(session.send_command(encode_command("_result", 2, None, 1.0)))

        data = client.command("play", 0, None, "key", -2000.0, stream_id=1)
        data += client.send(2, user_control(UserControlEvent.SET_BUFFER_LENGTH, 1, 3000))
        events = self.feed(session, data)
        self.assertEqual(
            events,
            [CommandReceived(Command("play", 0.0, None, ("key", -2000.0), 1)), BufferLengthSet(1, 3000)],
        )

        # The test answers as the relay does: status on the command stream, then media serialised
        # at the session's outgoing chunk size on chunk streams of their own.
        out = session.send_control(user_control(UserControlEvent.STREAM_BEGIN, 1))
        out += session.send_command(on_status(1, "status", "NetStream.Play.Start", "key"))
        out += session.send_command(encode_data("|RtmpSampleAccess", True, True, stream_id=1))
        media = [
            Message(MessageType.DATA_AMF0, 0, 1, amf0.encode_many("onMetaData", {"width": 640.0})),
            Message(A, 0, 1, AAC_SEQUENCE_HEADER),
            Message(V, 0, 1, AVC_SEQUENCE_HEADER),
            Message(V, 40, 1, avc_keyframe(7, size=10_000)),
            Message(A, 41, 1, aac_frame(7)),
        ]
        csids = {A: 6, V: 7}
        for message in media:
            out += encode_message(csids.get(message.type_id, 5), message, session.chunk_size)
        client.take(out)

        self.assertEqual(client.reader.chunk_size, 4096)
        start = [c for c in client.commands() if c.name == "onStatus"]
        self.assertEqual(start[0].args[0]["code"], "NetStream.Play.Start")
        self.assertEqual(start[0].stream_id, 1)
        self.assertIn(UserControl(UserControlEvent.STREAM_BEGIN, 1), client.controls())
        self.assertEqual(client.received[-len(media) :], media)

        events = self.feed(session, client.command("deleteStream", 3, None, 1.0))
        self.assertEqual(events, [CommandReceived(Command("deleteStream", 3.0, None, (1.0,)))])


class PingTests(SessionTestCase):
    def test_ping_is_answered_with_its_value(self) -> None:
        session, client = self.connected()
        self.assertEqual(
            self.feed(session, client.send(2, user_control(UserControlEvent.PING_REQUEST, 1234))), []
        )
        client.take(session.data_to_send())
        self.assertEqual(client.controls(), [UserControl(UserControlEvent.PING_RESPONSE, 1234)])

    def test_ping_answer_follows_the_reply_to_the_command_before_it(self) -> None:
        session, client = self.handshaken()
        data = client.command("connect", 1, CONNECT_PARAMS)
        data += client.send(2, user_control(UserControlEvent.PING_REQUEST, 0xFFFFFFFF))
        session.receive_data(data)
        event = session.next_event()
        self.assertEqual(event.command.name, "connect")
        self.assertEqual(session.data_to_send(), b"", "the ping was answered before connect was handled")
        session.accept_connect("live", CONNECT_PARAMS)
        out = session.send_command(encode_command("_result", 1, None, {}))
        self.assertIsNone(session.next_event())
        client.take(out + session.data_to_send())
        kinds = [m.type_id for m in client.received]
        self.assertEqual(kinds, [MessageType.COMMAND_AMF0, MessageType.USER_CONTROL])
        self.assertEqual(client.controls(), [UserControl(UserControlEvent.PING_RESPONSE, 0xFFFFFFFF)])

    def test_queued_answers_go_out_before_what_is_sent_next(self) -> None:
        session, client = self.connected()
        session.receive_data(client.send(2, user_control(UserControlEvent.PING_REQUEST, 5)))
        self.assertIsNone(session.next_event())
        # The adapter did not drain data_to_send: send_command still keeps the order.
        client.take(session.send_command(encode_command("onBWDone", 0)))
        self.assertEqual(session.data_to_send(), b"")
        self.assertEqual(
            [m.type_id for m in client.received], [MessageType.USER_CONTROL, MessageType.COMMAND_AMF0]
        )


class AcknowledgementTests(SessionTestCase):
    def test_acknowledgements_at_each_window(self) -> None:
        session, client = self.connected()
        total = self.sent
        window = 5000
        total += self.feed_count(session, client.send(2, window_ack_size(window)))
        last_ack, acks = 0, []
        # The window was set after the handshake and connect; they count too.
        for i in range(40):
            data = client.send(6, Message(V, i * 33, 1, avc_interframe(i, size=37 * i)))
            session.receive_data(data)
            total += len(data)
            self.assertEqual(
                drain(session), [MediaReceived(Message(V, i * 33, 1, avc_interframe(i, size=37 * i)))]
            )
            before = len(client.received)
            client.take(session.data_to_send())
            new = [parse_control(m) for m in client.received[before:]]
            if total - last_ack >= window:
                self.assertEqual(new, [Acknowledgement(total)], i)
                last_ack = total
                acks.append(total)
            else:
                self.assertEqual(new, [], i)
        self.assertEqual(session.bytes_received, total)
        self.assertGreater(len(acks), 5)

    def feed_count(self, session: ServerSession, data: bytes) -> int:
        self.assertEqual(self.feed(session, data), [])
        return len(data)

    def test_no_acknowledgement_without_a_window(self) -> None:
        session, client = self.connected()
        for i in range(20):
            self.feed(session, client.send(6, Message(V, i, 1, avc_keyframe(i, size=4000))))
        self.assertEqual(session.data_to_send(), b"")

    def test_acknowledgement_once_per_input(self) -> None:
        # Many windows' worth in one read: one acknowledgement of everything, after the last message.
        session, client = self.connected()
        self.feed(session, client.send(2, window_ack_size(100)))
        client.take(session.data_to_send())  # the window message itself passed 100 bytes
        acked = [c for c in client.controls() if isinstance(c, Acknowledgement)]
        data = b"".join(client.send(6, Message(V, i, 1, avc_keyframe(i, size=500))) for i in range(5))
        session.receive_data(data)
        for _ in range(5):
            self.assertIsInstance(session.next_event(), MediaReceived)
            self.assertEqual(session.data_to_send(), b"")
        self.assertIsNone(session.next_event())
        client.take(session.data_to_send())
        new = [c for c in client.controls() if isinstance(c, Acknowledgement)][len(acked) :]
        self.assertEqual(new, [Acknowledgement(session.bytes_received)])

    def test_window_of_zero_is_refused(self) -> None:
        session, client = self.connected()
        session.receive_data(client.send(2, window_ack_size(0)))
        self.assertRaises(InvalidWindowAckSize, session.next_event)


class ConnectGateTests(SessionTestCase):
    def test_command_before_connect(self) -> None:
        session, client = self.handshaken()
        session.receive_data(client.command("createStream", 2))
        error = self.assertRaises(CommandBeforeConnect, session.next_event)
        self.assertIn("createStream", str(error))
        self.assertEqual(error.status_code, "NetConnection.Call.Failed")
        # After a protocol error the session takes no more input.
        self.assertRaises(
            LocalProtocolError, session.receive_data, client.command("connect", 3, CONNECT_PARAMS)
        )
        self.assertRaises(LocalProtocolError, session.next_event)
        # It can still answer the error before the connection closes.
        self.assertTrue(session.send_command(encode_command("_error", 0, None, {})))

    def test_connect_that_was_not_accepted_keeps_the_gate_shut(self) -> None:
        session, client = self.handshaken()
        self.assertEqual(len(self.feed(session, client.command("connect", 1, {"app": "no/such"}))), 1)
        session.receive_data(client.command("publish", 0, None, "x", stream_id=1))
        self.assertRaises(CommandBeforeConnect, session.next_event)

    def test_connect_accepted_opens_the_gate_for_the_rest_of_the_same_read(self) -> None:
        session, client = self.handshaken()
        session.receive_data(client.command("connect", 1, CONNECT_PARAMS) + client.command("createStream", 2))
        events = drain(session, accept=True)
        self.assertEqual([e.command.name for e in events], ["connect", "createStream"])

    def test_accepting_twice_is_our_bug(self) -> None:
        session, _ = self.connected()
        self.assertRaises(LocalProtocolError, session.accept_connect, "live", {})

    def test_media_and_data_pass_the_gate(self) -> None:
        # Only commands are gated: media before connect reaches the adapter, which has no stream for it.
        session, client = self.handshaken()
        message = Message(V, 0, 1, avc_keyframe())
        self.assertEqual(self.feed(session, client.send(6, message)), [MediaReceived(message)])


class AggregateTests(SessionTestCase):
    def test_nested_aggregate_is_refused(self) -> None:
        session, client = self.connected()
        inner = aggregate(0, 1, [(V, 0, avc_interframe(1))])
        outer = aggregate(0, 1, [(V, 0, avc_interframe(0)), (MessageType.AGGREGATE, 0, inner.payload)])
        session.receive_data(client.send(6, outer))
        self.assertRaises(NestedAggregate, session.next_event)

    def test_truncated_aggregate_is_a_typed_error(self) -> None:
        session, client = self.connected()
        whole = aggregate(0, 1, [(V, 0, avc_interframe(1))])
        cut = Message(whole.type_id, 0, 1, whole.payload[:-6])
        session.receive_data(client.send(6, cut))
        self.assertRaises(MalformedControlMessage, session.next_event)

    def test_parts_come_before_what_followed_the_aggregate(self) -> None:
        # Two reads before the events are taken: the order is the order on the wire.
        session, client = self.connected()
        after = Message(A, 90, 1, aac_frame(9))
        session.receive_data(
            client.send(6, aggregate(60, 1, [(V, 0, avc_interframe(1)), (A, 5, aac_frame(1))]))
        )
        session.receive_data(client.send(4, after))
        self.assertEqual(
            drain(session),
            [
                MediaReceived(Message(V, 60, 1, avc_interframe(1))),
                MediaReceived(Message(A, 65, 1, aac_frame(1))),
                MediaReceived(after),
            ],
        )

    def test_timestamps_rebased_across_the_wrap(self) -> None:
        session, client = self.connected()
        parts = [(V, 0xFFFFFFF0, avc_interframe(1)), (V, 0x10, avc_interframe(2))]
        events = self.feed(session, client.send(6, aggregate(0xFFFFFFF0, 1, parts)))
        # The second tag's timestamp wrapped inside the aggregate: offsets are taken modulo 2**32.
        self.assertEqual([e.message.timestamp for e in events], [0xFFFFFFF0, 0x10])


# -- properties ------------------------------------------------------------------


def _publish_stream() -> tuple[bytes, list[Any], bytes]:
    """The bytes a publisher sends (handshake included), the events they make, and the server's bytes."""
    session, client = new_session(), Client()
    hello = client.hello()
    session.receive_data(hello)
    c2 = client.take(session.data_to_send())
    data = client.command("connect", 1, CONNECT_PARAMS)
    data += client.send(2, window_ack_size(3000))
    data += client.send(2, user_control(UserControlEvent.PING_REQUEST, 77))
    data += client.command("createStream", 2)
    data += client.command("publish", 0, None, "key", "live", stream_id=1)
    data += client.writer.set_chunk_size(333)
    data += client.send(5, encode_data("@setDataFrame", "onMetaData", {"width": 1.0}, stream_id=1))
    for i in range(6):
        data += client.send(
            6, Message(V, i * 33, 1, avc_keyframe(i, size=900) if i % 3 == 0 else avc_interframe(i))
        )
        data += client.send(4, Message(A, i * 33 + 5, 1, aac_frame(i)))
    data += client.send(6, aggregate(300, 1, [(V, 10, avc_interframe(9)), (A, 12, aac_frame(9))]))
    data += client.send(2, user_control(UserControlEvent.PING_REQUEST, 78))
    data += client.command("deleteStream", 3, None, 1.0)
    stream = hello + c2 + data
    session, events, out = feed_pieces([stream])
    return stream, events, out


def feed_pieces(pieces: list[bytes]) -> tuple[ServerSession, list[Any], bytes]:
    session = new_session()
    events: list[Any] = []
    out = b""
    for piece in pieces:
        session.receive_data(piece)
        events += drain(session, accept=True)
        out += session.data_to_send()
    return session, events, out


def server_messages(out: bytes) -> list[Any]:
    """What the server sent after S0+S1+S2, as control events."""
    reader = ChunkReader()
    return [parse_control(m) for m in reader.feed(out[1 + 2 * HANDSHAKE_SIZE :])]


PUBLISH_STREAM, PUBLISH_EVENTS, PUBLISH_OUT = _publish_stream()


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=30)))
    if draw(st.booleans()):
        # Runs of single bytes somewhere: the hardest split for a header parser.
        start = draw(st.integers(0, len(data)))
        cuts += range(start, min(start + 40, len(data)))
        cuts.sort()
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class PropertyTests(SynchronousTestCase):
    def test_the_reference_stream(self) -> None:
        kinds = [type(e).__name__ for e in PUBLISH_EVENTS]
        self.assertEqual(
            kinds[:5],
            [
                "HandshakeCompleted",
                "CommandReceived",
                "CommandReceived",
                "CommandReceived",
                "PeerChunkSizeChanged",
            ],
        )
        self.assertEqual(kinds.count("MediaReceived"), 12 + 2)
        self.assertEqual(kinds[-1], "CommandReceived")
        pings = [c for c in server_messages(PUBLISH_OUT) if isinstance(c, UserControl)]
        self.assertEqual([p.value for p in pings], [77, 78])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_any_split_yields_the_same_events(self, data: st.DataObject) -> None:
        pieces = data.draw(splits(PUBLISH_STREAM))
        session, events, out = feed_pieces(pieces)
        self.assertEqual(events, PUBLISH_EVENTS)
        self.assertEqual(out[: 1 + 2 * HANDSHAKE_SIZE], PUBLISH_OUT[: 1 + 2 * HANDSHAKE_SIZE])
        # What the session answered by itself is the same, but for when acknowledgements fell.
        sent = server_messages(out)
        self.assertEqual(
            [c for c in sent if not isinstance(c, Acknowledgement)],
            [c for c in server_messages(PUBLISH_OUT) if not isinstance(c, Acknowledgement)],
        )
        acks = [c.sequence_number for c in sent if isinstance(c, Acknowledgement)]
        self.assertEqual(acks, sorted(acks))
        self.assertTrue(all(b - a >= 3000 for a, b in zip(acks, acks[1:], strict=False)), acks)
        self.assertLessEqual(acks[-1], len(PUBLISH_STREAM))
        self.assertGreaterEqual(acks[-1], len(PUBLISH_STREAM) - 3000)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19, 20, 22, 7, 99]),
                st.one_of(
                    st.binary(max_size=64),
                    st.sampled_from(
                        [b"", b"\x00", b"\x02\x00\x07connect", b"\x02\x00\x0d@setDataFrame\x05"]
                    ).flatmap(lambda head: st.binary(max_size=40).map(lambda tail: head + tail)),
                ),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def test_malformed_messages_raise_only_typed_errors(self, messages: list[tuple[int, bytes]]) -> None:
        session, client = new_session(), Client()
        session.receive_data(client.hello())
        session.receive_data(client.take(session.data_to_send()))
        data = client.command("connect", 1, CONNECT_PARAMS)
        for type_id, payload in messages:
            data += client.send(3, Message(type_id, 0, 1, payload))
        try:
            session.receive_data(data)
            drain(session, accept=True)
        except RemoteProtocolError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=1, max_size=600), st.booleans())
    def test_garbage_raises_only_typed_errors(self, garbage: bytes, after_handshake: bool) -> None:
        session, client = new_session(), Client()
        try:
            if after_handshake:
                session.receive_data(client.hello())
                session.receive_data(client.take(session.data_to_send()))
            session.receive_data(garbage)
            drain(session, accept=True)
        except RemoteProtocolError:
            pass
