"""The shape the code keeps: targets stay inside autotune/backends/, the read side needs neither the tuner nor a
backend, and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autotune import backends

PACKAGE = Path(__file__).resolve().parent.parent / "autotune"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _outside_backends() -> list[Path]:
    return [p for p in SOURCES if not p.is_relative_to(PACKAGE / "backends")]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("path", _outside_backends(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_code_outside_the_backends_names_a_backend(path):
    names = set(backends.names())
    literals = [node.value for node in ast.walk(_tree(path))
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    assert literals == [], f"{path.name} names backends {literals}"
    assert not any(module.startswith("autotune.backends.") and module.split(".")[2] in names
                   for module in _imports(path)), f"{path.name} imports a backend's own package"


@pytest.mark.parametrize("path", sorted((PACKAGE / "results").glob("*.py")), ids=lambda p: p.name)
def test_the_read_side_imports_neither_the_tuner_nor_a_backend(path):
    assert not [m for m in _imports(path) if m.startswith(("autotune.search", "autotune.backends"))]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
