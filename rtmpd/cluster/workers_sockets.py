"""The listening sockets a parent of workers opens and hands down.

For ``tcp:``/``tcp6:`` the parent binds one socket per worker to the same
address with ``SO_REUSEPORT``: the kernel then spreads new connections over
the workers by a hash of each connection. (One socket shared by every worker
would be balanced by whichever worker wakes first, which on an idle host is
nearly always the same one.) A worker that dies leaves its socket open in
the parent, so connections hashed to it wait in its backlog until the
restarted worker adopts it; none is refused. For ``unix:`` (no
``SO_REUSEPORT``), and where the option is missing, all workers share one
socket. TLS listeners cannot be handed down (a worker would need the keys):
they are refused.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

__all__ = ["SHAREABLE_KINDS", "SharedListener", "open_listener"]

#: Endpoint kinds whose sockets can be handed down to workers.
SHAREABLE_KINDS = ("tcp", "tcp6", "unix")
_UNESCAPED_COLON = re.compile(r"(?<!\\):")


class _NoConnections(Factory):
    """The parent never accepts on a shared socket; a factory is needed to listen at all."""

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None


class SharedListener:
    """One listening address of the host: the socket (fd) each worker gets, its family, its address."""

    def __init__(self, description: str, family: int, sockets: list[Any], addr: str) -> None:
        self.description = description
        self.family = family
        self._sockets = sockets
        self.addr = addr

    @property
    def per_worker(self) -> bool:
        return len(self._sockets) > 1

    def fileno(self, worker_id: int) -> int:
        """The fd of the socket worker ``worker_id`` (1..N) adopts."""
        return self._sockets[(worker_id - 1) % len(self._sockets)].fileno()

    def close(self) -> None:
        for each in self._sockets:
            if IListeningPort.providedBy(each):
                each.stopListening()
            else:
                each.close()
        self._sockets = []


def _tcp_parts(description: str) -> tuple[str, int, str, int]:
    """(kind, port, interface, backlog) of a tcp/tcp6 description. Raises ValueError."""
    kind, port, *rest = _UNESCAPED_COLON.split(description)
    options = dict(part.replace("\\:", ":").split("=", 1) for part in rest if "=" in part)
    unknown = set(options) - {"interface", "backlog"}
    if unknown or any("=" not in part for part in rest):
        raise ValueError(f"{description}: only interface= and backlog= can be given to a shared listener")
    default = "::" if kind == "tcp6" else "0.0.0.0"
    return kind, int(port), options.get("interface", default), int(options.get("backlog", 50))


def _reuseport_sockets(description: str, count: int) -> SharedListener:
    kind, port, interface, backlog = _tcp_parts(description)
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # Port 0: the first bind picks the port, every other socket binds the same one.
            sock.bind((interface, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    host = sockets[0].getsockname()[0]
    return SharedListener(description, family, sockets, f"{host}:{port}")


def _one_shared_port(reactor: Any, description: str) -> SharedListener:
    outcome: list = []
    endpoints.serverFromString(reactor, description).listen(_NoConnections()).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError(f"endpoint {description} did not listen synchronously")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    port = outcome[0]
    # Listening registered the socket for reading; the workers accept, not this process.
    port.stopReading()
    host = port.getHost()
    addr = f"{host.host}:{host.port}" if hasattr(host, "port") else str(getattr(host, "name", host))
    return SharedListener(description, port.addressFamily, [port], addr)


def open_listener(reactor: Any, description: str, workers: int) -> SharedListener:
    """The sockets of ``description`` for ``workers`` workers. Raises ValueError for a kind that
    cannot be handed down, OSError (address in use, permission) and whatever listening raises."""
    kind = description.partition(":")[0]
    if kind not in SHAREABLE_KINDS:
        raise ValueError(
            f"{description}: only {', '.join(SHAREABLE_KINDS)} listeners can be shared by workers"
        )
    if kind in ("tcp", "tcp6") and hasattr(socket, "SO_REUSEPORT"):
        return _reuseport_sockets(description, workers)
    return _one_shared_port(reactor, description)
