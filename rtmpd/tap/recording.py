"""Wiring of the recorder (``--record-dir``)."""

from __future__ import annotations

from typing import Any

from rtmpd.config import ServerConfig
from rtmpd.recording.recorder import Recorder

__all__ = ["install_recorder"]


def install_recorder(top: Any, config: ServerConfig, reactor: Any) -> Recorder:
    """Record every stream ``config`` says to, as a child service of ``top`` (its ``recorder``)."""
    # A writer thread gets the tags of one reactor turn at once, when the turn is over.
    top.recorder = Recorder(
        config, top.registry, top.clock, hand_over=lambda release: reactor.callLater(0, release)
    )
    top.recorder.setServiceParent(top)
    return top.recorder
