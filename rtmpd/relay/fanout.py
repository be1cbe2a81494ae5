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
ready together. With a send window (``--send-window-ms``) it waits up to
that long before flushing, so one write carries every message of the
window: one timer for the whole fan-out, not one per player. A keyframe, a
sequence header or metadata ends the window at once (a player that waits
for a keyframe gets it without delay); control and command messages, and a
player's late-join burst, never wait (the peer writes them at once, after
what it had queued).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtmpd.core.chunks import encode_message
from rtmpd.core.flv import encode_tag
from rtmpd.core.messages import Message, MessageType

if TYPE_CHECKING:
    from rtmpd.core.classify import MediaInfo
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
    """Peers with queued media, flushed once the current input has been handled, or at the end of the
    send window.

    ``hold``/``release`` bracket the handling of one input. Without a window
    (``window`` 0) ``release`` flushes every marked peer, and a peer marked
    outside any input (a Deferred firing) is flushed on the next reactor
    turn (``clock.callLater(0, ...)``). With a window, the first mark after
    a flush starts one timer of ``window`` seconds and every peer marked
    until it fires is flushed then, in one pass; a message that must not
    wait (``stream_message`` sees a keyframe, a sequence header or metadata)
    makes the end of the current input flush everything at once. The
    outbox learns of those messages as a stream listener
    (``rtmpd.relay.listener.StreamListener``, not subclassed: that module
    imports the stream, which imports this one): the registry tells it of
    every message before the players are given it.
    """

    def __init__(self, clock: Any, window: float = 0.0) -> None:
        self._clock = clock
        #: Seconds media may wait for more media before it is written (0: no waiting).
        self.window = window
        self._dirty: list[Peer] = []
        self._holds = 0
        self._scheduled: Any = None
        #: When the scheduled flush is due (clock seconds).
        self._due = 0.0
        #: A message that must not wait was queued: flush at the end of the current input.
        self._urgent = False
        #: Flushes (passes over the marked peers) so far, and those a window's timer made.
        self.flushes = 0
        self.window_flushes = 0

    def mark(self, peer: Peer) -> None:
        """``peer`` has media queued: flush it when the current input is done (or the window ends)."""
        self._dirty.append(peer)
        if not self._holds:
            self._schedule()

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if self._holds:
            return
        if not self._dirty:
            self._urgent = False  # urgent media no player took
        elif self._urgent or not self.window:
            self.flush()
        else:
            self._schedule()

    # -- StreamListener --------------------------------------------------------

    def stream_published(self, stream: Any) -> None:
        pass

    def stream_unpublished(self, stream: Any) -> None:
        pass

    def stream_message(self, stream: Any, message: Message, info: MediaInfo) -> None:
        """Keyframes, sequence headers and metadata end the window: players waiting on them get them now."""
        if info.is_keyframe or info.config_slot is not None or info.is_metadata:
            self._urgent = True
            if not self._holds and self._dirty:
                self._schedule()

    def _schedule(self) -> None:
        """Make sure a flush is scheduled: now-ish for urgent media or without a window, else when the
        window that the first marked peer opened ends."""
        delay = 0.0 if (self._urgent or not self.window) else self.window
        scheduled = self._scheduled
        if scheduled is not None:
            if not delay and self._due > self._clock.seconds() and scheduled.active():
                scheduled.cancel()  # urgent media: do not wait for the window's end
            else:
                return
        self._due = self._clock.seconds() + delay
        self._scheduled = self._clock.callLater(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._scheduled = None
        if self.window and not self._urgent:
            self.window_flushes += 1
        self.flush()

    def flush(self) -> None:
        """Write every marked peer's queued media now."""
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        self._urgent = False
        dirty, self._dirty = self._dirty, []
        if dirty:
            self.flushes += 1
        for peer in dirty:
            peer.flush_media()
