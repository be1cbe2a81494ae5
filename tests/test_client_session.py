"""``rtmpd.core.client.ClientSession`` against ``ServerSession`` in memory, answering in the orders real
servers use (nginx-rtmp, SRS, YouTube/Twitch ingest), and against the whole rtmpd server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core import amf0
from rtmpd.core.client import ClientSession
from rtmpd.core.client_events import (
    Acknowledged,
    ClientState,
    Connected,
    Refused,
    StatusReceived,
    StreamStarted,
    StreamStopped,
)
from rtmpd.core.commands import Command, encode_command, encode_data, on_status, status_info
from rtmpd.core.errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from rtmpd.core.events import CommandReceived, MediaReceived, MetadataReceived
from rtmpd.core.messages import (
    Message,
    MessageType,
    UserControlEvent,
    acknowledgement,
    set_peer_bandwidth,
    user_control,
    window_ack_size,
)
from rtmpd.core.session import ServerSession

VIDEO = int(MessageType.VIDEO)
AUDIO = int(MessageType.AUDIO)

Reply = list[tuple[str, Message]]  # ("command" | "control", message)


def _result(txn: float, *args: Any) -> Message:
    return encode_command("_result", txn, None, *args)


def _error(txn: float, code: str) -> Message:
    return encode_command("_error", txn, None, status_info("error", code, "refused"))


class ScriptedServer:
    """A ServerSession whose answers to each command are chosen by the test (``replies[name]``)."""

    def __init__(self, replies: dict[str, Callable[[Command], Reply]]) -> None:
        self.session = ServerSession()
        self.replies = replies
        self.commands: list[Command] = []
        self.received: list[Any] = []
        self.controls: list[Any] = []

    def receive(self, data: bytes) -> bytes:
        session = self.session
        session.receive_data(data)
        out = [session.data_to_send()]
        while (event := session.next_event()) is not None:
            out.append(session.data_to_send())
            if isinstance(event, CommandReceived):
                command = event.command
                self.commands.append(command)
                if command.name == "connect" and not session.session_open:
                    session.accept_connect(command.command_object.get("app", ""), command.command_object)
                for kind, message in self.replies.get(command.name, lambda c: [])(command):
                    if kind == "control":
                        out.append(session.send_control(message))
                    elif kind == "chunk":
                        out.append(session.set_chunk_size(message))
                    else:
                        out.append(session.send_command(message))
            else:
                self.received.append(event)
        out.append(session.data_to_send())
        return b"".join(out)


def pump(client: ClientSession, server: ScriptedServer, first: bytes = b"") -> list[Any]:
    """Exchange bytes until both sides are quiet; the client's events."""
    events: list[Any] = []
    to_server = first
    for _ in range(50):
        to_client = server.receive(to_server) if to_server else b""
        if to_client:
            client.receive_data(to_client)
            while (event := client.next_event()) is not None:
                events.append(event)
        to_server = client.data_to_send()
        if not to_server and not to_client:
            return events
    raise AssertionError("the two sessions never went quiet")


def nginx_connect(c: Command) -> Reply:
    # nginx-rtmp: window, bandwidth and chunk size first, then _result.
    return [
        ("control", window_ack_size(5_000_000)),
        ("control", set_peer_bandwidth(5_000_000)),
        ("chunk", 4096),
        ("command", _result(c.transaction_id, status_info("status", "NetConnection.Connect.Success", "ok"))),
    ]


def result_first_connect(c: Command) -> Reply:
    # Some ingest servers (Wowza-like) send _result first and the controls after it.
    return [
        ("command", _result(c.transaction_id, status_info("status", "NetConnection.Connect.Success", "ok"))),
        ("control", window_ack_size(2_500_000)),
        ("control", set_peer_bandwidth(2_500_000)),
        ("command", encode_command("onBWDone", 0, None, 8192.0)),
    ]


def create_stream(c: Command) -> Reply:
    return [("command", _result(c.transaction_id, 1.0))]


def publish_start(c: Command) -> Reply:
    return [
        ("control", user_control(UserControlEvent.STREAM_BEGIN, c.stream_id)),
        ("command", on_status(c.stream_id, "status", "NetStream.Publish.Start", "go")),
    ]


def fc_publish(c: Command) -> Reply:
    # YouTube/Twitch/SRS: onFCPublish (and a _result on some).
    return [
        (
            "command",
            encode_command("onFCPublish", 0, None, status_info("status", "NetStream.Publish.Start", "x")),
        ),
        ("command", _result(c.transaction_id)),
    ]


