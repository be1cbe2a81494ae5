"""How ``rtmpd.core.client.ClientSession`` reads the server's answers: results, errors, statuses.

Rule 3 and 4 of that module live here. ``_result``/``_error`` are matched
to our calls by transaction id; ``onStatus`` by code and by the state the
session is in, so an answer that comes in an unusual order (``onStatus``
for ``connect``, ``_result`` to ``publish`` before or after the status)
still moves the session on, and anything else becomes a ``StatusReceived``.
"""

from __future__ import annotations

from typing import Any

from rtmpd.core.client_events import (
    ClientEvent,
    ClientState,
    Connected,
    Refused,
    StatusReceived,
    StreamStarted,
    StreamStopped,
)
from rtmpd.core.commands import Command

__all__ = ["CommandAnswers"]


def _info(command: Command) -> Any:
    """The info object of a status command: the first dict among its arguments, else its first argument."""
    for value in command.args:
        if isinstance(value, dict):
            return value
    return command.args[0] if command.args else command.command_object


def _field(info: Any, name: str) -> str:
    if isinstance(info, dict):
        value = info.get(name)
        return value if isinstance(value, str) else ""
    return ""


class CommandAnswers:
    """The part of ``ClientSession`` that acts on commands from the server (a mixin, not used alone)."""

    mode: str
    state: ClientState
    stream_id: int
    _calls: dict[float, str]
    _events: list[ClientEvent]
    _stream_started: bool

    def _start_stream(self) -> None:
        raise NotImplementedError

    def _stream_created(self, stream_id: int) -> None:
        raise NotImplementedError

    def _command_received(self, command: Command) -> None:
        name = command.name
        if name in ("_result", "_error"):
            call = self._calls.pop(command.transaction_id, None)
            if call is None:
                self._status(command)
            elif name == "_error":
                self._refused(call, _info(command))
            else:
                self._result(call, command)
        elif name == "onStatus":
            self._on_status(command)
        else:
            # onFCPublish, onBWDone, onFCSubscribe, |RtmpSampleAccess as a command...
            self._status(command)

    def _status(self, command: Command) -> None:
        info = _info(command)
        self._events.append(StatusReceived(command.name, _field(info, "code"), info, command.stream_id))

    def _refused(self, stage: str, info: Any) -> None:
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.CLOSED
        self._events.append(Refused(stage, _field(info, "code"), _field(info, "description"), info))

    def _result(self, call: str, command: Command) -> None:
        if call == "connect":
            properties = command.command_object if isinstance(command.command_object, dict) else {}
            info = _info(command)
            info = info if isinstance(info, dict) else {}
            code = _field(info, "code")
            if code and code != "NetConnection.Connect.Success":
                self._refused("connect", info)
                return
            self._events.append(Connected(properties, info))
            self._start_stream()
        elif call == "createStream":
            stream_id = command.args[0] if command.args else None
            if (
                isinstance(stream_id, bool)
                or not isinstance(stream_id, (int, float))
                or not (0 < stream_id < 2**32)
            ):
                self._refused("createStream", {"code": "", "description": f"bad stream id {stream_id!r}"})
                return
            self._stream_created(int(stream_id))
        # A _result to publish/play carries nothing: the onStatus says whether the stream started.

    def _on_status(self, command: Command) -> None:
        info = _info(command)
        code, level = _field(info, "code"), _field(info, "level")
        state = self.state
        if state is ClientState.CONNECTING and code.startswith("NetConnection.Connect."):
            # A few servers answer connect with onStatus rather than _result.
            for txn, call in list(self._calls.items()):
                if call == "connect":
                    del self._calls[txn]
            if code == "NetConnection.Connect.Success":
                self._events.append(Connected({}, info if isinstance(info, dict) else {}))
                self._start_stream()
            else:
                self._refused("connect", info)
            return
        if state is ClientState.STARTING:
            start = "NetStream.Publish.Start" if self.mode == "publish" else "NetStream.Play.Start"
            if code == start:
                self.state = ClientState.ACTIVE
                self._stream_started = True
                self._events.append(StreamStarted(self.stream_id, info if isinstance(info, dict) else {}))
                return
            if level == "error" or code in ("NetStream.Publish.BadName", "NetStream.Play.StreamNotFound"):
                self._refused(self.mode, info)
                return
        if (
            state is ClientState.ACTIVE
            and self.mode == "play"
            and code
            in (
                "NetStream.Play.UnpublishNotify",
                "NetStream.Play.Stop",
            )
        ):
            self._events.append(StreamStopped(code))
            return
        self._events.append(StatusReceived(command.name, code, info, command.stream_id))
