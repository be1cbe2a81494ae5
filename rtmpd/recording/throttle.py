"""Holding back a publisher that runs ahead of real time while its recording's disk catches up.

A file pushed flat out (``ffmpeg -i file -f flv`` without ``-re``) outruns
any disk. Rather than lose the recording when the writer's queue
overflows, the publisher's input is held (``Peer.hold_input``: its socket is
not read, TCP pushes back) until the backlog is small again, as
nginx-rtmp's synchronous writes do.

Rules this module keeps:

- Only a publisher whose media runs more than ``AHEAD_SECONDS`` ahead of the
  wall clock (measured from its first recorded tag) is held, and only while
  the writer's backlog is at least a quarter of its bound (``HIGH_SHARE``).
  A publisher at real time is never held: a slow or stalled disk must not
  delay live viewers, so then the queue overflows and only the recording
  stops.
- A held publisher is released on the first of: the writer reports
  ``Drained`` (the backlog fell to a sixteenth of its bound); its lead runs
  out (one timer, set for the exact moment the wall clock catches up with
  its media); the recording ends. Nothing polls.
- The publisher is touched only through the relay: ``Publication.peer``
  (``hold_input``/``release_input``) and ``Publication.throttled``, which is
  True while held so that the idle-publisher sweep leaves it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

if TYPE_CHECKING:
    from rtmpd.recording.writer import RecordingWriter
    from rtmpd.relay.stream import Publication

__all__ = ["AHEAD_SECONDS", "HIGH_SHARE", "PublisherThrottle"]

#: A publisher more than this far ahead of real time may be held back while the writer catches up.
AHEAD_SECONDS = 2.0
#: Share of the writer's queue bound above which such a publisher is held back; it is let go at a
#: quarter of that.
HIGH_SHARE = 0.25


class PublisherThrottle:
    """Decides, after each tag queued for one recording, whether its publisher is held back (module doc).

    ``publication`` returns the stream's current publication (or None). The
    throttle holds at most one publication at a time and always releases
    what it held: ``release`` is idempotent and the recording calls it when
    it ends. It raises nothing of its own.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        stream_key: str,
        max_queue_bytes: int,
        publication: Callable[[], Publication | None],
    ) -> None:
        self.clock = clock
        self.stream_key = stream_key
        self.high = int(max_queue_bytes * HIGH_SHARE)
        self.low = self.high // 4
        self._publication = publication
        #: (timestamp, wall clock) of the first tag: media time and real time are measured from there.
        self._origin: tuple[int, float] | None = None
        self._last_timestamp = 0
        self._held: Publication | None = None
        self._writer: RecordingWriter | None = None
        self._lead_timer: IDelayedCall | None = None
        #: The timestamp the lead timer was set for.
        self._timer_timestamp = 0

    def lead(self, timestamp: int, now: float) -> float:
        """Seconds by which media time at ``timestamp`` runs ahead of the wall clock at ``now``.

        Both are measured from the first call, which sets that origin and returns 0.
        """
        if self._origin is None:
            self._origin = (timestamp, now)
            return 0.0
        first_ts, first_wall = self._origin
        media = ((timestamp - first_ts) & 0xFFFFFFFF) / 1000.0
        return media - (now - first_wall)

    def consider(self, timestamp: int, writer: RecordingWriter) -> None:
        """Called after each tag queued on ``writer``: hold the publisher back if the backlog is high
        and it runs ahead of real time."""
        self._last_timestamp = timestamp
        # Cheapest test first: nearly every tag finds the backlog low.
        pending = writer.pending_bytes
        if self._origin is not None and (self._held is not None or pending < self.high):
            return
        lead = self.lead(timestamp, self.clock.seconds())
        if self._held is not None or lead <= AHEAD_SECONDS or pending < self.high:
            return
        publication = self._publication()
        if publication is None or not writer.report_drained(self.low):
            return
        self._held, self._writer = publication, writer
        publication.throttled = True
        publication.peer.hold_input()
        self.log.info(
            "Publisher held back for the recording",
            stream_key=self.stream_key,
            conn_id=publication.peer.conn_id,
            pending_bytes=pending,
        )
        self._arm(lead)

    def drained(self) -> None:
        """The writer reported its backlog down to the low mark: let the publisher go on."""
        self.release()

    def _arm(self, lead: float) -> None:
        self._timer_timestamp = self._last_timestamp
        self._lead_timer = self.clock.callLater(lead - AHEAD_SECONDS, self._lead_expired)

    def _lead_expired(self) -> None:
        self._lead_timer = None
        if self._last_timestamp != self._timer_timestamp:
            # Tags read before the hold took effect carried the media further: its lead lasts longer.
            lead = self.lead(self._last_timestamp, self.clock.seconds())
            if lead > AHEAD_SECONDS:
                self._arm(lead)
                return
        # The wall clock caught up with its media: viewers would wait now, so a disk that still lags
        # loses the recording instead (its queue fills up).
        self.release()

    def release(self) -> None:
        """Let the held publisher go on (the backlog drained, its lead ran out, or the recording ended)."""
        timer, self._lead_timer = self._lead_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.report_drained(None)
        publication, self._held = self._held, None
        if publication is not None and publication.throttled:
            publication.throttled = False
            publication.last_activity = self.clock.seconds()
            publication.peer.release_input()
