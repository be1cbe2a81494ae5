"""Wiring of ``--workers N``: the parent process, or (with the internal ``--worker-spec``) one worker.

The parent (``rtmpd.cluster.workers.WorkersService``) builds no RTMP service
at all. Each worker is the ordinary single-process service (``build``) with
its shared listeners swapped for the sockets its parent passed, plus its
internal listener and its link to the parent's directory; every log event of
a worker carries ``worker=ID``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.error import ReactorNotRunning
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from zope.interface import implementer

from rtmpd import conn_ids
from rtmpd.cluster.amp_client import AMPDirectory, DirectoryLink
from rtmpd.cluster.directory import Node
from rtmpd.cluster.workers import WorkerSpec, WorkersService, worker_node_id
from rtmpd.server.listening import ListeningService
from rtmpd.tap.worker_options import DEFAULT_TTL, WORKER_PARAMETERS, wants_workers

__all__ = ["WORKER_PARAMETERS", "identify_worker", "workers_service", "wants_workers"]


def workers_service(options: Any, build: Callable[[Any], service.IService]) -> service.IService:
    """The parent of ``--workers N`` or, with ``--worker-spec``, one worker built by ``build``."""
    if options["worker-spec"]:
        return worker_service(options, build)
    return parent_service(options)


# -- the parent ------------------------------------------------------------------------


def shared_listeners(options: Any) -> list[tuple[str, str]]:
    """Every listener of the options, as (effective description, what it serves)."""
    shared = [(d, "RTMP server") for d in [options["port"], *options["listen"]]]
    if options["http"]:
        shared.append((options["http"], "HTTP server"))
    if options["manhole"]:
        from rtmpd.admin.door import manhole_endpoint

        shared.append((manhole_endpoint(options["manhole"]), "Manhole"))
    return shared


def rtmpd_arguments(argv: Sequence[str], subcommand: str = "rtmpd") -> list[str]:
    """The plugin's own arguments in a twistd command line, without ``--workers``. Raises ValueError."""
    try:
        start = list(argv).index(subcommand, 1) + 1
    except ValueError:
        raise ValueError(f"no {subcommand!r} subcommand in the command line") from None
    out: list[str] = []
    rest = list(argv[start:])
    while rest:
        arg = rest.pop(0)
        if arg == "--workers":
            rest = rest[1:]
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def worker_argv(options: Any, argv: Sequence[str]) -> Callable[[WorkerSpec], list[str]]:
    """The command line of each worker: twistd in the foreground, the same rtmpd options, its spec."""
    parent = options.parent or {}
    logfile = parent.get("logfile") or (None if parent.get("nodaemon", True) else "twistd.log")
    twistd = ["-n", "--pidfile="]
    if logfile not in (None, "-"):
        # rtmpd's observer appends whole lines: workers and parent can share the file.
        twistd += ["--logfile", os.path.abspath(logfile)]
    own = rtmpd_arguments(argv)

    def command(spec: WorkerSpec) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rtmpd.cluster.worker",
            *twistd,
            "rtmpd",
            *own,
            "--worker-spec",
            spec.to_json(),
        ]

    return command


def parent_service(options: Any, argv: Sequence[str] | None = None) -> WorkersService:
    argv = sys.argv if argv is None else argv
    try:
        command = worker_argv(options, argv)
    except ValueError as e:
        sys.exit(f"rtmpd: error: --workers: {e}")
    ttl = options.get("cluster-ttl", DEFAULT_TTL)
    return WorkersService(
        options["workers"],
        shared_listeners(options),
        command,
        reactor,
        ttl,
        internal_host=internal_host(options),
    )


def internal_host(options: Any) -> str:
    """Where workers' internal listeners bind: loopback, or with ``--cluster`` the host of ``--advertise``
    (other hosts pull from it; its port is not used, each worker has its own)."""
    if options.get("cluster") and options.get("advertise"):
        from urllib.parse import urlsplit

        host = urlsplit(options["advertise"]).hostname
        if host:
            return host
    return "127.0.0.1"


# -- a worker ---------------------------------------------------------------------------


class AdoptedListeningService(ListeningService):
    """A listener on a socket this process inherited (file descriptor ``fd`` of ``family``)."""

    def __init__(self, fd: int, family: int, description: str, factory: Any, what: str, reactor: Any = None):
        super().__init__(description, factory, what=what, reactor=reactor)
        self.fd = fd
        self.family = family

    def _listen(self) -> None:
        from twisted.internet import reactor as default_reactor

        # A blocking listening socket would block the whole reactor in accept(); Twisted does not
        # change the mode of a socket it adopts.
        os.set_blocking(self.fd, False)
        self.port = (self._reactor or default_reactor).adoptStreamPort(self.fd, self.family, self.factory)
        # adoptStreamPort listens on a duplicate: the inherited descriptor is not needed any more.
        os.close(self.fd)
        self.log.info("{what} listening", what=self.what, addr=_addr(self.port), endpoint=self.description)


