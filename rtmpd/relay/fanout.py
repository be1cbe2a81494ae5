"""The fan-out: relayed media serialised once, queued per peer, written once per input.

Relayed media travels on chunk streams of its own, every message with a
full (fmt 0) header, so the bytes made for one player are right for every
player with the same outgoing chunk size and message stream id: a message is
serialised once per such group (in practice once), not once per player.
HTTP-FLV players form one more group: their "chunk size" is ``FLV_TAGS`` and
they get the message as one FLV tag, made once for all of them.

``Outbox`` collects the peers that have media queued while one input is
being handled (a publisher's ``dataReceived``) and flushes each of them once
when it is done, so one socket write carries every message that became
ready together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtmpd.core.chunks import encode_message
from rtmpd.core.flv import encode_tag
from rtmpd.core.messages import Message, MessageType

if TYPE_CHECKING:
    from rtmpd.relay.peer import Peer

#: Chunk streams for relayed media (never 2, which is protocol control, nor 3, commands).
DATA_CSID = 5
AUDIO_CSID = 6
VIDEO_CSID = 7
_CSID = {MessageType.AUDIO: AUDIO_CSID, MessageType.VIDEO: VIDEO_CSID}


def media_csid(type_id: int) -> int:
    """The chunk stream relayed messages of ``type_id`` travel on."""
    return _CSID.get(type_id, DATA_CSID)


#: The ``chunk_size`` of peers that take FLV tags (HTTP-FLV players), not RTMP chunks.
FLV_TAGS = 0


def serialise(message: Message, stream_id: int, chunk_size: int) -> bytes:
    """``message`` as chunks for a player on message stream ``stream_id``, or as one FLV tag when
    ``chunk_size`` is ``FLV_TAGS`` (an HTTP-FLV player: the stream id does not matter then)."""
    if chunk_size == FLV_TAGS:
        return encode_tag(message.type_id, message.timestamp, message.payload)
    out = Message(message.type_id, message.timestamp, stream_id, message.payload)
    return encode_message(media_csid(message.type_id), out, chunk_size)


class Outbox:
    """Peers with queued media, flushed once the current input has been handled.

    ``hold``/``release`` bracket the handling of one input; a peer marked
    outside any input (a Deferred firing) is flushed on the next reactor
    turn (``clock.callLater(0, ...)``).
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._dirty: list[Peer] = []
        self._holds = 0
        self._scheduled: Any = None

    def mark(self, peer: Peer) -> None:
        """``peer`` has media queued: flush it when the current input is done."""
        self._dirty.append(peer)
        if not self._holds and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self.flush)

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if not self._holds:
            self.flush()

    def flush(self) -> None:
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        dirty, self._dirty = self._dirty, []
        for peer in dirty:
            peer.flush_media()