def release_error(c: Command) -> Reply:
    return [("command", _error(c.transaction_id, "NetConnection.Call.Failed"))]


def publisher(**kwargs: Any) -> ClientSession:
    return ClientSession(mode="publish", app="live", tc_url="rtmp://h/live", stream_name="key", **kwargs)


class PublishOrders(SynchronousTestCase):
    """Publishing works whatever order the server answers in."""

    def run_publish(
        self, replies: dict[str, Callable[[Command], Reply]]
    ) -> tuple[list[Any], ClientSession, ScriptedServer]:
        client = publisher()
        server = ScriptedServer(replies)
        events = pump(client, server, client.initiate())
        return events, client, server

    def test_nginx_order(self) -> None:
        events, client, server = self.run_publish(
            {"connect": nginx_connect, "createStream": create_stream, "publish": publish_start}
        )
        self.assertEqual([type(e) for e in events], [Connected, StreamStarted])
        self.assertTrue(client.active)
        self.assertEqual(client.stream_id, 1)
        self.assertEqual(
            [c.name for c in server.commands],
            ["connect", "releaseStream", "FCPublish", "createStream", "publish"],
        )
        connect = server.commands[0].command_object
        self.assertEqual((connect["app"], connect["tcUrl"]), ("live", "rtmp://h/live"))
        publish = server.commands[-1]
        self.assertEqual((publish.stream_id, publish.args), (1, ("key", "live")))
        # Set Chunk Size came first, before connect: the server reads our chunks at 4096.
        self.assertEqual(server.session.peer_chunk_size, 4096)

    def test_youtube_twitch_order(self) -> None:
        events, client, _ = self.run_publish(
            {
                "connect": result_first_connect,
                "releaseStream": release_error,
                "FCPublish": fc_publish,
                "createStream": create_stream,
                "publish": publish_start,
            }
        )
        self.assertTrue(client.active)
        kinds = [type(e) for e in events]
        self.assertEqual(kinds[0], Connected)
        self.assertEqual(kinds[-1], StreamStarted)
        names = [e.name for e in events if isinstance(e, StatusReceived)]
        self.assertIn("onFCPublish", names)
        self.assertIn("onBWDone", names)

    def test_result_to_publish_before_on_status(self) -> None:
        def publish(c: Command) -> Reply:
            return [("command", _result(c.transaction_id)), *publish_start(c)]

        events, client, _ = self.run_publish(
            {"connect": nginx_connect, "createStream": create_stream, "publish": publish}
        )
        self.assertTrue(client.active)
        self.assertIsInstance(events[-1], StreamStarted)

    def test_connect_answered_with_on_status(self) -> None:
        def connect(c: Command) -> Reply:
            return [("command", on_status(0, "status", "NetConnection.Connect.Success", "ok"))]

        _, client, _ = self.run_publish(
            {"connect": connect, "createStream": create_stream, "publish": publish_start}
        )
        self.assertTrue(client.active)

    def test_connect_refused(self) -> None:
        def connect(c: Command) -> Reply:
            return [("command", _error(c.transaction_id, "NetConnection.Connect.Rejected"))]

        events, client, server = self.run_publish({"connect": connect})
        self.assertEqual(
            events, [Refused("connect", "NetConnection.Connect.Rejected", "refused", events[0].info)]
        )
        self.assertEqual(client.state, ClientState.CLOSED)
        self.assertEqual([c.name for c in server.commands], ["connect"])

    def test_publish_refused_by_status(self) -> None:
        def publish(c: Command) -> Reply:
            return [("command", on_status(c.stream_id, "error", "NetStream.Publish.BadName", "taken"))]

        events, client, _ = self.run_publish(
            {"connect": nginx_connect, "createStream": create_stream, "publish": publish}
        )
        refused = [e for e in events if isinstance(e, Refused)]
        self.assertEqual([(r.stage, r.code) for r in refused], [("publish", "NetStream.Publish.BadName")])
        self.assertFalse(client.active)
        self.assertRaises(LocalProtocolError, client.send_media, Message(VIDEO, 0, 0, b"\x17"))

    def test_publish_refused_by_error(self) -> None:
        def publish(c: Command) -> Reply:
            return [("command", _error(c.transaction_id, "NetStream.Publish.Denied"))]

        events, _, _ = self.run_publish(
            {"connect": nginx_connect, "createStream": create_stream, "publish": publish}
        )
        self.assertEqual(
            [(e.stage, e.code) for e in events if isinstance(e, Refused)],
            [("publish", "NetStream.Publish.Denied")],
        )

    def test_bad_stream_id_refused(self) -> None:
        def bad(c: Command) -> Reply:
            return [("command", _result(c.transaction_id, "one"))]

        events, _, _ = self.run_publish({"connect": nginx_connect, "createStream": bad})
        self.assertEqual([e.stage for e in events if isinstance(e, Refused)], ["createStream"])

    def test_no_answer_stays_connecting(self) -> None:
        _, client, _ = self.run_publish({})
        self.assertEqual(client.state, ClientState.CONNECTING)


