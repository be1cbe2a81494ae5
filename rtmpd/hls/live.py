"""The HLS muxers of watched streams: made on the first request, fed by the relay, stopped when unwatched.

``HLSMuxers`` is a stream listener of the registry. A stream gets a
``LiveHLS`` on its first HLS request (if it is being published): it starts
from the late-join cache (codec configuration, then the GOP from the last
keyframe), so its first segment starts at a keyframe, and from then on takes
every message the relay passes. Its media is muxed once and its bytes are
shared by every viewer. A re-publish, or a configuration the muxer cannot
continue with, starts a new generation (a new init segment, a discontinuity).
A ``LiveHLS`` that no request touched for ``idle_timeout`` seconds is
stopped and its memory freed. Waiting requests (blocking reload, preload
hints) are Deferreds answered when what they wait for exists, or when their
deadline passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rtmpd.core.classify import MediaInfo, classify
from rtmpd.core.errors import Fmp4Error
from rtmpd.core.messages import Message
from rtmpd.hls.blocking import Waiters, availability
from rtmpd.hls.playlist import render_playlist
from rtmpd.hls.segmenter import Segmenter
from rtmpd.hls.segments import Availability, Window
from rtmpd.relay.listener import StreamListener

if TYPE_CHECKING:
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["HLSMuxers", "HLSSettings", "LiveHLS"]


@dataclass(frozen=True)
class HLSSettings:
    """``--hls-*`` options: seconds, and segments kept in the playlist."""

    segment_duration: float = 1.0
    part_duration: float = 0.333
    window: int = 6
    #: A stream's muxer stops after this many seconds without a request.
    idle_timeout: float = 20.0
    #: How long a request for a stream that has no segment yet waits for its first one.
    first_segment_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.part_duration <= self.segment_duration:
            raise ValueError("the part duration must be positive and at most the segment duration")
        if self.window < 1:
            raise ValueError("the window holds at least one segment")


def _new_epoch() -> str:
    return os.urandom(5).hex()


class LiveHLS:
    """The HLS media of one stream (module doc): its window, its current generation, its waiters."""

    log = Logger()

    def __init__(self, stream: Stream, settings: HLSSettings, clock: IReactorTime, wall: Callable[[], float]):
        self.key = stream.key
        self.stream = stream
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self.window = Window(settings.window)
        self.segmenter: Segmenter | None = None
        self.waiters = Waiters()
        self._timer: IDelayedCall | None = None
        self.last_request = clock.seconds()
        self._rendered: tuple[int, dict[str, bytes]] = (-1, {})
        self._remembered: tuple[int, dict[Hashable, object]] = (-1, {})
        self.generations = 0

    # -- generations ---------------------------------------------------------------------

    def start(self, stream: Stream, *, from_cache: bool, mid_stream: bool = False) -> None:
        """Begin a new generation; ``from_cache``: feed the late-join cache first (a stream already live);
        ``mid_stream``: the stream goes on (its timestamps do not start again at 0)."""
        self.stream = stream
        self.generations += 1
        # Media time 0 of the stream, in wall time: its newest message is taken as arriving now. A new
        # publish starts its timestamps at 0 now.
        live = from_cache or mid_stream
        anchor = self._wall() - (stream.last_timestamp / 1000 if live else 0.0)
        self.segmenter = Segmenter(
            self.window,
            epoch=_new_epoch(),
            segment_target=self.settings.segment_duration,
            part_target=self.settings.part_duration,
            anchor=anchor,
            discontinuity=self.generations > 1,
        )
        self.log.info("HLS muxer started", stream_key=self.key, epoch=self.segmenter.epoch)
        if from_cache:
            primary = stream.primary_video_track
            for message in stream.late_join_messages():
                self.message(message, classify(message, primary))

    def restart(self) -> None:
        """A new generation of the stream as it is now, from its cached configuration (after an error)."""
        self.finish()
        self.start(self.stream, from_cache=False, mid_stream=True)
        primary = self.stream.primary_video_track
        for message in self.stream.cache.codec_headers():
            self.message(message, classify(message, primary))

    def finish(self) -> None:
        if self.segmenter is not None:
            self.segmenter.finish()
            self.segmenter = None
            self._changed()

    def message(self, message: Message, info: MediaInfo) -> None:
        segmenter = self.segmenter
        if segmenter is None:
            return
        try:
            made = segmenter.feed(message, info)
        except Fmp4Error as e:
            self.log.warn("HLS muxer restarts: {error}", stream_key=self.key, error=str(e))
            self.restart()
            return
        if made:
            self._changed()

    # -- answers -------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        if self.segmenter is not None:
            return self.segmenter.epoch
        return self.window.segments[-1].epoch if self.window.segments else "0"

    def playlist(self, credential: str) -> bytes:
        """The playlist now, rendered once per change and credential (shared by the viewers)."""
        version, cache = self._rendered
        if version != self.window.version:
            cache = {}
            self._rendered = (self.window.version, cache)
        text = cache.get(credential)
        if text is None:
            if len(cache) >= 64:
                cache.clear()
            s = self.settings
            text = cache[credential] = render_playlist(
                self.window,
                epoch=self.epoch,
                segment_target=s.segment_duration,
                part_target=s.part_duration,
                credential=credential,
            ).encode()
        return text

    def remembered(self) -> dict[Hashable, object]:
        """A memo valid until the window next changes: the viewers at the live edge ask for the same
        part within a part's time, and its answer is worked out once."""
        version, memo = self._remembered
        if version != self.window.version:
            memo = {}
            self._remembered = (self.window.version, memo)
        return memo

    def wait(self, msn: int, part: int | None, timeout: float) -> Deferred[Availability | None]:
        """Fires with the availability of ``msn``/``part`` once it is not pending, or None at the timeout.

        Cancelling the Deferred (the client left) forgets the wait.
        """
        state = availability(self.window, msn, part)
        if state is not Availability.PENDING:
            return succeed(state)
        # The Deferred is its own token among the waiters (no closure, no token object per request).
        d: Deferred[Availability | None] = Deferred(self.waiters.discard)
        deadline = self._clock.seconds() + timeout
        self.waiters.add(d, msn, part, deadline)
        timer = self._timer
        if timer is None or not timer.active() or timer.getTime() > deadline:
            # Waits mostly share a timeout, so their deadlines come in order: the timer rarely moves.
            self._schedule()
        return d

    def _changed(self) -> None:
        if self.waiters:
            self._settle()

    def _settle(self) -> None:
        for d, state in self.waiters.settled(self.window):
            d.callback(state)
        for d in self.waiters.expired(self._clock.seconds()):
            d.callback(None)
        self._schedule()

    def _schedule(self) -> None:
        """Have the timer fire by the earliest deadline (early is harmless: ``_settle`` re-arms it)."""
        deadline = self.waiters.next_deadline()
        timer = self._timer
        if timer is not None and timer.active():
            if deadline is None or timer.getTime() <= deadline:
                return
            timer.cancel()
        self._timer = None
        if deadline is not None:
            self._timer = self._clock.callLater(max(0.0, deadline - self._clock.seconds()), self._settle)

    @property
    def idle(self) -> bool:
        return not self.waiters and self._clock.seconds() - self.last_request >= self.settings.idle_timeout

    def stop(self) -> None:
        """Free everything; waiting requests are answered as timed out."""
        self.segmenter = None
        for d in self.waiters.tokens():
            self.waiters.discard(d)
            d.callback(None)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.window = Window(self.settings.window)


