"""Static checks of rtmpd's architecture, read from the source with ``ast``: nothing is imported.

``tests/test_architecture.py`` runs these checks on the real tree and proves
each one on small synthetic trees; ``python -m scripts.import_graph`` prints
the package-level import graph and the import rules it breaks.

What is read as an import: every ``import x`` and ``from x import y``,
absolute or relative, wherever it stands: at module level, under
``if TYPE_CHECKING:``, inside a function or a ``try``. ``from pkg import name``
is an import of ``pkg.name`` when that is a module, else of ``pkg`` (its
``__init__``). Importing ``a.b.c`` is counted as importing ``a.b.c`` only, not
the parent packages whose ``__init__`` Python also runs on the way: a package
that re-exports its submodules would otherwise be "in a cycle" with each of
them. Dynamic imports (``importlib``, plugin strings) are not seen.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "rtmpd"
CORE = "rtmpd.core"

#: (importing package, packages it must not import, why): the layer rules besides the core's.
LAYER_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "rtmpd.relay",
        ("rtmpd.server", "rtmpd.recording", "rtmpd.admin", "rtmpd.http"),
        "the relay sees connections only through rtmpd.relay.peer.Peer and knows no service built on it",
    ),
    (
        "rtmpd.recording",
        ("rtmpd.server", "rtmpd.http"),
        "the recorder listens to the relay and never touches the server",
    ),
    (
        "rtmpd.http",
        ("rtmpd.server", "rtmpd.tap"),
        "HTTP resources see the server through the relay and the admin views and actions, as the manhole",
    ),
)


@dataclass(frozen=True)
class Violation:
    """One broken rule, at a place in a file."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Import:
    """One module importing another, as written at ``path:line``."""

    importer: str
    path: str
    line: int
    #: The imported module's dotted name; for an internal import, the module it resolved to.
    target: str
    #: The name as written, resolved to absolute form but before matching it to a module.
    written: str
    internal: bool
    #: False for an internal import naming no module of the tree.
    resolved: bool
    type_checking: bool
    in_function: bool

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    source: str
    is_package: bool


def within(name: str, prefix: str) -> bool:
    """True when ``name`` is the module or package ``prefix`` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: str) -> tuple[str, bool]:
    """``("rtmpd.core.amf0", False)`` for ``rtmpd/core/amf0.py``; ``("rtmpd.core", True)`` for its init."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def unit_of(name: str) -> str:
    """The node of the package-level graph a module belongs to.

    A subpackage of rtmpd (``rtmpd.core``, ``rtmpd.relay``...) is one node;
    each top-level module (``rtmpd.tap``, ``rtmpd.config``...) is its own
    node, and so is ``rtmpd`` (its ``__init__``).
    """
    parts = name.split(".")
    return ".".join(parts[:2])


class Tree:
    """The Python modules of one package, by dotted name, and every import among them."""

    def __init__(self, files: Mapping[str, str], package: str = PACKAGE) -> None:
        """``files`` maps a path relative to the repository root (``rtmpd/core/amf0.py``) to its source."""
        self.package = package
        self.modules: dict[str, Module] = {}
        for path in sorted(files):
            if not path.endswith(".py") or not within(path.replace("/", "."), package):
                continue
            name, is_package = module_name(path)
            self.modules[name] = Module(name, path, files[path], is_package)
        # A folder of modules without an __init__.py is still a package for the graph.
        self.packages = {n.rsplit(".", 1)[0] for n in self.modules if "." in n} | {
            m.name for m in self.modules.values() if m.is_package
        }
        self.parse_errors: list[Violation] = []
        self.syntax: dict[str, ast.Module] = {}
        for module in self.modules.values():
            try:
                self.syntax[module.name] = ast.parse(module.source, filename=module.path)
            except SyntaxError as e:
                self.parse_errors.append(Violation(module.path, e.lineno or 0, f"does not parse: {e.msg}"))
        self.imports: list[Import] = []
        for name, syntax in self.syntax.items():
            self.imports.extend(_ImportCollector(self, self.modules[name]).collect(syntax))

    @classmethod
    def from_directory(cls, root: str | Path, package: str = PACKAGE) -> Tree:
        """Read every ``*.py`` file under ``root/package``."""
        root = Path(root)
        files = {}
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
        return cls(files, package)

    def is_internal(self, name: str) -> bool:
        return within(name, self.package)

    def resolve(self, name: str) -> tuple[str, bool]:
        """The module an internal dotted name stands for: itself, else its longest existing prefix."""
        candidate = name
        while candidate:
            if candidate in self.modules:
                return candidate, candidate == name
            if "." not in candidate:
                break
            candidate = candidate.rsplit(".", 1)[0]
        return name, False

    def module_edges(self) -> dict[str, dict[str, list[Import]]]:
        """importer -> imported module -> the imports making that arrow (internal, resolved, not self)."""
        edges: dict[str, dict[str, list[Import]]] = {name: {} for name in self.modules}
        for imp in self.imports:
            if imp.internal and imp.resolved and imp.target != imp.importer:
                edges[imp.importer].setdefault(imp.target, []).append(imp)
        return edges


