"""Log observers for operators: flat JSON lines or readable text.

Twisted's own ``jsonFileLogObserver`` writes RFC 7464 records of whole event
dicts; log shippers want one flat object per line, so this module formats
``time``, ``level``, ``msg`` and then the event's own keyword fields.

Field values often hold what a client sent (flashVer, stream names, command
names), so every line is bounded and cannot be forged: each string in a
field (at any depth) is cut to ``MAX_FIELD_CHARS`` and, in the text format,
its control characters are escaped (``rtmpd.core.text.escape_controls``:
a newline cannot start a fake line, an ANSI escape cannot reach a
terminal); containers show at most ``MAX_ITEMS`` items, ``MAX_DEPTH`` deep.
The JSON format escapes control characters as JSON does, and C1 controls too.
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

from rtmpd.core.text import escape_controls

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
FORMATS = ("text", "json")


#: Keys twisted.python.log (legacy) events carry besides their message.
_LEGACY_KEYS = frozenset({"format", "message", "system", "time", "isError", "why", "failure"})


def _fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event's keyword fields: everything Twisted did not add itself."""
    return {k: v for k, v in event.items() if not k.startswith("log_") and k not in _LEGACY_KEYS}


#: Characters kept of each string in a field; items kept of each list or dict; levels kept.
MAX_FIELD_CHARS = 1024
MAX_ITEMS = 64
MAX_DEPTH = 6
#: Characters kept of a formatted message (fields interpolated into it included).
MAX_MESSAGE_CHARS = 4096


def _cut(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    if len(text) > limit:
        return f"{text[:limit]}…(+{len(text) - limit} chars)"
    return text


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A bounded plain value for a log record: cut strings, at most MAX_ITEMS items, MAX_DEPTH levels."""
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…(+{len(value) - MAX_ITEMS} items)")
        return items
    if isinstance(value, dict):
        out = {}
        for i, (k, v) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["…"] = f"+{len(value) - MAX_ITEMS} items"
                break
            out[_cut(str(k), 256)] = _jsonable(v, depth + 1)
        return out
    if isinstance(value, bytes):
        return _cut(value[: MAX_FIELD_CHARS * 4].decode("utf-8", "replace"))
    try:
        return _cut(repr(value))
    except Exception:  # a broken __repr__ must not lose the line
        return f"<{type(value).__name__}>"


def _text_value(value: Any) -> str:
    """A field value as the text format shows it: bounded, with control characters escaped."""
    value = _jsonable(value)
    return escape_controls(value if isinstance(value, str) else str(value))


# JSON escapes C0 controls itself; C1 controls (0x9b is a one-byte CSI) and the line
# separators pass through ``ensure_ascii=False``, so they are escaped here.
_JSON_EXTRA = str.maketrans({c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029)})


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
    """One flat JSON object: time, level, msg, then the event's fields (bounded, see the module docstring)."""
    record: dict[str, Any] = {
        "time": _time(event),
        "level": _level(event),
        "msg": _cut(_message(event), MAX_MESSAGE_CHARS),
    }
    if event.get("log_namespace"):
        record["logger"] = event["log_namespace"]
    for key, value in _fields(event).items():
        record.setdefault(key, _jsonable(value))
    tb = _traceback(event)
    if tb:
        record["traceback"] = tb
    return json.dumps(record, ensure_ascii=False, default=repr).translate(_JSON_EXTRA) + "\n"


def format_text(event: dict[str, Any]) -> str:
    """``time [level] msg key=value ...`` on one line (plus a traceback if any).

    Every value, and the message, has its control characters escaped: one event is one line.
    """
    fields = " ".join(f"{escape_controls(_cut(k, 256))}={_text_value(v)}" for k, v in _fields(event).items())
    message = escape_controls(_cut(_message(event), MAX_MESSAGE_CHARS))
    line = f"{_time(event)} [{_level(event)}] {message}"
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
