"""The origin side of a cluster: this node's claims on the keys published here.

``ClusterOrigin`` keeps the directory true for the keys whose publisher is a
client of this node. Promises:

- **Claim before accepting.** A client's publish waits for the claim (a
  registry publish check, next to the access decision); another node's live
  claim refuses it with ``BadStreamName`` (``NetStream.Publish.BadName``),
  exactly as a local duplicate is refused. With ``publish_takeover`` the
  claim is taken whoever holds it, and the node that held it closes its
  publisher at its next refresh ("claim lost").
- **Idle takeover across nodes.** The claim of a publisher silent for the
  publisher timeout is no longer refreshed, so it expires within the TTL and
  another node may claim the key; the registry's sweep drops that publisher
  here anyway, which releases the claim at once.
- **Refresh every ttl/3** while the publisher lives; **release** when it
  leaves. A refresh that finds the claim gone tries to claim again (the
  directory may have lost it while unreachable); a key held by another node
  closes the local publisher.
- **The directory down does not stop publishing.** A publish while the
  directory cannot be asked is accepted and logged; its claim is made at the
  first refresh after the directory returns (and if another node took the
  key meanwhile, the local publisher is closed then).
- Pulled copies of other nodes' streams (``rtmpd.cluster.pulls``) are never
  claimed; a claim won here makes the local copy of the key give way
  (``on_claimed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtmpd.cluster.directory import DirectoryUnavailable, Node, StreamDirectory
from rtmpd.core.errors import BadStreamName
from rtmpd.relay.listener import StreamListener

if TYPE_CHECKING:
    from rtmpd.relay.publication import Publication
    from rtmpd.relay.registry import StreamRegistry
    from rtmpd.relay.stream import Stream

__all__ = ["ClusterOrigin"]


class ClusterOrigin(service.Service, StreamListener):
    """Claims, refreshes and releases the keys published on this node (see the module docstring).

    ``is_copy(publication)`` says whether a publication is a pulled copy of
    another node's stream (never claimed). ``claimed`` maps each key this
    node holds to the time it was claimed.
    """

    log = Logger()
    name = "cluster-origin"

    def __init__(
        self,
        registry: StreamRegistry,
        directory: StreamDirectory,
        clock: Any,
        *,
        is_copy: Callable[[Publication], bool] = lambda publication: False,
    ) -> None:
        self.registry = registry
        self.directory = directory
        self.clock = clock
        self.is_copy = is_copy
        self.config = registry.config
        self.claimed: dict[str, float] = {}
        #: Called with a key once this node won its claim (a local pulled copy gives way).
        self.on_claimed: list[Callable[[str], None]] = []
        self._idle_logged: set[str] = set()
        self.unavailable = False
        self._refresher = task.LoopingCall(self.refresh_claims)
        self._refresher.clock = clock

    @property
    def node(self) -> Node:
        return self.directory.node

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.registry.publish_checks.append(self.check_publish)
        self.registry.listeners.append(self)
        self._refresher.start(self.directory.ttl / 3, now=False)

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self.check_publish in self.registry.publish_checks:
            self.registry.publish_checks.remove(self.check_publish)
        if self in self.registry.listeners:
            self.registry.listeners.remove(self)
        if self._refresher.running:
            self._refresher.stop()
        keys, self.claimed = list(self.claimed), {}
        # A clean stop frees the keys at once (a crash leaves them to expire within the TTL).
        releases = [self.directory.release(key).addErrback(self._quiet, "release", key) for key in keys]
        return gatherResults(releases) if releases else None

    # -- the publish check ---------------------------------------------------------------

    def _local_publisher(self, key: str) -> Publication | None:
        stream = self.registry.get(key)
        publisher = stream.publisher if stream is not None else None
        if publisher is None or self.is_copy(publisher):
            return None
        return publisher

    def check_publish(self, key: str, publication: Publication) -> Deferred | None:
        """The registry's publish check: claim ``key`` for this node, or refuse (BadStreamName)."""
        if self._local_publisher(key) is not None:
            return None  # this node holds the key already: the registry's own rules decide
        d = self.directory.claim(key, takeover=self.config.publish_takeover)
        d.addCallbacks(self._claimed, self._claim_failed, callbackArgs=(key,), errbackArgs=(key,))
        return d

    def _claimed(self, owner: Node, key: str) -> None:
        if owner != self.node:
            self.log.info(
                "Publish refused: the key is live on another node", stream_key=key, owner=owner.node_id
            )
            raise BadStreamName(f"{key} is already being published (on {owner.node_id})")
        self._directory_back()
        self.claimed[key] = self.clock.seconds()
        self.log.info("Key claimed", stream_key=key, node_id=owner.node_id)
        for callback in list(self.on_claimed):
            callback(key)

    def _claim_failed(self, failure: Failure, key: str) -> None:
        failure.trap(DirectoryUnavailable)
        self._directory_down(failure, "publish accepted unclaimed", key)

    # -- the registry's listener: release when the publisher leaves ---------------------------

    def stream_published(self, stream: Stream) -> None:
        pass

    def stream_unpublished(self, stream: Stream) -> None:
        if stream.key in self.claimed:
            # A local takeover stops the stream and starts it again in one go: look once it settled.
            self.clock.callLater(0, self._release_if_gone, stream.key)

    def _release_if_gone(self, key: str) -> None:
        if key in self.claimed and self._local_publisher(key) is None:
            del self.claimed[key]
            self._idle_logged.discard(key)
            self.log.info("Key released", stream_key=key)
            self.directory.release(key).addErrback(self._quiet, "release", key)

    # -- refresh --------------------------------------------------------------------------

    def refresh_claims(self) -> None:
        """Every ttl/3: refresh the claims of live, active local publishers; claim unclaimed ones."""
        now = self.clock.seconds()
        for key in list(self.claimed):
            publisher = self._local_publisher(key)
            if publisher is None:
                self._release_if_gone(key)  # a claim whose publish never happened (client left)
            elif now - publisher.last_activity >= self.config.publisher_timeout and not publisher.throttled:
                if key not in self._idle_logged:
                    self._idle_logged.add(key)
                    self.log.info("Idle publisher: its claim is left to expire", stream_key=key)
            else:
                self._idle_logged.discard(key)
                d = self.directory.refresh(key)
                d.addCallbacks(self._refreshed, self._refresh_failed, callbackArgs=(key,), errbackArgs=(key,))
        for stream in self.registry:
            if stream.key not in self.claimed and self._local_publisher(stream.key) is not None:
                self._reclaim(stream.key)

    def _refreshed(self, held: bool, key: str) -> None:
        self._directory_back()
        if not held and key in self.claimed:
            self._reclaim(key)

    def _refresh_failed(self, failure: Failure, key: str) -> None:
        failure.trap(DirectoryUnavailable)
        self._directory_down(failure, "claims not refreshed", key)

    def _reclaim(self, key: str) -> None:
        d = self.directory.claim(key)
        d.addCallbacks(self._reclaimed, self._refresh_failed, callbackArgs=(key,), errbackArgs=(key,))

    def _reclaimed(self, owner: Node, key: str) -> None:
        self._directory_back()
        publisher = self._local_publisher(key)
        if owner == self.node:
            if publisher is None:
                self.directory.release(key).addErrback(self._quiet, "release", key)
            elif key not in self.claimed:
                self.claimed[key] = self.clock.seconds()
                self.log.info("Key claimed", stream_key=key, node_id=owner.node_id, late=True)
            return
        self.claimed.pop(key, None)
        if publisher is not None:
            self.log.warn("Claim lost: the key is live on another node", stream_key=key, owner=owner.node_id)
            publisher.peer.close(f"claim lost to {owner.node_id}")

    # -- the directory's health, logged once per outage ------------------------------------------

    def _directory_down(self, failure: Failure, what: str, key: str) -> None:
        if not self.unavailable:
            self.unavailable = True
            self.log.warn(
                "Cluster directory unavailable: {what}",
                what=what,
                stream_key=key,
                error=failure.getErrorMessage(),
            )

    def _directory_back(self) -> None:
        if self.unavailable:
            self.unavailable = False
            self.log.info("Cluster directory available again")

    def _quiet(self, failure: Failure, what: str, key: str) -> None:
        failure.trap(DirectoryUnavailable)
        self._directory_down(failure, f"{what} not done (the claim expires by itself)", key)
