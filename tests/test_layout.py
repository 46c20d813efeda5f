"""The architecture as the code has it: packages import each other in one direction only (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import visionlab

PACKAGE = Path(visionlab.__file__).parent


def unit_of(module: str) -> str | None:
    """visionlab.data.folder -> "data"; a top-level module (visionlab.config) is its own unit."""
    parts = module.split(".")
    return parts[1] if parts[0] == "visionlab" and len(parts) > 1 else None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for file in PACKAGE.rglob("*.py"):
        relative = file.relative_to(PACKAGE.parent).with_suffix("")
        unit = unit_of(".".join(relative.parts)) or ""
        if file.parent == PACKAGE:
            unit = file.stem
        edges = graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(file.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            )
            for name in names:
                target = unit_of(name)
                if target and target != unit:
                    edges.add(target)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as the path around it, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        path.append(unit)
        for target in sorted(graph.get(unit, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[unit] = 2
        path.pop()
        return None

    for unit in sorted(graph):
        if unit not in state and (found := visit(unit)):
            return found
    return None


def test_no_two_packages_or_modules_import_each_other_in_a_circle():
    found = cycle(import_graph())
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
