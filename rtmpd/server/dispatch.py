"""Command dispatch: declared arguments, error maps and answers, in the manner of Twisted AMP.

A responder is a method ``rtmp_<name>`` of the responder object. The
``responder`` decorator declares, as an AMP ``Command`` does:

- its ``arguments``: ``(name, Argument)`` pairs, matched in order against the
  command's arguments after the command object (``command_object`` declares
  that one). The dispatcher checks them once and passes them as keyword
  arguments; a missing, ill-typed, non-finite or overlong value is a
  ``BadArgument``. Arguments past the declared ones are ignored (clients
  send values the server has no use for, such as ``play``'s start time).
- its ``errors`` and ``fatal_errors``: exception class -> status code. The
  most specific class named answers; after a fatal one the connection is
  closed.

The responder is called as ``method(command, **arguments)`` and returns
``None`` (no reply), a ``Reply`` (sent as ``_result``) or a Deferred of
either. Failures, raised or from the Deferred, are answered by the map; an
unmapped ``CommandError`` answers ``NetConnection.Call.Failed``; anything
else is logged with its traceback and answered ``NetConnection.Call.Failed``;
in both cases the connection lives on. A ``RemoteProtocolError`` ends the
connection through ``conn.fail``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtmpd.core.amf_types import Undefined
from rtmpd.core.commands import Command, encode_command, on_status, status_info
from rtmpd.core.errors import BadArgument, CommandError, RemoteProtocolError, UnknownCommand
from rtmpd.core.messages import Message

#: The longest string argument accepted (characters): room for a stream key
#: and a long query string (tokens), far short of what would bloat a log line.
MAX_STRING_ARGUMENT = 4096

#: The status code of a refusal that no error map names.
CALL_FAILED = "NetConnection.Call.Failed"

_REQUIRED: Any = object()


def _amf_kind(value: Any) -> str:
    """The AMF name of ``value``'s type, for refusals (never the value: it may be huge or hostile)."""
    if value is None or isinstance(value, Undefined):
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


class Argument:
    """How one argument is checked and turned into a Python value.

    Without ``default`` the argument is required; AMF ``null`` and
    ``undefined`` count as absent.
    """

    #: What the argument must be, as a refusal says it ("must be a string").
    expected = "a value"

    def __init__(self, *, default: Any = _REQUIRED) -> None:
        self.default = default

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def parse(self, value: Any) -> Any:
        """``value`` (present, not null) as the responder gets it; raises ValueError saying what is wrong."""
        raise NotImplementedError

    def _mismatch(self, value: Any) -> ValueError:
        return ValueError(f"must be {self.expected}, not {_amf_kind(value)}")


class String(Argument):
    """A string of at most ``max_length`` characters."""

    expected = "a string"

    def __init__(self, *, max_length: int = MAX_STRING_ARGUMENT, default: Any = _REQUIRED) -> None:
        super().__init__(default=default)
        self.max_length = max_length

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._mismatch(value)
        if len(value) > self.max_length:
            raise ValueError(f"is longer than {self.max_length} characters")
        return value


