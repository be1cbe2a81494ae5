"""Wiring of LL-HLS (``--hls``): the muxers as a stream listener, ``/hls/`` on the HTTP tree."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.application import service

if TYPE_CHECKING:
    from rtmpd.hls.live import HLSSettings
    from rtmpd.http.root import HTTPRoot
    from rtmpd.server.service import RTMPService


class _HLSService(service.Service):
    """Starts the muxers' idle reaper with the server and frees every muxer when it stops."""

    def __init__(self, muxers: Any) -> None:
        self.muxers = muxers

    def startService(self) -> None:
        super().startService()
        self.muxers.start()

    def stopService(self) -> None:
        self.muxers.stop()
        return super().stopService()


def hls_settings(options: Any) -> HLSSettings:
    """The ``HLSSettings`` of parsed options; raises ValueError for inconsistent durations."""
    from rtmpd.hls.live import HLSSettings

    return HLSSettings(
        segment_duration=options["hls-segment-duration"],
        part_duration=options["hls-part-duration"],
        window=options["hls-window"],
    )


def install_hls(top: RTMPService, root: HTTPRoot, settings: HLSSettings, reactor: Any) -> None:
    """Mount ``/hls/`` on ``root``, serving every live stream of ``top``'s registry."""
    from rtmpd.hls.access import PlayPermissions
    from rtmpd.hls.answers import HLSAnswers
    from rtmpd.hls.channel import lean_channel
    from rtmpd.hls.live import HLSMuxers
    from rtmpd.hls.resource import HLSResource

    muxers = HLSMuxers(top.registry, settings, reactor, time.time)
    permissions = PlayPermissions(lambda: getattr(top.factory, "access", None), reactor.seconds)
    answers = HLSAnswers(muxers, permissions)
    root.mount("hls", HLSResource(answers))
    # Plain GETs of /hls/ skip twisted.web: an LL-HLS viewer makes several requests a second.
    root.lean_channel = lean_channel(answers, reactor)
    _HLSService(muxers).setServiceParent(top)
