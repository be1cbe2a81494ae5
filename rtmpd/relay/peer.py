"""The small interface the relay, the recorder and the admin views need from one connection.

Everything outside ``rtmpd.server`` sees a connection only as a ``Peer``:
the relay queues serialised media on it and sends it status messages, the
recorder holds back a publisher's input, the admin views read its counters
and end it. ``rtmpd.server.protocol.RTMPProtocol`` is the implementation;
tests may bring their own.

Rules this module keeps:

- The relay decides per message and per player with attribute reads only
  (``chunk_size``, ``congested``, ``over_queue_bound``): they must be cheap.
- ``queue_media`` never writes at once: queued bytes go out together when the
  input being handled is done, or when the send window ends
  (``rtmpd.relay.fanout.Outbox``), so one socket write carries every message
  that became ready together.
- ``hold_input``/``release_input`` stop and restart reading the peer's
  socket. They are counted: input resumes when every hold was released.
  This is not the output flow control (``congested``), which the transport
  drives.
"""

from __future__ import annotations

from typing import Protocol

from rtmpd.core.messages import Message


class Peer(Protocol):
    """One connection as the relay sees it."""

    #: "c000042" ("w2-c000042" in worker 2 of --workers, ``rtmpd.conn_ids``): the id in every log line about
    #: this connection, unique on the host.
    conn_id: str
    #: "host:port" of the remote end.
    peer_addr: str
    #: The application the peer connected to ("live"); "" before connect.
    app: str
    #: Outgoing chunk size: relayed media is serialised for it (``fanout.FLV_TAGS``: as FLV tags).
    chunk_size: int
    #: True while the peer's socket is full (the transport paused us); media for it is dropped.
    congested: bool
    #: Bytes received from and written to the peer (RTMP framing included).
    bytes_in: int
    bytes_out: int

    @property
    def over_queue_bound(self) -> bool:
        """True once a congested peer has had more than the queue bound written to it since it backed up."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes written to the peer that its socket has not taken yet (best effort)."""

    def queue_media(self, data: bytes) -> None:
        """Queue serialised chunks (``rtmpd.relay.fanout.serialise``) to go out with the current input."""

    def flush_media(self) -> None:
        """Write what ``queue_media`` queued now."""

    def send_command(self, message: Message) -> None:
        """Send a command or data message (``onStatus``...) at once, after any queued media."""

    def send_control(self, message: Message) -> None:
        """Send a protocol or user control message at once, after any queued media."""

    def close(self, reason: str) -> None:
        """Close after what was written has been sent; ``reason`` goes in the closing log line."""

    def abort(self, reason: str) -> None:
        """Close at once, discarding what the peer has not read."""

    def hold_input(self) -> None:
        """Stop reading from the peer (TCP pushes back on it) until ``release_input``."""

    def release_input(self) -> None:
        """Undo one ``hold_input``."""

    def roles(self) -> list[str]:
        """What the peer does now: ``["publish live/a"]``, ``["play live/b"]``, or ``[]``."""
