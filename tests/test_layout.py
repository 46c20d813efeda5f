"""The architecture as the code has it: layers import downward only, and nothing imports in a circle
(docs/architecture.md, "Layers")."""

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


# Lowest first; a unit imports units of its own layer or below. A new package or top-level module takes its place
# here, so where it sits is a decision, not an accident.
LAYERS = {
    "foundation": {
        *("errors", "checks", "paths", "suggest", "objective", "terminal", "patches", "compiled", "parallel_jobs"),
        *("run_registry", "cores", "console", "cache", "trust", "losses", "regularization", "optimization", "muon"),
        "tta",
        *("rejections", "isolation", "checkpoint_format"),
    },
    "data": {"data"},
    "features and models": {"features", "models"},
    "training": {"training"},
    "reporting": {"reporting"},
    "experiment": {
        *("experiment", "config", "cross_validation", "trial_pruning", "budget", "provenance", "evaluation"),
        *("prediction", "run_folder", "runs", "config_errors"),
    },
    "cli": {"cli", "launch", "ranks", "api", "__init__"},
}


def layer_of(unit: str) -> int:
    return next(rank for rank, units in enumerate(LAYERS.values()) if unit in units)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a unit from a higher layer, as "training -> reporting"."""
    return [
        f"{unit} -> {target}"
        for unit in sorted(graph)
        for target in sorted(graph[unit])
        if layer_of(target) > layer_of(unit)
    ]


def test_every_package_and_module_has_its_layer():
    listed = set().union(*LAYERS.values())
    graph = import_graph()
    assert set(graph) <= listed, f"not in LAYERS: {sorted(set(graph) - listed)}"
    assert listed <= set(graph), f"in LAYERS but not in src/visionlab: {sorted(listed - set(graph))}"


def test_layers_import_downward_only():
    """data -> features/models -> training -> reporting -> experiment -> cli: training knows nothing of how it
    is reported, and reporting nothing of how a run is put together."""
    assert upward_imports(import_graph()) == []


def test_the_layer_check_sees_an_upward_import():
    assert upward_imports({"training": {"reporting", "data"}, "reporting": set(), "data": set()}) == [
        "training -> reporting"
    ]


def test_no_two_packages_or_modules_import_each_other_in_a_circle():
    found = cycle(import_graph())
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
