"""The layout's guard rails (ARCHITECTURE.md): imports flow one way, from the data up to the front doors, with no
cycle; and every module path the README names exists, so a move cannot strand a documented name."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The layers from the bottom up: a module may import from its own layer and those below it. A name ending in "."
# stands for a package and everything in it. The package's own module (the version, and the public names imported on
# first use) is at the bottom: importing it loads nothing else.
LAYERS = (
    ("aekit", "aekit.errors", "aekit.naming", "aekit.atomic", "aekit.entropy_coding", "aekit.codec"),
    ("aekit.data.",),
    ("aekit.models.",),
    ("aekit.training.",),
    # aekit.evaluate and aekit.anomaly: the old paths, kept for one release (re-exports of aekit.evaluation).
    ("aekit.evaluation.", "aekit.evaluate", "aekit.anomaly"),
    ("aekit.report.", "aekit.html_report"),
    ("aekit.jobs.", "aekit.workflow"),
    ("aekit.uses.", "aekit.apps"),
    ("aekit.sklearn.", "aekit.cli.", "aekit.__main__"),
)
# Imports against the flow: none since the layout step (issue 26), and none may be added.
AGAINST_THE_FLOW = set()
# Modules that import each other, directly or around a loop; none may be added.
CYCLES = []


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


def test_no_modules_import_each_other():
    assert sorted(map(sorted, _cycles())) == sorted(map(sorted, CYCLES))


def _family_names() -> tuple[set[str], set[str]]:
    """The registered families' names ("vae") and their model classes' names ("VAE")."""
    from aekit.models import FAMILIES

    return set(FAMILIES), {config.model_class.__name__ for config in FAMILIES.values()}


def _asks_a_family(tree: ast.AST, names: set[str], classes: set[str]) -> list[str]:
    """Where ``tree`` imports a family's class (or reaches it as an attribute, ``models.VAE``) or compares a value
    with a family's name written out ("vae")."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and "models" in (node.module or ""):
            found += [(node, f"imports {a.name}") for a in node.names if a.name in classes]
        elif isinstance(node, ast.Attribute) and node.attr in classes:
            found.append((node, f"uses .{node.attr}"))
        elif isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                found += [(node, f"compares with {v.value!r}") for v in values if _constant_in(v, names)]
    return [f"line {node.lineno}: {what}" for node, what in found]


def _constant_in(node: ast.AST, names: set[str]) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names


def test_no_module_outside_the_models_asks_a_models_family():
    """What a model can do is asked of the model (``variational``, ``noise``, ``decoder_output``, ``code_storage``,
    ...), or of a family's config class (``family(name).model_class``), never of its class or its name."""
    names, classes = _family_names()
    asking = {
        module: found
        for module, path in MODULES.items()
        if not (module + ".").startswith("aekit.models.")
        and (found := _asks_a_family(ast.parse(path.read_text(), str(path)), names, classes))
    }
    assert not asking, f"ask the model what it can do instead: {asking}"


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


# The module paths that moved in the layout step (issue 26) and that the README of 0.1.0 documented: each keeps
# working for one release through a thin module at its old path, the same object as at its new one.
MOVED = {
    "aekit.workflow.train_run": "aekit.jobs.workflow.train_run",
    "aekit.html_report.write_report": "aekit.report.html.write_report",
    "aekit.anomaly.anomaly_scores": "aekit.evaluation.anomaly.anomaly_scores",
    "aekit.evaluate.psnr": "aekit.evaluation.measures.psnr",
}


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_name_still_works_at_its_old_path_for_one_release(old):
    assert _resolve(old) is _resolve(MOVED[old])


def test_the_old_evaluate_module_is_the_evaluate_function_too(digits):
    """``aekit.evaluate`` is the function the package exports (:func:`aekit.evaluation.evaluate`) and, for one
    release, the old module of that name: importing the module binds it over the function, and it is called as the
    function is."""
    import aekit
    from aekit.evaluate import importance_weighted_nll, psnr
    from aekit.evaluation import evaluate, measures
    from aekit.models import build_model, model_config

    assert psnr is measures.psnr and aekit.evaluate.psnr is psnr  # the module is bound on the package
    assert aekit.evaluate.importance_weighted_nll is importance_weighted_nll is measures.importance_weighted_nll
    model = build_model(model_config("pca", digits.shape, code_dim=3))
    model.fit(digits.x_train)
    assert aekit.evaluate(model, digits) == evaluate(model, digits)


@pytest.mark.slow
def test_the_evaluate_function_stays_callable_whichever_is_imported_first():
    code = (
        "import aekit, numpy as np; from aekit.evaluation import evaluate; assert aekit.evaluate is evaluate; "
        "from aekit.evaluate import psnr; assert callable(aekit.evaluate) and aekit.evaluate.psnr is psnr; "
        "import aekit.anomaly, aekit.evaluation.anomaly as new; assert aekit.anomaly.roc is new.roc"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
