"""Modules and functions stay small enough to read (the runtime redesign's bounds; STYLE.md's limits)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import doreisa

PACKAGE = Path(doreisa.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
#: Lines of a module ("at most ~400"), and of a function's body without its docstring ("at most ~60").
MODULE_LINES, FUNCTION_LINES = 420, 60


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    start = body[1] if is_docstring and len(body) > 1 else first
    return (node.end_lineno or start.lineno) - start.lineno + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_its_functions_are_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MODULE_LINES, f"{path.name} has {len(source.splitlines())} lines; split it"
    long = [
        (node.name, _body_lines(node))
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(node) > FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions longer than {FUNCTION_LINES} lines: {long}"
