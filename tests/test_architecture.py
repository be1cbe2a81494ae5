"""rtmpd's architecture, checked from the source with ``ast`` (nothing is imported).

- Layers: ``rtmpd.core`` imports nothing outside itself (no Twisted, only the
  standard library); ``rtmpd.relay`` never imports ``rtmpd.server``,
  ``rtmpd.recording`` or ``rtmpd.admin``; ``rtmpd.recording`` never imports
  ``rtmpd.server``.
- No import cycle between modules; imports under ``if TYPE_CHECKING:`` and
  inside functions count.
- Nothing outside the connection adapters (``rtmpd/server/``, ``rtmpd/http/flv/``) reads a
  connection's internals: only what ``rtmpd.relay.peer.Peer`` declares.
- No module over 400 lines, except the pure codecs of the core.

A failure names each file and line, and the import checks print the
package-level graph (``python -m scripts.import_graph`` prints it too). The
checker itself (``scripts/architecture.py``) is proven on small synthetic
trees by ``CheckerTests``.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from scripts import import_graph
from scripts.architecture import (
    Tree,
    Violation,
    class_members,
    connection_internal_violations,
    cycle_violations,
    format_package_graph,
    import_violations,
    layer_violations,
    size_violations,
    strongly_connected,
    unresolved_violations,
)

ROOT = Path(__file__).resolve().parent.parent

MAX_MODULE_LINES = 400

#: Pure codecs of the core: tables and byte layouts that read best in one file.
LONG_CODECS = frozenset(
    {
        "rtmpd/core/amf0.py",
        "rtmpd/core/amf3.py",
        "rtmpd/core/chunks.py",
        "rtmpd/core/flv.py",
        "rtmpd/core/handshake.py",
        "rtmpd/core/media.py",
        "rtmpd/core/fmp4.py",  # not written yet (a later issue); a codec like the others
    }
)

#: Where the connection class lives, and the interface everyone else sees it through.
CONNECTION_CLASS = ("rtmpd/server", "RTMPProtocol")
PEER_MODULE, PEER_CLASS = "rtmpd/relay/peer.py", "Peer"

#: Attributes of a connection (``RTMPProtocol`` and the Twisted ``Protocol`` it is) that are not on ``Peer``
#: and are rare enough elsewhere to be searched for on any object: reading one outside rtmpd/server/ is
#: reaching into a connection (``publication.conn.transport.pauseProducing()``, ``conn.writer.chunk_size``).
#: The packages that implement connections (``Peer``s over their own transports): the RTMP server, and the
#: HTTP-FLV and WebSocket-FLV players. Only they may read a transport and the like.
CONNECTION_ADAPTERS = ("rtmpd.server", "rtmpd.http.flv")

CONNECTION_INTERNALS = frozenset(
    {
        "transport",  # the socket: flow control and writes belong to the adapter
        "factory",  # the server factory: the connection table, the outbox, the clock
        "writer",  # the chunk writer: its chunk size is Peer.chunk_size
        "reader",  # the chunk reader
        "handshake",
        "session",  # the sans-IO session the adapter drives (core.session)
        "session_open",
        "net_streams",  # the connection's NetStreams: Peer.roles() says what it does
        "dispatcher",
        "commands",  # the command responders
        "connect_params",
        "paused_since",
        "bytes_since_pause",
        "accept_connect",
        "peer_host",  # the client address access control is asked about
        # Connection limits and deadlines (rtmpd.server.admission, rtmpd.server.deadlines).
        "aborted",
        "admitted_host",
        "closing_since",
        "connected_at",
        "handshake_done_at",
        "idle_since",
    }
)

#: Attributes of a connection too common as names to search for on any object (a file's ``.write``, a
#: service's ``.config``): they are caught only on objects named like a connection (``conn.write``).
COMMON_NAMES = frozenset(
    {
        "config",
        "clock",
        "log",
        "write",
        "fail",
        "last_activity",
        "set_chunk_size",
        "connected",
        "makeConnection",
        "connectionMade",
        "connectionLost",
        "dataReceived",
        "pauseProducing",
        "resumeProducing",
        "stopProducing",
        "logPrefix",
    }
)

#: Names of variables and attributes that hold a connection: on them, anything not on Peer is an internal.
CONNECTION_NAMES = frozenset({"conn", "connection", "peer", "protocol", "proto"})

#: Known false positives: (file, expression as ``ast.unparse`` writes it) -> why it is not a connection's
#: internal. Every entry must still match something (``test_connection_allowlist_is_current``).
CONNECTION_ALLOWLIST: dict[tuple[str, str], str] = {
    # The SSH manhole's own Twisted objects: SSH transports, channels and terminals, not RTMP connections.
    ("rtmpd/admin/auth.py", "self.transport"): "the SSH user-auth service's SSH transport",
    ("rtmpd/admin/auth.py", "self.transport.transport"): "the TCP transport under that SSH transport",
    ("rtmpd/admin/auth.py", "peer.host"): "an IAddress from getPeer(), named peer",
    ("rtmpd/admin/auth.py", "peer.port"): "an IAddress from getPeer(), named peer",
    ("rtmpd/admin/manhole.py", "self.terminal.transport"): "the manhole terminal's transport",
    ("rtmpd/admin/manhole.py", "proto.makeConnection"): "the SSH session's terminal protocol",
    ("rtmpd/admin/manhole.py", "proto.write"): "the SSH session's terminal protocol",
    ("rtmpd/admin/manhole.py", "self._proto.write"): "the SSH session's terminal protocol",
    ("rtmpd/admin/manhole.py", "self._proto.session"): "the SSH channel of the terminal protocol",
    ("rtmpd/admin/manhole.py", "channel.conn.sendRequest"): "the SSH connection service of that channel",
    # The tap is the one place that builds and wires services: it hands the RTMP service's factory to the
    # listeners it creates (a service's attribute, not a connection's).
    ("rtmpd/tap/__init__.py", "top.factory"): "the tap wires the service's factory into its listeners",
    ("rtmpd/tap/access.py", "top.factory"): "the tap gives the service's factory its access policy",
    ("rtmpd/tap/manhole.py", "top.factory"): "the tap gives the manhole the service's access policy",
    ("rtmpd/tap/metrics.py", "top.factory"): "the tap gives the metrics the factory's close counts, policy",
    ("rtmpd/tap/hls.py", "top.factory"): "the tap gives HLS the service's access policy",
    ("rtmpd/tap/http.py", "top.factory"): "the tap gives HTTP players conn ids, the outbox, the policy",
    ("rtmpd/cluster/amp_client.py", "link.transport"): "a worker's AMP link to its parent, not RTMP",
    ("rtmpd/tap/workers.py", "top.factory"): "a worker's internal listener serves the service's factory",
    ("rtmpd/tap/workers.py", "child.factory"): "a shared listener keeps its factory on the adopted socket",
    ("rtmpd/tap/workers.py", "self.factory"): "the adopted listener's own factory (a listening service's)",
    ("rtmpd/tap/cluster.py", "top.factory"): "the tap lets signed internal pulls past the factory's policy",
    ("rtmpd/http/fmp4/websocket.py", "self.factory"): "the autobahn protocol's own WebSocket factory",
    # rtmpd.testing's RTMPTestClient is an RTMP client with its own handshake, chunk reader and writer,
    # commands and transport; MemoryServer builds server connections from the service's factory on purpose.
    ("rtmpd/testing.py", "self.handshake"): "the test client's own client handshake",
    ("rtmpd/testing.py", "self.reader"): "the test client's own chunk reader",
    ("rtmpd/testing.py", "self.writer"): "the test client's own chunk writer",
    ("rtmpd/testing.py", "self.commands"): "the test client's own pending commands",
    ("rtmpd/testing.py", "self.transport"): "the test client's own transport",
    ("rtmpd/testing.py", "self.factory"): "MemoryServer's handle on the server factory it drives",
    ("rtmpd/testing.py", "self.service.factory"): "MemoryServer's handle on the server factory it drives",
    ("rtmpd/testing.py", "self.session"): "MemoryServer.session(), a method that opens a test session",
    # The RTMP client's Twisted adapter is an adapter like rtmpd/server's: the transport is its own.
    ("rtmpd/remote/connection.py", "self.transport"): "the outgoing client connection's own transport",
    ("rtmpd/remote/connection.py", "self.connected_at"): "the outgoing client connection's own start time",
    # The lean HTTP channel of /hls/ is an adapter of HTTP connections (not RTMP ones): the transport is its own.
    ("rtmpd/hls/channel.py", "self.transport"): "the HLS HTTP channel's own transport",
    ("rtmpd/hls/channel.py", "raw.transport"): "the TCP transport under the connection cap's wrapper",
}

_tree: Tree | None = None


def real_tree() -> Tree:
    global _tree
    if _tree is None:
        _tree = Tree.from_directory(ROOT)
    return _tree


def listing(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


class ArchitectureTests(SynchronousTestCase):
    """The rules, on the real tree."""

    def assert_import_rules(self, violations: list[Violation], what: str) -> None:
        if violations:
            self.fail(
                f"{len(violations)} {what}:\n{listing(violations)}\n\n{format_package_graph(real_tree())}"
            )

    def test_sources_parse(self) -> None:
        self.assertEqual(real_tree().parse_errors, [], listing(real_tree().parse_errors))
        self.assertIn("rtmpd.core.chunks", real_tree().modules)

    def test_layers(self) -> None:
        self.assert_import_rules(layer_violations(real_tree()), "imports across a layer rule")

    def test_no_import_cycles(self) -> None:
        self.assert_import_rules(cycle_violations(real_tree()), "import cycles between modules")

    def test_internal_imports_resolve(self) -> None:
        self.assert_import_rules(
            unresolved_violations(real_tree()), "imports of rtmpd modules that do not exist"
        )

    def connection_class_members(self) -> set[str]:
        folder, name = CONNECTION_CLASS
        for path in sorted((ROOT / folder).rglob("*.py")):
            members = class_members(path.read_text(encoding="utf-8"), name)
            if members is not None:
                return members
        self.fail(f"no class {name} under {folder}/: update CONNECTION_CLASS in this test")

    def peer_members(self) -> set[str]:
        path = ROOT / PEER_MODULE
        members = class_members(path.read_text(encoding="utf-8"), PEER_CLASS) if path.exists() else None
        if members is None:
            self.fail(f"no class {PEER_CLASS} in {PEER_MODULE}: update PEER_MODULE in this test")
        return members

    def connection_violations(self, allowed) -> list[Violation]:
        return connection_internal_violations(
            real_tree(),
            internals=CONNECTION_INTERNALS,
            peer_members=self.peer_members(),
            connection_names=CONNECTION_NAMES,
            allowed=allowed,
            exempt_prefixes=CONNECTION_ADAPTERS,
        )

    def test_no_connection_internals_outside_server(self) -> None:
        violations = self.connection_violations(CONNECTION_ALLOWLIST)
        if violations:
            self.fail(
                f"{len(violations)} reads of a connection's internals outside rtmpd/server/ (use Peer; a "
                f"false positive goes in CONNECTION_ALLOWLIST with its reason):\n{listing(violations)}"
            )

    def test_connection_internals_list_covers_the_connection(self) -> None:
        """Every public attribute the connection has beyond Peer is searched for, one way or the other."""
        beyond_peer = {
            m for m in self.connection_class_members() - self.peer_members() if not m.startswith("_")
        }
        unlisted = sorted(beyond_peer - CONNECTION_INTERNALS - COMMON_NAMES)
        self.assertEqual(
            unlisted,
            [],
            "add these connection attributes to CONNECTION_INTERNALS (or COMMON_NAMES if too common)",
        )
        self.assertFalse(CONNECTION_INTERNALS & self.peer_members(), "a Peer member is listed as internal")

    def test_connection_allowlist_is_current(self) -> None:
        """Each allowlist entry still exempts something: a stale one would hide a future real read."""
        unexempted = self.connection_violations(())
        used = {(v.path, v.message.split(": ", 1)[0]) for v in unexempted}
        stale = sorted(key for key in CONNECTION_ALLOWLIST if key not in used)
        self.assertEqual(stale, [], "these CONNECTION_ALLOWLIST entries match nothing any more: remove them")

    def test_module_size(self) -> None:
        violations = size_violations(real_tree(), limit=MAX_MODULE_LINES, allowed=LONG_CODECS)
        if violations:
            self.fail(f"{len(violations)} modules over {MAX_MODULE_LINES} lines:\n{listing(violations)}")

    def test_long_codecs_are_in_the_core(self) -> None:
        for path in LONG_CODECS:
            self.assertTrue(path.startswith("rtmpd/core/"), path)


def synthetic(files: dict[str, str]) -> Tree:
    """A tree from sources given inline, each dedented and with an ``__init__.py`` in every package."""
    import textwrap

    full = {path: textwrap.dedent(source) for path, source in files.items()}
    for path in list(full):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            full.setdefault("/".join(parts[:i]) + "/__init__.py", "")
    return Tree(full)


#: A module whose third line imports under TYPE_CHECKING.
TYPE_CHECKING_IMPORT = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    %s\n"


def places(violations: list[Violation]) -> list[tuple[str, int]]:
    return sorted((v.path, v.line) for v in violations)


class CheckerTests(SynchronousTestCase):
    """The checker catches what it must, on small synthetic trees."""

    def test_module_names(self) -> None:
        tree = synthetic({"rtmpd/core/amf0.py": "", "rtmpd/tap.py": ""})
        self.assertEqual(sorted(tree.modules), ["rtmpd", "rtmpd.core", "rtmpd.core.amf0", "rtmpd.tap"])
        self.assertTrue(tree.modules["rtmpd.core"].is_package)
        self.assertFalse(tree.modules["rtmpd.tap"].is_package)

    def test_relative_imports(self) -> None:
        tree = synthetic(
            {
                "rtmpd/relay/a.py": """
                    from . import b
                    from .b import name
                    from ..core import chunks
                    from ..core.errors import Error
                    from .. import config
                    from . import not_a_module
                """,
                "rtmpd/relay/b.py": "",
                "rtmpd/relay/__init__.py": "from .a import thing\nfrom . import b\n",
                "rtmpd/core/chunks.py": "",
                "rtmpd/core/errors.py": "",
                "rtmpd/config.py": "",
            }
        )
        a = [(i.line, i.target) for i in tree.imports if i.importer == "rtmpd.relay.a"]
        self.assertEqual(
            a,
            [
                (2, "rtmpd.relay.b"),
                (3, "rtmpd.relay.b"),
                (4, "rtmpd.core.chunks"),
                (5, "rtmpd.core.errors"),
                (6, "rtmpd.config"),
                (7, "rtmpd.relay"),  # a name of the package's __init__, not a submodule
            ],
        )
        init = [(i.line, i.target) for i in tree.imports if i.importer == "rtmpd.relay"]
        self.assertEqual(init, [(1, "rtmpd.relay.a"), (2, "rtmpd.relay.b")])
        self.assertTrue(all(i.internal and i.resolved for i in tree.imports))

    def test_from_package_import_submodule_is_the_submodule(self) -> None:
        tree = synthetic(
            {
                "rtmpd/core/amf0.py": "from rtmpd.core import amf3, errors\nfrom rtmpd.core import VALUE\n",
                "rtmpd/core/amf3.py": "",
                "rtmpd/core/errors.py": "",
                "rtmpd/core/__init__.py": "VALUE = 1\n",
            }
        )
        targets = sorted(i.target for i in tree.imports)
        self.assertEqual(targets, ["rtmpd.core", "rtmpd.core.amf3", "rtmpd.core.errors"])

    def test_type_checking_and_function_imports_are_found(self) -> None:
        tree = synthetic(
            {
                "rtmpd/relay/a.py": """
                    import typing
                    from typing import TYPE_CHECKING
                    if TYPE_CHECKING:
                        from rtmpd.relay.b import B
                    if typing.TYPE_CHECKING:
                        import rtmpd.relay.c
                    else:
                        import rtmpd.relay.d
                    def f():
                        from rtmpd.relay import e
                        try:
                            import rtmpd.relay.f
                        except ImportError:
                            pass
                """,
                **{f"rtmpd/relay/{m}.py": "" for m in "bcdef"},
            }
        )
        found = {i.target: (i.line, i.type_checking, i.in_function) for i in tree.imports if i.internal}
        self.assertEqual(
            found,
            {
                "rtmpd.relay.b": (5, True, False),
                "rtmpd.relay.c": (7, True, False),
                "rtmpd.relay.d": (9, False, False),
                "rtmpd.relay.e": (11, False, True),
                "rtmpd.relay.f": (13, False, True),
            },
        )

    def test_cycle_through_type_checking_import(self) -> None:
        tree = synthetic(
            {
                "rtmpd/relay/registry.py": "from rtmpd.relay.player import Player\n",
                "rtmpd/relay/player.py": TYPE_CHECKING_IMPORT % "from rtmpd.relay.registry import Stream",
            }
        )
        (violation,) = cycle_violations(tree)
        self.assertIn("rtmpd.relay.player -> rtmpd.relay.registry -> rtmpd.relay.player", violation.message)
        self.assertIn(
            "rtmpd/relay/player.py:3: rtmpd.relay.player -> rtmpd.relay.registry", violation.message
        )
        self.assertIn("under TYPE_CHECKING", violation.message)
        self.assertIn(
            "rtmpd/relay/registry.py:1: rtmpd.relay.registry -> rtmpd.relay.player", violation.message
        )
        self.assertEqual((violation.path, violation.line), ("rtmpd/relay/player.py", 3))

    def test_cycle_of_three_through_function_import(self) -> None:
        tree = synthetic(
            {
                "rtmpd/core/a.py": "from rtmpd.core import b\n",
                "rtmpd/core/b.py": "import rtmpd.core.c\n",
                "rtmpd/core/c.py": "def f():\n    from . import a\n",
                "rtmpd/core/d.py": "from rtmpd.core import a\n",  # into the cycle, not part of it
            }
        )
        (violation,) = cycle_violations(tree)
        self.assertIn(
            "among 3 modules: rtmpd.core.a -> rtmpd.core.b -> rtmpd.core.c -> rtmpd.core.a", violation.message
        )
        self.assertIn("rtmpd/core/c.py:2: rtmpd.core.c -> rtmpd.core.a (in a function)", violation.message)
        self.assertNotIn("rtmpd.core.d", violation.message)

    def test_cycle_through_package_init(self) -> None:
        tree = synthetic(
            {
                "rtmpd/relay/__init__.py": "from rtmpd.relay.registry import Registry\n",
                "rtmpd/relay/registry.py": "from rtmpd.relay import Peer\n",
            }
        )
        (violation,) = cycle_violations(tree)
        self.assertIn("rtmpd.relay -> rtmpd.relay.registry -> rtmpd.relay", violation.message)

    def test_no_cycle(self) -> None:
        tree = synthetic(
            {
                # A package re-exporting its submodules is not in a cycle with them: importing
                # rtmpd.relay.registry runs rtmpd/relay/__init__.py, but that is not an arrow.
                "rtmpd/relay/__init__.py": "from rtmpd.relay.registry import Registry\n",
                "rtmpd/relay/registry.py": "from rtmpd.relay.peer import Peer\nfrom . import peer\n",
                "rtmpd/relay/peer.py": "import rtmpd.core.messages\n",
                "rtmpd/core/messages.py": "import struct\n",
            }
        )
        self.assertEqual(cycle_violations(tree), [])
        self.assertEqual(import_violations(tree), [])

    def test_strongly_connected(self) -> None:
        graph = {"a": ["b"], "b": ["c", "d"], "c": ["a"], "d": ["e"], "e": ["d"], "f": ["a"], "g": []}
        self.assertEqual(sorted(strongly_connected(graph)), [["a", "b", "c"], ["d", "e"], ["f"], ["g"]])
        # Deep chains do not recurse.
        chain = {str(i): [str(i + 1)] for i in range(5000)}
        chain["5000"] = ["0"]
        (component,) = strongly_connected(chain)
        self.assertEqual(len(component), 5001)

    def test_forbidden_arrows(self) -> None:
        tree = synthetic(
            {
                "rtmpd/core/chunks.py": """
                    import struct
                    from typing import TYPE_CHECKING
                    from rtmpd.core.errors import E
                    if TYPE_CHECKING:
                        from rtmpd.relay.peer import Peer
                    def f():
                        from twisted.internet import reactor
                    import zope.interface
                    from rtmpd import config
                """,
                "rtmpd/core/errors.py": "",
                "rtmpd/relay/peer.py": "from rtmpd.core.messages import Message\n",
                "rtmpd/relay/registry.py": "from ..server import protocol\nimport rtmpd.recording\n",
                "rtmpd/relay/player.py": "from rtmpd.admin.views import x\nfrom rtmpd.config import C\n",
                "rtmpd/recording/recorder.py": "from rtmpd.server.service import S\nfrom ..relay import A\n",
                "rtmpd/server/protocol.py": "from rtmpd.relay import peer\nfrom rtmpd.recording import B\n",
                "rtmpd/admin/views.py": "from rtmpd.server import protocol\n",
                "rtmpd/server/service.py": "",
                "rtmpd/core/messages.py": "",
                "rtmpd/config.py": "",
            }
        )
        violations = layer_violations(tree)
        self.assertEqual(
            places(violations),
            [
                ("rtmpd/core/chunks.py", 6),  # core -> relay, under TYPE_CHECKING
                ("rtmpd/core/chunks.py", 8),  # core -> twisted, in a function
                ("rtmpd/core/chunks.py", 9),  # core -> a third-party package
                ("rtmpd/core/chunks.py", 10),  # core -> rtmpd.config
                ("rtmpd/recording/recorder.py", 1),  # recording -> server
                ("rtmpd/relay/player.py", 1),  # relay -> admin
                ("rtmpd/relay/registry.py", 1),  # relay -> server, relative
                ("rtmpd/relay/registry.py", 2),  # relay -> recording's __init__
            ],
        )
        text = listing(violations)
        self.assertIn(
            "rtmpd/core/chunks.py:8: rtmpd.core.chunks imports twisted.internet (in a function)", text
        )
        self.assertIn("never imports Twisted", text)
        self.assertIn("rtmpd.relay.registry imports rtmpd.server.protocol", text)
        graph = format_package_graph(tree).splitlines()
        relay = "rtmpd.admin FORBIDDEN, rtmpd.config, rtmpd.core, rtmpd.recording FORBIDDEN, "
        relay += "rtmpd.server FORBIDDEN"
        self.assertIn(f"  rtmpd.relay     -> {relay}", graph)
        self.assertIn(
            "  rtmpd.core      -> rtmpd.config FORBIDDEN, rtmpd.relay [type-checking] FORBIDDEN", graph
        )
        self.assertIn("  rtmpd.recording -> rtmpd.relay, rtmpd.server FORBIDDEN", graph)
        self.assertIn("  rtmpd.admin     -> rtmpd.server", graph)
        self.assertIn("  rtmpd.server    -> rtmpd.recording, rtmpd.relay", graph)

    def test_unresolved_internal_import(self) -> None:
        tree = synthetic(
            {"rtmpd/relay/player.py": TYPE_CHECKING_IMPORT % "from rtmpd.relay.gone import Stream"}
        )
        (violation,) = unresolved_violations(tree)
        self.assertEqual((violation.path, violation.line), ("rtmpd/relay/player.py", 3))
        self.assertIn("rtmpd.relay.gone", violation.message)

    def test_parse_error_is_reported(self) -> None:
        tree = synthetic({"rtmpd/core/bad.py": "def f(:\n"})
        (violation,) = import_violations(tree)
        self.assertEqual((violation.path, violation.line), ("rtmpd/core/bad.py", 1))

    def test_connection_internals(self) -> None:
        tree = synthetic(
            {
                "rtmpd/recording/recorder.py": """
                    def hold(publication):
                        publication.conn.transport.pauseProducing()
                        publication.peer.hold_input()
                """,
                "rtmpd/relay/registry.py": """
                    def relay(player, conn, stream):
                        size = player.peer.writer.chunk_size
                        conn.queue_media(b"")
                        conn.net_streams.clear()
                        player.peer._pending.append(b"")
                        stream.old_conn.write(b"")
                        print(player.peer.conn_id, stream.publisher.peer.roles())
                        self.file.write(b"")
                        self.transport.write(b"")
                """,
                "rtmpd/server/protocol.py": "def f(self):\n    self.transport.write(self.writer.write(1))\n",
            }
        )
        violations = connection_internal_violations(
            tree,
            internals={"transport", "writer", "net_streams"},
            peer_members={"conn_id", "queue_media", "hold_input", "roles"},
            connection_names={"conn", "peer"},
            allowed={("rtmpd/relay/registry.py", "self.transport")},
        )
        self.assertEqual(
            [(v.path, v.line, v.message.split(": ")[0]) for v in violations],
            [
                ("rtmpd/recording/recorder.py", 3, "publication.conn.transport"),
                ("rtmpd/relay/registry.py", 3, "player.peer.writer"),
                ("rtmpd/relay/registry.py", 5, "conn.net_streams"),
                ("rtmpd/relay/registry.py", 6, "player.peer._pending"),
                ("rtmpd/relay/registry.py", 7, "stream.old_conn.write"),
            ],
        )
        self.assertIn(".transport names a connection's internal", violations[0].message)
        self.assertIn("peer looks like a connection and ._pending is not on Peer", violations[3].message)

    def test_class_members(self) -> None:
        source = """
