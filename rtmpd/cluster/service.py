"""``ClusterService``: this node's part of a cluster, as one service (named "cluster").

It holds the node, its directory, the origin side (``ClusterOrigin``: claims)
and the edge side (``ClusterPulls``: internal pulls), wired to each other;
the admin views, the metrics and the manhole find it by name.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from rtmpd.cluster.directory import Node, StreamDirectory
from rtmpd.cluster.origin import ClusterOrigin
from rtmpd.cluster.pulls import ClusterPulls

__all__ = ["ClusterService"]


class ClusterService(service.MultiService):
    """This node in the cluster: ``origin`` claims the keys published here, ``pulls`` serves the others.

    ``description`` says which directory it is (a Redis URL without its password) for the views.
    """

    name = "cluster"

    def __init__(
        self,
        registry: Any,
        directory: StreamDirectory,
        clock: Any,
        connect: Any,
        *,
        idle: float = 10.0,
        sign: Any = None,
        description: str = "",
    ) -> None:
        super().__init__()
        self.directory = directory
        self.description = description
        kwargs = {"sign": sign} if sign is not None else {}
        self.pulls = ClusterPulls(registry, directory, clock, connect, idle=idle, **kwargs)
        self.origin = ClusterOrigin(registry, directory, clock, is_copy=self.pulls.is_copy)
        self.origin.on_claimed.append(self.pulls.give_way)
        self.origin.setServiceParent(self)
        self.pulls.setServiceParent(self)

    @property
    def node(self) -> Node:
        return self.directory.node

    @property
    def available(self) -> bool:
        """False while the directory's last answer was a failure (as far as this node knows)."""
        return not (self.origin.unavailable or self.pulls.unavailable)
