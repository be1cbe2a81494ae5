"""Lifecycle events of the server (a client connects, a stream starts, a recording ends, ...), told to
whoever subscribed: the event hooks, the metrics.

One ``Notifier`` per server, held by the stream registry so that the relay,
the server adapter and the recorder all reach it. Events are rare (a few per
connection), never per media message, so an emit costs nothing on the media
path. Subscribers are isolated: one that raises is logged once per event
name and the others are still told; an emit never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger, LogLevel

#: Every event name, in the order they usually happen.
EVENT_NAMES = (
    "connect",
    "disconnect",
    "publish_start",
    "codec_detected",
    "play_start",
    "play_stop",
    "publish_stop",
    "record_start",
    "record_done",
    "auth_denied",
)


@dataclass(frozen=True)
class ServerEvent:
    """One thing that happened: its ``name`` (one of ``EVENT_NAMES``), when (the server clock's
    seconds since the epoch), and its fields (plain JSON-able values: str, int, float, bool, None,
    lists and dicts of those)."""

    name: str
    time: float
    fields: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event as one flat JSON-able dict: ``event``, ``time`` and the fields."""
        return {"event": self.name, "time": self.time, **self.fields}


Subscriber = Callable[[ServerEvent], None]


class Notifier:
    """Tells every subscriber of every event, in subscription order; never raises."""

    log = Logger()

    def __init__(self, clock: Callable[[], float]) -> None:
        self._now = clock
        self._subscribers: list[Subscriber] = []
        self._failures_logged: set[tuple[int, str]] = set()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Start telling ``subscriber``; returns the call that stops it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    @property
    def active(self) -> bool:
        """True when someone listens: callers may skip building an event's fields otherwise."""
        return bool(self._subscribers)

    def emit(self, name: str, /, **fields: Any) -> None:
        if not self._subscribers:
            return
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event name {name!r}")  # a programming error, not client input
        event = ServerEvent(name, self._now(), fields)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                key = (id(subscriber), name)
                if key not in self._failures_logged:
                    self._failures_logged.add(key)
                    self.log.failure(
                        "Event subscriber failed (logged once per event name)",
                        level=LogLevel.error,
                        event_name=name,
                        subscriber=getattr(subscriber, "__qualname__", type(subscriber).__name__),
                    )
