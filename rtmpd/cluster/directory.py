"""The stream directory: which node (process or host) is the origin of each live key.

A node claims a key when a publisher starts there, refreshes the claim while
the publisher lives, and releases it when the publisher ends; a claim that is
not refreshed expires after ``ttl`` seconds, so a node that dies frees its
keys by itself. A player on another node looks the key up and pulls it from
the owner's ``pull_url``.

``StreamDirectory`` is what the rest of rtmpd uses; every call answers with
a Deferred because the shared implementations (Redis, the parent over AMP)
answer over the network. ``ClaimTable`` is the synchronous claim logic they
share or mirror, and ``LocalDirectory`` is one node's directory over an
in-process table (a single process's behaviour, and the parent's table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

__all__ = ["ClaimTable", "DirectoryUnavailable", "LocalDirectory", "Node", "StreamDirectory"]


class DirectoryUnavailable(Exception):
    """The directory cannot be asked now (Redis or the parent is unreachable); the caller decides."""


@dataclass(frozen=True)
class Node:
    """One node of the cluster: a stable id and the RTMP URL base its streams can be pulled from."""

    node_id: str
    pull_url: str

    def encode(self) -> str:
        """The node as one string (what a shared directory stores as a claim's value)."""
        return f"{self.node_id} {self.pull_url}"

    @classmethod
    def decode(cls, text: str) -> Node:
        """The node ``encode`` wrote; raises ValueError for anything else."""
        node_id, sep, pull_url = text.partition(" ")
        if not sep or not node_id or not pull_url:
            raise ValueError(f"not a node: {text!r}")
        return cls(node_id, pull_url)


class StreamDirectory(Protocol):
    """One node's view of the cluster's claims. Failures arrive as ``DirectoryUnavailable``."""

    #: This node.
    node: Node
    #: Seconds a claim lives without a refresh.
    ttl: float

    def claim(self, key: str, *, takeover: bool = False) -> Deferred[Node]:
        """Claim ``key`` for this node; the owner after the attempt (this node if won).

        Without ``takeover`` a live claim of another node is left alone; with
        it, the claim is moved to this node whoever held it.
        """

    def refresh(self, key: str) -> Deferred[bool]:
        """Extend this node's claim on ``key``; False if this node no longer holds it."""

    def release(self, key: str) -> Deferred[None]:
        """Drop this node's claim on ``key`` (nothing if another node holds it)."""

    def lookup(self, key: str) -> Deferred[Node | None]:
        """The node that holds ``key``, or None."""

    def claims(self) -> Deferred[dict[str, Node]]:
        """Every live claim of the cluster, by key."""


class ClaimTable:
    """Claims with expiry, in memory, for any number of nodes. ``now`` is the clock (seconds)."""

    def __init__(self, now: Callable[[], float], ttl: float) -> None:
        self._now = now
        self.ttl = ttl
        self._claims: dict[str, tuple[Node, float]] = {}

    def _live(self, key: str) -> Node | None:
        entry = self._claims.get(key)
        if entry is None:
            return None
        node, expires = entry
        if expires <= self._now():
            del self._claims[key]
            return None
        return node

    def claim(self, key: str, node: Node, *, takeover: bool = False) -> Node:
        owner = self._live(key)
        if owner is None or owner == node or takeover:
            self._claims[key] = (node, self._now() + self.ttl)
            return node
        return owner

    def refresh(self, key: str, node: Node) -> bool:
        if self._live(key) != node:
            return False
        self._claims[key] = (node, self._now() + self.ttl)
        return True

    def release(self, key: str, node: Node) -> None:
        if self._live(key) == node:
            del self._claims[key]

    def release_node(self, node_id: str) -> list[str]:
        """Drop every claim of ``node_id`` (a worker that died); the keys dropped."""
        keys = [key for key, (node, _) in self._claims.items() if node.node_id == node_id]
        for key in keys:
            del self._claims[key]
        return keys

    def lookup(self, key: str) -> Node | None:
        return self._live(key)

    def claims(self) -> dict[str, Node]:
        return {key: node for key in list(self._claims) if (node := self._live(key)) is not None}


class LocalDirectory:
    """``StreamDirectory`` of ``node`` over an in-process ``ClaimTable`` (answers at once)."""

    def __init__(self, table: ClaimTable, node: Node) -> None:
        self.table = table
        self.node = node
        self.ttl = table.ttl

    def claim(self, key: str, *, takeover: bool = False) -> Deferred[Node]:
        return succeed(self.table.claim(key, self.node, takeover=takeover))

    def refresh(self, key: str) -> Deferred[bool]:
        return succeed(self.table.refresh(key, self.node))

    def release(self, key: str) -> Deferred[None]:
        self.table.release(key, self.node)
        return succeed(None)

    def lookup(self, key: str) -> Deferred[Node | None]:
        return succeed(self.table.lookup(key))

    def claims(self) -> Deferred[dict[str, Node]]:
        return succeed(self.table.claims())
