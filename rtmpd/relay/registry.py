"""Every live or awaited stream by ``app/name``, the publisher policy, and the stream listeners.

A key has at most one publisher: a second ``publish`` of a live key is
refused (``BadStreamName``) unless takeover is on or the current publisher
has been silent for the publisher timeout; then the current one is closed.
Listeners (the recorder, ...) are told of every stream's publish, messages
and unpublish; a failing listener is detached from that stream only
(see ``rtmpd.relay.stream``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from rtmpd.config import ServerConfig
from rtmpd.core.errors import BadStreamName
from rtmpd.notify import Notifier
from rtmpd.relay.listener import StreamListener
from rtmpd.relay.stream import Publication, Stream

__all__ = ["Publication", "Stream", "StreamListener", "StreamRegistry"]


class StreamRegistry:
    """Every live or awaited stream by ``app/name``; one with neither publisher nor players is forgotten."""

    log = Logger()

    def __init__(self, config: ServerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._now = clock
        self.streams: dict[str, Stream] = {}
        self.listeners: list[StreamListener] = []
        #: Lifecycle events of every stream and connection (``rtmpd.notify``).
        self.notifier = Notifier(clock)
        #: Called with the key when a player subscribes to a key with no publisher (a pull relay's cue).
        self.on_missing_publisher: list[Callable[[str], None]] = []
        #: Asked, in order, before a client's publish is accepted (the cluster's claim, rtmpd.cluster):
        #: each returns None or a Deferred that fails with BadStreamName to refuse.
        self.publish_checks: list[Callable[[str, Publication], Deferred | None]] = []

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self.streams.values()))

    def get(self, key: str) -> Stream | None:
        return self.streams.get(key)

    def _stream(self, key: str) -> Stream:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream(
                key, self.config, self.listeners, self.forget_if_idle, self.notifier
            )
        return stream

    def check_publish(self, key: str, publication: Publication) -> Deferred:
        """Fires with None once every publish check let ``key`` be published; fails as the first refusal."""
        d: Deferred = succeed(None)
        for check in list(self.publish_checks):
            d.addCallback(lambda _, check=check: check(key, publication))
        return d.addCallback(lambda _: None)

    def publish(self, key: str, publication: Publication) -> Stream:
        """Make ``publication`` the publisher of ``key``.

        A live publisher keeps the key (BadStreamName) unless takeover is on or
        it has been silent for the publisher timeout; then it is dropped.
        """
        stream = self._stream(key)
        current = stream.publisher
        if current is not None:
            idle = self._now() - current.last_activity
            if not (self.config.publish_takeover or idle >= self.config.publisher_timeout):
                raise BadStreamName(f"{key} is already being published")
            self.log.info(
                "Publisher replaced",
                stream_key=key,
                conn_id=publication.peer.conn_id,
                old_conn_id=current.peer.conn_id,
                idle_seconds=round(idle, 3),
            )
            stream.stop()  # not unpublish(): that would forget the stream the new publisher takes over
            current.peer.close("publisher replaced")
        stream.start(publication)
        return stream

    def unpublish(self, stream: Stream, publication: Publication) -> None:
        if stream.publisher is publication:
            stream.stop()
            self.forget_if_idle(stream)

    def subscribe(self, key: str) -> Stream:
        stream = self._stream(key)
        if stream.publisher is None:
            for callback in list(self.on_missing_publisher):
                try:
                    callback(key)
                except Exception:
                    self.log.failure("Missing-publisher callback failed", stream_key=key)
        return stream

    def forget_if_idle(self, stream: Stream) -> None:
        if stream.publisher is None and not stream.players and self.streams.get(stream.key) is stream:
            del self.streams[stream.key]

    def idle_publishers(self) -> list[Publication]:
        """Publishers silent for longer than the publisher timeout."""
        now, limit = self._now(), self.config.publisher_timeout
        return [
            s.publisher
            for s in self.streams.values()
            if s.publisher is not None
            and not s.publisher.throttled
            and now - s.publisher.last_activity >= limit
        ]