class _ImportCollector(ast.NodeVisitor):
    """Every import statement of one module, with whether it is under TYPE_CHECKING or in a function."""

    def __init__(self, tree: Tree, module: Module) -> None:
        self.tree = tree
        self.module = module
        self.type_checking = False
        self.in_function = False
        self.found: list[Import] = []

    def collect(self, syntax: ast.Module) -> list[Import]:
        self.visit(syntax)
        return self.found

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            saved, self.type_checking = self.type_checking, True
            for child in node.body:
                self.visit(child)
            self.type_checking = saved
        else:
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)

    def _function(self, node: ast.AST) -> None:
        saved, self.in_function = self.in_function, True
        self.generic_visit(node)
        self.in_function = saved

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.module.name.split(".")
            if not self.module.is_package:
                base_parts = base_parts[:-1]
            if node.level > 1:
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base == "__future__":
            return
        targets = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            target = submodule if alias.name != "*" and submodule in self.tree.modules else base
            if target not in targets:
                targets.append(target)
        for target in targets:
            self._add(node, target)

    def _add(self, node: ast.stmt, name: str) -> None:
        internal = self.tree.is_internal(name)
        target, resolved = self.tree.resolve(name) if internal else (name, True)
        self.found.append(
            Import(
                importer=self.module.name,
                path=self.module.path,
                line=node.lineno,
                target=target,
                written=name,
                internal=internal,
                resolved=resolved,
                type_checking=self.type_checking,
                in_function=self.in_function,
            )
        )


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _how(imp: Import) -> str:
    kinds = [
        k for k, on in (("under TYPE_CHECKING", imp.type_checking), ("in a function", imp.in_function)) if on
    ]
    return f" ({', '.join(kinds)})" if kinds else ""


# -- the checks ---------------------------------------------------------------


def layer_violations(tree: Tree) -> list[Violation]:
    """Imports that break the layer rules: the core's, then ``LAYER_RULES``."""
    found = []
    stdlib = sys.stdlib_module_names
    for imp in tree.imports:
        if within(imp.importer, CORE):
            top = imp.target.split(".")[0]
            if imp.internal and not within(imp.target, CORE):
                found.append(
                    Violation(
                        imp.path,
                        imp.line,
                        f"{imp.importer} imports {imp.target}{_how(imp)}: "
                        f"the core imports nothing outside {CORE}",
                    )
                )
            elif not imp.internal and top == "twisted":
                found.append(
                    Violation(
                        imp.path,
                        imp.line,
                        f"{imp.importer} imports {imp.target}{_how(imp)}: "
                        "the core is sans-IO and never imports Twisted",
                    )
                )
            elif not imp.internal and top not in stdlib:
                found.append(
                    Violation(
                        imp.path,
                        imp.line,
                        f"{imp.importer} imports {imp.target}{_how(imp)}: "
                        "the core imports only the standard library and itself",
                    )
                )
        for importer_prefix, forbidden, why in LAYER_RULES:
            if not within(imp.importer, importer_prefix):
                continue
            for prefix in forbidden:
                if imp.internal and within(imp.target, prefix):
                    found.append(
                        Violation(
                            imp.path,
                            imp.line,
                            f"{imp.importer} imports {imp.target}{_how(imp)}: "
                            f"{importer_prefix} never imports {prefix} ({why})",
                        )
                    )
    return found


