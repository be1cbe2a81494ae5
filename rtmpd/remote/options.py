"""The relay options of the twistd plugin (``--push``, ``--push-grace``, ``--push-ca``, ``--pull``,
``--pull-idle``) and their wiring.

``RemoteOptions`` is mixed into ``rtmpd.tap.Options``; ``install_remote(top,
options)`` builds the push and pull services from them and makes it a child of the top
service. A bad rule, a rule that pushes a stream to itself here, or an
unreadable CA file stops start-up with one line.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python import usage

from rtmpd.core.text import ascii_digits, bounded_number

# The relay's runtime (connections, endpoints, TLS) is imported by the functions that build it: the
# tap's option parsing imports this module whether or not --push or --pull is given.
if TYPE_CHECKING:
    from rtmpd.remote.connection import RTMPClientProtocol
    from rtmpd.remote.push import PushRule, PushService
    from rtmpd.remote.urls import RemoteURL
    from rtmpd.server.service import RTMPService

__all__ = ["REMOTE_PARAMETERS", "RemoteOptions", "install_remote", "make_connector"]

_log = Logger(namespace="rtmpd.remote")


_non_negative = bounded_number(float, 0, "a number of seconds >= 0")

REMOTE_PARAMETERS = [
    [
        "push-grace",
        None,
        10.0,
        "Seconds push destinations stay connected after their publisher left",
        _non_negative,
    ],
    ["push-ca", None, None, "PEM file of the CAs trusted for rtmps:// push and pull (default: the system's)"],
    [
        "pull-idle",
        None,
        10.0,
        "Seconds a pulled stream's upstream stays open after its last local player left",
        _non_negative,
    ],
]


class RemoteOptions:
    """The ``--push`` and ``--pull`` options (repeatable), checked at start-up."""

    def init_remote(self) -> None:
        self["push"] = []
        self["pull"] = []

    def opt_pull(self, rule: str) -> None:
        """Play streams of local APP that nobody publishes here from an origin: 'APP=rtmp://origin/app'."""
        app, sep, url = rule.partition("=")
        if not sep or not app or not url:
            raise usage.UsageError(f"--pull {rule!r}: expected APP=URL, e.g. 'live=rtmp://origin/live'")
        self["pull"].append((app, url))

    def opt_push(self, rule: str) -> None:
        """Push streams matching PATTERN to URL: 'PATTERN=URL' (repeatable; URL may use {app} {name})."""
        pattern, sep, url = rule.partition("=")
        if not sep or not pattern or not url:
            raise usage.UsageError(
                f"--push {rule!r}: expected PATTERN=URL, e.g. 'live/*=rtmp://host/app/{{name}}'"
            )
        self["push"].append((pattern, url))


def _listening_ports(options: Any) -> set[int]:
    ports = set()
    for description in [options["port"], *options.get("listen", [])]:
        parts = description.split(":")
        if len(parts) > 1 and parts[0] in ("tcp", "tcp6", "ssl") and ascii_digits(parts[1]):
            ports.add(int(parts[1]))
    ports.discard(0)
    return ports


def is_local_host(host: str) -> bool:
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def make_connector(
    reactor: Any, trust_root: Any = None, setup_timeout: float | None = None, mode: str = "publish"
):
    """``connect(relay, rule=None)``: one marked connection to ``relay.url`` that publishes (push) or
    plays (pull), reporting to ``relay`` (``setup_timeout`` None: ``connection.SETUP_TIMEOUT``)."""
    from rtmpd.core.client import ClientSession
    from rtmpd.remote.connection import SETUP_TIMEOUT, RTMPClientFactory, RTMPClientProtocol
    from rtmpd.remote.endpoints import client_endpoint, load_trust_root
    from rtmpd.remote.push import RELAY_FLASH_VER, RELAY_PARAM

    if setup_timeout is None:
        setup_timeout = SETUP_TIMEOUT
    trust_roots: dict[str, Any] = {}

    def connect(destination: Any, rule: PushRule | None = None) -> Any:
        url = destination.url
        root = trust_root
        if rule is not None and rule.ca_file:
            root = trust_roots.get(rule.ca_file) or trust_roots.setdefault(
                rule.ca_file, load_trust_root(rule.ca_file)
            )

        def build() -> RTMPClientProtocol:
            session = ClientSession(
                mode=mode,
                app=url.app,
                tc_url=url.tc_url,
                stream_name=url.name,
                connect_params={RELAY_PARAM: "push" if mode == "publish" else "pull"},
                flash_ver=RELAY_FLASH_VER,
                epoch=int(reactor.seconds() * 1000) & 0xFFFFFFFF,
            )
            return RTMPClientProtocol(session, destination, reactor, setup_timeout)

        return client_endpoint(reactor, url, root).connect(RTMPClientFactory(build))

    return connect


def install_remote(top: RTMPService, options: Any, reactor: Any = None) -> PushService | None:
    """Add the push and pull services to ``top`` (children "push" and "pull", even without rules, so
    that rules can be added at run time); returns the push service.

    Exits with one line for a bad rule or CA file.
    """
    if reactor is None:
        from twisted.internet import reactor
    from rtmpd.remote.endpoints import CAFileError, load_trust_root
    from rtmpd.remote.pull import PullService
    from rtmpd.remote.push import PushService
    from rtmpd.remote.urls import URLError

    rules = options.get("push") or []
    trust_root = None
    if options.get("push-ca"):
        try:
            trust_root = load_trust_root(options["push-ca"])
        except CAFileError as e:
            sys.exit(f"rtmpd: error: --push-ca: {e}")
    ports = _listening_ports(options)

    def is_self(url: RemoteURL) -> bool:
        return url.port in ports and is_local_host(url.host)

    push = PushService(
        top.registry,
        reactor,
        make_connector(reactor, trust_root),
        grace=options.get("push-grace", 10.0),
        max_queue_bytes=top.config.max_queue_bytes,
        stall_timeout=top.config.play_timeout,
        is_self=is_self,
    )
    for pattern, url in rules:
        try:
            push.add(pattern, url)
        except URLError as e:
            sys.exit(f"rtmpd: error: --push: {e}")
    push.setServiceParent(top)
    pull = PullService(
        top.registry,
        reactor,
        make_connector(reactor, trust_root, mode="play"),
        idle=options.get("pull-idle", 10.0),
        is_self=is_self,
    )
    for app, url in options.get("pull") or []:
        try:
            pull.add(app, url)
        except URLError as e:
            sys.exit(f"rtmpd: error: --pull: {e}")
    pull.setServiceParent(top)
    return push
