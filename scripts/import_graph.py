"""Print rtmpd's package-level import graph and the import rules the tree breaks.

Usage, from the repository root: ``python -m scripts.import_graph [--modules] [--root DIR]``
(or ``scripts/import-graph``). Exits 1 when a rule is broken: the core
importing anything outside it, the relay importing the server, recording or
admin, recording importing the server, an import cycle between modules, or an
internal import naming no module. Nothing is imported: the source is read
with ``ast`` (``scripts/architecture.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.architecture import Tree, format_module_graph, format_package_graph, import_violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="import-graph", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="repository root")
    parser.add_argument("--modules", action="store_true", help="also print the module-level graph")
    args = parser.parse_args(argv)
    tree = Tree.from_directory(args.root)
    print(format_package_graph(tree))
    if args.modules:
        print("\nModule-level import graph:")
        print(format_module_graph(tree))
    violations = import_violations(tree)
    if violations:
        print(f"\n{len(violations)} import rule(s) broken:")
        for violation in violations:
            print(f"  {violation}")
        return 1
    print("\nNo import rule broken.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
