"""Log lines for operators: one flat JSON object per line, or readable text, filtered by level."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rtmpd.logs import default_format, format_json, format_text, make_observer


def emit(observer, level: LogLevel, fmt: str, **fields) -> None:
    publisher = LogPublisher(observer)
    Logger(namespace="rtmpd.test", observer=publisher).emit(level, fmt, **fields)


class LogFormatTests(SynchronousTestCase):
    def test_json_is_one_flat_object_per_line(self) -> None:
        out = io.StringIO()
        observer = make_observer(out, "json", "info")
        emit(
            observer,
            LogLevel.info,
            "Subscriber added",
            stream_key="live/x",
            conn_id="c000007",
            total_subscribers=3,
        )
        emit(observer, LogLevel.warn, "Slow subscriber dropping frames", conn_id="c000008", dropped_frames=2)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first = json.loads(lines[0])
        self.assertEqual(list(first)[:3], ["time", "level", "msg"])
        self.assertEqual((first["level"], first["msg"]), ("info", "Subscriber added"))
        self.assertEqual(
            (first["stream_key"], first["conn_id"], first["total_subscribers"]), ("live/x", "c000007", 3)
        )
        self.assertEqual(json.loads(lines[1])["level"], "warn")
        self.assertFalse(any(key.startswith("log_") for key in first))

    def test_level_filter(self) -> None:
        out = io.StringIO()
        observer = make_observer(out, "json", "warn")
        emit(observer, LogLevel.info, "quiet")
        emit(observer, LogLevel.debug, "quieter")
        emit(observer, LogLevel.error, "loud")
        self.assertEqual([json.loads(line)["msg"] for line in out.getvalue().splitlines()], ["loud"])

    def test_text_line_carries_fields(self) -> None:
        event = {
            "log_format": "Connection closed",
            "log_level": LogLevel.info,
            "log_time": 0.0,
            "conn_id": "c000001",
            "bytes_in": 10,
        }
        self.assertEqual(
            format_text(event),
            "1970-01-01T00:00:00.000+00:00 [info] Connection closed conn_id=c000001 bytes_in=10\n",
        )

    def test_failure_becomes_a_traceback_field(self) -> None:
        failure = Failure(ZeroDivisionError("division by zero"))
        record = json.loads(
            format_json(
                {
                    "log_format": "Command failed unexpectedly",
                    "log_level": LogLevel.critical,
                    "log_time": 0.0,
                    "log_failure": failure,
                    "conn_id": "c1",
                }
            )
        )
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertEqual(record["conn_id"], "c1")

    def test_legacy_events_keep_only_their_message(self) -> None:
        record = json.loads(
            format_json(
                {
                    "message": ("legacy", "words"),
                    "system": "-",
                    "isError": 0,
                    "time": 1.0,
                    "log_level": LogLevel.info,
                    "log_time": 1.0,
                    "log_format": None,
                }
            )
        )
        self.assertEqual(record["msg"], "legacy words")
        self.assertNotIn("isError", record)

    def test_default_format_follows_the_terminal(self) -> None:
        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        self.assertEqual(default_format(Tty()), "text")
        self.assertEqual(default_format(io.StringIO()), "json")
