"""Serves the dashboard: the page at ``/``, its files at ``/dashboard/`` (ours from ``static/``, committed;
hls.js and mpegts.js from ``vendor/``, installed from npm by the build, never committed)."""

from __future__ import annotations

import os

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from twisted.web.static import File

from rtmpd.http.jsonio import ErrorResource, HTTPError

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: Where the build puts the npm packages the page uses (scripts/install-dashboard-vendor).
VENDOR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
#: The vendor scripts the page may load, by the name it asks for: their path under VENDOR_DIR.
VENDOR_FILES = {
    b"hls.min.js": os.path.join("node_modules", "hls.js", "dist", "hls.min.js"),
    b"mpegts.js": os.path.join("node_modules", "mpegts.js", "dist", "mpegts.js"),
}
#: Our own files, by name, with their content types (nothing else is served).
STATIC_FILES = {
    b"app.js": "text/javascript; charset=utf-8",
    b"style.css": "text/css; charset=utf-8",
}


def _not_found(request: Request) -> IResource:
    return ErrorResource(HTTPError(404, "no such path", path=request.path.decode("latin-1")[:200]))


class DashboardPage(Resource):
    """``/``: the page itself (``static/index.html``)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        # Read once at start-up: no file I/O on the reactor thread per request.
        with open(os.path.join(STATIC_DIR, "index.html"), "rb") as f:
            self.body = f.read()

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return _not_found(request).render(request)
        body = self.body
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return body


class DashboardFiles(Resource):
    """``/dashboard/NAME``: one of ``STATIC_FILES``, or ``vendor/hls.min.js`` when it is installed."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path in STATIC_FILES and not request.postpath:
            return File(os.path.join(STATIC_DIR, path.decode()), defaultType=STATIC_FILES[path])
        if path == b"vendor" and len(request.postpath) == 1:
            name = request.postpath.pop(0)
            request.prepath.append(name)
            relative = VENDOR_FILES.get(name)
            full = os.path.join(VENDOR_DIR, relative) if relative else ""
            if relative and os.path.isfile(full):
                return File(full, defaultType="text/javascript; charset=utf-8")
            return ErrorResource(HTTPError(404, "not installed", file=name.decode("latin-1")[:100]))
        return _not_found(request)