def unresolved_violations(tree: Tree) -> list[Violation]:
    """Internal imports naming no module of the tree (a stale TYPE_CHECKING import fails nowhere else)."""
    return [
        Violation(
            imp.path,
            imp.line,
            f"{imp.importer} imports {imp.written}{_how(imp)}, which is not a module "
            f"of the tree (nearest: {imp.target})",
        )
        for imp in tree.imports
        if imp.internal and not imp.resolved
    ]


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph, each sorted; iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle(
    start: str, members: set[str], edges: Mapping[str, Mapping[str, list[Import]]]
) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [start, start]


def cycle_violations(tree: Tree) -> list[Violation]:
    """One violation per import cycle between modules, naming every arrow inside it with its file and line."""
    edges = tree.module_edges()
    found = []
    for component in strongly_connected({k: list(v) for k, v in edges.items()}):
        if len(component) < 2:
            continue
        members = set(component)
        cycle = _shortest_cycle(component[0], members, edges)
        arrows = []
        for importer in component:
            for target, imports in sorted(edges[importer].items()):
                if target in members:
                    for imp in imports:
                        arrows.append(f"    {imp.where}: {importer} -> {target}{_how(imp)}")
        first = edges[cycle[0]][cycle[1]][0]
        found.append(
            Violation(
                first.path,
                first.line,
                f"import cycle among {len(component)} modules: {' -> '.join(cycle)}; every arrow inside it:\n"
                + "\n".join(arrows),
            )
        )
    return found


def import_violations(tree: Tree) -> list[Violation]:
    """Every import rule broken: unparsable files, layers, unresolved internal imports, cycles."""
    return tree.parse_errors + layer_violations(tree) + unresolved_violations(tree) + cycle_violations(tree)


def package_graph(tree: Tree) -> dict[str, dict[str, list[Import]]]:
    """unit -> imported unit -> the imports making that arrow (see ``unit_of``)."""
    graph: dict[str, dict[str, list[Import]]] = {unit_of(name): {} for name in tree.modules}
    for imp in tree.imports:
        if imp.internal and imp.resolved:
            source, target = unit_of(imp.importer), unit_of(imp.target)
            if source != target:
                graph[source].setdefault(target, []).append(imp)
    return graph


def format_package_graph(tree: Tree) -> str:
    """The package-level graph, one node a line with its arrows.

    An arrow is marked ``[type-checking]`` or ``[in functions]`` when every
    import making it is of that kind, and ``FORBIDDEN`` when a layer rule
    forbids it.
    """
    bad = {(unit_of(m.importer), unit_of(m.target)) for m in tree.imports if _breaks_layer(m)}
    lines = [f"Package-level import graph of {tree.package} (A -> B: a module of A imports a module of B):"]
    graph = package_graph(tree)
    width = max(map(len, graph), default=0)
    for unit in sorted(graph):
        arrows = []
        for target, imports in sorted(graph[unit].items()):
            label = target
            if all(i.type_checking for i in imports):
                label += " [type-checking]"
            elif all(i.in_function for i in imports):
                label += " [in functions]"
            if (unit, target) in bad:
                label += " FORBIDDEN"
            arrows.append(label)
        lines.append(f"  {unit.ljust(width)} -> {', '.join(arrows) if arrows else '(nothing)'}")
    return "\n".join(lines)


