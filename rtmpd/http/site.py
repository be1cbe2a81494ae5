"""The ``twisted.web`` Site that serves rtmpd's HTTP tree, with the limits a public listener needs."""

from __future__ import annotations

from twisted.web.resource import IResource
from twisted.web.server import Site

from rtmpd.http.limits import MAX_BODY_BYTES, REQUEST_TIMEOUT, BoundedRequest

#: Seconds a client may keep an HTTP connection idle (no request, or a request arriving too slowly).
IDLE_TIMEOUT = 60


class HTTPSite(Site):
    """A Site that never parses form bodies (a client cannot make it decode multipart uploads)
    and writes no access log of its own (rtmpd logs what matters through its own logger).
    Requests are ``BoundedRequest``: bodies over ``max_body`` bytes get 413, requests that take
    over ``request_timeout`` seconds to arrive get 408. When the root has a ``lean_channel`` (HLS sets
    one), each connection starts on it and is handed to twisted.web's channel at the first request
    it does not serve."""

    noisy = False
    requestFactory = BoundedRequest

    def __init__(
        self,
        root: IResource,
        timeout: float = IDLE_TIMEOUT,
        reactor=None,
        max_body: int = MAX_BODY_BYTES,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(root, timeout=timeout, reactor=reactor, parsePOSTFormSubmission=False)
        self.displayTracebacks = False
        self.max_body = max_body
        self.request_timeout = request_timeout

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        # A lean channel serves the requests it knows and hands the connection to twisted.web's for the rest.
        lean = getattr(self.resource, "lean_channel", None)
        return channel if lean is None else lean(channel, addr)

    def log(self, request) -> None:
        pass
