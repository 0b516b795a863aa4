"""The modules of himari/agents/offline import each other one way only (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import himari.agents.offline as offline

PACKAGE = "himari.agents.offline"


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of this package it imports`` (every ``import`` statement, at any depth)."""
    root = Path(offline.__file__).parent
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        targets: set[str] = set()
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this package
                    base = f"{PACKAGE}.{base}" if base else PACKAGE
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            targets |= {n.removeprefix(f"{PACKAGE}.") for n in names if n.removeprefix(f"{PACKAGE}.") in modules}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_inside_the_offline_package() -> None:
    graph = import_graph()
    assert {"loop", "cql"} <= set(graph) and "loop" in graph["cql"]  # the scan sees real edges
    assert find_cycle(graph) is None, find_cycle(graph)
    assert graph["loop"] == set()  # the shared loop knows no algorithm


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