class Peer:
    conn_id: str
    LIMIT = 3
    def close(self, reason): ...
    @property
    def congested(self): ...
class Other:
    def x(self):
        self.other = 1
"""
        self.assertEqual(class_members(source, "Peer"), {"conn_id", "LIMIT", "close", "congested"})
        members = class_members(
            "class C:\n    def __init__(self):\n        self.a = self.b = 1\n        self.c += 1\n", "C"
        )
        self.assertEqual(members, {"__init__", "a", "b", "c"})
        self.assertIsNone(class_members(source, "Missing"))

    def test_module_size(self) -> None:
        tree = synthetic(
            {
                "rtmpd/core/amf0.py": "x = 1\n" * 900,
                "rtmpd/relay/registry.py": "x = 1\n" * 401,
                "rtmpd/relay/player.py": "x = 1\n" * 400,
            }
        )
        violations = size_violations(tree, limit=400, allowed={"rtmpd/core/amf0.py"})
        self.assertEqual(
            [str(v) for v in violations],
            ["rtmpd/relay/registry.py:401: 401 lines: modules stay within 400 lines"],
        )

    def test_import_graph_script(self) -> None:
        root = self.mktemp()
        for path, source in {
            "rtmpd/__init__.py": "",
            "rtmpd/core/__init__.py": "",
            "rtmpd/core/chunks.py": "import struct\n",
            "rtmpd/relay/__init__.py": "",
            "rtmpd/relay/registry.py": "from rtmpd.core import chunks\n",
        }.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write(source)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(import_graph.main(["--root", root]), 0)
        self.assertIn("  rtmpd.relay -> rtmpd.core", out.getvalue().splitlines())
        self.assertIn("No import rule broken.", out.getvalue())
        with open(os.path.join(root, "rtmpd/core/chunks.py"), "a") as f:
            f.write("from rtmpd.relay import registry\n")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(import_graph.main(["--root", root, "--modules"]), 1)
        self.assertIn("  rtmpd.core  -> rtmpd.relay FORBIDDEN", out.getvalue().splitlines())
        self.assertIn(
            "rtmpd/core/chunks.py:2: rtmpd.core.chunks imports rtmpd.relay.registry", out.getvalue()
        )
        self.assertIn("import cycle among 2 modules", out.getvalue())
        self.assertIn("rtmpd.relay.registry -> rtmpd.core.chunks", out.getvalue())