class Media(SynchronousTestCase):
    def started(self) -> tuple[ClientSession, ScriptedServer]:
        client = publisher()
        server = ScriptedServer(
            {"connect": nginx_connect, "createStream": create_stream, "publish": publish_start}
        )
        pump(client, server, client.initiate())
        self.assertTrue(client.active)
        return client, server

    def test_media_and_metadata_reach_the_server(self) -> None:
        client, server = self.started()
        frames = [
            encode_data("onMetaData", {"width": 640.0}),
            Message(VIDEO, 0, 0, b"\x17\x00\x00\x00\x00config"),
            Message(AUDIO, 0, 0, b"\xaf\x00\x12\x10"),
            Message(VIDEO, 40, 0, b"\x17\x01\x00\x00\x00" + bytes(9000)),
            Message(VIDEO, 2**24 + 5, 0, b"\x27\x01\x00\x00\x00" + b"x" * 10),
        ]
        data = b"".join(client.send_media(m) for m in frames)
        server.received.clear()
        server.receive(data)
        meta = [e for e in server.received if isinstance(e, MetadataReceived)]
        self.assertEqual(meta[0].values, {"width": 640.0})
        media = [e.message for e in server.received if isinstance(e, MediaReceived)]
        self.assertEqual(
            [(m.type_id, m.timestamp, m.stream_id, m.payload) for m in media],
            [(m.type_id, m.timestamp, 1, m.payload) for m in frames[1:]],
        )

    def test_metadata_is_wrapped_in_set_data_frame(self) -> None:
        client, _ = self.started()
        data = client.send_media(encode_data("onMetaData", {"a": 1.0}))
        self.assertIn(amf0.encode("@setDataFrame") + amf0.encode("onMetaData"), data)

    def test_close_stream_sends_fcunpublish_and_delete_stream(self) -> None:
        client, server = self.started()
        server.commands.clear()
        server.receive(client.close_stream())
        self.assertEqual(
            [(c.name, c.args) for c in server.commands], [("FCUnpublish", ("key",)), ("deleteStream", (1.0,))]
        )
        self.assertEqual(client.state, ClientState.CLOSED)

    def test_ping_answered(self) -> None:
        client, server = self.started()
        client.receive_data(server.session.send_control(user_control(UserControlEvent.PING_REQUEST, 1234)))
        self.assertIsNone(client.next_event())
        out = client.data_to_send()
        self.assertIn(user_control(UserControlEvent.PING_RESPONSE, 1234).payload, out)
        # The server session takes the answer like any control message.
        server.receive(out)

    def test_acknowledgements_sent_every_window(self) -> None:
        def connect(c: Command) -> Reply:
            return [("control", window_ack_size(3000)), *nginx_connect(c)[3:]]

        client = publisher()
        server = ScriptedServer({"connect": connect})
        pump(client, server, client.initiate())
        session = server.session
        before = client.bytes_received
        client.receive_data(session.send_command(encode_command("onStatus", 0, None, {"code": "x"})))
        self.assertNotIn(acknowledgement(client.bytes_received).payload, client.data_to_send())
        client.receive_data(session.send_command(encode_command("onStatus", 0, None, {"blob": "y" * 5000})))
        self.assertGreaterEqual(client.bytes_received - before, 3000)
        self.assertIn(acknowledgement(client.bytes_received).payload, client.data_to_send())

    def test_server_acknowledgement_is_an_event(self) -> None:
        client, server = self.started()
        client.receive_data(server.session.send_control(acknowledgement(777)))
        self.assertEqual(client.next_event(), Acknowledged(777))


