"""``/metrics``: the server's Prometheus metrics, in the format the scraper asks for.

The exposition is ``prometheus_client``'s (text format 0.0.4, or
OpenMetrics when the ``Accept`` header asks for it), rendered in the reactor
thread: the collectors read live server state that only that thread may
touch (``prometheus_client.twisted.MetricsResource`` would render in a
thread pool). Only GET and HEAD are answered; a collector that fails gives a
JSON 500 and is logged, and the server goes on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from rtmpd.http.jsonio import HTTPError, error_body

__all__ = ["MetricsResource"]


class MetricsResource(Resource):
    """Serves ``registry`` (a ``prometheus_client.CollectorRegistry``) to Prometheus scrapers."""

    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error_body(request, HTTPError(405, "method not allowed", allow=["GET", "HEAD"]))
        return super().render(request)

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        try:
            body = encoder(self.registry)
        except Exception:
            self.log.failure("Metrics collection failed")
            return error_body(request, HTTPError(500, "metrics collection failed"))
        request.setHeader(b"content-type", content_type.encode("latin-1"))
        request.setHeader(b"cache-control", b"no-store")
        return body
