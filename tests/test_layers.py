"""The package's layers: every import goes down (or sideways) a layer, and none forms a cycle.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import autodl.plugins

import autodl

PACKAGE = Path(autodl.__file__).parent
PLUGINS = Path(autodl.plugins.__file__).parent  # `plugins/`, installed as autodl.plugins

#: Lower layers first; a module may import its own layer and the ones before it.
LAYERS = {
    "base": {"autodl", "autodl.errors", "autodl._imports"},
    "core": {
        "autodl.config", "autodl.datasets", "autodl.hyperparameters", "autodl.plugin",
        "autodl.registry", "autodl.recipe", "autodl.augmentation", "autodl.pipeline",
        "autodl.runtime", "autodl.trial", "autodl.storage", "autodl.samplers",
        "autodl.pruners", "autodl.optimizers", "autodl.cost", "autodl.cost_halving",
        "autodl.checkpoint", "autodl.lost_trials", "autodl.objectives", "autodl.deployment",
        "autodl.pareto_halving",
        "autodl.plugins",
    },
    "orchestration": {"autodl.tuner", "autodl.workers", "autodl._forkserver"},
    "commands": {"autodl.browse", "autodl.report", "autodl.export", "autodl.predict",
                 "autodl.dashboard"},
    "cli": {"autodl.cli", "autodl.__main__", "autodl.progress"},
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
#: What a plugin must know nothing of.
PLUGIN_FORBIDDEN = ("optuna", "autodl.storage", "autodl.trial", "autodl.tuner")


def _module_name(path: Path) -> str:
    if path.is_relative_to(PLUGINS) and path.parent != PACKAGE:
        parts = ("autodl", "plugins", *path.relative_to(PLUGINS).with_suffix("").parts)
    else:
        parts = ("autodl", *path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer_of(module: str) -> str:
    """The layer key of a module: a plugin module counts as ``autodl.plugins``."""
    return "autodl.plugins" if module.startswith("autodl.plugins") else module


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from autodl import storage` imports the module autodl.storage
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py")) + sorted(PLUGINS.rglob("*.py"))
    modules = {_module_name(path): path for path in files}
    return {
        module: {name for name in _imports(path) if name in modules and name != module}
        for module, path in modules.items()
    }


def test_every_module_has_a_layer():
    unplaced = [m for m in _graph() if _layer_of(m) not in RANK]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_imports_never_go_up_a_layer():
    upward = [
        f"{module} ({_rank_name(module)}) imports {target} ({_rank_name(target)})"
        for module, targets in _graph().items() for target in targets
        if RANK[_layer_of(target)] > RANK[_layer_of(module)]
    ]
    assert not upward, "\n".join(upward)


def _rank_name(module: str) -> str:
    return list(LAYERS)[RANK[_layer_of(module)]]


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_plugins_know_nothing_of_optuna_or_storage():
    for path in sorted(PLUGINS.rglob("*.py")):
        forbidden = [name for name in _imports(path)
                     if any(name == f or name.startswith(f + ".") for f in PLUGIN_FORBIDDEN)]
        assert not forbidden, f"{path.name} imports {forbidden}"


def test_the_checks_see_an_upward_import_and_a_cycle(monkeypatch):
    """The walker itself: a storage module importing the orchestrator would be caught."""
    graph = {"autodl.storage": {"autodl.tuner"}, "autodl.tuner": {"autodl.storage"}}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: graph)
    try:
        test_imports_never_go_up_a_layer()
    except AssertionError as error:
        assert "autodl.storage (core) imports autodl.tuner (orchestration)" in str(error)
    else:
        raise AssertionError("an upward import passed")
    try:
        test_no_import_cycles()
    except AssertionError as error:
        assert "autodl.storage -> autodl.tuner -> autodl.storage" in str(error)
    else:
        raise AssertionError("a cycle passed")
