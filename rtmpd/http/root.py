"""The root of rtmpd's HTTP tree: features mounted by name, a JSON 404 for anything else."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from rtmpd.http.jsonio import ErrorResource, HTTPError, json_body


class HTTPRoot(Resource):
    """Children are mounted by name (``mount("metrics", ...)`` serves ``/metrics``); any other path
    answers a JSON 404. ``/`` itself lists what is mounted until a resource is mounted at ``""``
    (the dashboard)."""

    def __init__(self) -> None:
        super().__init__()
        self.mounted: list[str] = []
        #: Asked for any first path segment that nothing is mounted at (the HTTP-FLV players' ``/APP/...``).
        self.fallback: IResource | None = None
        #: Set by a feature that serves some requests without twisted.web (``HTTPSite.buildProtocol``).
        self.lean_channel: Callable[[Protocol, IAddress], Protocol] | None = None

    def mount(self, name: str, resource: IResource) -> None:
        """Serve ``resource`` at ``/name`` (``""``: at ``/``). A name is mounted once."""
        if name in self.mounted:
            raise ValueError(f"/{name} is already mounted")
        self.mounted.append(name)
        self.putChild(name.encode(), resource)

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"" and not request.postpath:
            return self
        if self.fallback is not None and path:
            return self.fallback.getChildWithDefault(path, request)
        return ErrorResource(HTTPError(404, "no such path", path=request.path.decode("latin-1")[:200]))

    def render_GET(self, request: Request) -> bytes:
        return json_body(request, {"paths": sorted(f"/{name}" for name in self.mounted if name)})
