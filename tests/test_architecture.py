"""Yardsticks of the package, read from its source with ``ast`` (ARCHITECTURE.md explains them).

* no function in ``pytest_transfer/`` longer than 60 code lines (blank lines, comments and the docstring
  do not count);
* no module imports a private name (``_x``) from another module (a private *module* such as
  ``metrics/_checks.py`` may be imported, and may export what it likes);
* no import cycle between the package's modules (module-level imports; imports inside functions are
  the way to defer a heavy import and are not counted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_transfer"
MAX_CODE_LINES = 60


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / Path(*name.split(".")) / "__init__.py").is_file()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` names, inside ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of ``fn`` (signature to last line) that hold code: not blank, not a comment, not the docstring."""
    skip: set[int] = set()
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        skip = set(range(first.lineno, first.end_lineno + 1))
    start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
    return sum(1 for i in range(start, fn.end_lineno + 1)
               if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports executed when the module is imported: not inside functions, not under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                found.append(stmt)
            elif isinstance(stmt, ast.If) and "TYPE_CHECKING" not in ast.unparse(stmt.test):
                visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                visit(stmt.body)
                for handler in stmt.handlers:
                    visit(handler.body)
                visit(stmt.orelse)
                visit(stmt.finalbody)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in MODULES.items():
        for node in _top_level_imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(name, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            graph[name] |= {t for t in targets if t in MODULES and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_is_read():
    assert {"pytest_transfer", "pytest_transfer.engine", "pytest_transfer.gates.core"} <= set(MODULES)


def test_no_function_is_longer_than_60_code_lines():
    long = []
    for name, tree in MODULES.items():
        path = PACKAGE.parent / Path(*name.split("."))
        lines = (path / "__init__.py" if _is_package(name) else path.with_suffix(".py")).read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node, lines) > MAX_CODE_LINES:
                long.append(f"{name}.{node.name} (line {node.lineno}): {code_lines(node, lines)} code lines")
    assert not long, "split these functions into named steps:\n" + "\n".join(long)


def test_no_module_imports_a_private_name_of_another_module():
    found = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(name, node)
            private_module = any(part.startswith("_") and not part.startswith("__") for part in source.split("."))
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and not private_module:
                    found.append(f"{name} imports {alias.name} from {source}")
    assert not found, "make these names public (or move them to a private module):\n" + "\n".join(found)


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# --- the yardsticks themselves can fail ------------------------------------------------


def test_the_line_count_skips_docstrings_comments_and_blank_lines():
    source = 'def f():\n    """Doc\n    string."""\n    # comment\n\n    a = 1\n    return a\n'
    fn = ast.parse(source).body[0]
    assert code_lines(fn, source.splitlines()) == 3


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle_finds_a_cycle_and_only_a_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_relative_imports_are_resolved_from_the_module():
    node = ast.parse("from ..engine import _x").body[0]
    assert _resolve("pytest_transfer.gates.core", node) == "pytest_transfer.engine"
    assert _resolve("pytest_transfer.metrics", ast.parse("from ._checks import y").body[0]) == \
        "pytest_transfer.metrics._checks"
