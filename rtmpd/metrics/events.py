"""What the metrics must catch when it happens: totals of what ended, and the wait for a first keyframe.

A connection's byte counters and a player's dropped frames are read live at
scrape time; when the connection or the play ends, its last values are
added here (from the ``disconnect`` and ``play_stop`` events of
``rtmpd.notify``), so the exported totals (ended + live) never go down.

``FirstKeyframeTimer`` measures, for each play of a live stream (and for
every player of a stream when its publisher starts), the time until the
player is sent its first video keyframe. It listens to the streams only
while some player waits for one, so it costs nothing on the media path the
rest of the time; it never changes what a player is sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from rtmpd.metrics.labels import AppLabels
from rtmpd.relay.listener import StreamListener

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from rtmpd.core.classify import MediaInfo
    from rtmpd.core.messages import Message
    from rtmpd.notify import ServerEvent
    from rtmpd.relay.player import Player
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["GIVE_UP_SECONDS", "EventTotals", "FirstKeyframeTimer"]

#: A player that has had no keyframe after this many seconds (an audio-only stream) is no longer timed.
GIVE_UP_SECONDS = 30.0


class EventTotals:
    """Totals by application label of ended connections' bytes, ended plays' dropped frames, and the
    number of publishes and plays. Subscribe it to the server's notifier."""

    def __init__(self, app_label: AppLabels) -> None:
        self.app_label = app_label
        self.bytes_in: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        self.dropped_frames: Counter[str] = Counter()
        self.publishes: Counter[str] = Counter()
        self.plays: Counter[str] = Counter()

    def __call__(self, event: ServerEvent) -> None:
        name, fields = event.name, event.fields
        if name == "disconnect":
            label = self.app_label(str(fields.get("app") or ""))
            self.bytes_in[label] += int(fields.get("bytes_in") or 0)
            self.bytes_out[label] += int(fields.get("bytes_out") or 0)
        elif name == "play_stop":
            self.dropped_frames[self.app_label(str(fields.get("app") or ""))] += int(
                fields.get("dropped_frames") or 0
            )
        elif name == "publish_start":
            self.publishes[self.app_label(str(fields.get("app") or ""))] += 1
        elif name == "play_start":
            self.plays[self.app_label(str(fields.get("app") or ""))] += 1


class FirstKeyframeTimer(StreamListener):
    """Calls ``observe(seconds)`` once per timed player, when it has been sent its first keyframe.

    Subscribe ``event`` to the server's notifier. While players wait, this
    object is one of ``registry.listeners``; it adds and removes itself only
    from timer calls (``clock.callLater``), never while a stream walks its
    listeners.
    """

    log = Logger()

    def __init__(
        self, registry: StreamRegistry, clock: IReactorTime, observe: Callable[[float], None]
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.observe = observe
        #: Waiting players by stream key: player -> when its wait started.
        self.waiting: dict[str, dict[Player, float]] = {}
        self._checks: set[str] = set()
        #: One give-up timer per stream key with waiting players.
        self._give_up: dict[str, object] = {}

    # -- lifecycle events ----------------------------------------------------------------

    def event(self, event: ServerEvent) -> None:
        if event.name == "play_start":
            stream = self.registry.get(str(event.fields.get("stream_key")))
            if stream is None or not stream.live or not stream.players:
                return  # a player waiting for a publisher is timed from the publish
            player = stream.players[-1]  # the one just added (the event is told from add_player)
            if player.peer.conn_id == event.fields.get("conn_id"):
                self._wait(stream, [player], event.time)
        elif event.name == "publish_start":
            stream = self.registry.get(str(event.fields.get("stream_key")))
            if stream is not None and stream.players:
                self._wait(stream, stream.players, event.time)

    def _wait(self, stream: Stream, players: list[Player], since: float) -> None:
        waiting = self.waiting.setdefault(stream.key, {})
        for player in players:
            waiting[player] = since
        if self not in self.registry.listeners:
            self.clock.callLater(0, self._attach)
        # The late-join burst may already hold a keyframe: look once the play has been answered.
        self._check_soon(stream.key)
        if stream.key not in self._give_up:
            self._give_up[stream.key] = self.clock.callLater(GIVE_UP_SECONDS, self._expire, stream.key)

    def _attach(self) -> None:
        if self.waiting and self not in self.registry.listeners:
            self.registry.listeners.append(self)

    def _check_soon(self, key: str) -> None:
        if key not in self._checks:
            self._checks.add(key)
            self.clock.callLater(0, self._check, key)

    def _expire(self, key: str) -> None:
        """Give up on the players of ``key`` that waited ``GIVE_UP_SECONDS``; come back for the others."""
        del self._give_up[key]
        self._check(key)
        waiting = self.waiting.get(key)
        if waiting:
            delay = min(waiting.values()) + GIVE_UP_SECONDS - self.clock.seconds()
            self._give_up[key] = self.clock.callLater(max(0.0, delay), self._expire, key)

    # -- the stream listener: only keyframes of waited-on streams matter -------------------

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        if info.is_keyframe and stream.key in self.waiting:
            # Players take the keyframe after the listeners are told: look when this input is handled.
            self._check_soon(stream.key)

    # -- the check ------------------------------------------------------------------------

    def _check(self, key: str) -> None:
        self._checks.discard(key)
        waiting = self.waiting.get(key)
        if waiting is not None:
            now = self.clock.seconds()
            stream = self.registry.get(key)
            present = set(stream.players) if stream is not None else set()
            for player, since in list(waiting.items()):
                if player not in present:
                    del waiting[player]
                elif not player.waiting_keyframe:
                    del waiting[player]
                    self.observe(max(0.0, now - since))
                elif now - since >= GIVE_UP_SECONDS - 1e-6:  # not missed by a rounding of the timer
                    del waiting[player]
            if not waiting:
                del self.waiting[key]
        if not self.waiting and self in self.registry.listeners:
            self.registry.listeners.remove(self)
