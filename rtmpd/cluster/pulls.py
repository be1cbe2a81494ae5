"""The edge side of a cluster: local players of a key whose origin is another node.

``ClusterPulls`` serves a key that has players here and no publisher by
pulling it from its origin (the directory's owner, at its ``pull_url``)
through one ``rtmpd.remote.upstream.Upstream`` per key, however many local
players. The pulled copy is published here like any stream (late-join cache,
players' access control and metrics are the local ones), with two
differences: it is **never recorded** (recording happens once, on the
origin) and **never claimed** (``is_copy``). Promises:

- A play of a key without a local publisher looks the key up (the registry's
  missing-publisher cue); a key with nobody's claim leaves the players
  waiting, as on one server; every second the sweep looks again for keys
  that have players and no publisher (a publisher that appears later on
  another node, or a key that moved).
- An upstream follows its key: when the directory names another owner, it
  is closed and one to the new owner opened. It closes once the key has had
  no player for ``idle`` seconds, or when this node claims the key.
- Directory down: live pulls go on; a player waiting for a key that must be
  looked up is told ``NetStream.Play.Failed`` ("cluster directory
  unavailable") and the outage is logged once; lookups resume by themselves.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtmpd.cluster.directory import DirectoryUnavailable, Node, StreamDirectory
from rtmpd.core.commands import on_status
from rtmpd.remote.upstream import RelayMark, Upstream
from rtmpd.remote.urls import RemoteURL, URLError

if TYPE_CHECKING:
    from rtmpd.relay.publication import Publication
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream
    from rtmpd.remote.backoff import Backoff

__all__ = ["ClusterPulls", "pull_url_of"]

#: Seconds between two sweeps (idle upstreams, moved keys, players waiting for a key).
SWEEP_INTERVAL = 1.0
UNAVAILABLE = "NetStream.Play.Failed"


def pull_url_of(node: Node, key: str, connect_query: str = "", play_query: str = "") -> RemoteURL:
    """Where ``key`` is pulled from at ``node``: its pull URL, the key's app and name, and the
    internal-pull signatures as the app's and the name's queries. Raises URLError."""
    base = RemoteURL.parse(node.pull_url.rstrip("/") + "/" + key)
    app = f"{base.app}?{connect_query}" if connect_query else base.app
    name = f"{base.name}?{play_query}" if play_query else base.name
    return RemoteURL(base.scheme, base.host, base.port, app, name)


class _CopyRegistry:
    """The registry as a cluster upstream sees it: what it publishes is never recorded."""

    def __init__(self, registry: StreamRegistry) -> None:
        self._registry = registry

    def publish(self, key: str, publication: Publication) -> Stream:
        publication.record = False
        return self._registry.publish(key, publication)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)


class ClusterUpstream(Upstream):
    """An ``Upstream`` that pulls a key from its origin node; ``node`` is that origin."""

    def __init__(self, node: Node, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node = node

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "origin": self.node.node_id}


class ClusterPulls(service.Service):
    """Pulls keys that local players want from their origin nodes (see the module docstring).

    ``connect(upstream)`` opens an upstream's connection (``make_connector``
    in play mode); ``sign(action, key)`` gives the query that lets an
    internal pull past the origin's access control ("" for none).
    """

    log = Logger()
    name = "cluster-pulls"

    def __init__(
        self,
        registry: StreamRegistry,
        directory: StreamDirectory,
        clock: Any,
        connect: Callable[[Upstream], Any],
        *,
        idle: float = 10.0,
        sign: Callable[[str, str], str] = lambda action, key: "",
        backoff: Callable[[], Backoff] | None = None,
    ) -> None:
        self.registry = registry
        self.directory = directory
        self.clock = clock
        self._connect = connect
        self.idle = idle
        self._sign = sign
        self._backoff = backoff
        self._copies = _CopyRegistry(registry)
        self._upstreams: dict[str, ClusterUpstream] = {}
        self._idle_since: dict[str, float] = {}
        self._looking: set[str] = set()
        #: Internal pulls started, and bytes received by those that ended (for the metrics).
        self.started = 0
        self._ended_bytes = 0
        self.unavailable = False
        #: Players already told that the directory is down (told once per outage).
        self._told: weakref.WeakSet = weakref.WeakSet()
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = clock

    @property
    def node(self) -> Node:
        return self.directory.node

    def is_copy(self, publication: Publication) -> bool:
        """Whether ``publication`` is one of this service's pulled copies."""
        return isinstance(publication.authorisation, RelayMark) and isinstance(
            publication.peer, ClusterUpstream
        )

    def upstreams(self) -> list[dict[str, Any]]:
        """One row per internal pull: the key, its origin, state, bytes and players."""
        return [upstream.stats() for upstream in self._upstreams.values()]

    def pulled_bytes(self) -> int:
        """Bytes received by every internal pull since start (media payloads)."""
        return self._ended_bytes + sum(upstream.bytes_in for upstream in self._upstreams.values())

    def _forget(self, key: str) -> ClusterUpstream | None:
        upstream = self._upstreams.pop(key, None)
        self._idle_since.pop(key, None)
        if upstream is not None:
            self._ended_bytes += upstream.bytes_in
        return upstream

    def origin_of(self, key: str) -> str | None:
        """The node id a pulled key comes from (None: not pulled here)."""
        upstream = self._upstreams.get(key)
        return upstream.node.node_id if upstream is not None else None

    # -- service ---------------------------------------------------------------------------

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
        for key in list(self._upstreams):
            self._forget(key).stop("server stopping")

    def give_way(self, key: str) -> None:
        """This node claimed ``key``: its pulled copy, if any, stops (the origin's ``on_claimed``)."""
        upstream = self._forget(key)
        if upstream is not None:
            upstream.stop("the key is now published on this node")

    # -- looking keys up ---------------------------------------------------------------------

    def missing_publisher(self, key: str) -> None:
        # The player that asked is added right after this cue: look once it is there.
        self.clock.callLater(0, self._look_up, key)

    def _look_up(self, key: str) -> None:
        if key in self._looking or not self._wants_pull(key):
            return
        self._looking.add(key)
        d = self.directory.lookup(key)
        d.addCallbacks(self._found, self._lookup_failed, callbackArgs=(key,), errbackArgs=(key,))
        d.addBoth(self._looked, key)

    def _looked(self, result: Any, key: str) -> Any:
        self._looking.discard(key)
        return result

    def _wants_pull(self, key: str) -> bool:
        stream = self.registry.get(key)
        if stream is None or not stream.players:
            return False
        return stream.publisher is None or self.is_copy(stream.publisher)

    def _found(self, owner: Node | None, key: str) -> None:
        self._directory_back()
        current = self._upstreams.get(key)
        if current is not None and current.state != "stopped" and owner == current.node:
            return
        if owner is None or owner.node_id == self.node.node_id:
            return  # nobody publishes it (the players wait), or this node's claim and publisher settle it
        if not self._wants_pull(key):
            return
        if current is not None:
            self._forget(key)
            current.stop(f"the key moved to {owner.node_id}")
        self._start(key, owner)

    def _start(self, key: str, owner: Node) -> None:
        try:
            url = pull_url_of(owner, key, self._sign("connect", key), self._sign("play", key))
        except URLError as e:
            self.log.warn(
                "Cannot pull from this node's pull URL", stream_key=key, owner=owner.node_id, error=str(e)
            )
            return
        upstream = ClusterUpstream(
            owner,
            key,
            url,
            self._copies,
            connect=self._connect,
            clock=self.clock,
            backoff=self._backoff() if self._backoff is not None else None,
        )
        self._upstreams[key] = upstream
        self._idle_since.pop(key, None)
        self.started += 1
        self.log.info("Internal pull started", stream_key=key, origin=owner.node_id)
        upstream.start()

    def _lookup_failed(self, failure: Failure, key: str) -> None:
        failure.trap(DirectoryUnavailable)
        if not self.unavailable:
            self.unavailable = True
            self.log.warn(
                "Cluster directory unavailable: plays of keys not live here fail",
                stream_key=key,
                error=failure.getErrorMessage(),
            )
        if key in self._upstreams:
            return  # a live pull goes on with the origin it has
        stream = self.registry.get(key)
        if stream is None or stream.publisher is not None:
            return
        for player in list(stream.players):
            if player in self._told:
                continue
            self._told.add(player)
            player.peer.send_command(
                on_status(
                    player.stream_id,
                    "error",
                    UNAVAILABLE,
                    f"{key}: cluster directory unavailable, cannot find the stream's origin",
                )
            )

    def _directory_back(self) -> None:
        if self.unavailable:
            self.unavailable = False
            self._told = weakref.WeakSet()
            self.log.info("Cluster directory available again: lookups resume")

    # -- the sweep ---------------------------------------------------------------------------

    def sweep(self) -> None:
        now = self.clock.seconds()
        for key, upstream in list(self._upstreams.items()):
            stream = self.registry.get(key)
            if upstream.state == "stopped":
                self._forget(key)
            elif stream is not None and stream.players:
                self._idle_since.pop(key, None)
                self._look_up(key)  # follows a key that moved to another node
            elif now - self._idle_since.setdefault(key, now) >= self.idle:
                self._forget(key)
                upstream.stop(f"no player for {self.idle:g} s")
        for stream in self.registry:
            if stream.key not in self._upstreams:
                self._look_up(stream.key)
