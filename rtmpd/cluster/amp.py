"""The in-host stream directory over AMP: the parent's side and the commands both sides speak.

With ``--workers N`` the parent process holds the host's only ``ClaimTable``
and serves it to its workers over AMP on a unix socket; it holds no stream
state besides those claims. Every command names the node it acts for
(``node`` is ``Node.encode()``), so the parent needs no session state and a
restarted worker speaks for itself again at once. The worker's side,
``AMPDirectory``, is in ``rtmpd.cluster.amp_client``.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.protocols import amp

from rtmpd.cluster.directory import ClaimTable, Node

__all__ = [
    "BadArgument",
    "Claim",
    "ClaimTableLocator",
    "Claims",
    "DirectoryServerFactory",
    "Lookup",
    "Refresh",
    "Release",
]

#: Longest key, node text and claims answer the parent accepts: an AMP value is at most 65535 bytes.
MAX_KEY_CHARS = 1024
MAX_NODE_CHARS = 2048
#: Bytes of keys and nodes in one page of ``Claims`` (an AMP value is at most 65535 bytes).
PAGE_BYTES = 48 * 1024


class BadArgument(ValueError):
    """A command's key or node is not one (too long, or not an encoded Node)."""


_ERRORS = {BadArgument: b"BAD_ARGUMENT"}


class Claim(amp.Command):
    """Claim ``key`` for ``node`` (moving another node's claim with ``takeover``); the owner after it."""

    arguments = [(b"key", amp.Unicode()), (b"node", amp.Unicode()), (b"takeover", amp.Boolean())]
    response = [(b"owner", amp.Unicode())]
    errors = _ERRORS


class Refresh(amp.Command):
    """Extend ``node``'s claim on ``key``; ``held`` is False when the node no longer holds it."""

    arguments = [(b"key", amp.Unicode()), (b"node", amp.Unicode())]
    response = [(b"held", amp.Boolean())]
    errors = _ERRORS


class Release(amp.Command):
    """Drop ``node``'s claim on ``key`` (nothing if another node holds it)."""

    arguments = [(b"key", amp.Unicode()), (b"node", amp.Unicode())]
    response: list = []
    errors = _ERRORS


class Lookup(amp.Command):
    """The node holding ``key``; ``owner`` is the empty string when nobody does."""

    arguments = [(b"key", amp.Unicode())]
    response = [(b"owner", amp.Unicode())]
    errors = _ERRORS


class Claims(amp.Command):
    """One page of the host's live claims, by key, after key ``after`` ("" for the first page).

    An AMP value holds at most 65535 bytes, so a page stops near ``PAGE_BYTES``;
    ``more`` says whether another page follows.
    """

    arguments = [(b"after", amp.Unicode())]
    response = [
        (b"claims", amp.AmpList([(b"key", amp.Unicode()), (b"node", amp.Unicode())])),
        (b"more", amp.Boolean()),
    ]


def _key(key: str) -> str:
    if not key or len(key) > MAX_KEY_CHARS:
        raise BadArgument(f"key of {len(key)} characters")
    return key


def _node(text: str) -> Node:
    if len(text) > MAX_NODE_CHARS:
        raise BadArgument(f"node of {len(text)} characters")
    try:
        return Node.decode(text)
    except ValueError as e:
        raise BadArgument(str(e)) from e


class ClaimTableLocator(amp.CommandLocator):
    """The parent's answers to one worker's directory commands, over the host's one ``ClaimTable``.

    A bad key or node answers ``BadArgument``; the connection stays up.
    """

    def __init__(self, table: ClaimTable) -> None:
        self.table = table

    @Claim.responder
    def claim(self, key: str, node: str, takeover: bool) -> dict:
        owner = self.table.claim(_key(key), _node(node), takeover=takeover)
        return {"owner": owner.encode()}

    @Refresh.responder
    def refresh(self, key: str, node: str) -> dict:
        return {"held": self.table.refresh(_key(key), _node(node))}

    @Release.responder
    def release(self, key: str, node: str) -> dict:
        self.table.release(_key(key), _node(node))
        return {}

    @Lookup.responder
    def lookup(self, key: str) -> dict:
        owner = self.table.lookup(_key(key))
        return {"owner": owner.encode() if owner is not None else ""}

    @Claims.responder
    def claims(self, after: str) -> dict:
        page: list[dict[str, str]] = []
        size = 0
        for key, node in sorted(self.table.claims().items()):
            if key <= after:
                continue
            entry = {"key": key, "node": node.encode()}
            # Each item costs its bytes plus AMP's key names and length prefixes.
            cost = len(key.encode()) + len(entry["node"].encode()) + 16
            if page and size + cost > PAGE_BYTES:
                return {"claims": page, "more": True}
            page.append(entry)
            size += cost
        return {"claims": page, "more": False}


class DirectoryServerFactory(Factory):
    """Serves ``table`` to every worker that connects; each connection is one worker's AMP link."""

    noisy = False

    def __init__(self, table: ClaimTable) -> None:
        self.table = table

    def buildProtocol(self, addr) -> amp.AMP:
        return amp.AMP(locator=ClaimTableLocator(self.table))
