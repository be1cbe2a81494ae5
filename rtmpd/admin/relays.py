"""The push and pull relays (``rtmpd.remote``) as the manhole and the JSON API show and drive them.

The services are found by name in the server's service tree ("push", "pull"); without them (or without
rules) the views are empty and the actions say so.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from rtmpd.admin.actions import Report
from rtmpd.admin.errors import AdminError, NotFound


def _service(server: Any, name: str) -> Any:
    try:
        return server.getServiceNamed(name)
    except (AttributeError, KeyError):
        return None


def relays_view(server: Any) -> dict[str, Any]:
    """Push rules and destinations (state, bytes, reconnects, last error), pull rules and upstreams."""
    push, pull = _service(server, "push"), _service(server, "pull")
    return {
        "push": {
            "rules": push.rules() if push is not None else [],
            "destinations": push.destinations() if push is not None else [],
        },
        "pull": {
            "rules": pull.rules() if pull is not None else {},
            "upstreams": pull.upstreams() if pull is not None else [],
        },
    }


class RelayActions:
    """Add, remove and restart push destinations at runtime, on behalf of ``user`` (logged)."""

    log = Logger()

    def __init__(self, server: Any, user: str, front: str = "Manhole") -> None:
        self.server = server
        self.user = user
        self.front = front

    def _push(self) -> Any:
        push = _service(self.server, "push")
        if push is None:
            raise AdminError("this server has no push service")
        return push

    def add_push(self, pattern: str, url: str) -> Report:
        """Push streams matching ``pattern`` (fnmatch over app/name) to ``url`` (``{app}``, ``{name}``)."""
        try:
            rule = self._push().add(pattern, url)
        except ValueError as e:  # a bad pattern or URL (rtmpd.remote.urls.URLError)
            raise AdminError(f"bad push rule: {e}") from e
        self.log.info(f"{self.front} push rule added", user=self.user, rule=rule, pattern=pattern)
        return Report(f"push rule {rule} added", rule=rule)

    def remove_push(self, rule: int) -> Report:
        try:
            self._push().remove(rule)
        except KeyError as e:
            raise NotFound(f"no push rule {rule}") from e
        self.log.info(f"{self.front} push rule removed", user=self.user, rule=rule)
        return Report(f"push rule {rule} removed", rule=rule)

    def restart_push(self, rule: int | None = None, key: str | None = None) -> Report:
        """Reconnect now the destinations of ``rule`` and/or stream ``key`` (all without either)."""
        count = self._push().restart(rule, key)
        self.log.info(f"{self.front} push restart", user=self.user, rule=rule, stream_key=key, count=count)
        return Report(f"{count} push destination(s) restarted", restarted=count)
