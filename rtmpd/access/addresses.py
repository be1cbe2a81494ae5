"""Address rules: allow and deny lists of networks (CIDR, IPv4 and IPv6) per action.

A rule is written ``ACTION:CIDR`` (``--auth-allow publish:10.0.0.0/8``,
``--auth-deny play:2001:db8::/32``); ``ACTION`` is ``connect``,
``publish``, ``play`` or ``all``; a bare address is a /32 or /128. For each
action:

1. an address in any of the action's deny networks is refused;
2. else, if the action has allow networks, an address in none of them is
   refused;
3. else it is allowed.

So "allow 10.0.0.0/8, deny 10.0.0.66" works as read, whatever the order
the options were given in. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``,
as a dual-stack listener reports IPv4 clients) is matched as the IPv4
address. A client without an IP address (a UNIX socket) matches no network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from rtmpd.access.decision import ALLOW, Action, Authoriser, Decision, Deny, Request
from rtmpd.access.errors import RuleError

__all__ = ["AddressRule", "AddressRules", "client_address", "parse_rule"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_ACTIONS = {"connect": (Action.CONNECT,), "publish": (Action.PUBLISH,), "play": (Action.PLAY,)}
_ACTIONS["all"] = (Action.CONNECT, Action.PUBLISH, Action.PLAY)


@dataclass(frozen=True)
class AddressRule:
    """Allow (``allow=True``) or deny ``network`` for ``action``."""

    action: Action
    network: Network
    allow: bool

    def __str__(self) -> str:
        return f"{'allow' if self.allow else 'deny'} {self.action}:{self.network}"


def parse_rule(text: str, allow: bool) -> list[AddressRule]:
    """``ACTION:CIDR`` -> rules (``all`` gives one per action). Raises ``RuleError``."""
    action, sep, cidr = text.partition(":")
    if not sep or action not in _ACTIONS:
        raise RuleError(f"{text!r}: expected ACTION:CIDR with ACTION one of connect, publish, play, all")
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as e:
        raise RuleError(f"{text!r}: {e}") from None
    return [AddressRule(a, network, allow) for a in _ACTIONS[action]]


def client_address(addr: str) -> Address | None:
    """The client's address as an ``ipaddress`` value (IPv4-mapped IPv6 unwrapped), or None."""
    try:
        address = ipaddress.ip_address(addr.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AddressRules(Authoriser):
    """Allows or refuses by the client's address (module doc)."""

    name = "address"

    def __init__(self, rules: Iterable[AddressRule]) -> None:
        self.rules = tuple(rules)
        self._deny: dict[Action, tuple[Network, ...]] = {}
        self._allow: dict[Action, tuple[Network, ...]] = {}
        for action in Action:
            self._deny[action] = tuple(r.network for r in self.rules if r.action is action and not r.allow)
            self._allow[action] = tuple(r.network for r in self.rules if r.action is action and r.allow)

    @classmethod
    def from_options(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> AddressRules:
        """From ``--auth-allow`` / ``--auth-deny`` values. Raises ``RuleError``."""
        rules = [r for text in allow for r in parse_rule(text, True)]
        rules += [r for text in deny for r in parse_rule(text, False)]
        return cls(rules)

    def check(self, request: Request) -> Decision:
        deny, allow = self._deny[request.action], self._allow[request.action]
        if not deny and not allow:
            return ALLOW
        address = client_address(request.addr)
        if address is not None and any(address in net for net in deny):
            return Deny("address not allowed", self.name, f"{address} is in a deny list")
        if allow and (address is None or not any(address in net for net in allow)):
            return Deny(
                "address not allowed", self.name, f"{request.addr or 'no address'} is in no allow list"
            )
        return ALLOW

    def describe(self) -> str:
        return f"{self.name} ({'; '.join(str(r) for r in self.rules) or 'no rules'})"
