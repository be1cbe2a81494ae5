"""The Twisted adapter of ``rtmpd.core.client.ClientSession``: one outgoing RTMP connection.

``RTMPClientProtocol`` moves bytes between the transport and the session and
tells its ``ClientHandler`` what matters: the stream started, a frame can be
written or must wait (the transport pauses it as an ``IPushProducer``), the
connection ended and why. It ends the connection itself, in one place
(``_fail``), when the server breaks the protocol, refuses a step, or does not
get to the started stream within ``setup_timeout`` seconds (a server that
accepts TCP and never answers the handshake).
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as Interface

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rtmpd.core.client import ClientSession
from rtmpd.core.client_events import Refused, StreamStarted
from rtmpd.core.errors import LocalProtocolError, RemoteProtocolError
from rtmpd.core.messages import Message
from rtmpd.fastwrite import write_chunks

__all__ = ["ClientHandler", "RTMPClientFactory", "RTMPClientProtocol", "describe_failure"]

#: Seconds from the TCP connection to the started stream (handshake, connect, createStream, publish).
SETUP_TIMEOUT = 10.0


class ClientHandler(Interface):
    """What an ``RTMPClientProtocol`` tells its owner (a push destination)."""

    def client_started(self, client: RTMPClientProtocol) -> None: ...
    def client_writable(self, client: RTMPClientProtocol) -> None: ...
    def client_paused(self, client: RTMPClientProtocol) -> None: ...
    def client_event(self, client: RTMPClientProtocol, event: Any) -> None: ...
    def client_ended(self, client: RTMPClientProtocol, reason: str) -> None: ...


def describe_failure(failure: Failure) -> str:
    """One line for a connection failure: the exception type and what it says (TLS errors spelt out)."""
    value = failure.value
    name = type(value).__name__
    text = failure.getErrorMessage()
    if name == "Error" and type(value).__module__.startswith("OpenSSL"):
        # pyOpenSSL's Error holds a list of (library, function, reason) tuples.
        reasons = [r[2] for r in (value.args[0] if value.args and isinstance(value.args[0], list) else [])]
        return "TLS error: " + ("; ".join(str(r) for r in reasons if r) or text)
    return f"{name}: {text}" if text else name


@implementer(IPushProducer)
class RTMPClientProtocol(Protocol):
    """One connection publishing (or playing) one stream at a remote server."""

    log = Logger()

    def __init__(
        self, client: ClientSession, handler: ClientHandler, clock: Any, setup_timeout: float
    ) -> None:
        self.client = client
        self.handler = handler
        self.clock = clock
        self.setup_timeout = setup_timeout
        #: True while the transport's buffer is full: write nothing until ``client_writable``.
        self.paused = False
        self.bytes_out = 0
        self.bytes_in = 0
        self._timer: Any = None
        self._ended = False
        self._reason: str | None = None
        self.connected_at: float | None = None
        self.peer_addr = ""
        self.local_addr = ""

    # -- transport ------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_at = self.clock.seconds()
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.peer_addr = f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"
        self.local_addr = f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}"
        self.transport.registerProducer(self, True)
        self._timer = self.clock.callLater(self.setup_timeout, self._setup_timed_out)
        self._write(self.client.initiate())

    def dataReceived(self, data: bytes) -> None:
        if self._ended or self._reason is not None:
            return
        self.bytes_in += len(data)
        session = self.client
        try:
            session.receive_data(data)
            while (event := session.next_event()) is not None:
                self._event(event)
                if self._ended or self._reason is not None:
                    return  # failed or finishing: nothing more is acted on
        except RemoteProtocolError as e:
            self._fail(f"protocol error from the server: {type(e).__name__}: {e}")
            return
        self._write(session.data_to_send())

    def _event(self, event: Any) -> None:
        if isinstance(event, StreamStarted):
            self._cancel_timer()
            self._write(self.client.data_to_send())
            self.handler.client_started(self)
        elif isinstance(event, Refused):
            detail = f"{event.stage} refused: {event.code or 'no code'}"
            if event.description:
                detail += f" ({event.description})"
            self._fail(detail)
        else:
            self.handler.client_event(self, event)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self._ended:
            return
        self._ended = True
        text = self._reason or describe_failure(reason)
        if self._reason is None and not self.client.active:
            text = f"connection closed at {self.client.state.value}: {text}"
        self.handler.client_ended(self, text)

    # -- producer ----------------------------------------------------------------------

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.handler.client_paused(self)

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.handler.client_writable(self)

    def stopProducing(self) -> None:
        self.paused = True

    # -- output ------------------------------------------------------------------------

    @property
    def stream_id(self) -> int:
        """The message stream id our media goes on (what ``createStream`` returned)."""
        return self.client.stream_id

    @property
    def chunk_size(self) -> int:
        """The chunk size our media is cut at."""
        return self.client.chunk_size

    def send_media(self, message: Message) -> None:
        """Write one audio/video/data message of the stream (only once started)."""
        self._write(self.client.send_media(message))

    def send_chunks(self, data: bytes) -> None:
        """Write one message already chunked for this connection (``publish_chunks`` for our
        ``stream_id`` and ``chunk_size``), shared with other connections: straight to the socket
        when Twisted has nothing buffered for it (``rtmpd.fastwrite``), in order behind what it has.
        Raises LocalProtocolError unless publishing."""
        if not self.client.publishing:
            raise LocalProtocolError("media before the stream started")
        if data and self.transport is not None and not self._ended:
            self.bytes_out += len(data)
            write_chunks(self.transport, (data,))

    def finish(self) -> None:
        """End politely: FCUnpublish and deleteStream, then close once they are written."""
        if self._ended or self.transport is None:
            return
        self._reason = "closed by rtmpd"
        self._write(self.client.close_stream())
        self.transport.loseConnection()

    def pause_reading(self) -> None:
        """Stop reading from the server (TCP pushes back on it) until ``resume_reading``."""
        if self.transport is not None and not self._ended:
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._ended:
            self.transport.resumeProducing()

    def abort(self, reason: str) -> None:
        """Close at once; ``reason`` is what the handler is told."""
        self._fail(reason)

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self._ended:
            self.bytes_out += len(data)
            self.transport.write(data)

    def _fail(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abortConnection()

    def _setup_timed_out(self) -> None:
        self._timer = None
        self._fail(f"no started stream within {self.setup_timeout:g} s (stuck at {self.client.state.value})")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


class RTMPClientFactory(Factory):
    """Builds the one protocol of one connection attempt (``endpoint.connect(factory)``)."""

    noisy = False  # one start/stop line per attempt says nothing the destination's own lines do not

    def __init__(self, build: Any) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> RTMPClientProtocol:
        return self._build()