def _breaks_layer(imp: Import) -> bool:
    if not imp.internal:
        return False
    if within(imp.importer, CORE) and not within(imp.target, CORE):
        return True
    return any(
        within(imp.importer, source) and any(within(imp.target, p) for p in forbidden)
        for source, forbidden, _ in LAYER_RULES
    )


def format_module_graph(tree: Tree) -> str:
    """Every module with the modules of the tree it imports."""
    lines = []
    for importer, targets in sorted(tree.module_edges().items()):
        lines.append(f"  {importer} -> {', '.join(sorted(targets)) if targets else '(nothing)'}")
    return "\n".join(lines)


# -- connection internals and module size --------------------------------------


def class_members(source: str, class_name: str) -> set[str] | None:
    """Names a class defines: methods, class-level (annotated) names, and ``self.X`` it assigns anywhere.

    None when the source has no such class.
    """
    syntax = ast.parse(source)
    for node in ast.walk(syntax):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            break
    else:
        return None
    members: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            members.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members.add(item.target.id)
        elif isinstance(item, ast.Assign):
            members.update(t.id for t in item.targets if isinstance(t, ast.Name))
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = list(sub.targets)
        elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
            targets = [sub.target]
        for target in targets:
            for leaf in ast.walk(target):
                if (
                    isinstance(leaf, ast.Attribute)
                    and isinstance(leaf.value, ast.Name)
                    and leaf.value.id == "self"
                ):
                    members.add(leaf.attr)
    return members


def _receiver_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


def connection_internal_violations(
    tree: Tree,
    *,
    internals: Iterable[str],
    peer_members: Iterable[str],
    connection_names: Iterable[str],
    allowed: Iterable[tuple[str, str]],
    exempt_prefixes: Iterable[str] = ("rtmpd.server",),
) -> list[Violation]:
    """Attribute reads and writes of a connection's internals outside the connection adapters
    (``exempt_prefixes``: the RTMP server, the HTTP players), which own their transports.

    Two kinds are found:

    - ``anything.NAME`` for NAME in ``internals`` (``.transport``, ``.writer``...),
      whatever the object: the names are rare enough to grep for;
    - ``conn.NAME`` where the object is named like a connection (its last
      name is in ``connection_names``, or ends with ``_`` and one of them)
      and NAME is not a member of ``Peer``.

    ``allowed`` holds ``(path, expression)`` pairs, the expression as
    ``ast.unparse`` writes it (``self.transport``): known false positives.
    """
    internals = set(internals)
    peer_members = set(peer_members)
    connection_names = set(connection_names)
    allowed = set(allowed)
    found = []
    for name, syntax in sorted(tree.syntax.items()):
        if any(within(name, prefix) for prefix in exempt_prefixes):
            continue
        path = tree.modules[name].path
        for node in ast.walk(syntax):
            if not isinstance(node, ast.Attribute) or node.attr.startswith("__"):
                continue
            receiver = _receiver_name(node.value)
            connection_like = receiver is not None and (
                receiver in connection_names or any(receiver.endswith("_" + c) for c in connection_names)
            )
            if node.attr in internals:
                why = f".{node.attr} names a connection's internal (RTMPProtocol has it, Peer does not)"
            elif connection_like and node.attr not in peer_members:
                why = f"{receiver} looks like a connection and .{node.attr} is not on Peer"
            else:
                continue
            expression = ast.unparse(node)
            if (path, expression) in allowed:
                continue
            violation = Violation(path, node.lineno, f"{expression}: {why}")
            if violation not in found:
                found.append(violation)
    return sorted(found, key=lambda v: (v.path, v.line, v.message))


def size_violations(tree: Tree, *, limit: int, allowed: Iterable[str]) -> list[Violation]:
    """Modules longer than ``limit`` lines, except the paths in ``allowed``."""
    allowed = set(allowed)
    found = []
    for module in tree.modules.values():
        count = len(module.source.splitlines())
        if count > limit and module.path not in allowed:
            found.append(
                Violation(module.path, limit + 1, f"{count} lines: modules stay within {limit} lines")
            )
    return found
