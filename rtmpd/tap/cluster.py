"""Wiring of the cluster (``rtmpd.cluster``, docs/cluster.md) and its options.

``--cluster redis://host:port/db`` makes this server one node of a cluster
whose stream directory is that Redis: ``install_cluster`` adds the
``ClusterService`` (claims of the keys published here, internal pulls of the
others) and, with ``--cluster-secret``, lets signed internal pulls past the
access policy. Without ``--cluster`` nothing is built and nothing is imported.
"""

from __future__ import annotations

import re
import socket
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.logger import Logger

from rtmpd.core.text import ascii_digits, ascii_number

if TYPE_CHECKING:
    from rtmpd.cluster.directory import StreamDirectory
    from rtmpd.cluster.service import ClusterService
    from rtmpd.server.service import RTMPService

__all__ = ["CLUSTER_PARAMETERS", "install_cluster", "install_cluster_node"]

_log = Logger(namespace="rtmpd.tap")


def _ttl(value: str) -> float:
    number = ascii_number(float, value)
    if not 0.5 <= number <= 3600:
        raise ValueError(f"must be 0.5..3600 seconds, got {value}")
    return number


_ttl.coerceDoc = "Seconds (0.5..3600)."

#: Options of the cluster, for ``rtmpd.tap.Options``.
CLUSTER_PARAMETERS = [
    ["cluster", None, None, "Join a cluster whose stream directory is this Redis: redis://host:port/db"],
    ["node-id", None, None, "This node's id in the cluster (default: hostname:port)"],
    [
        "advertise",
        None,
        None,
        "rtmp://host:port other nodes pull this node's streams from (default: the --port listener)",
    ],
    ["cluster-ttl", None, 5.0, "Seconds a claim outlives its node's last refresh", _ttl],
    [
        "cluster-secret",
        None,
        None,
        "File with the secret that signs internal pulls past access control (same on every node)",
    ],
]


def listener_address(description: str) -> tuple[str | None, int | None]:
    """(interface, port) of a tcp/tcp6 endpoint description; None where it does not say."""
    parts = re.split(r"(?<!\\):", description)  # an endpoint escapes the colons of an IPv6 address
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2 or not ascii_digits(parts[1]):
        return None, None
    interface = None
    for part in parts[2:]:
        if part.startswith("interface="):
            interface = part.partition("=")[2].replace("\\", "") or None
    if interface in ("0.0.0.0", "::"):
        interface = None
    return interface, int(parts[1])


def node_identity(options: Any) -> tuple[str, str]:
    """(node id, pull URL) from --node-id and --advertise, or their defaults. Raises ValueError."""
    interface, port = listener_address(options["port"])
    host = socket.gethostname()
    node_id = options.get("node-id") or f"{host}:{port}"
    advertise = options.get("advertise")
    if advertise is None:
        if port is None:
            raise ValueError("--advertise is needed when --port is not a tcp port")
        where = interface or host
        advertise = f"rtmp://[{where}]:{port}" if ":" in where else f"rtmp://{where}:{port}"
    parts = urlsplit(advertise)
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname or parts.path.strip("/"):
        raise ValueError(f"--advertise {advertise!r}: expected rtmp://host:port")
    if " " in node_id or not node_id:
        raise ValueError(f"--node-id {node_id!r}: no spaces")
    return node_id, advertise.rstrip("/")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(parts.password, "***") if parts.password else url


def install_cluster(top: RTMPService, options: Any, reactor: Any = None) -> ClusterService | None:
    """Add the cluster service to ``top`` when ``--cluster`` is given (else nothing); exits with one
    line for a bad option. Call it after access control is installed."""
    url = options.get("cluster")
    if not url:
        return None
    if reactor is None:
        from twisted.internet import reactor
    from rtmpd.cluster.access import ClusterSecretError, read_cluster_secret
    from rtmpd.cluster.directory import Node
    from rtmpd.cluster.redis import RedisDirectory, redis_client

    try:
        node_id, pull_url = node_identity(options)
        client = redis_client(url)
        secret = read_cluster_secret(options["cluster-secret"]) if options.get("cluster-secret") else None
    except ClusterSecretError as e:
        sys.exit(f"rtmpd: error: --cluster-secret: {e}")
    except ValueError as e:
        sys.exit(f"rtmpd: error: --cluster: {e}")
    directory = RedisDirectory(client, Node(node_id, pull_url), options.get("cluster-ttl", 5.0), reactor)
    return install_cluster_node(
        top, directory, reactor, _redacted(url), secret, options.get("pull-idle", 10.0)
    )


def install_cluster_node(
    top: RTMPService,
    directory: StreamDirectory,
    reactor: Any,
    description: str,
    secret: bytes | None = None,
    idle: float = 10.0,
) -> ClusterService:
    """Make ``top`` a node of the cluster that ``directory`` describes (any ``StreamDirectory``: Redis,
    or a worker's in-host directory): the claims of its publishers, internal pulls of the others'
    keys (signed with ``secret`` if given, which also lets the other nodes' signed pulls past the
    access policy)."""
    from rtmpd.cluster.access import ClusterAccess, cluster_query
    from rtmpd.cluster.service import ClusterService
    from rtmpd.remote.options import make_connector

    def sign(action: str, key: str) -> str:
        return cluster_query(secret, action, key) if secret is not None else ""

    cluster = ClusterService(
        top.registry,
        directory,
        reactor,
        make_connector(reactor, mode="play"),
        idle=idle,
        sign=sign,
        description=description,
    )
    cluster.setServiceParent(top)
    policy = top.factory.access
    if policy is not None and secret is not None:
        top.factory.access = ClusterAccess(policy, secret)
    elif policy is not None:
        _log.warn(
            "Access control is on and --cluster-secret is not given: other nodes' internal pulls "
            "must pass this node's access control (docs/cluster.md)"
        )
    node = directory.node
    _log.info(
        "Cluster node {node_id}: directory {directory}, pulled from {pull_url}, claims live {ttl:g} s",
        node_id=node.node_id,
        directory=description,
        pull_url=node.pull_url,
        ttl=directory.ttl,
    )
    return cluster
