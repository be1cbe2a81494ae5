"""Log observers for operators: flat JSON lines or readable text.

Twisted's own ``jsonFileLogObserver`` writes RFC 7464 records of whole event
dicts; log shippers want one flat object per line, so this module formats
``time``, ``level``, ``msg`` and then the event's own keyword fields.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from zope.interface import implementer

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
FORMATS = ("text", "json")


#: Keys twisted.python.log (legacy) events carry besides their message.
_LEGACY_KEYS = frozenset({"format", "message", "system", "time", "isError", "why", "failure"})


def _fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event's keyword fields: everything Twisted did not add itself."""
    return {k: v for k, v in event.items() if not k.startswith("log_") and k not in _LEGACY_KEYS}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def _time(event: dict[str, Any]) -> str:
    return datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(timespec="milliseconds")


def _level(event: dict[str, Any]) -> str:
    level = event.get("log_level", LogLevel.info)
    return "warn" if level == LogLevel.warn else level.name


def _message(event: dict[str, Any]) -> str:
    text = formatEvent(event) if event.get("log_format") is not None else ""
    if not text and "message" in event:
        # Legacy twisted.python.log events carry a tuple of strings instead of a format.
        text = " ".join(str(m) for m in event["message"])
    return text


def _traceback(event: dict[str, Any]) -> str | None:
    failure = event.get("log_failure")
    return failure.getTraceback() if failure is not None else None


def format_json(event: dict[str, Any]) -> str:
    """One flat JSON object: time, level, msg, then the event's fields."""
    record: dict[str, Any] = {"time": _time(event), "level": _level(event), "msg": _message(event)}
    if event.get("log_namespace"):
        record["logger"] = event["log_namespace"]
    for key, value in _fields(event).items():
        record.setdefault(key, _jsonable(value))
    tb = _traceback(event)
    if tb:
        record["traceback"] = tb
    return json.dumps(record, ensure_ascii=False, default=repr) + "\n"


def format_text(event: dict[str, Any]) -> str:
    """``time [level] msg key=value ...`` on one line (plus a traceback if any)."""
    fields = " ".join(f"{k}={_jsonable(v)}" for k, v in _fields(event).items())
    line = f"{_time(event)} [{_level(event)}] {_message(event)}"
    if fields:
        line += " " + fields
    tb = _traceback(event)
    return line + "\n" + (tb if tb else "")


@implementer(ILogObserver)
class LineLogObserver:
    """Writes each event as one formatted line to a text stream."""

    def __init__(self, stream: IO[str], formatter: Callable[[dict[str, Any]], str]) -> None:
        self._stream = stream
        self._format = formatter

    def __call__(self, event: dict[str, Any]) -> None:
        self._stream.write(self._format(event))
        self._stream.flush()


def make_observer(stream: IO[str], log_format: str, log_level: str) -> ILogObserver:
    """An observer filtering below ``log_level`` and writing ``log_format`` lines to ``stream``."""
    formatter = format_json if log_format == "json" else format_text
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[log_level])
    return FilteringLogObserver(LineLogObserver(stream, formatter), [predicate])


def default_format(stream: IO[str]) -> str:
    """Text on a terminal, JSON otherwise (as ``twist`` does)."""
    return "text" if stream.isatty() else "json"


# twistd's --logger takes a dotted name of a zero-argument factory, so the
# options parsed by our plugin are handed over through this module.
_settings: dict[str, Any] = {"format": None, "level": "info", "path": None}


def configure(log_format: str | None, log_level: str, path: str | None) -> None:
    _settings.update(format=log_format, level=log_level, path=path)


def observer_factory() -> ILogObserver:
    """The factory twistd's AppLogger calls (named by ``Options.postOptions``)."""
    path = _settings["path"]
    stream: IO[str] = sys.stdout if path in (None, "-") else open(path, "a", encoding="utf-8")  # noqa: SIM115
    log_format = _settings["format"] or default_format(stream)
    return make_observer(stream, log_format, _settings["level"])