def _addr(port: Any) -> str:
    host = port.getHost()
    return f"{host.host}:{host.port}" if hasattr(host, "port") else str(getattr(host, "name", host))


def _listening_services(parent: service.IServiceCollection):
    for child in list(parent):
        if isinstance(child, ListeningService):
            yield parent, child
        elif service.IServiceCollection.providedBy(child):
            yield from _listening_services(child)


def adopt_listeners(top: service.MultiService, spec: WorkerSpec) -> None:
    """Swap each listener of ``top`` whose description the parent shared for the inherited socket."""
    for parent, child in _listening_services(top):
        if child.description in spec.sockets:
            fd, family = spec.sockets[child.description]
            parent.removeService(child)
            adopted = AdoptedListeningService(fd, family, child.description, child.factory, child.what)
            adopted.setServiceParent(parent)


@implementer(ILogObserver)
class WorkerTag:
    """Adds ``worker=ID`` to every event; placed before the output observers so that they show it."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id

    def __call__(self, event: dict) -> None:
        # Observers share the one event dict, so the field reaches the log file's observer too.
        event.setdefault("worker", self.worker_id)


def tag_logs(worker_id: int, publisher: LogPublisher = globalLogPublisher) -> WorkerTag:
    tag = WorkerTag(worker_id)
    publisher.addObserver(tag)
    return tag


def identify_worker(worker_id: int, publisher: LogPublisher = globalLogPublisher) -> WorkerTag:
    """This process is worker ``worker_id``: its log events say so, and its connection ids
    (``w2-c000017``) differ from every other worker's, in the logs, the API and the manhole."""
    conn_ids.set_worker(worker_id)
    return tag_logs(worker_id, publisher)


def worker_service(options: Any, build: Callable[[Any], service.IService]) -> service.IService:
    try:
        spec = WorkerSpec.from_json(options["worker-spec"])
    except ValueError as e:
        sys.exit(f"rtmpd: error: --worker-spec: {e}")
    identify_worker(spec.worker_id)
    node = Node(worker_node_id(spec.worker_id), internal_url(spec))
    if options.get("cluster"):
        # A node of a shared directory: each worker is a node of its own, pulled from its internal listener.
        from rtmpd.tap.cluster import node_identity

        try:
            host_id, _ = node_identity(options)
        except ValueError as e:
            sys.exit(f"rtmpd: error: --cluster: {e}")
        options["node-id"] = f"{host_id}/{node.node_id}"
        options["advertise"] = node.pull_url
    top = build(options)
    adopt_listeners(top, spec)
    fd, port = spec.internal
    host = spec.internal_host
    description = (
        f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
        if ":" in host
        else (f"tcp:{port}:interface={host}")
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    AdoptedListeningService(fd, family, description, top.factory, "Internal RTMP").setServiceParent(top)
    # The link also tells the worker that its parent is gone (with --cluster its directory is Redis's).
    directory = AMPDirectory(node, spec.ttl)
    link = DirectoryLink(spec.link, directory, reactor, on_lost=_stop_worker)
    link.setName("directory-link")
    link.setServiceParent(top)
    if not options.get("cluster"):
        install_host_cluster(top, directory, spec, options.get("pull-idle", 10.0))
    return top


def internal_url(spec: WorkerSpec) -> str:
    """The RTMP URL base of a worker's internal listener (its node's ``pull_url``)."""
    host, port = spec.internal_host, spec.internal[1]
    return f"rtmp://[{host}]:{port}" if ":" in host else f"rtmp://{host}:{port}"


def install_host_cluster(top: Any, directory: AMPDirectory, spec: WorkerSpec, idle: float) -> None:
    """The cluster service of one worker over the parent's directory: claims of the keys published
    here, internal pulls of the other workers' keys, signed with the host's secret past access control."""
    from rtmpd.cluster.access import read_cluster_secret
    from rtmpd.tap.cluster import install_cluster_node

    # Without access control there is nothing to get past: the pull asks like any player.
    secret = read_cluster_secret(spec.secret) if top.factory.access is not None else None
    install_cluster_node(top, directory, reactor, "in-host (the parent over AMP)", secret=secret, idle=idle)


def _stop_worker() -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:  # already stopping: a signal came first
        pass
