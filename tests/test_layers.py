"""The package's layers import one way: no import cycle between packages or between modules, counting imports
inside functions (docs/ARCHITECTURE.md shows the layer order)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import himari

ROOT = Path(himari.__file__).parent


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("himari", *path.relative_to(ROOT).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    module_graph: dict[str, set[str]] = defaultdict(set)
    package_graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        if name == "himari":  # the package root is a facade: __version__ and the lazily re-exported Python API
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name and target.startswith("himari."):
                    module_graph[name].add(target)
                    a, b = ".".join(name.split(".")[:2]), ".".join(target.split(".")[:2])
                    if a != b:
                        package_graph[a].add(b)
    return package_graph, module_graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_packages_or_modules() -> None:
    packages, modules = _graphs()
    assert _cycles(packages) == []
    assert _cycles(modules) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
