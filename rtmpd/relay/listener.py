"""The interface of services that follow every stream (the recorder, the reconnect waiter)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtmpd.core.classify import MediaInfo
from rtmpd.core.messages import Message

if TYPE_CHECKING:
    from rtmpd.relay.stream import Stream


class StreamListener:
    """What the registry tells interested services (the recorder) about every stream.

    Each call is isolated: an exception detaches the listener from that
    stream (it is then told ``stream_unpublished``) and is logged once.
    """

    def stream_published(self, stream: Stream) -> None:
        pass

    def stream_message(self, stream: Stream, message: Message, info: MediaInfo) -> None:
        pass

    def stream_unpublished(self, stream: Stream) -> None:
        pass
