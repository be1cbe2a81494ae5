"""The parent process of ``--workers N``: shared listening sockets, the in-host directory, supervision.

The parent opens every listening socket itself (RTMP, HTTP, manhole), never
accepts on them, and hands them to the workers as inherited file
descriptors, which they ``adoptStreamPort``; the kernel balances new
connections between the workers (``rtmpd.cluster.workers_sockets``). Each worker also gets its own internal
listener (127.0.0.1, an ephemeral port the parent binds once, so a restarted
worker keeps its pull URL) for the internal pulls of other workers. The
parent holds no stream state: only the host's ``ClaimTable``, served over AMP
on a unix socket in a private directory (``rtmpd.cluster.amp``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from rtmpd.cluster.amp import DirectoryServerFactory
from rtmpd.cluster.directory import ClaimTable
from rtmpd.cluster.supervisor import WorkerSupervisor
from rtmpd.cluster.workers_sockets import SharedListener, open_listener

__all__ = ["WorkerSpec", "WorkersService", "worker_node_id"]
#: First file descriptor number of the sockets in a worker (0-2 are its stdio).
FIRST_FD = 3


def worker_node_id(worker_id: int) -> str:
    return f"worker-{worker_id}"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told by its parent (one JSON command-line value).

    ``sockets`` maps each shared endpoint description to the (fd, address
    family) it inherited; ``internal`` is the fd and port of its own internal
    listener, on ``internal_host``; ``link`` is the path of the parent's
    directory socket; ``secret`` the path of the file holding the host's
    secret that signs internal pulls (mode 0600, in the parent's private
    directory, so that it never shows on a command line).
    """

    worker_id: int
    link: str
    ttl: float
    sockets: dict[str, tuple[int, int]]
    internal: tuple[int, int]
    internal_host: str = "127.0.0.1"
    secret: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.worker_id,
                "link": self.link,
                "ttl": self.ttl,
                "sockets": {d: list(v) for d, v in self.sockets.items()},
                "internal": list(self.internal),
                "internal_host": self.internal_host,
                "secret": self.secret,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        """Raises ValueError for anything ``to_json`` did not write."""
        try:
            data = json.loads(text)
            return cls(
                worker_id=int(data["id"]),
                link=str(data["link"]),
                ttl=float(data["ttl"]),
                sockets={str(d): (int(v[0]), int(v[1])) for d, v in data["sockets"].items()},
                internal=(int(data["internal"][0]), int(data["internal"][1])),
                internal_host=str(data["internal_host"]),
                secret=str(data["secret"]),
            )
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
            raise ValueError(f"not a worker spec: {e}") from e


class WorkersService(service.Service):
    """The parent: opens ``shared`` (description, what) sockets, serves the directory, supervises workers.

    ``argv(spec)`` is the command line that starts the worker ``spec``
    describes. Start-up fails with one line on stderr and exit status 1 when
    a socket cannot be opened.
    """

    log = Logger()

    def __init__(
        self,
        count: int,
        shared: Sequence[tuple[str, str]],
        argv: Callable[[WorkerSpec], list[str]],
        reactor: Any,
        ttl: float,
        env: dict[str, str] | None = None,
        internal_host: str = "127.0.0.1",
    ) -> None:
        self.count = count
        self.shared = list(shared)
        self.argv = argv
        self.reactor = reactor
        self.table = ClaimTable(reactor.seconds, ttl)
        self.env = env
        self.internal_host = internal_host
        self.secret_path: str | None = None
        self.listeners: dict[str, SharedListener] = {}
        self.internal: dict[int, socket.socket] = {}
        self.link_dir: str | None = None
        self.link_path: str | None = None
        self._link_port: IListeningPort | None = None
        self.supervisor = WorkerSupervisor(count, self._spawn, reactor, on_death=self._release)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._open()

    def startService(self) -> None:
        super().startService()
        if self.link_path is None:
            self._open()
        self.supervisor.start()

    def _open(self) -> None:
        for description, what in self.shared:
            try:
                listener = open_listener(self.reactor, description, self.count)
            except Exception as e:
                self._close()
                sys.stderr.write(f"rtmpd: cannot listen on {description}: {e}\n")
                raise SystemExit(1) from e
            self.listeners[description] = listener
            self.log.info(
                "{what} listening",
                what=what,
                addr=listener.addr,
                endpoint=description,
                per_worker_sockets=listener.per_worker,
            )
        for worker_id in range(1, self.count + 1):
            # Bound once here, so a restarted worker answers internal pulls at the same URL.
            family = socket.AF_INET6 if ":" in self.internal_host else socket.AF_INET
            internal = socket.socket(family, socket.SOCK_STREAM)
            internal.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            internal.bind((self.internal_host, 0))
            internal.listen(128)
            internal.setblocking(False)
            self.internal[worker_id] = internal
        self.link_dir = tempfile.mkdtemp(prefix="rtmpd-workers-")
        self.link_path = os.path.join(self.link_dir, "directory.sock")
        # Workers sign their internal pulls of each other with it (past access control).
        self.secret_path = os.path.join(self.link_dir, "secret")
        descriptor = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(secrets.token_hex(32))
        link = endpoints.UNIXServerEndpoint(self.reactor, self.link_path, mode=0o600)
        outcome: list = []
        link.listen(DirectoryServerFactory(self.table)).addBoth(outcome.append)
        self._link_port = outcome[0]

    def spec(self, worker_id: int) -> WorkerSpec:
        """What worker ``worker_id`` is told; its fds are numbered from FIRST_FD in ``shared``'s order."""
        sockets = {}
        for i, (description, _) in enumerate(self.shared):
            sockets[description] = (FIRST_FD + i, self.listeners[description].family)
        internal = self.internal[worker_id]
        return WorkerSpec(
            worker_id=worker_id,
            link=self.link_path or "",
            ttl=self.table.ttl,
            sockets=sockets,
            internal=(FIRST_FD + len(self.shared), internal.getsockname()[1]),
            internal_host=self.internal_host,
            secret=self.secret_path or "",
        )

    def _spawn(self, worker_id: int, protocol: ProcessProtocol) -> Any:
        spec = self.spec(worker_id)
        # Workers write their logs where the parent's go: stdout and stderr are shared.
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        for description, (fd, _) in spec.sockets.items():
            child_fds[fd] = self.listeners[description].fileno(worker_id)
        child_fds[spec.internal[0]] = self.internal[worker_id].fileno()
        argv = self.argv(spec)
        env = dict(os.environ if self.env is None else self.env)
        return self.reactor.spawnProcess(protocol, argv[0], argv, env=env, childFDs=child_fds)

    def _release(self, worker_id: int) -> None:
        dropped = self.table.release_node(worker_node_id(worker_id))
        if dropped:
            self.log.info("Released a dead worker's claims", worker=worker_id, keys=dropped)

    def stopService(self):
        super().stopService()
        d = self.supervisor.stop()
        d.addCallback(lambda _: self._close())
        return d

    def _close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        for internal in self.internal.values():
            internal.close()
        self.internal.clear()
        if self._link_port is not None:
            self._link_port.stopListening()
            self._link_port = None
        if self.link_dir is not None:
            shutil.rmtree(self.link_dir, ignore_errors=True)
            self.link_dir = None
        self.log.info("Workers stopped", restarts=self.supervisor.restarts)
