"""The pull service: rtmpd as an edge of another origin (``--pull 'APP=rtmp://origin/app'``).

A player asking for ``APP/NAME`` here while nobody publishes it makes the
service play ``NAME`` at the origin (the registry's missing-publisher
callback) through one ``Upstream`` per key, however many players come; the
pulled stream is then served like a local publisher's (GOP cache, late join,
recording). The upstream reconnects with backoff while the key has players,
and closes once it has had none for ``idle`` seconds (checked every
second). ``add``/``remove``/``upstreams`` are the runtime API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from rtmpd.remote.backoff import Backoff
from rtmpd.remote.upstream import Upstream
from rtmpd.remote.urls import RemoteURL, URLError, render, template_fields

if TYPE_CHECKING:
    from rtmpd.relay.registry import StreamRegistry

__all__ = ["PullService"]

#: Seconds between two looks for upstreams without players.
SWEEP_INTERVAL = 1.0


def pull_template(url: str) -> str:
    """The upstream URL template of a pull rule: ``{name}`` appended unless the URL places it."""
    fields = template_fields(url)
    template = url if "name" in fields else url.rstrip("/") + "/{name}"
    render(template, "app/name")  # raises URLError when it names no stream
    return template


class PullService(service.Service):
    """Pulls streams that local players ask for from their app's origin (see the module docstring)."""

    log = Logger()
    name = "pull"

    def __init__(
        self,
        registry: StreamRegistry,
        clock: Any,
        connect: Callable[[Upstream], Any],
        *,
        idle: float = 10.0,
        is_self: Callable[[RemoteURL], bool] = lambda url: False,
        backoff: Callable[[], Backoff] | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self._connect = connect
        self.idle = idle
        self._is_self = is_self
        self._backoff = backoff
        self._rules: dict[str, str] = {}
        self._upstreams: dict[str, Upstream] = {}
        self._idle_since: dict[str, float] = {}
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def add(self, app: str, url: str) -> None:
        """Pull the streams of local ``app`` from ``url`` (the origin's app URL). Raises URLError."""
        if not app or "/" in app:
            raise URLError(f"{app!r}: a pull rule names one local app")
        template = pull_template(url)
        sample = render(template, f"{app}/name")
        if self._is_self(sample) and sample.app == app:
            raise URLError(f"{url!r} pulls {app} from itself on this server")
        self._rules[app] = template
        self.log.info(
            "Pull rule added", app=app, url=RemoteURL.parse(template.format(app=app, name="x")).tc_url
        )

    def remove(self, app: str) -> None:
        """Forget ``app``'s rule and close its upstreams. Raises KeyError for an unknown app."""
        del self._rules[app]
        for key in [k for k in self._upstreams if k.partition("/")[0] == app]:
            self._upstreams.pop(key).stop("pull rule removed")
            self._idle_since.pop(key, None)

    def rules(self) -> dict[str, str]:
        return dict(self._rules)

    def upstreams(self) -> list[dict[str, Any]]:
        return [upstream.stats() for upstream in self._upstreams.values()]

    # -- service -------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.registry.on_missing_publisher.append(self.missing_publisher)
        self._sweeper.start(SWEEP_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self.missing_publisher in self.registry.on_missing_publisher:
            self.registry.on_missing_publisher.remove(self.missing_publisher)
        if self._sweeper.running:
            self._sweeper.stop()
        for upstream in self._upstreams.values():
            upstream.stop("server stopping")
        self._upstreams.clear()

    # -- the registry's cue and the idle sweep ----------------------------------------------------

    def missing_publisher(self, key: str) -> None:
        app, _, name = key.partition("/")
        template = self._rules.get(app)
        if template is None:
            return
        upstream = self._upstreams.get(key)
        if upstream is not None and upstream.state != "stopped":
            return
        url = render(template, key)
        upstream = Upstream(
            key,
            url,
            self.registry,
            connect=self._connect,
            clock=self.clock,
            backoff=self._backoff() if self._backoff is not None else None,
        )
        self._upstreams[key] = upstream
        self._idle_since.pop(key, None)
        upstream.start()

    def _has_players(self, key: str) -> bool:
        stream = self.registry.get(key)
        return stream is not None and bool(stream.players)

    def sweep(self) -> None:
        now = self.clock.seconds()
        for key, upstream in list(self._upstreams.items()):
            if upstream.state == "stopped":
                del self._upstreams[key]
                self._idle_since.pop(key, None)
            elif self._has_players(key):
                self._idle_since.pop(key, None)
            elif now - self._idle_since.setdefault(key, now) >= self.idle:
                del self._upstreams[key]
                del self._idle_since[key]
                upstream.stop(f"no player for {self.idle:g} s")
