"""A worker's stream directory: the parent's claim table, asked over the worker's AMP link.

``AMPDirectory`` implements ``StreamDirectory`` for one worker. It asks over
whichever link is attached (``attach``/``detach``, done by the link's
protocol as it connects and goes); without one, or when the link drops
during a call, the call fails with ``DirectoryUnavailable``, so the caller
treats the parent exactly as the cluster treats an unreachable Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionClosed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from rtmpd.cluster.amp import BadArgument, Claim, Claims, Lookup, Refresh, Release
from rtmpd.cluster.directory import DirectoryUnavailable, Node

__all__ = ["AMPDirectory", "DirectoryLink", "DirectoryLinkProtocol"]


class AMPDirectory:
    """``StreamDirectory`` of ``node`` over the parent's table; ``DirectoryUnavailable`` without a link.

    A key or node the parent refuses fails with ``rtmpd.cluster.amp.BadArgument``.
    """

    log = Logger()

    def __init__(self, node: Node, ttl: float) -> None:
        self.node = node
        self.ttl = ttl
        self._link: amp.AMP | None = None

    @property
    def connected(self) -> bool:
        return self._link is not None

    def attach(self, link: amp.AMP) -> None:
        self._link = link

    def detach(self, link: amp.AMP) -> None:
        if self._link is link:
            self._link = None

    def _call(self, command: type[amp.Command], **arguments: Any) -> Deferred[dict]:
        link = self._link
        if link is None:
            return fail(DirectoryUnavailable("no link to the parent process"))
        # AMP drops the link when an error is still unhandled at the end of the command's own
        # Deferred; the caller's errors belong to the caller, so they travel on a new Deferred.
        answer: Deferred[dict] = Deferred()
        link.callRemote(command, **arguments).addErrback(self._unavailable, command).chainDeferred(answer)
        return answer

    def _unavailable(self, failure: Failure, command: type[amp.Command]) -> Failure:
        if failure.check(BadArgument, DirectoryUnavailable):
            return failure
        if failure.check(ConnectionClosed, amp.ProtocolSwitched):
            reason = "the link to the parent process closed"
        else:
            reason = failure.getErrorMessage()
            self.log.failure("Directory call failed", failure, command=command.__name__)
        return Failure(DirectoryUnavailable(f"{command.__name__}: {reason}"))

    def claim(self, key: str, *, takeover: bool = False) -> Deferred[Node]:
        d = self._call(Claim, key=key, node=self.node.encode(), takeover=takeover)
        return d.addCallback(lambda answer: Node.decode(answer["owner"]))

    def refresh(self, key: str) -> Deferred[bool]:
        return self._call(Refresh, key=key, node=self.node.encode()).addCallback(lambda a: a["held"])

    def release(self, key: str) -> Deferred[None]:
        return self._call(Release, key=key, node=self.node.encode()).addCallback(lambda _: None)

    def lookup(self, key: str) -> Deferred[Node | None]:
        d = self._call(Lookup, key=key)
        return d.addCallback(lambda answer: Node.decode(answer["owner"]) if answer["owner"] else None)

    def claims(self) -> Deferred[dict[str, Node]]:
        found: dict[str, Node] = {}
        done: Deferred[dict[str, Node]] = Deferred()

        def page(answer: dict) -> None:
            for item in answer["claims"]:
                found[item["key"]] = Node.decode(item["node"])
            if answer["more"] and answer["claims"]:
                ask(answer["claims"][-1]["key"])
            else:
                done.callback(found)

        def ask(after: str) -> None:
            self._call(Claims, after=after).addCallbacks(page, done.errback)

        ask("")
        return done


class DirectoryLinkProtocol(amp.AMP):
    """The worker's end of its AMP link: attaches itself to ``directory`` while connected.

    ``on_lost`` is called once the link is gone (the worker's wiring decides
    what a worker without its parent does).
    """

    def __init__(self, directory: AMPDirectory, on_lost: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.directory = directory
        self.on_lost = on_lost

    def connectionMade(self) -> None:
        super().connectionMade()
        self.directory.attach(self)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.directory.detach(self)
        if self.on_lost is not None:
            self.on_lost()


class DirectoryLink(service.Service):
    """A worker's link to its parent's directory socket at ``path``, attached to ``directory``.

    A worker lives as long as its parent: when the link cannot be made, or
    closes while this service runs, ``on_lost`` is called (the wiring stops
    the worker; its parent restarts it if the parent is still there).
    """

    log = Logger()

    def __init__(self, path: str, directory: AMPDirectory, reactor: Any, on_lost: Callable[[], None]) -> None:
        self.path = path
        self.directory = directory
        self.reactor = reactor
        self.on_lost = on_lost
        self.protocol: DirectoryLinkProtocol | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = endpoints.UNIXClientEndpoint(self.reactor, self.path)
        factory = Factory.forProtocol(lambda: DirectoryLinkProtocol(self.directory, self._lost))
        endpoint.connect(factory).addCallbacks(self._connected, self._failed)

    def _connected(self, protocol: DirectoryLinkProtocol) -> None:
        self.protocol = protocol
        self.log.info("Directory link up", node=self.directory.node.node_id)

    def _failed(self, failure: Failure) -> None:
        self.log.error(
            "Cannot reach the parent's directory", path=self.path, reason=failure.getErrorMessage()
        )
        if self.running:
            self.on_lost()

    def _lost(self) -> None:
        self.protocol = None
        if self.running:
            self.log.warn("Directory link to the parent lost", node=self.directory.node.node_id)
            self.on_lost()

    def stopService(self):
        super().stopService()
        link, self.protocol = self.protocol, None
        if link is not None:
            link.transport.loseConnection()