class HLSMuxers(StreamListener):
    """Every stream's ``LiveHLS`` that is being watched, fed as a listener of the registry (module doc)."""

    log = Logger()

    def __init__(
        self,
        registry: StreamRegistry,
        settings: HLSSettings,
        clock: IReactorTime,
        wall: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.live: dict[str, LiveHLS] = {}
        self._reaper = LoopingCall(self.reap)
        self._reaper.clock = clock

    def start(self) -> None:
        if self not in self.registry.listeners:
            self.registry.listeners.append(self)
        self._reaper.start(max(1.0, self.settings.idle_timeout / 4), now=False)

    def stop(self) -> None:
        if self._reaper.running:
            self._reaper.stop()
        for live in list(self.live.values()):
            live.stop()
        self.live.clear()

    def get(self, key: str) -> LiveHLS | None:
        """The stream's HLS, started now if the stream is live; None if it is neither watched nor live."""
        live = self.live.get(key)
        if live is None:
            stream = self.registry.get(key)
            if stream is None or stream.publisher is None:
                return None
            live = self.live[key] = LiveHLS(stream, self.settings, self.clock, self.wall)
            live.start(stream, from_cache=True)
        live.last_request = self.clock.seconds()
        return live

    def reap(self) -> None:
        """Stop the muxers nobody asked anything of for the idle timeout."""
        for key, live in list(self.live.items()):
            if live.idle:
                live.stop()
                del self.live[key]
                self.log.info("HLS muxer stopped: unwatched", stream_key=key)

    # -- StreamListener --------------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        live = self.live.get(stream.key)
        if live is not None:
            live.finish()
            live.start(stream, from_cache=False)

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        live = self.live.get(stream.key)
        if live is not None:
            live.message(message, info)

    def stream_unpublished(self, stream: Stream) -> None:
        live = self.live.get(stream.key)
        if live is not None:
            live.finish()
