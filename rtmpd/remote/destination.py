"""One push destination: one local stream sent on to one remote URL, as an independent state machine.

States: ``idle`` (not started, or stopped for good) -> ``connecting`` ->
``publishing`` -> (connection lost) ``backing off`` -> ``connecting`` ...
Promises:

- **Retries forever while it runs**, after delays from its own ``Backoff``;
  every attempt and every failure is logged with its cause.
- **A clean start on every connection**: metadata and codec configuration
  first, then media from a keyframe (the stream's late-join cache), with
  timestamps rebased to start at 0.
- **Bytes shared, decisions its own.** A message's chunks come from the push
  service's ``SharedChunks``: destinations whose timestamps agree send one
  serialisation; what to send, when, and on which timeline is each one's own.
- **Its own bounded queue.** While the connection's transport is full,
  messages (as chunks) wait in a queue of at most ``max_queue_bytes``; past that the
  queue keeps only configuration and the destination waits for the next
  keyframe, like a slow player. A stall (paused for ``stall_timeout``
  seconds) ends the connection and it is retried. Nothing here ever holds
  back the publisher, the players or another destination.
- **Grace**: ``source_stopped`` keeps the connection; ``source_started``
  within the grace carries on on the same connection, timestamps continuing
  monotonically (an offset) and the new publisher's codec configuration and
  first keyframe first. ``stop`` sends FCUnpublish/deleteStream and closes.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rtmpd.core.classify import METADATA, MediaInfo, classify
from rtmpd.core.messages import Message, MessageType
from rtmpd.remote.backoff import Backoff
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.dialer import Dialer
from rtmpd.remote.shared import SharedChunks
from rtmpd.remote.timeline import Timeline
from rtmpd.remote.urls import RemoteURL

if TYPE_CHECKING:
    from rtmpd.relay.stream import Stream

__all__ = ["DestinationState", "PushDestination"]

_VIDEO = int(MessageType.VIDEO)
_AUDIO = int(MessageType.AUDIO)
#: Most attempt times kept for inspection.
_ATTEMPTS_KEPT = 32


class DestinationState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    PUBLISHING = "publishing"
    BACKING_OFF = "backing off"


class PushDestination:
    """Pushes local stream ``key`` to ``url`` (see the module docstring).

    ``connect(destination)`` starts one connection attempt and returns a
    Deferred that fires with the ``RTMPClientProtocol`` once TCP (and TLS)
    is up, or fails; the protocol reports to this destination.
    """

    log = Logger()

    def __init__(
        self,
        ident: str,
        key: str,
        url: RemoteURL,
        *,
        connect: Callable[[PushDestination], Any],
        clock: Any,
        backoff: Backoff | None = None,
        max_queue_bytes: int = 4 * 1024 * 1024,
        stall_timeout: float = 10.0,
        rule_id: int = 0,
    ) -> None:
        self.ident = ident
        self.rule_id = rule_id
        self.key = key
        self.url = url
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.max_queue_bytes = max_queue_bytes
        self.stall_timeout = stall_timeout
        self.state = DestinationState.IDLE
        self.stream: Stream | None = None
        self.client: RTMPClientProtocol | None = None
        self._dialer = Dialer(
            clock,
            connect,
            self,
            on_client=self._set_client,
            on_failure=lambda reason: self._failed(reason, healthy_for=0.0),
            current=lambda: self.client,
            stale_reason="destination stopped",
        )
        self._stall: Any = None
        #: Counters for the API and the manhole.
        self.attempts = 0
        self.reconnects = 0
        self.bytes_sent = 0
        self.dropped_frames = 0
        self.last_error: str | None = None
        self.attempt_times: collections.deque[float] = collections.deque(maxlen=_ATTEMPTS_KEPT)
        self.publishing_since: float | None = None
        # Per connection: the queue, the keyframe wait and the timestamp offset.
        #: Chunks (as ``SharedChunks`` made them for this connection) waiting for the transport.
        self._queue: collections.deque[tuple[bytes, MediaInfo]] = collections.deque()
        self._queue_bytes = 0
        self._waiting_keyframe = True
        self._dropping = False
        self._stream_id = self._chunk_size = 0
        self.timeline = Timeline(clock.seconds)

    # -- the source -------------------------------------------------------------------

    def start(self, stream: Stream) -> None:
        """Begin pushing ``stream`` (live now): connect at once."""
        self.stream = stream
        if self.state is DestinationState.IDLE:
            self._connect_now()

    def source_started(self, stream: Stream) -> None:
        """A publisher (re)started the stream: within the grace, the connection carries on."""
        self.stream = stream
        if self.state is DestinationState.PUBLISHING:
            # A new publisher: its own configuration and a keyframe first, timestamps continuing.
            self._reset_timeline(continuing=True)
        elif self.state is DestinationState.IDLE:
            self._connect_now()

    def source_stopped(self) -> None:
        """The publisher left: keep the connection (the grace); nothing is sent meanwhile."""
        self.stream = None
        self._clear_queue()

    def source_message(self, message: Message, info: MediaInfo, shared: SharedChunks | None = None) -> None:
        """One message of the source; ``shared`` holds its chunks as made for the other destinations.

        The per-destination work of every message: keep it to attribute checks."""
        client = self.client
        if client is None or self.state is not DestinationState.PUBLISHING:
            return
        type_id = message.type_id
        if type_id == _VIDEO or type_id == _AUDIO:
            if info.config_slot is None and self._waiting_keyframe:
                if not info.is_keyframe and (type_id == _VIDEO or self._has_video()):
                    return
                self._waiting_keyframe = False
                if self._dropping:
                    self._dropping = False
                    self.log.info(
                        "Push destination caught up",
                        destination=self.ident,
                        stream_key=self.key,
                        dropped_frames=self.dropped_frames,
                    )
            timestamp = self.timeline.stamp(message.timestamp)
        else:
            # Data (onMetaData at 0 from the cache): at the destination's current time.
            timestamp = self.timeline.current()
        if shared is None:
            shared = SharedChunks(message)
        data = shared.chunks(timestamp, self._stream_id, self._chunk_size)
        if client.paused or self._queue:
            self._enqueue(data, info)
        else:
            client.send_chunks(data)

    # -- control ------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Stop for good: FCUnpublish/deleteStream and close, or cancel the attempt or the retry."""
        was = self.state
        self.state = DestinationState.IDLE
        self.stream = None
        self._dialer.cancel()
        self._cancel_stall()
        self._clear_queue()
        client, self.client = self.client, None
        if client is not None:
            client.finish()
            self._count(client)
        if was is not DestinationState.IDLE:
            self.log.info(
                "Push destination stopped", destination=self.ident, stream_key=self.key, reason=reason
            )

    def restart(self) -> None:
        """Drop the connection (or the wait) and connect again now, with a fresh backoff."""
        stream = self.stream
        self.stop("restart")
        self.backoff.reset()
        self.stream = stream
        self._connect_now()

    # -- connecting --------------------------------------------------------------------------

    def _connect_now(self) -> None:
        self.state = DestinationState.CONNECTING
        self.attempts += 1
        if self.attempts > 1:
            self.reconnects += 1
        now = self.clock.seconds()
        self.attempt_times.append(now)
        self.log.info(
            "Push destination connecting",
            destination=self.ident,
            stream_key=self.key,
            url=self.url.redacted(),
            attempt=self.attempts,
        )
        self._dialer.dial()

    def _set_client(self, client: RTMPClientProtocol) -> None:
        self.client = client

    def _failed(self, reason: str, healthy_for: float) -> None:
        self.last_error = reason
        self.backoff.connection_ended(healthy_for)
        delay = self.backoff.next_delay()
        self.state = DestinationState.BACKING_OFF
        self.log.warn(
            "Push destination failed; retrying in {delay:.1f} s",
            destination=self.ident,
            stream_key=self.key,
            url=self.url.redacted(),
            error=reason,
            delay=delay,
            attempt=self.attempts,
        )
        self._dialer.retry(delay, self._connect_now)

    # -- the connection's reports (ClientHandler) -------------------------------------------

    def client_started(self, client: RTMPClientProtocol) -> None:
        if client is not self.client:
            if not self._dialer.adopt(client):
                client.abort("destination stopped")
                return
            self.client = client  # started before the endpoint's Deferred fired (TLS)
        self.state = DestinationState.PUBLISHING
        self.publishing_since = self.clock.seconds()
        self.log.info(
            "Push destination publishing",
            destination=self.ident,
            stream_key=self.key,
            url=self.url.redacted(),
            peer=client.peer_addr,
            local=client.local_addr,
            attempt=self.attempts,
        )
        self._reset_timeline(continuing=False)
        # Fixed for the connection: what its chunks are made for (``SharedChunks``).
        self._stream_id, self._chunk_size = client.stream_id, client.chunk_size
        stream = self.stream
        if stream is not None and stream.live:
            self._send_late_join(stream)

    def client_paused(self, client: RTMPClientProtocol) -> None:
        if client is self.client and self._stall is None:
            self._stall = self.clock.callLater(self.stall_timeout, self._stalled, client)

    def client_writable(self, client: RTMPClientProtocol) -> None:
        if client is not self.client:
            return
        self._cancel_stall()
        queue = self._queue
        while queue and not client.paused:
            data, _ = queue.popleft()
            self._queue_bytes -= len(data)
            client.send_chunks(data)

    def client_event(self, client: RTMPClientProtocol, event: Any) -> None:
        pass

    def client_ended(self, client: RTMPClientProtocol, reason: str) -> None:
        if client is not self.client:
            self._count(client)
            return
        self.client = None
        self._count(client)
        self._cancel_stall()
        self._clear_queue()
        healthy_for = 0.0
        if self.publishing_since is not None:
            healthy_for = self.clock.seconds() - self.publishing_since
            self.publishing_since = None
        if self.state is DestinationState.IDLE:
            return
        self._failed(reason, healthy_for)

    def _stalled(self, client: RTMPClientProtocol) -> None:
        self._stall = None
        if client is self.client and client.paused:
            client.abort(f"destination stalled: nothing written for {self.stall_timeout:g} s")

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None

    def _count(self, client: RTMPClientProtocol) -> None:
        self.bytes_sent += client.bytes_out
        client.bytes_out = 0

    # -- sending ------------------------------------------------------------------------------

    def _reset_timeline(self, *, continuing: bool) -> None:
        self._clear_queue()
        self._waiting_keyframe = True
        if continuing:
            self.timeline.continue_later()
        else:
            self.timeline.restart()

    def _send_late_join(self, stream: Stream) -> None:
        primary = stream.primary_video_track
        for message in stream.late_join_messages():
            if message.type_id in (_AUDIO, _VIDEO):
                info = classify(message, primary)
            else:
                info = METADATA
            self.source_message(message, info)

    def _has_video(self) -> bool:
        stream = self.stream
        return stream is not None and bool(stream.cache.video_headers)

    def _enqueue(self, data: bytes, info: MediaInfo) -> None:
        size = len(data)
        if self._queue_bytes + size > self.max_queue_bytes:
            kept = [(d, i) for d, i in self._queue if i.config_slot is not None or i.is_metadata]
            self.dropped_frames += len(self._queue) - len(kept)
            self._queue = collections.deque(kept)
            self._queue_bytes = sum(len(d) for d, _ in kept)
            self._waiting_keyframe = True
            if not self._dropping:
                self._dropping = True
                self.log.warn(
                    "Push destination too slow; dropping to the next keyframe",
                    destination=self.ident,
                    stream_key=self.key,
                    queue_bytes=self.max_queue_bytes,
                )
            if info.config_slot is None and not info.is_metadata:
                self.dropped_frames += 1
                return
        self._queue.append((data, info))
        self._queue_bytes += size

    def _clear_queue(self) -> None:
        self._queue.clear()
        self._queue_bytes = 0

    # -- inspection -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        client = self.client
        return {
            "id": self.ident,
            "stream_key": self.key,
            "url": self.url.redacted(),
            "state": self.state.value,
            "bytes_sent": self.bytes_sent + (client.bytes_out if client is not None else 0),
            "reconnects": self.reconnects,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "dropped_frames": self.dropped_frames,
            "queued_bytes": self._queue_bytes,
            "source_live": self.stream is not None and self.stream.live,
        }
