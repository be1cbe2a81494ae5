"""Wiring of the manhole: its bit-rate sampler and its SSH listener, as one service collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import service

if TYPE_CHECKING:
    from rtmpd.admin.manhole_options import ManholeLimits
    from rtmpd.server.service import RTMPService


def manhole_service(
    description: str,
    top: RTMPService,
    *,
    keys_file: str | None = None,
    passwd_file: str | None = None,
    host_key_file: str = "rtmpd_host_key",
    reactor: Any = None,
    reload_access: Any = None,
    limits: ManholeLimits | None = None,
) -> service.MultiService:
    """The manhole collection, named "manhole": the bit-rate sampler its views read, and an SSH listener
    on ``description`` (loopback unless it names an interface).

    Raises ManholeError (one line) when there is no usable credential source or
    host key (see ``rtmpd.admin.manhole.manhole_factory``).
    """
    # Imported here: conch and cryptography are heavy, and only the manhole needs them.
    from rtmpd.admin.manhole import manhole_endpoint, manhole_factory
    from rtmpd.admin.namespace import make_namespace
    from rtmpd.admin.rates import RateSampler
    from rtmpd.server.listening import ListeningService

    sampler = RateSampler(top.connections, top.clock)

    def namespace(user: str) -> dict[str, Any]:
        return make_namespace(top, user, sampler, reactor, top.factory.access, reload_access)

    factory = manhole_factory(
        namespace,
        keys_file=keys_file,
        passwd_file=passwd_file,
        host_key_file=host_key_file,
        limits=limits,
        clock=reactor,
    )
    manhole = service.MultiService()
    manhole.setName("manhole")
    sampler.setServiceParent(manhole)
    listener = ListeningService(manhole_endpoint(description), factory, what="Manhole", reactor=reactor)
    listener.setServiceParent(manhole)
    return manhole
