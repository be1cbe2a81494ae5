"""Typed refusals that the server's own limits raise (the protocol's are in ``rtmpd.core.errors``)."""

from __future__ import annotations

from rtmpd.core.errors import CommandError


class TooManyStreamRequests(CommandError):
    """The connection made more createStream/publish/play requests than ``--max-stream-requests``."""
