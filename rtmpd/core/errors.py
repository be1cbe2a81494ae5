"""Typed errors of the RTMP core.

Every error says who broke the protocol:

- ``RemoteProtocolError``: the peer sent something illegal. The connection
  cannot go on; the adapter logs it, answers with ``status_code`` where the
  protocol has a way to say it, and closes.
- ``LocalProtocolError``: we asked the core to do something illegal (a bug
  on our side, never the peer's fault).
- ``CommandError``: a well-formed command that the server refuses (a bad
  argument, a name already taken). It carries no wire code: each command's
  error map (``rtmpd.server.dispatch``) says which status code answers it
  and whether the connection closes after the answer.

Nothing malformed that arrives from the network raises anything other than a
subclass of ``RemoteProtocolError``.
"""

from __future__ import annotations


class RTMPError(Exception):
    """Base class of every error the core raises on purpose."""


class RemoteProtocolError(RTMPError):
    """The peer violated the protocol; the connection must be closed."""

    #: The ``_error`` code that answers this error before the close, if any.
    status_code: str | None = None


class LocalProtocolError(RTMPError):
    """We tried to do something the protocol does not allow."""


class HandshakeError(RemoteProtocolError):
    """C0/C1/C2 were malformed or asked for an unsupported version."""


class ChunkStreamError(RemoteProtocolError):
    """A chunk header or the chunk sequence was illegal."""


class InvalidChunkSize(ChunkStreamError):
    """Set Chunk Size outside 1..2**31-1."""


class MessageTooLarge(ChunkStreamError):
    """A message header announced more bytes than the configured limit."""


class TooManyChunkStreams(ChunkStreamError):
    """The peer opened more chunk streams than the configured limit."""


class PartialMessagesTooLarge(ChunkStreamError):
    """The messages in progress on all chunk streams together announce more bytes than the limit."""


class RateLimitExceeded(RemoteProtocolError):
    """The peer sent more messages or bytes per second than its budget allows (``Limits``).

    Before ``publish`` the command budget applies, after it the (much larger) media
    budget; either way the connection is closed.
    """


class TooManyTracks(RemoteProtocolError):
    """An Enhanced RTMP publisher used more tracks, or more distinct codecs (FourCCs), than allowed."""


class MalformedControlMessage(RemoteProtocolError):
    """A protocol control or user control message had the wrong shape."""


class AMFDecodeError(RemoteProtocolError):
    """AMF0/AMF3 bytes could not be decoded (truncated, unknown marker, bad reference, too deep)."""


class AMFBudgetExceeded(AMFDecodeError):
    """AMF bytes decode to more values or bytes than one message may (references counted each time used).

    References let a few bytes stand for a large value; the decoder counts what
    each reference stands for, so an exponential expansion stops here.
    """


class AMFEncodeError(LocalProtocolError):
    """A Python value has no AMF representation."""


class MalformedCommand(RemoteProtocolError):
    """A command message decoded as AMF but lacks a name or transaction id."""

    status_code = "NetConnection.Call.BadValue"


class MalformedTag(RTMPError):
    """An audio/video/FLV tag is truncated or inconsistent.

    Not a ``RemoteProtocolError``: media is relayed untouched, so a tag we
    cannot parse is logged and passed on; it never ends the connection.
    """


class CommandBeforeConnect(RemoteProtocolError):
    """A command other than ``connect`` arrived before ``connect`` succeeded."""

    status_code = "NetConnection.Call.Failed"


class CommandError(RTMPError):
    """A command that cannot be carried out; ``description`` says why, for the client and the log.

    The command's error map chooses the status code of the answer and
    whether the connection closes after it; a ``CommandError`` that the map
    does not name is answered ``NetConnection.Call.Failed`` and the
    connection lives on.
    """

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.description = description


class BadArgument(CommandError):
    """A declared argument is missing, of the wrong type, not a finite number or too long."""

    def __init__(self, command: str, argument: str, problem: str) -> None:
        super().__init__(f"{command}: argument {argument!r} {problem}")
        self.argument = argument


class ConnectRejected(CommandError):
    """``connect`` is refused for who asks or how (access control), not for what it names."""


class InvalidApp(CommandError):
    """``connect`` names an application this server does not serve."""


class BadStreamName(CommandError):
    """A stream key that cannot be published now: it has a live publisher, or the stream is in use."""


class UnknownCommand(CommandError):
    """No responder has the command's name."""


class NestedAggregate(RemoteProtocolError):
    """An Aggregate message (type 22) carried another Aggregate message.

    Aggregates are split one level deep, without recursion; nothing in RTMP
    needs more, so a nested one is refused rather than unwrapped.
    """


class InvalidWindowAckSize(MalformedControlMessage):
    """Window Acknowledgement Size 0: a window the peer cannot mean (it would ask an ack per byte)."""


class Fmp4Error(RTMPError):
    """A media message the fragmented-MP4 muxer cannot put in a file.

    Its codec configuration (sequence header) or frame header is truncated
    or not what its codec requires. Like ``MalformedTag``, not a
    ``RemoteProtocolError``: the message is still relayed untouched; only
    its MP4 rendition is impossible.
    """


class Fmp4ConfigChanged(Fmp4Error):
    """A track's codec configuration changed after the init segment (or a sample) was made from it.

    The muxer keeps the old configuration; a new init segment needs a new
    muxer (an HLS discontinuity, a new recording file).
    """
