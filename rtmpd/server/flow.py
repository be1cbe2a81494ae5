"""``FlowControl``: a connection's output backpressure and input holds, as the relay reads them.

Output: the connection is its transport's push producer. When the socket
backs up the transport pauses it (``congested``); the relay then sends a
player no video until a keyframe, and nothing but configuration once more
than ``--max-queue-bytes`` was written since the pause (``over_queue_bound``).
Input: ``hold_input``/``release_input`` stop and restart reading (the
recorder holds a publisher back), counted.
"""

from __future__ import annotations

from typing import Any


class FlowControl:
    """Mixed into ``RTMPProtocol``, which provides ``transport``, ``clock``, ``config`` and ``_closing``."""

    transport: Any
    clock: Any
    config: Any
    _closing: bool

    def __init__(self) -> None:
        #: Set by the transport when its buffer is full, cleared when it has drained.
        self.congested = False
        self.paused_since = 0.0
        self.bytes_since_pause = 0
        self._input_holds = 0

    @property
    def over_queue_bound(self) -> bool:
        return self.congested and self.bytes_since_pause >= self.config.max_queue_bytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel (best effort: Twisted keeps this private;
        tests/test_fastwrite.py checks the attributes it reads)."""
        transport = self.transport
        buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
        return buffered + getattr(transport, "_tempDataLen", 0)

    def hold_input(self) -> None:
        self._input_holds += 1
        if self._input_holds == 1 and self.transport is not None:
            self.transport.pauseProducing()

    def release_input(self) -> None:
        if self._input_holds == 0:
            return
        self._input_holds -= 1
        if self._input_holds == 0 and self.transport is not None and not self._closing:
            self.transport.resumeProducing()

    # -- IPushProducer (the transport's calls) -------------------------------------------

    def pauseProducing(self) -> None:
        if not self.congested:
            self.congested = True
            self.paused_since = self.clock.seconds()
            self.bytes_since_pause = 0

    def resumeProducing(self) -> None:
        self.congested = False
