"""What a recording says about its files: one log line each, and the lifecycle events ``record_start`` and
``record_done`` (``rtmpd.notify``) for the event hooks and the metrics."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from rtmpd.notify import Notifier


class FileAnnouncer:
    """Announces one stream's recording files. It keeps the notifier: ``record_done`` may come after
    the stream object is gone."""

    log = Logger(namespace="rtmpd.recording.recording.StreamRecording")

    def __init__(self, notifier: Notifier, stream_key: str) -> None:
        self.notifier = notifier
        self.stream_key = stream_key

    def started(self, path: str, segment: int) -> None:
        self.log.info("recording started", stream_key=self.stream_key, file=path, segment=segment)
        self._emit("record_start", path=path, segment=segment)

    def finalized(self, path: str, duration: float, size: int, error: str | None) -> None:
        duration = round(duration, 3)
        self.log.info(
            "recording finalized", stream_key=self.stream_key, file=path, duration=duration, bytes=size
        )
        self._emit("record_done", path=path, duration=duration, bytes=size, error=error)

    def cut_short(self, path: str, duration: float, size: int, error: str | None) -> None:
        """A started file that a failure ended: its ``record_done`` carries the error."""
        self._emit("record_done", path=path, duration=round(duration, 3), bytes=size, error=error)

    def _emit(self, name: str, **fields: Any) -> None:
        if self.notifier.active:
            app, _, stream_name = self.stream_key.partition("/")
            self.notifier.emit(name, stream_key=self.stream_key, app=app, name=stream_name, **fields)
