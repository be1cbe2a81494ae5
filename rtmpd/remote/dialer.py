"""``Dialer``: the connection attempts of a client that reconnects (a push destination, a pull upstream).

It holds at most one attempt in progress or one retry waiting, and decides
what a late answer means: an attempt that was cancelled, or whose client
already reported itself started, must not hand over a second client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from rtmpd.remote.connection import describe_failure

__all__ = ["Dialer"]


class Dialer:
    """One attempt or one retry at a time for ``handler``'s connection.

    ``dial()`` starts an attempt with ``connect(handler)`` (a Deferred of the
    connected client protocol): on success ``on_client(client)`` is called,
    unless the attempt was cancelled or already adopted (a client that is
    not ``current()`` is then aborted with ``stale_reason``); on failure,
    ``on_failure(reason)``. ``retry(delay, call)`` calls ``call`` after
    ``delay`` seconds; ``cancel()`` drops the attempt and the retry.
    """

    def __init__(
        self,
        clock: Any,
        connect: Callable[[Any], Any],
        handler: Any,
        *,
        on_client: Callable[[Any], None],
        on_failure: Callable[[str], None],
        current: Callable[[], Any],
        stale_reason: str,
    ) -> None:
        self._clock = clock
        self._connect = connect
        self._handler = handler
        self._on_client = on_client
        self._on_failure = on_failure
        self._current = current
        self._stale_reason = stale_reason
        self._attempt: Any = None
        self._retry: IDelayedCall | None = None

    @property
    def dialing(self) -> bool:
        """An attempt is in progress."""
        return self._attempt is not None

    def dial(self) -> None:
        """Start an attempt now (a waiting retry is forgotten: this is it)."""
        self._retry = None
        d = self._attempt = self._connect(self._handler)
        d.addCallbacks(self._connected, self._failed, callbackArgs=(d,), errbackArgs=(d,))

    def adopt(self, client: Any) -> bool:
        """``client`` started before its attempt's Deferred fired (TLS): True if an attempt waited for it."""
        if self._attempt is None:
            return False
        self._attempt = None
        return True

    def retry(self, delay: float, call: Callable[[], None]) -> None:
        """Call ``call`` (which dials) after ``delay`` seconds."""
        self._retry = self._clock.callLater(delay, call)

    def cancel(self) -> None:
        """Drop the waiting retry and the attempt in progress."""
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()

    def _connected(self, client: Any, d: Any) -> None:
        if self._attempt is d:
            self._attempt = None
            self._on_client(client)
        elif client is not self._current():  # (the same one when it was adopted first)
            client.abort(self._stale_reason)

    def _failed(self, failure: Any, d: Any) -> None:
        if self._attempt is d:  # else cancelled
            self._attempt = None
            self._on_failure(describe_failure(failure))
