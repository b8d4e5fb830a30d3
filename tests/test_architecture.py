"""The house keeps its promises (README "Layout"): small modules and functions, no import circle, rooms that
point down only, and registries as the single place where a plug-in's name is declared."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rewardlab"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400

# Which rooms each room may import (besides itself and the shared base modules below).
BASE = {"registry", "tensors"}
ROOMS = {
    "losses": set(),
    "tasks": set(),
    "rl": {"models"},  # rollouts call a model's generate/forward; no file, no config
    "models": set(),
    "data": {"tasks", "models", "rl", "losses", "runtime"},
    "evaluate": {"data", "tasks", "models", "rl", "losses", "runtime"},
    "train": {"data", "tasks", "models", "rl", "losses", "evaluate", "runtime"},
}
RUNTIME = {"runner", "runtime", "runinfo", "checkpoint"}  # the stage runner and what it writes
PURE_ROOMS = ("losses", "rl", "tasks")
FILE_IO = {"json", "os", "pathlib", "shutil", "tempfile", "yaml", "pandas", "safetensors", "subprocess"}


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(("rewardlab",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """Modules this file imports at any level (``from rewardlab.x import y`` counts y when it is a module)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def internal_graph() -> dict[str, set[str]]:
    mods = modules()
    skip = {"rewardlab"}  # ``from rewardlab import losses`` names the package itself too
    return {name: {m for m in imports(path) if m in mods and m not in skip | {name}} for name, path in mods.items()}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_function_longer_than_80_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_functions and not long_modules, long_functions + long_modules


def test_no_import_circle():
    graph = internal_graph()
    # Package __init__ modules re-export their own submodules (registries discover them): not a circle of rooms.
    edges = {m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_rooms_point_down_only():
    wrong = []
    for module, deps in internal_graph().items():
        own = room(module)
        if own not in ROOMS:
            continue
        allowed = ROOMS[own] | {own} | BASE
        if own in ("data", "evaluate", "train"):
            allowed |= RUNTIME | {"config"}
        for dep in deps:
            if room(dep) not in allowed:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, wrong


@pytest.mark.parametrize("pure", PURE_ROOMS)
def test_pure_rooms_do_no_file_io_and_read_no_config(pure):
    offenders = []
    for name, path in modules().items():
        if room(name) != pure:
            continue
        used = {m.split(".")[0] for m in imports(path)}
        if used & FILE_IO or "open(" in path.read_text():
            offenders.append(f"{name}: {sorted(used & FILE_IO)}")
        if any(m.startswith(("rewardlab.config", "rewardlab.runner", "rewardlab.runinfo", "snakemake"))
               for m in imports(path)):
            offenders.append(f"{name} reads config or writes outputs")
    assert not offenders, offenders


def test_models_know_no_task():
    for name, path in modules().items():
        if room(name) == "models":
            assert not any(m.startswith("rewardlab.tasks") for m in imports(path)), name


def test_plugin_names_are_declared_once_in_their_registry():
    """No list of loss, algorithm or shaping names typed again outside the registries (schema, Snakefile, code)."""
    from rewardlab.losses import LOSSES
    from rewardlab.rl.algorithms import ALGORITHMS
    from rewardlab.rl.shapings import SHAPINGS

    root = SRC.parents[1]
    texts = {p: p.read_text() for p in [*root.joinpath("workflow").rglob("*.smk"), root / "Snakefile",
                                        SRC / "schemas" / "config.schema.yaml", *SRC.rglob("*.py")]}
    for registry in (LOSSES, ALGORITHMS, SHAPINGS):
        names = registry.names()
        for path, text in texts.items():
            listed = [n for n in names if f'"{n}"' in text or f"'{n}'" in text or f" {n}," in text]
            assert len(listed) < 3 or "register" in text, f"{path} lists {listed}: read them from the registry"
