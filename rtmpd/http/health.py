"""``/healthz`` (the process answers) and ``/readyz`` (listeners up, record dir writable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.web.resource import Resource
from twisted.web.server import Request

from rtmpd.http.jsonio import json_body

#: One readiness check: its name, and a call answering (ok, detail).
Check = tuple[str, Callable[[], tuple[bool, str]]]


class Healthz(Resource):
    """200 ``{"status": "ok"}`` whenever the reactor runs: for liveness probes."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return json_body(request, {"status": "ok"})


class Readyz(Resource):
    """200 when every check passes, else 503; the body names each check and its detail."""

    isLeaf = True

    def __init__(self, checks: Sequence[Check]) -> None:
        super().__init__()
        self.checks = list(checks)

    def render_GET(self, request: Request) -> bytes:
        results = {}
        for name, check in self.checks:
            try:
                ok, detail = check()
            except Exception as e:  # a broken check is a failed check, not a 500
                ok, detail = False, f"check failed: {e}"
            results[name] = {"ok": ok, "detail": detail}
        ready = all(r["ok"] for r in results.values())
        return json_body(
            request, {"status": "ready" if ready else "not ready", "checks": results}, 200 if ready else 503
        )
