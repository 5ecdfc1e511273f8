"""The shape of the code itself: no function in aekit/ longer than 60 lines (a reader holds one in their head), and
bench/ and tests/ do not reach into each other through sys.path."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def test_no_function_in_aekit_is_longer_than_60_lines():
    long = []
    for path in sorted((ROOT / "aekit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines: " + ", ".join(long)


def _edits_sys_path(node: ast.AST) -> bool:
    """Whether ``node`` is a call of sys.path.insert, append or extend."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("insert", "append", "extend")
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "path"
        and isinstance(node.func.value.value, ast.Name)
        and node.func.value.value.id == "sys"
    )


def test_bench_and_tests_do_not_import_each_other_through_sys_path():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("bench", "tests")
        for path in sorted((ROOT / folder).glob("*.py"))
        if any(_edits_sys_path(node) for node in ast.walk(ast.parse(path.read_text())))
    ]
    assert not offenders, f"sys.path imports in {offenders}"
