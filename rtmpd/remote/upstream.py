"""One pulled stream: an upstream ``play`` at an origin, served here as the local publisher of its key.

``Upstream`` is the ``ClientHandler`` of its connection and, to the relay,
the ``Peer`` of the publication it makes: players, the late-join cache, the
recorder and the admin views see a pulled stream as any other. Promises:

- **One connection per key**, whatever the number of local players.
- **Published here on the first media** from the origin, unpublished when
  the origin says the stream stopped or the connection ends; the players
  stay subscribed and get ``PublishNotify`` when it comes back.
- **Reconnects with backoff** until ``stop``, which the service calls once
  the key has had no player for the idle time.
- Its publication carries the relay mark, so a pulled stream is never
  pushed on (loop safety, see ``rtmpd.remote.push``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rtmpd.conn_ids import pull_id
from rtmpd.core.client_events import StreamStopped
from rtmpd.core.errors import BadStreamName
from rtmpd.core.events import DataReceived, MediaReceived, MetadataReceived
from rtmpd.core.messages import Message
from rtmpd.relay.stream import Publication
from rtmpd.remote.backoff import Backoff
from rtmpd.remote.connection import RTMPClientProtocol
from rtmpd.remote.dialer import Dialer
from rtmpd.remote.push import RELAY_FLASH_VER
from rtmpd.remote.urls import RemoteURL

if TYPE_CHECKING:
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["RelayMark", "Upstream"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class RelayMark:
    """The ``authorisation`` of a pulled publication: it says the publisher is a relay."""

    flash_ver: str = RELAY_FLASH_VER


class Upstream:
    """Plays ``url`` at its origin and publishes it here as ``key`` (see the module docstring)."""

    log = Logger()

    def __init__(
        self,
        key: str,
        url: RemoteURL,
        registry: StreamRegistry,
        *,
        connect: Callable[[Upstream], Any],
        clock: Any,
        backoff: Backoff | None = None,
    ) -> None:
        self.key = key
        self.url = url
        self.registry = registry
        self.clock = clock
        self.backoff = backoff or Backoff()
        # Peer attributes (rtmpd.relay.peer).
        self.conn_id = pull_id(next(_ids))
        self.peer_addr = f"{url.host}:{url.port}"
        self.app = key.partition("/")[0]
        self.chunk_size = 4096
        self.congested = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.over_queue_bound = False
        self.buffered_bytes = 0
        # State.
        self.state = "idle"
        self.client: RTMPClientProtocol | None = None
        self.stream: Stream | None = None
        self.publication: Publication | None = None
        self.attempts = 0
        self.last_error: str | None = None
        self._dialer = Dialer(
            clock,
            connect,
            self,
            on_client=self._set_client,
            on_failure=self._failed,
            current=lambda: self.client,
            stale_reason="pull stopped",
        )
        self._holds = 0
        self._started_at: float | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self.state == "idle":
            self._connect_now()

    def stop(self, reason: str) -> None:
        """Close the upstream for good and unpublish here."""
        self.state = "stopped"
        self._dialer.cancel()
        client, self.client = self.client, None
        if client is not None:
            client.finish()
        self._unpublish()
        self.log.info("Pull upstream closed", stream_key=self.key, conn_id=self.conn_id, reason=reason)

    def _connect_now(self) -> None:
        self.state = "connecting"
        self.attempts += 1
        self.log.info(
            "Pull upstream connecting", stream_key=self.key, url=self.url.redacted(), attempt=self.attempts
        )
        self._dialer.dial()

    def _set_client(self, client: RTMPClientProtocol) -> None:
        self.client = client

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        self._unpublish()
        healthy = self.clock.seconds() - self._started_at if self._started_at is not None else 0.0
        self._started_at = None
        self.backoff.connection_ended(healthy)
        if self.state == "stopped":
            return
        delay = self.backoff.next_delay()
        self.state = "backing off"
        self.log.warn(
            "Pull upstream failed; retrying in {delay:.1f} s",
            stream_key=self.key,
            url=self.url.redacted(),
            error=reason,
            delay=delay,
            attempt=self.attempts,
        )
        self._dialer.retry(delay, self._connect_now)

    # -- ClientHandler --------------------------------------------------------------------

    def client_started(self, client: RTMPClientProtocol) -> None:
        if client is not self.client:
            if not self._dialer.adopt(client):
                client.abort("pull stopped")
                return
            self.client = client  # started before the endpoint's Deferred fired (TLS)
        self.state = "playing"
        self._started_at = self.clock.seconds()
        self.log.info(
            "Pull upstream playing",
            stream_key=self.key,
            url=self.url.redacted(),
            peer=client.peer_addr,
            local=client.local_addr,
            attempt=self.attempts,
        )

    def client_event(self, client: RTMPClientProtocol, event: Any) -> None:
        if client is not self.client:
            return
        if isinstance(event, MediaReceived):
            message = event.message
            publication = self._publish()
            if publication is not None:
                publication.last_activity = self.clock.seconds()
                publication.bytes_in += len(message.payload)
                publication.messages_in += 1
                self.bytes_in += len(message.payload)
                self.stream.relay(message)
        elif isinstance(event, MetadataReceived):
            if self._publish() is not None:
                self.stream.set_metadata(event.message, event.values)
        elif isinstance(event, DataReceived):
            if self._publish() is not None:
                self.stream.relay(event.message)
        elif isinstance(event, StreamStopped):
            self.log.info("Origin stream stopped", stream_key=self.key, code=event.code)
            self._unpublish()

    def client_ended(self, client: RTMPClientProtocol, reason: str) -> None:
        if client is not self.client:
            return
        self.client = None
        self._failed(reason)

    def client_paused(self, client: RTMPClientProtocol) -> None:
        pass

    def client_writable(self, client: RTMPClientProtocol) -> None:
        pass

    # -- the local publication ------------------------------------------------------------

    def _publish(self) -> Publication | None:
        if self.publication is not None:
            return self.publication
        now = self.clock.seconds()
        name = self.key.partition("/")[2]
        publication = Publication(self, 0, name, "", now, now)
        publication.authorisation = RelayMark()
        try:
            self.stream = self.registry.publish(self.key, publication)
        except BadStreamName:
            self.log.info("Pull not needed: the key is published here", stream_key=self.key)
            self.stop("published locally")
            return None
        self.publication = publication
        self.log.info("Pulled stream published", stream_key=self.key, conn_id=self.conn_id)
        return publication

    def _unpublish(self) -> None:
        publication, self.publication = self.publication, None
        stream, self.stream = self.stream, None
        if publication is not None and stream is not None:
            self.registry.unpublish(stream, publication)

    # -- Peer (what the relay, the recorder and the admin views call) -----------------------

    def queue_media(self, data: bytes) -> None:
        pass

    def flush_media(self) -> None:
        pass

    def send_command(self, message: Message) -> None:
        pass

    def send_control(self, message: Message) -> None:
        pass

    def close(self, reason: str) -> None:
        """The relay drops this publisher (timeout, takeover, kick): unpublish, and reconnect if wanted."""
        client, self.client = self.client, None
        if client is not None:
            client.finish()
        self._failed(f"closed here: {reason}")

    def abort(self, reason: str) -> None:
        self.close(reason)

    def hold_input(self) -> None:
        self._holds += 1
        if self._holds == 1 and self.client is not None:
            self.client.pause_reading()

    def release_input(self) -> None:
        self._holds = max(0, self._holds - 1)
        if self._holds == 0 and self.client is not None:
            self.client.resume_reading()

    def roles(self) -> list[str]:
        return [f"pull {self.key}"] if self.publication is not None else []

    def stats(self) -> dict[str, Any]:
        stream = self.registry.get(self.key)
        return {
            "stream_key": self.key,
            "url": self.url.redacted(),
            "state": self.state,
            "bytes_in": self.bytes_in,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "players": len(stream.players) if stream is not None else 0,
        }
