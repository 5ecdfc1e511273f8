"""The layout's guard rails (ARCHITECTURE.md): imports flow one way, from the data up to the front doors, with no
cycle; and every module path the README names exists, so a move cannot strand a documented name."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The layers from the bottom up: a module may import from its own layer and those below it. A name ending in "."
# stands for a package and everything in it. The package's own module (the version, and the public names imported on
# first use) is at the bottom: importing it loads nothing else.
LAYERS = (
    ("aekit", "aekit.errors", "aekit.naming", "aekit.atomic", "aekit.codec", "aekit.distributed", "aekit.graphed"),
    ("aekit.data.",),
    ("aekit.nets", "aekit.models."),
    ("aekit.options", "aekit.batches", "aekit.trainer", "aekit.runs"),
    ("aekit.evaluate", "aekit.metrics", "aekit.anomaly"),
    ("aekit.report", "aekit.figures", "aekit.html_report", "aekit.projector", "aekit.tensorboard"),
    ("aekit.workflow", "aekit.pack", "aekit.compare"),
    ("aekit.uses.", "aekit.apps"),
    ("aekit.sklearn", "aekit.cli", "aekit.__main__"),
)
# Imports against the flow that the layout step (issue 26) is to remove; none may be added.
AGAINST_THE_FLOW = {("aekit.trainer", "aekit.evaluate")}
# Modules that import each other, directly or around a loop; the same step is to remove it.
CYCLES = [{"aekit.anomaly", "aekit.evaluate", "aekit.metrics"}]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "aekit").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> set[str]:
    """The aekit modules that ``name`` imports, at the top or inside functions (``from P import m`` of a submodule
    counts as m)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    for level, members in enumerate(LAYERS):
        if any(module == m or (m.endswith(".") and (module + ".").startswith(m)) for m in members):
            return level
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py; add it where it belongs")


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_flow_from_the_data_up():
    against = {(m, i) for m, imported in GRAPH.items() for i in imported if _layer(i) > _layer(m)}
    assert against <= AGAINST_THE_FLOW, f"imports against the flow: {sorted(against - AGAINST_THE_FLOW)}"
    assert AGAINST_THE_FLOW <= against, f"gone, so drop them from AGAINST_THE_FLOW: {AGAINST_THE_FLOW - against}"


def _cycles() -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while not group or w != v:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
            if len(group) > 1:
                groups.append(group)

    for v in GRAPH:
        if v not in index:
            visit(v)
    return groups


def test_no_modules_import_each_other_beyond_the_known_cycle():
    assert sorted(map(sorted, _cycles())) == sorted(map(sorted, CYCLES))


def _documented_paths() -> set[str]:
    """Every dotted ``aekit.x.y`` the README names and every ``from aekit.x import a, b`` it shows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\baekit(?:\.[A-Za-z_]\w*)+", text))
    for module, names in re.findall(r"^\s*from (aekit[\w.]*) import ([\w, ]+)$", text, re.MULTILINE):
        named |= {f"{module}.{name.strip()}" for name in names.split(",") if name.strip()}
    return named


@pytest.mark.parametrize("path", sorted(_documented_paths()))
def test_every_name_the_readme_documents_exists(path):
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return
    raise AssertionError(f"{path} is not importable")