class Number(Argument):
    """A finite number (AMF has only doubles), as a float."""

    expected = "a number"

    def parse(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._mismatch(value)
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
        return float(value)


class Integer(Number):
    """A finite, integral number within ``minimum..maximum``, as an int (a stream id, a count)."""

    expected = "an integer"

    def __init__(self, *, minimum: int = 0, maximum: int = 2**32 - 1, default: Any = _REQUIRED) -> None:
        super().__init__(default=default)
        self.minimum, self.maximum = minimum, maximum

    def parse(self, value: Any) -> int:
        number = super().parse(value)
        if not number.is_integer():
            raise ValueError("is not an integer")
        if not self.minimum <= number <= self.maximum:
            raise ValueError(f"is outside {self.minimum}..{self.maximum}")
        return int(number)


class Boolean(Argument):
    """A boolean; a finite number counts as its truth value (some clients send 0 and 1)."""

    expected = "a boolean"

    def parse(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and math.isfinite(value):
            return bool(value)
        raise self._mismatch(value)


class Object(Argument):
    """An AMF object or associative array, as a dict."""

    expected = "an object"

    def parse(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise self._mismatch(value)
        return value


ErrorMap = Mapping[type[BaseException], str]
_F = TypeVar("_F", bound=Callable[..., Any])
_DECLARATION_ATTRIBUTE = "rtmp_declaration"


@dataclass(frozen=True)
class Declaration:
    """What a responder takes and how its refusals are answered (see the module docstring)."""

    arguments: tuple[tuple[str, Argument], ...] = ()
    command_object: tuple[str, Argument] | None = None
    errors: ErrorMap = field(default_factory=dict)
    fatal_errors: ErrorMap = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = set(self.errors) & set(self.fatal_errors)
        if both:
            raise ValueError(f"errors both fatal and not: {sorted(t.__name__ for t in both)}")

    def parse(self, command: Command) -> dict[str, Any]:
        """The declared arguments of ``command`` as keyword arguments. Raises BadArgument."""
        values: dict[str, Any] = {}
        if self.command_object is not None:
            name, kind = self.command_object
            values[name] = self._parse_one(command.name, name, kind, command.command_object)
        args = command.args
        for i, (name, kind) in enumerate(self.arguments):
            values[name] = self._parse_one(command.name, name, kind, args[i] if i < len(args) else None)
        return values

    @staticmethod
    def _parse_one(command: str, name: str, kind: Argument, value: Any) -> Any:
        if value is None or isinstance(value, Undefined):
            if kind.required:
                raise BadArgument(command, name, "is missing")
            return kind.default
        try:
            return kind.parse(value)
        except ValueError as e:
            raise BadArgument(command, name, str(e)) from None

    def __call__(self, method: _F) -> _F:
        """Attach this declaration to ``method`` (a decorator); the method itself is returned."""
        setattr(method, _DECLARATION_ATTRIBUTE, self)
        return method

    def answer_for(self, error: BaseException) -> tuple[str, bool] | None:
        """``(status code, fatal)`` for the most specific class of ``error`` that the maps name, or None."""
        for cls in type(error).__mro__:
            if cls in self.fatal_errors:
                return self.fatal_errors[cls], True
            if cls in self.errors:
                return self.errors[cls], False
        return None


#: The declaration of a responder that declares nothing: no arguments, no map.
UNDECLARED = Declaration()


def responder(
    *,
    arguments: Iterable[tuple[str, Argument]] = (),
    command_object: tuple[str, Argument] | None = None,
    errors: ErrorMap | None = None,
    fatal_errors: ErrorMap | None = None,
) -> Declaration:
    """Declare a responder's arguments and error maps: ``@responder(arguments=[...], errors={...})``."""
    return Declaration(tuple(arguments), command_object, dict(errors or {}), dict(fatal_errors or {}))


def declaration_of(method: Callable[..., Any]) -> Declaration:
    """The declaration of a responder method (``UNDECLARED`` for a plain function)."""
    return getattr(method, _DECLARATION_ATTRIBUTE, UNDECLARED)


class Reply:
    """The values of a ``_result``: usually a properties object and an info object.

    Sent only when the command carries a transaction id (a client that sends
    0 expects no answer).
    """

    __slots__ = ("values",)

    def __init__(self, *values: Any) -> None:
        self.values = values


class Connection(Protocol):
    """What the dispatcher needs from a connection."""

    conn_id: str

    def send_command(self, message: Message) -> None: ...
    def fail(self, error: RemoteProtocolError) -> None: ...
    def close(self, reason: str) -> None: ...


class Dispatcher:
    """Runs the responder of each command of one connection and answers it.

    Promises: every command is answered as its declaration says (``_result``
    for a ``Reply``, the mapped or generic status code for a failure, as
    ``onStatus`` on the command's stream or ``_error`` for connection
    commands); an unexpected exception is logged once with its traceback and
    never ends the connection; the Deferred ``dispatch`` returns never fails.
    Unknown command names go to the responder's ``rtmp_unknown``.
    """

    log = Logger()

    def __init__(self, responder: object, connection: Connection) -> None:
        self._responder = responder
        self._connection = connection

    def _method(self, name: str) -> Callable[..., Any]:
        method = getattr(self._responder, "rtmp_" + name, None) if name.isidentifier() else None
        return method if method is not None else self._responder.rtmp_unknown  # type: ignore[attr-defined]

    def dispatch(self, command: Command) -> Deferred:
        """Run the responder for ``command`` and answer it; the Deferred never fails."""
        method = self._method(command.name)
        declaration = declaration_of(method)
        d = maybeDeferred(lambda: method(command, **declaration.parse(command)))
        d.addCallbacks(
            self._answer, self._failed, callbackArgs=(command,), errbackArgs=(command, declaration)
        )
        d.addErrback(self._answer_failed, command)
        return d

    def _answer(self, result: Any, command: Command) -> None:
        if isinstance(result, Reply) and command.transaction_id:
            self._connection.send_command(encode_command("_result", command.transaction_id, *result.values))

    def _failed(self, failure: Failure, command: Command, declaration: Declaration) -> None:
        conn = self._connection
        if failure.check(RemoteProtocolError):
            conn.fail(failure.value)
            return
        error = failure.value
        answer = declaration.answer_for(error)
        if answer is None and isinstance(error, CommandError):
            answer = (CALL_FAILED, False)
        if answer is None:
            self.log.failure(
                "Command failed unexpectedly", failure, conn_id=conn.conn_id, command=command.name
            )
            code, fatal, description = CALL_FAILED, False, "internal error"
        else:
            code, fatal = answer
            description = error.description if isinstance(error, CommandError) else str(error)
            level = "warn" if isinstance(error, UnknownCommand) else "info"
            getattr(self.log, level)(
                "Command refused", conn_id=conn.conn_id, command=command.name, code=code, reason=description
            )
        self._send_error(command, code, description)
        if fatal:
            conn.close(f"{command.name} refused: {code}")

    def _send_error(self, command: Command, code: str, description: str) -> None:
        conn = self._connection
        if command.stream_id:
            # NetStream commands are answered on their stream, as players expect.
            conn.send_command(on_status(command.stream_id, "error", code, description))
        else:
            info = status_info("error", code, description)
            conn.send_command(encode_command("_error", command.transaction_id, None, info))

    def _answer_failed(self, failure: Failure, command: Command) -> None:
        # Sending the answer itself failed (a bug, or a connection torn down
        # under us): log it here so that the Deferred never fails.
        self.log.failure(
            "Answering a command failed", failure, conn_id=self._connection.conn_id, command=command.name
        )