class Play(SynchronousTestCase):
    def test_play_receives_media_and_stop(self) -> None:
        def play(c: Command) -> Reply:
            return [
                ("control", user_control(UserControlEvent.STREAM_BEGIN, c.stream_id)),
                ("command", on_status(c.stream_id, "status", "NetStream.Play.Reset", "")),
                ("command", on_status(c.stream_id, "status", "NetStream.Play.Start", "")),
                ("command", encode_data("|RtmpSampleAccess", True, True, stream_id=c.stream_id)),
            ]

        client = ClientSession(mode="play", app="live", tc_url="rtmp://h/live", stream_name="key")
        server = ScriptedServer({"connect": nginx_connect, "createStream": create_stream, "play": play})
        events = pump(client, server, client.initiate())
        self.assertEqual([type(e) for e in events[-2:]], [StatusReceived, StreamStarted])
        names = [c.name for c in server.commands]
        self.assertEqual(names, ["connect", "createStream", "play"])
        buffer = [e for e in server.received if getattr(e, "buffer_ms", None) is not None]
        self.assertEqual([(b.stream_id, b.buffer_ms) for b in buffer], [(1, 3000)])
        session = server.session
        data = session.send_command(encode_data("@setDataFrame", "onMetaData", {"w": 1.0}, stream_id=1))
        from rtmpd.core.chunks import encode_message

        data += encode_message(7, Message(VIDEO, 10, 1, b"\x17\x01frame"), session.chunk_size)
        data += session.send_command(on_status(1, "status", "NetStream.Play.UnpublishNotify", ""))
        client.receive_data(data)
        got = []
        while (e := client.next_event()) is not None:
            got.append(e)
        self.assertIsInstance(got[0], MetadataReceived)
        self.assertEqual(got[0].values, {"w": 1.0})
        self.assertEqual(got[1], MediaReceived(Message(VIDEO, 10, 1, b"\x17\x01frame")))
        self.assertEqual(got[2], StreamStopped("NetStream.Play.UnpublishNotify"))

    def test_play_not_found(self) -> None:
        def play(c: Command) -> Reply:
            return [("command", on_status(c.stream_id, "error", "NetStream.Play.StreamNotFound", "no"))]

        client = ClientSession(mode="play", app="live", tc_url="rtmp://h/live", stream_name="key")
        events = pump(
            client,
            ScriptedServer({"connect": nginx_connect, "createStream": create_stream, "play": play}),
            client.initiate(),
        )
        self.assertEqual(
            [(e.stage, e.code) for e in events if isinstance(e, Refused)],
            [("play", "NetStream.Play.StreamNotFound")],
        )


class Errors(SynchronousTestCase):
    def test_bad_s0_is_a_handshake_error(self) -> None:
        client = publisher()
        client.initiate()
        self.assertRaises(HandshakeError, client.receive_data, b"HTTP/1.1 400")
        self.assertRaises(LocalProtocolError, client.receive_data, b"x")

    def test_garbage_after_handshake_is_remote_error(self) -> None:
        client = publisher()
        server = ScriptedServer({})
        pump(client, server, client.initiate())
        # A command message that is not AMF: string marker with a length past the end.
        from rtmpd.core.chunks import encode_message

        bad = encode_message(3, Message(int(MessageType.COMMAND_AMF0), 0, 0, b"\x02\xff\xffabc"), 128)
        self.assertRaises(RemoteProtocolError, client.receive_data, bad)

    def test_bad_mode(self) -> None:
        self.assertRaises(LocalProtocolError, ClientSession, mode="x", app="a", tc_url="", stream_name="k")

    def test_any_split_gives_the_same_events(self) -> None:
        client = publisher()
        server = ScriptedServer(
            {"connect": nginx_connect, "createStream": create_stream, "publish": publish_start}
        )
        first = client.initiate()
        reply = server.receive(first)
        whole = publisher()
        whole.initiate()
        for size in (1, 7, 1537):
            c = publisher()
            c.initiate()
            for i in range(0, len(reply), size):
                c.receive_data(reply[i : i + size])
            self.assertEqual(c.state, ClientState.CONNECTING)
        whole.receive_data(reply)
        self.assertEqual(whole.state, ClientState.CONNECTING)


class ChunkSize(SynchronousTestCase):
    def test_set_chunk_size_precedes_connect(self) -> None:
        client = publisher(chunk_size=1000)
        server = ScriptedServer({})
        pump(client, server, client.initiate())
        self.assertEqual(server.session.peer_chunk_size, 1000)
        self.assertEqual(client.chunk_size, 1000)
        self.assertEqual([c.name for c in server.commands], ["connect"])

    def test_server_chunk_size_applies_to_reading(self) -> None:
        client = publisher()
        server = ScriptedServer({"connect": nginx_connect})
        pump(client, server, client.initiate())
        self.assertEqual(client.peer_chunk_size, 4096)
