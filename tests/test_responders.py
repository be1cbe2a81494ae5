"""Responders: declared arguments, AMP-style error maps, and what the client is answered.

The ``Dispatcher`` is driven with a fake connection for its promises; the
server's responders are driven end to end over ``MemoryServer`` with odd
and hostile argument values.
"""

from __future__ import annotations

import ast
import inspect
import math
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.core.amf_types import UNDEFINED, ECMAArray
from rtmpd.core.commands import Command, decode_command, encode_command
from rtmpd.core.errors import (
    BadArgument,
    BadStreamName,
    CommandError,
    ConnectRejected,
    InvalidApp,
    MalformedCommand,
    UnknownCommand,
)
from rtmpd.core.messages import Message
from rtmpd.relay.names import IllegalName
from rtmpd.server import responders
from rtmpd.server.dispatch import (
    MAX_STRING_ARGUMENT,
    UNDECLARED,
    Boolean,
    Dispatcher,
    Integer,
    Number,
    Object,
    Reply,
    String,
    declaration_of,
    responder,
)
from rtmpd.server.responders import ServerCommands
from rtmpd.testing import CommandFailed, MemoryServer, RTMPTestClient, result_of, status_code

CALL_FAILED = "NetConnection.Call.Failed"
BAD_NAME = "NetStream.Publish.BadName"
NOT_FOUND = "NetStream.Play.StreamNotFound"


def refusals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_format") == "Command refused"]


