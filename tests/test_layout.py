"""No import cycles between vae_anomaly's modules.

The import graph is read from the source with `ast`: every `import` and
`from ... import` anywhere in a module (at module level, inside a function, under
an `if` or a `try`), with relative imports resolved against the module's package.
`from . import name` is an edge to the submodule `name` when there is one, else to
the package itself (its `__init__.py`). A module that imports another module which
imports it back, directly or through a chain, is a cycle, even when one side
imports inside a function to dodge the circular import at run time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "vae_anomaly"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # "vae_anomaly/api.py:226 (inside score_files)"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (subpackages included)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _enclosing_functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Each import node -> the name of the function it sits in ("" at module level)."""
    found: dict[ast.AST, str] = {}

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found[child] = function
            inner = (child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                     else function)
            visit(child, inner)

    visit(tree, "")
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names, its dots resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(package_dir: Path) -> list[Edge]:
    """Every import from one module of the package to another."""
    modules = module_names(package_dir)
    root = package_dir.parent
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, function in _enclosing_functions(tree).items():
            where = f"{path.relative_to(root).as_posix()}:{node.lineno}" + (
                f" (inside {function})" if function else "")
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(module, path.name == "__init__.py", node)
                # `from pkg import sub` imports the submodule; `from mod import name`, mod.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                # `import pkg.sub.x as y` names pkg.sub.x; keep the longest known module.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.append(Edge(module, target, where))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges, in order) per strongly connected group of modules."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, {})):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(group, graph) for group in sorted(groups)]


def _cycle_in(group: list[str], graph: dict[str, dict[str, Edge]]) -> list[Edge]:
    """The shortest cycle through the group's first module (breadth-first)."""
    members, start = set(group), group[0]
    came_from: dict[str, Edge] = {}
    frontier = [start]
    while start not in came_from:  # the group is strongly connected: the walk comes back
        following = []
        for node in frontier:
            for target, edge in sorted(graph.get(node, {}).items()):
                if target in members and target not in came_from:
                    came_from[target] = edge
                    following.append(target)
        frontier = following
    path, node = [], start
    while True:
        edge = came_from[node]
        path.append(edge)
        node = edge.source
        if node == start:
            return path[::-1]


def describe(cycle: list[Edge]) -> str:
    """"a -> b -> a", then where each import is."""
    names = " -> ".join([cycle[0].source] + [edge.target for edge in cycle])
    return names + "".join(f"\n    {e.source} imports {e.target} at {e.where}" for e in cycle)


def test_the_package_has_no_import_cycles():
    cycles = find_cycles(import_edges(ROOT / PACKAGE))
    assert not cycles, ("import cycle(s) between vae_anomaly's modules; move the shared code "
                        "so that imports go one way:\n" + "\n".join(map(describe, cycles)))


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("VERSION = '1'\nfrom .low import x\n")
    (package / "low.py").write_text("import os\nx = 1\n")
    (package / "api.py").write_text("from .low import x\n\ndef run():\n"
                                    "    from .sub.engine import go\n    return go()\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "engine.py").write_text("from ..api import run\nfrom .. import low\n"
                                               "def go():\n    return run\n")
    (package / "version_user.py").write_text("from . import VERSION\n")
    edges = {(e.source, e.target): e.where for e in import_edges(package)}
    assert edges == {
        ("pkg", "pkg.low"): "pkg/__init__.py:2",
        ("pkg.api", "pkg.low"): "pkg/api.py:1",
        ("pkg.api", "pkg.sub.engine"): "pkg/api.py:4 (inside run)",
        ("pkg.sub.engine", "pkg.api"): "pkg/sub/engine.py:1",
        ("pkg.sub.engine", "pkg.low"): "pkg/sub/engine.py:2",
        ("pkg.version_user", "pkg"): "pkg/version_user.py:1",
    }
    [cycle] = find_cycles(import_edges(package))
    assert describe(cycle) == (
        "pkg.api -> pkg.sub.engine -> pkg.api"
        "\n    pkg.api imports pkg.sub.engine at pkg/api.py:4 (inside run)"
        "\n    pkg.sub.engine imports pkg.api at pkg/sub/engine.py:1")
    (package / "api.py").write_text("from .low import x\n")
    assert find_cycles(import_edges(package)) == []
    # A package whose __init__ imports a module that imports the package back is a cycle.
    (package / "low.py").write_text("from . import VERSION\n")
    [cycle] = find_cycles(import_edges(package))
    assert describe(cycle).splitlines()[0] == "pkg -> pkg.low -> pkg"
