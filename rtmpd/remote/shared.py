"""One source message's outgoing chunks, made once for every push destination that sends the same bytes.

A push destination sends each message of its stream re-stamped on its own
timeline, on its connection's message stream id, at its connection's chunk
size (``rtmpd.core.client.publish_chunks``). Destinations for which those
three agree (in practice all of a stream's destinations that connected
together) send byte-for-byte the same chunks, so ``SharedChunks`` makes them
once per distinct (timestamp, stream id, chunk size) and hands the same
``bytes`` to each: grouping follows what goes out, so a destination whose
timeline diverged (a reconnect, a new publisher after the grace) simply gets
chunks of its own until its timestamps match the others' again.
"""

from __future__ import annotations

from rtmpd.core.client import publish_chunks
from rtmpd.core.messages import Message

__all__ = ["SharedChunks"]


class SharedChunks:
    """The chunks of ``message`` as each destination sends it; each distinct form is made once."""

    __slots__ = ("message", "_key", "_data", "_others")

    def __init__(self, message: Message) -> None:
        self.message = message
        # Nearly always one form: kept apart from the dict the rare second one needs.
        self._key: tuple[int, int, int] | None = None
        self._data = b""
        self._others: dict[tuple[int, int, int], bytes] | None = None

    def chunks(self, timestamp: int, stream_id: int, chunk_size: int) -> bytes:
        """The message stamped ``timestamp`` on message stream ``stream_id``, chunked at ``chunk_size``."""
        key = (timestamp, stream_id, chunk_size)
        if key == self._key:
            return self._data
        if self._key is None:
            self._key = key
            self._data = data = self._make(key)
            return data
        others = self._others
        if others is None:
            others = self._others = {}
        data = others.get(key)
        if data is None:
            data = others[key] = self._make(key)
        return data

    @property
    def forms(self) -> int:
        """How many distinct serialisations were made (for tests and the benchmark)."""
        return (self._key is not None) + len(self._others or ())

    def _make(self, key: tuple[int, int, int]) -> bytes:
        m = self.message
        return publish_chunks(m.type_id, key[0], m.payload, key[1], key[2])