def unexpected(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_format") == "Command failed unexpectedly"]


# -- argument declarations, without a connection ------------------------------------------------


class ArgumentTests(SynchronousTestCase):
    def parse(self, kind, *args: Any, command_object: Any = None) -> dict[str, Any]:
        declaration = responder(arguments=[("value", kind)])
        return declaration.parse(Command("test", 1.0, command_object, args))

    def refused(self, kind, *args: Any) -> BadArgument:
        return self.assertRaises(BadArgument, self.parse, kind, *args)

    def test_absent_null_and_undefined_are_missing_or_the_default(self) -> None:
        for args in ((), (None,), (UNDEFINED,)):
            error = self.refused(String(), *args)
            self.assertEqual(error.description, "test: argument 'value' is missing")
            self.assertEqual(error.argument, "value")
            self.assertEqual(self.parse(String(default="live"), *args), {"value": "live"})
        self.assertIsInstance(self.refused(String()), CommandError)

    def test_string(self) -> None:
        self.assertEqual(self.parse(String(), "abc"), {"value": "abc"})
        self.assertEqual(self.parse(String(), "x" * MAX_STRING_ARGUMENT)["value"], "x" * MAX_STRING_ARGUMENT)
        error = self.refused(String(), "x" * (MAX_STRING_ARGUMENT + 1))
        self.assertEqual(
            error.description, f"test: argument 'value' is longer than {MAX_STRING_ARGUMENT} characters"
        )
        self.assertIn("longer than 3", self.refused(String(max_length=3), "abcd").description)
        for value, kind in ((123.0, "number"), (True, "boolean"), ({}, "object"), ([1], "array")):
            error = self.refused(String(), value)
            self.assertEqual(error.description, f"test: argument 'value' must be a string, not {kind}")

    def test_numbers_must_be_finite(self) -> None:
        self.assertEqual(self.parse(Number(), 2), {"value": 2.0})
        self.assertEqual(self.parse(Number(), -1.5), {"value": -1.5})
        for value in (math.nan, math.inf, -math.inf):
            self.assertIn("not a finite number", self.refused(Number(), value).description)
        for value in ("1", True, {}):
            self.assertIn("must be a number", self.refused(Number(), value).description)

    def test_integer(self) -> None:
        parsed = self.parse(Integer(), 7.0)["value"]
        self.assertEqual((parsed, type(parsed)), (7, int))
        self.assertIn("not an integer", self.refused(Integer(), 1.5).description)
        self.assertIn("outside 0..4294967295", self.refused(Integer(), -1.0).description)
        self.assertIn("outside 0..4294967295", self.refused(Integer(), 2.0**32).description)
        self.assertIn("not a finite number", self.refused(Integer(), math.nan).description)
        self.assertIn("must be an integer, not string", self.refused(Integer(), "x").description)

    def test_boolean(self) -> None:
        self.assertEqual(self.parse(Boolean(), False), {"value": False})
        self.assertEqual(self.parse(Boolean(), 0.0), {"value": False})
        self.assertEqual(self.parse(Boolean(), 1.0), {"value": True})
        self.assertIn("must be a boolean, not string", self.refused(Boolean(), "yes").description)
        self.assertIn("must be a boolean, not number", self.refused(Boolean(), math.nan).description)

    def test_object(self) -> None:
        self.assertEqual(self.parse(Object(), {"a": 1.0}), {"value": {"a": 1.0}})
        self.assertEqual(self.parse(Object(), ECMAArray(a=1.0)), {"value": {"a": 1.0}})
        self.assertIn("must be an object, not string", self.refused(Object(), "x").description)

    def test_positions_command_object_and_extra_arguments(self) -> None:
        declaration = responder(
            command_object=("params", Object()),
            arguments=[("name", String()), ("kind", String(default="live"))],
        )
        parsed = declaration.parse(Command("publish", 1.0, {"app": "x"}, ("key", None, "ignored", math.nan)))
        self.assertEqual(parsed, {"params": {"app": "x"}, "name": "key", "kind": "live"})
        error = self.assertRaises(BadArgument, declaration.parse, Command("publish", 1.0, None, ("key",)))
        self.assertEqual(error.argument, "params")
        # Values are never echoed in a refusal: only their AMF type.
        error = self.assertRaises(
            BadArgument, declaration.parse, Command("publish", 1.0, {}, ("key", "\nforged line" * 1000))
        )
        self.assertNotIn("forged", error.description)

    def test_error_maps(self) -> None:
        declaration = responder(
            errors={CommandError: "A", BadStreamName: "B"},
            fatal_errors={IllegalName: "C"},
        )
        self.assertEqual(declaration.answer_for(BadStreamName("x")), ("B", False))
        self.assertEqual(declaration.answer_for(UnknownCommand("x")), ("A", False))
        self.assertEqual(declaration.answer_for(IllegalName("x")), ("C", True))
        self.assertIsNone(declaration.answer_for(ValueError("x")))
        self.assertIsNone(UNDECLARED.answer_for(CommandError("x")))
        self.assertRaises(ValueError, responder, errors={IllegalName: "A"}, fatal_errors={IllegalName: "B"})

    def test_the_decorator_returns_the_method_and_plain_functions_are_undeclared(self) -> None:
        declaration = responder(arguments=[("name", String())])

        def method(command: Command, name: str) -> None:
            pass

        self.assertIs(declaration(method), method)
        self.assertIs(declaration_of(method), declaration)
        self.assertIs(declaration_of(lambda command: None), UNDECLARED)


# -- the dispatcher, with a fake connection ---------------------------------------------------


class FakeConnection:
    conn_id = "c1"

    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.closed: list[str] = []
        self.failed: list[Exception] = []

    def send_command(self, message: Message) -> None:
        self.sent.append(decode_command(message))

    def fail(self, error: Exception) -> None:
        self.failed.append(error)

    def close(self, reason: str) -> None:
        self.closed.append(reason)


class Responders:
    """Responders whose outcome each test chooses through ``self.outcome``."""

    outcome: Any = None

    @responder(
        arguments=[("name", String()), ("count", Integer(default=1))],
        errors={BadStreamName: "Test.Taken"},
        fatal_errors={IllegalName: "Test.Illegal"},
    )
    def rtmp_act(self, command: Command, name: str, count: int) -> Any:
        self.seen = (name, count)
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def rtmp_unknown(self, command: Command) -> None:
        raise UnknownCommand(f"unknown command {command.name!r}")


class DispatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.responders = Responders()
        self.conn = FakeConnection()
        self.dispatcher = Dispatcher(self.responders, self.conn)

    def dispatch(self, *args: Any, name: str = "act", txn: float = 5.0, stream_id: int = 0) -> list[dict]:
        """Dispatch; the dispatch Deferred must have fired with None. The events logged."""
        with capturedLogs() as events:
            d = self.dispatcher.dispatch(Command(name, txn, None, args, stream_id))
        self.assertIsNone(self.successResultOf(d))
        return events

    def answer(self) -> Command:
        [answer] = self.conn.sent
        return answer

    def test_arguments_reach_the_responder_and_a_reply_is_the_result(self) -> None:
        self.responders.outcome = Reply(None, 1.0)
        self.dispatch("key", 3.0)
        self.assertEqual(self.responders.seen, ("key", 3))
        self.assertEqual(self.answer(), Command("_result", 5.0, None, (1.0,)))

    def test_no_result_without_a_transaction_id(self) -> None:
        self.responders.outcome = Reply(None)
        self.dispatch("key", txn=0.0)
        self.assertEqual(self.conn.sent, [])

    def test_a_bad_argument_never_reaches_the_responder(self) -> None:
        events = self.dispatch("key", math.nan)
        self.assertFalse(hasattr(self.responders, "seen"))
        answer = self.answer()
        self.assertEqual((answer.name, answer.transaction_id), ("_error", 5.0))
        self.assertEqual(answer.args[0]["code"], CALL_FAILED)
        self.assertEqual(answer.args[0]["description"], "act: argument 'count' is not a finite number")
        [refused] = refusals(events)
        self.assertEqual(refused["code"], CALL_FAILED)
        self.assertEqual(self.conn.closed, [])

    def test_mapped_errors_raised_or_from_a_deferred(self) -> None:
        cases = [
            (BadStreamName("taken"), "Test.Taken", []),
            (IllegalName("illegal"), "Test.Illegal", ["act refused: Test.Illegal"]),
        ]
        for error, code, closed in cases:
            for outcome in (error, fail(error)):
                self.conn.sent, self.conn.closed = [], []
                self.responders.outcome = outcome
                events = self.dispatch("key", stream_id=1)
                answer = self.answer()
                self.assertEqual((answer.name, answer.stream_id), ("onStatus", 1))
                self.assertEqual(answer.args[0]["level"], "error")
                self.assertEqual(answer.args[0]["code"], code)
                self.assertEqual(answer.args[0]["description"], str(error))
                self.assertEqual(self.conn.closed, closed)
                self.assertEqual([e["code"] for e in refusals(events)], [code])
                self.assertEqual(unexpected(events), [])

    def test_a_deferred_is_answered_when_it_fires(self) -> None:
        pending: Deferred = Deferred()
        self.responders.outcome = pending
        d = self.dispatcher.dispatch(Command("act", 5.0, None, ("key",)))
        self.assertNoResult(d)
        self.assertEqual(self.conn.sent, [])
        pending.errback(BadStreamName("taken later"))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.answer().args[0]["code"], "Test.Taken")

    def test_unmapped_command_error_is_call_failed_and_the_connection_lives(self) -> None:
        for outcome in (ConnectRejected("not here"), fail(ConnectRejected("not here"))):
            self.conn.sent = []
            self.responders.outcome = outcome
            events = self.dispatch("key")
            self.assertEqual(self.answer().args[0]["code"], CALL_FAILED)
            self.assertEqual(self.answer().args[0]["description"], "not here")
            self.assertEqual([e["log_level"].name for e in refusals(events)], ["info"])
            self.assertEqual(self.conn.closed, [])

    def test_unexpected_exception_is_logged_once_and_answered(self) -> None:
        for outcome in (ZeroDivisionError("boom"), fail(ZeroDivisionError("boom"))):
            self.conn.sent = []
            self.responders.outcome = outcome
            events = self.dispatch("key")
            [logged] = unexpected(events)
            self.assertTrue(logged["log_failure"].check(ZeroDivisionError))
            self.assertEqual((logged["conn_id"], logged["command"]), ("c1", "act"))
            self.assertEqual(refusals(events), [])
            self.assertEqual(self.answer().args[0]["code"], CALL_FAILED)
            self.assertEqual(self.answer().args[0]["description"], "internal error")
            self.assertEqual(self.conn.closed, [])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_a_protocol_error_fails_the_connection(self) -> None:
        error = MalformedCommand("bad")
        self.responders.outcome = fail(error)
        self.dispatch("key")
        self.assertEqual(self.conn.failed, [error])
        self.assertEqual(self.conn.sent, [])

    def test_unknown_and_odd_names_go_to_rtmp_unknown(self) -> None:
        for name in ("nope", "not an identifier", "__class__"):
            self.conn.sent = []
            events = self.dispatch(name=name)
            self.assertEqual(self.answer().args[0]["code"], CALL_FAILED)
            [refused] = refusals(events)
            self.assertEqual(refused["log_level"].name, "warn")

    def test_a_failing_answer_is_logged_and_the_deferred_does_not_fail(self) -> None:
        def broken(message: Message) -> None:
            raise OSError("gone")

        self.conn.send_command = broken  # type: ignore[method-assign]
        self.responders.outcome = Reply(None)
        events = self.dispatch("key")
        self.assertEqual(
            [e["log_failure"].type for e in events if e["log_format"] == "Answering a command failed"],
            [OSError],
        )
        self.flushLoggedErrors(OSError)


