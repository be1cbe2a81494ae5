"""How many recording files may exist at once, and how fast new ones may be made.

A stranger who may publish could otherwise turn every publish of a new key
(one audio frame is enough) into a file, a thread and a descriptor. Two
budgets, both checked in O(1) when a file is about to be created:

- ``max_active``: recordings with a file open at once (each is one writer
  thread and one descriptor). A stream over it is relayed but not recorded;
  it asks again at its next frame a file could start from, so it starts
  recording once a slot is free.
- ``max_new_per_minute``: new files, first files and segment changes alike,
  as a token bucket that holds at most that many tokens and refills at that
  rate. A stream without a file waits as above; a recording due for its next
  segment goes on in its current file.

Refusals are logged as at most one WARN line a minute (``WARN_INTERVAL``),
however many streams are refused and however often they ask: the line names
the stream refused and counts the refusals left unlogged since the last
line. A stream asking again is not counted again. Time is the injected
clock's.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["DEFAULT_MAX_ACTIVE", "DEFAULT_MAX_NEW_PER_MINUTE", "WARN_INTERVAL", "RecordingAdmission"]

#: Recordings with an open file at once.
DEFAULT_MAX_ACTIVE = 100
#: New recording files (starts and segment changes) per minute, in bursts of as many.
DEFAULT_MAX_NEW_PER_MINUTE = 120
#: Seconds between two WARN lines about refusals.
WARN_INTERVAL = 60.0


class RecordingAdmission:
    """Counts open recordings and new files against their budgets (module doc); raises nothing."""

    log = Logger()

    def __init__(self, clock: IReactorTime, max_active: int, max_new_per_minute: int) -> None:
        if max_active < 1 or max_new_per_minute < 1:
            raise ValueError("recording limits must be at least 1")
        self.clock = clock
        self.max_active = max_active
        self.max_new_per_minute = max_new_per_minute
        self.active = 0
        self._tokens = float(max_new_per_minute)
        self._refilled_at = clock.seconds()
        #: Refusals since the service started, for the manhole.
        self.refusals = 0
        self._unlogged = 0
        self._warned_at: float | None = None

    def _refill(self) -> None:
        now = self.clock.seconds()
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        self._tokens = min(
            float(self.max_new_per_minute), self._tokens + elapsed * self.max_new_per_minute / 60
        )

    def start(self, stream_key: str, first_try: bool) -> bool:
        """May stream ``stream_key`` open its first file now? True takes a slot (``finish`` gives it back).

        ``first_try`` is False when this stream was refused before: it is not counted again.
        """
        self._refill()
        if self.active >= self.max_active:
            self._refused(stream_key, first_try, f"{self.active} recordings open (--record-max-active)")
            return False
        if self._tokens < 1:
            self._refused(
                stream_key, first_try, f"over {self.max_new_per_minute} new files a minute (--record-max-new)"
            )
            return False
        self._tokens -= 1
        self.active += 1
        return True

    def segment(self, stream_key: str, first_try: bool = True) -> bool:
        """May an open recording start its next file now? False: it goes on in its current file.

        ``first_try`` is False when this recording's last request was refused: it is not counted again.
        """
        self._refill()
        if self._tokens < 1:
            self._refused(
                stream_key,
                first_try,
                f"over {self.max_new_per_minute} new files a minute (--record-max-new); "
                "the current file goes on",
            )
            return False
        self._tokens -= 1
        return True

    def finish(self) -> None:
        """A recording admitted by ``start`` has closed its last file."""
        self.active = max(0, self.active - 1)

    def _refused(self, stream_key: str, count: bool, cause: str) -> None:
        if not count:
            return
        self.refusals += 1
        now = self.clock.seconds()
        if self._warned_at is not None and 0 <= now - self._warned_at < WARN_INTERVAL:
            self._unlogged += 1
            return
        self._warned_at = now
        self.log.warn(
            "Recording limit reached: stream relayed but not recorded until a file may start",
            stream_key=stream_key,
            cause=cause,
            active=self.active,
            max_active=self.max_active,
            max_new_per_minute=self.max_new_per_minute,
            refused_unlogged=self._unlogged,
        )
        self._unlogged = 0
