"""Internal pulls past the origin's access control: the cluster secret (``--cluster-secret FILE``).

A node pulling a key from its origin is a client of the origin like any
player, so the origin's access control (keys, signed URLs, callbacks,
address rules) would judge it. Nodes that share a secret sign their internal
pulls instead: the connect carries ``cluster=SIG`` in its app's query, the
play in its stream name's query, where SIG is the HMAC-SHA256 of
``cluster-ACTION|app/name|0`` (the signed-URL format of ``rtmpd.access.signed``
with a prefix of its own, so no client's signed URL is ever a cluster
signature). ``ClusterAccess`` wraps the access policy: a request with a valid
cluster signature is allowed at once (connect and play only, never publish);
every other request goes to the policy.

A signature does not expire: it is a capability to play one key from any
node of the cluster, as long as the secret is not rotated. Keep the secret
and the internal traffic on the operators' network (docs/security.md).
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.internet.defer import Deferred, succeed

from rtmpd.access.decision import Action, Allow, Request
from rtmpd.access.signed import sign

__all__ = ["ClusterAccess", "cluster_query", "read_cluster_secret"]

PARAM = "cluster"
_ALLOWED = Allow(authoriser="cluster", detail="internal pull")


class ClusterSecretError(ValueError):
    """The cluster secret file cannot be read or is empty."""


def read_cluster_secret(path: str) -> bytes:
    """The secret in ``path`` (surrounding white space dropped). Raises ClusterSecretError."""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ClusterSecretError(f"{path}: {e.strerror}") from e
    if len(secret) < 16:
        raise ClusterSecretError(f"{path}: the secret must have at least 16 bytes")
    return secret


def cluster_query(secret: bytes, action: str, key: str) -> str:
    """``cluster=SIG`` for ``action`` ("connect" or "play") on ``key`` (``app/name``)."""
    app, _, name = key.partition("/")
    if action == "connect":
        name = ""
    return f"{PARAM}={sign(secret, f'cluster-{action}', app, name, 0)}"


def _signature(query: str) -> str | None:
    values = [
        value for name, _, value in (param.partition("=") for param in query.split("&")) if name == PARAM
    ]
    return values[0] if len(values) == 1 else None


class ClusterAccess:
    """The access policy with internal pulls let through (see the module docstring).

    Everything but ``authorise`` is the wrapped policy's.
    """

    def __init__(self, policy: Any, secret: bytes) -> None:
        self.policy = policy
        self._secret = secret

    def is_internal(self, request: Request) -> bool:
        """Whether ``request`` carries a valid cluster signature for what it asks (never a publish)."""
        if request.action not in (Action.CONNECT, Action.PLAY):
            return False
        given = _signature(request.query)
        if given is None:
            return False
        key = f"{request.app}/{request.name}"
        expected = cluster_query(self._secret, str(request.action), key).partition("=")[2]
        return hmac.compare_digest(given, expected)

    def authorise(self, request: Request) -> Deferred:
        if self.is_internal(request):
            return succeed(_ALLOWED)
        return self.policy.authorise(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)