# -- the server's responders over an in-memory connection ------------------------------------------


class ServerCommandsDeclarationTests(SynchronousTestCase):
    def test_every_responder_is_declared(self) -> None:
        names = [n for n in dir(ServerCommands) if n.startswith("rtmp_") and n != "rtmp_unknown"]
        self.assertIn("rtmp_publish", names)
        undeclared = [n for n in names if declaration_of(getattr(ServerCommands, n)) is UNDECLARED]
        self.assertEqual(undeclared, [])

    def test_no_responder_reads_the_raw_arguments(self) -> None:
        tree = ast.parse(inspect.getsource(responders))
        raw = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("args", "command_object")
        ]
        self.assertEqual(raw, [])


class ServerResponderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = MemoryServer()

    def session(self) -> tuple[RTMPTestClient, int]:
        return self.server.session()

    def call_refused(self, client: RTMPTestClient, name: str, *args: Any, obj: Any = None) -> dict:
        """``name`` as a connection command: the info of its ``_error``."""
        d = client.call(name, obj, *args)
        self.server.flush()
        return self.failureResultOf(d, CommandFailed).value.info

    def on_stream(self, client: RTMPTestClient, sid: int, name: str, *args: Any) -> Deferred:
        """Send ``name`` on stream ``sid``; fires with the first onStatus info on that stream."""
        d = client.wait_for(
            lambda item: isinstance(item, Command) and item.name == "onStatus" and item.stream_id == sid
        )
        client.send(8, encode_command(name, 0, None, *args, stream_id=sid))
        self.server.flush()
        return d.addCallback(lambda command: command.args[0])

    def assertLives(self, client: RTMPTestClient) -> None:
        self.assertTrue(client.connected_transport)
        d = client.create_stream()
        self.server.flush()
        self.assertIsInstance(result_of(d), int)

    def assertClosed(self, client: RTMPTestClient) -> None:
        self.server.flush()
        self.assertFalse(client.connected_transport)

    def test_connection_commands_with_odd_arguments_are_refused_and_the_connection_lives(self) -> None:
        cases = [
            ("FCUnpublish", ("",), "stream name is missing or not a string"),
            ("FCUnpublish", ("../x",), "'..' path segment"),
            ("deleteStream", (math.nan,), "argument 'stream_id' is not a finite number"),
            ("deleteStream", (math.inf,), "argument 'stream_id' is not a finite number"),
            ("deleteStream", ("x",), "argument 'stream_id' must be an integer, not string"),
            ("deleteStream", (1.5,), "argument 'stream_id' is not an integer"),
            ("deleteStream", (), "argument 'stream_id' is missing"),
            ("FCPublish", (123.0,), "argument 'name' must be a string, not number"),
            ("FCSubscribe", ({},), "argument 'name' must be a string, not object"),
            ("FCUnsubscribe", ("x" * (MAX_STRING_ARGUMENT + 1),), "longer than"),
        ]
        client, _ = self.session()
        for name, args, reason in cases:
            with capturedLogs() as events:
                info = self.call_refused(client, name, *args)
            self.assertEqual(info["code"], CALL_FAILED, name)
            self.assertIn(reason, info["description"])
            [refused] = refusals(events)
            self.assertEqual((refused["command"], refused["code"]), (name, CALL_FAILED))
            self.assertEqual(unexpected(events), [])
            self.assertLives(client)

    def test_well_formed_fc_commands_are_answered_as_before(self) -> None:
        client, sid = self.server.publisher("key")
        for name, event, code in (
            ("FCPublish", "onFCPublish", "NetStream.Publish.Start"),
            ("FCSubscribe", "onFCSubscribe", "NetStream.Play.Start"),
            ("FCUnsubscribe", "onFCUnsubscribe", "NetStream.Play.Stop"),
            ("FCUnpublish", "onFCUnpublish", "NetStream.Unpublish.Success"),
        ):
            answered = client.wait_for(lambda item, event=event: getattr(item, "name", None) == event)
            client.notify(name, "key")
            self.server.flush()
            info = result_of(answered).args[0]
            self.assertEqual((info["code"], info["description"]), (code, "key"))
        # FCUnpublish stopped the publication; the FC* notifications without a name say "".
        self.assertIsNone(self.server.registry.get("live/key"))
        answered = client.wait_for(lambda item: getattr(item, "name", None) == "onFCPublish")
        client.notify("FCPublish")
        self.server.flush()
        self.assertEqual(result_of(answered).args[0]["description"], "")

    def test_delete_stream_still_deletes(self) -> None:
        client, sid = self.server.publisher("key")
        client.notify("deleteStream", float(sid))
        client.notify("deleteStream", 99.0)
        self.server.flush()
        self.assertIsNone(self.server.registry.get("live/key"))
        self.assertEqual(client.server_protocol.net_streams, {})
        self.assertTrue(client.connected_transport)

    def test_publish_with_a_bad_name_is_bad_name_and_fatal(self) -> None:
        for args in ((123.0,), (), (None,), ("x" * (MAX_STRING_ARGUMENT + 1),), ("../x",), ("key", 1.0)):
            client, sid = self.session()
            with capturedLogs() as events:
                info = result_of(self.on_stream(client, sid, "publish", *args))
            self.assertEqual((info["level"], info["code"]), ("error", BAD_NAME), args)
            self.assertEqual([e["code"] for e in refusals(events)], [BAD_NAME])
            self.assertClosed(client)

    def test_publish_of_a_taken_key_is_bad_name_and_the_connection_lives(self) -> None:
        self.server.publisher("key")
        client, sid = self.session()
        info = result_of(self.on_stream(client, sid, "publish", "key", "live"))
        self.assertEqual(info["code"], BAD_NAME)
        self.assertLives(client)

    def test_play_without_a_good_name_is_stream_not_found_and_fatal(self) -> None:
        for name, args in (
            ("play", ()),
            ("play", (7.0,)),
            ("play", ("../x",)),
            ("play2", ()),
            ("play2", ("key",)),
            ("play2", ({"streamName": 1.0},)),
        ):
            client, sid = self.session()
            with capturedLogs() as events:
                info = result_of(self.on_stream(client, sid, name, *args))
            self.assertEqual((info["level"], info["code"]), ("error", NOT_FOUND), (name, args))
            self.assertEqual([e["command"] for e in refusals(events)], [name])
            self.assertClosed(client)

    def test_stream_commands_with_odd_flags_are_refused_on_their_stream(self) -> None:
        self.server.publisher("key")
        client, sid = self.server.player("key")
        for name, args in (("pause", ("yes",)), ("receiveAudio", ({},)), ("receiveVideo", (math.nan,))):
            info = result_of(self.on_stream(client, sid, name, *args))
            self.assertEqual((info["level"], info["code"]), ("error", CALL_FAILED), name)
            self.assertIn("must be a boolean", info["description"])
        self.assertLives(client)
        player = client.server_protocol.net_streams[sid].player
        client.notify("receiveAudio", False, stream_id=sid)
        client.notify("pause", 1.0, 0.0, stream_id=sid)
        self.server.flush()
        self.assertFalse(player.receive_audio)
        self.assertTrue(player.paused_by_client)

    def test_connect_without_an_object_or_to_a_bad_app_is_refused_and_closed(self) -> None:
        for obj, code in (
            (None, "NetConnection.Connect.Rejected"),
            ("live", "NetConnection.Connect.Rejected"),
            ({"app": "../etc"}, "NetConnection.Connect.InvalidApp"),
            ({}, "NetConnection.Connect.InvalidApp"),
        ):
            client, _ = self.server.connect_client()
            self.server.flush()
            info = self.call_refused(client, "connect", obj=obj)
            self.assertEqual(info["code"], code, obj)
            self.assertClosed(client)

    def test_second_connect_is_call_failed_and_the_connection_lives(self) -> None:
        client, _ = self.session()
        info = self.call_refused(client, "connect", obj={"app": "live"})
        self.assertEqual((info["code"], info["description"]), (CALL_FAILED, "already connected"))
        self.assertLives(client)

    def test_unexpected_exception_in_a_declared_responder(self) -> None:
        self.server.registry.subscribe = lambda key: 1 / 0
        client, sid = self.session()
        with capturedLogs() as events:
            info = result_of(self.on_stream(client, sid, "play", "key"))
        self.assertEqual((info["code"], info["description"]), (CALL_FAILED, "internal error"))
        [logged] = unexpected(events)
        self.assertTrue(logged["log_failure"].check(ZeroDivisionError))
        self.assertEqual(logged["command"], "play")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertLives(client)


