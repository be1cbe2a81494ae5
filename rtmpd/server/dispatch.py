"""Command dispatch: one ``rtmp_<name>`` method per command, in the manner of AMP responders.

A responder method takes the decoded ``Command`` and returns ``None`` (no
reply), a ``Reply`` (sent as ``_result``), or a Deferred of either. A
``CommandError`` is answered with its status code; anything unexpected is
logged with its traceback and answered with ``NetConnection.Call.Failed``.
The connection lives on unless the error is fatal or a protocol violation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtmpd.core.commands import Command, encode_command, on_status, status_info
from rtmpd.core.errors import CommandError, RemoteProtocolError, UnknownCommand
from rtmpd.core.messages import Message


class Reply:
    """The values of a ``_result``: usually a properties object and an info object."""

    __slots__ = ("values",)

    def __init__(self, *values: Any) -> None:
        self.values = values


class Connection(Protocol):
    conn_id: str

    def send_command(self, message: Message) -> None: ...
    def fail(self, error: RemoteProtocolError) -> None: ...
    def close(self, reason: str) -> None: ...


class Dispatcher:
    log = Logger()

    def __init__(self, responder: object, connection: Connection) -> None:
        self._responder = responder
        self._connection = connection

    def _method(self, name: str) -> Callable[[Command], Any]:
        method = getattr(self._responder, "rtmp_" + name, None) if name.isidentifier() else None
        return method if method is not None else self._responder.rtmp_unknown  # type: ignore[attr-defined]

    def dispatch(self, command: Command) -> Deferred:
        """Run the responder for ``command`` and answer it; the Deferred never fails."""
        d = maybeDeferred(self._method(command.name), command)
        d.addCallbacks(self._answer, self._failed, callbackArgs=(command,), errbackArgs=(command,))
        return d

    def _answer(self, result: Any, command: Command) -> None:
        if isinstance(result, Reply) and command.transaction_id:
            self._connection.send_command(encode_command("_result", command.transaction_id, *result.values))

    def _failed(self, failure: Failure, command: Command) -> None:
        conn = self._connection
        if failure.check(RemoteProtocolError):
            conn.fail(failure.value)
            return
        if failure.check(CommandError):
            error: CommandError = failure.value
            level = "warn" if isinstance(error, UnknownCommand) else "info"
            getattr(self.log, level)(
                "Command refused",
                conn_id=conn.conn_id,
                command=command.name,
                code=error.status_code,
                reason=error.description,
            )
        else:
            self.log.failure(
                "Command failed unexpectedly", failure, conn_id=conn.conn_id, command=command.name
            )
            error = CommandError("internal error")
        self._send_error(command, error)
        if error.fatal:
            conn.close(f"{command.name} refused: {error.status_code}")

    def _send_error(self, command: Command, error: CommandError) -> None:
        conn = self._connection
        if command.stream_id:
            # NetStream commands are answered on their stream, as players expect.
            conn.send_command(on_status(command.stream_id, "error", error.status_code, error.description))
        else:
            info = status_info("error", error.status_code, error.description)
            conn.send_command(encode_command("_error", command.transaction_id, None, info))
