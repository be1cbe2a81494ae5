"""The ``twisted.web`` Site that serves rtmpd's HTTP tree, with the limits a public listener needs."""

from __future__ import annotations

from twisted.web.resource import IResource
from twisted.web.server import Site

#: Seconds a client may keep an HTTP connection idle (no request, or a request arriving too slowly).
IDLE_TIMEOUT = 60


class HTTPSite(Site):
    """A Site that never parses form bodies (a client cannot make it decode multipart uploads)
    and writes no access log of its own (rtmpd logs what matters through its own logger)."""

    noisy = False

    def __init__(self, root: IResource, timeout: float = IDLE_TIMEOUT, reactor=None) -> None:
        super().__init__(root, timeout=timeout, reactor=reactor, parsePOSTFormSubmission=False)
        self.displayTracebacks = False

    def log(self, request) -> None:
        pass
