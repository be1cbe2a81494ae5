"""The cluster (``rtmpd.cluster``) as the manhole, the JSON API and the stream views show it.

The cluster service is found by name ("cluster") in the server's service
tree; without ``--cluster`` the views say so (None, or an empty list).
``cluster_streams`` asks the directory, so it answers with a Deferred.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from rtmpd.admin.format import Column, Table


def cluster_service(server: Any) -> Any:
    """The server's cluster service, or None."""
    try:
        return server.getServiceNamed("cluster")
    except (AttributeError, KeyError):
        return None


def cluster_view(server: Any) -> dict[str, Any] | None:
    """This node: id, pull URL, directory, TTL, whether the directory answers, the keys it holds
    (its claims) and its internal pulls (key, origin, state, bytes, players). None without a cluster."""
    cluster = cluster_service(server)
    if cluster is None:
        return None
    return {
        "node_id": cluster.node.node_id,
        "pull_url": cluster.node.pull_url,
        "directory": cluster.description,
        "ttl": cluster.directory.ttl,
        "directory_available": cluster.available,
        "claims": sorted(cluster.origin.claimed),
        "internal_pulls": cluster.pulls.upstreams(),
    }


def stream_origin(server: Any, key: str) -> str | None:
    """The node id a live stream comes from: its origin's when it is an internal pull, else this
    node's; None without a cluster."""
    cluster = cluster_service(server)
    if cluster is None:
        return None
    return cluster.pulls.origin_of(key) or cluster.node.node_id


def cluster_streams(server: Any) -> Deferred[list[dict[str, Any]]]:
    """Every live key of the cluster from the directory: key, node id, pull URL, and ``here`` (this node
    holds it). Fails with DirectoryUnavailable when the directory cannot be asked."""
    cluster = cluster_service(server)
    if cluster is None:
        return succeed([])
    here = cluster.node.node_id

    def rows(claims: dict) -> list[dict[str, Any]]:
        return [
            {"key": key, "node_id": node.node_id, "pull_url": node.pull_url, "here": node.node_id == here}
            for key, node in sorted(claims.items())
        ]

    return cluster.directory.claims().addCallback(rows)


_COLUMNS = [Column("key", "key"), Column("node", "node_id"), Column("pull URL", "pull_url")]


def cluster_table(server: Any) -> Deferred[Table]:
    """``cluster_streams`` as the manhole's table."""
    return cluster_streams(server).addCallback(
        lambda rows: Table(_COLUMNS, rows, "(no live key in the cluster)")
    )
