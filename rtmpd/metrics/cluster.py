"""The cluster's metrics (``rtmpd_cluster_*``): this node, its claims, its internal pulls.

``ClusterCollector`` asks ``cluster()`` for the cluster service at every
scrape and exports nothing when there is none (no ``--cluster``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

__all__ = ["ClusterCollector"]


class ClusterCollector:
    """The ``rtmpd_cluster_*`` metrics of the cluster service ``cluster()`` returns (None: none)."""

    def __init__(self, cluster: Callable[[], Any]) -> None:
        self.cluster = cluster

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        cluster = self.cluster()
        if cluster is None:
            return
        node = cluster.node
        yield InfoMetricFamily(
            "rtmpd_cluster_node",
            "This node of the cluster.",
            value={"node_id": node.node_id, "pull_url": node.pull_url},
        )
        yield GaugeMetricFamily(
            "rtmpd_cluster_directory_up",
            "1 while the cluster directory answers, 0 since a call to it failed.",
            value=1 if cluster.available else 0,
        )
        yield GaugeMetricFamily(
            "rtmpd_cluster_claims",
            "Keys this node holds in the directory (its publishers).",
            value=len(cluster.origin.claimed),
        )
        pulls = GaugeMetricFamily(
            "rtmpd_cluster_internal_pulls", "Internal pulls of other nodes' keys, by state.", labels=["state"]
        )
        counts: dict[str, int] = {}
        for row in cluster.pulls.upstreams():
            counts[str(row["state"])] = counts.get(str(row["state"]), 0) + 1
        for state, count in sorted(counts.items()):
            pulls.add_metric([state], count)
        yield pulls
        yield CounterMetricFamily(
            "rtmpd_cluster_internal_pulls_started", "Internal pulls started.", value=cluster.pulls.started
        )
        yield CounterMetricFamily(
            "rtmpd_cluster_internal_pull_bytes",
            "Media bytes received by internal pulls.",
            value=cluster.pulls.pulled_bytes(),
        )