class DeferredRefusalTests(SynchronousTestCase):
    """Access control will make responders wait on Deferreds: their failures are mapped like raised errors."""

    def setUp(self) -> None:
        self.server = MemoryServer()

    def defer(self, client: RTMPTestClient, name: str) -> Deferred:
        """Make ``rtmp_<name>`` wait for the returned Deferred, then run as usual; same declaration."""
        commands = client.server_protocol.commands
        original = getattr(commands, "rtmp_" + name)
        gate: Deferred = Deferred()

        def later(command: Command, **arguments: Any) -> Deferred:
            return gate.addCallback(lambda _: original(command, **arguments))

        setattr(commands, "rtmp_" + name, declaration_of(original)(later))
        return gate

    def stream_status(self, client: RTMPTestClient, sid: int) -> Deferred:
        return client.wait_for(
            lambda item: isinstance(item, Command) and item.name == "onStatus" and item.stream_id == sid
        )

    def start(self, name: str, *args: Any) -> tuple[RTMPTestClient, Deferred, Deferred]:
        client, sid = self.server.session()
        gate = self.defer(client, name)
        answered = self.stream_status(client, sid)
        client.send(8, encode_command(name, 0, None, *args, stream_id=sid))
        self.server.flush()
        self.assertNoResult(answered)
        return client, gate, answered

    def test_publish_refused_later_with_an_illegal_name(self) -> None:
        client, gate, answered = self.start("publish", "key", "live")
        with capturedLogs() as events:
            gate.errback(IllegalName("refused by access control"))
            self.server.flush()
        info = result_of(answered).args[0]
        self.assertEqual((info["code"], info["description"]), (BAD_NAME, "refused by access control"))
        self.assertEqual([e["code"] for e in refusals(events)], [BAD_NAME])
        self.assertFalse(client.connected_transport)
        self.assertIsNone(self.server.registry.get("live/key"))

    def test_publish_allowed_later_but_the_key_was_taken_meanwhile(self) -> None:
        client, gate, answered = self.start("publish", "key", "live")
        self.server.publisher("key")
        gate.callback(None)
        self.server.flush()
        self.assertEqual(status_code(result_of(answered)), BAD_NAME)
        self.assertTrue(client.connected_transport)

    def test_publish_allowed_later_is_published(self) -> None:
        client, gate, answered = self.start("publish", "key", "live")
        gate.callback(None)
        self.server.flush()
        self.assertEqual(status_code(result_of(answered)), "NetStream.Publish.Start")
        self.assertIsNotNone(self.server.registry.get("live/key"))

    def test_play_refused_later(self) -> None:
        client, gate, answered = self.start("play", "key")
        gate.errback(IllegalName("not for you"))
        self.server.flush()
        self.assertEqual(status_code(result_of(answered)), NOT_FOUND)
        self.assertFalse(client.connected_transport)

    def test_publish_failing_unexpectedly_later(self) -> None:
        client, gate, answered = self.start("publish", "key", "live")
        with capturedLogs() as events:
            gate.errback(RuntimeError("authoriser crashed"))
            self.server.flush()
        self.assertEqual(status_code(result_of(answered)), CALL_FAILED)
        self.assertEqual(len(unexpected(events)), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(client.connected_transport)

    def test_connect_refused_later(self) -> None:
        for error, code in (
            (ConnectRejected("bad token"), "NetConnection.Connect.Rejected"),
            (InvalidApp("no such app"), "NetConnection.Connect.InvalidApp"),
        ):
            client, _ = self.server.connect_client()
            gate = self.defer(client, "connect")
            self.server.flush()
            d = client.connect("live")
            self.server.flush()
            self.assertNoResult(d)
            gate.errback(error)
            self.server.flush()
            info = self.failureResultOf(d, CommandFailed).value.info
            self.assertEqual((info["code"], info["description"]), (code, error.description))
            self.assertFalse(client.connected_transport)
