"""The analysis modules import on their own, and none of them imports another one that imports it back.

``recording.py`` once held the reader, the counters, the window table and the driver, and ``plots.py``
imported it while it imported ``plots.py``; both now import ``table.py``. The cycle check reads the
imports with :mod:`ast` (nothing is executed), so it also sees imports that only run inside a function.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ersam_ssl.analysis

PACKAGE = "ersam_ssl.analysis"
PACKAGE_DIR = Path(ersam_ssl.analysis.__file__).parent
MODULES = sorted(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE_DIR)]))


def _source(module: str) -> Path:
    return (
        PACKAGE_DIR / "__init__.py" if module == PACKAGE else PACKAGE_DIR / f"{module.rsplit('.', 1)[1]}.py"
    )


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The analysis modules (or the package itself) that an import statement in ``module`` loads."""
    known = set(MODULES) | {PACKAGE}
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:  # relative: resolve against the package
        base = PACKAGE if node.level == 1 else PACKAGE.rsplit(".", node.level - 1)[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if target == PACKAGE:  # ``from ersam_ssl.analysis import plots`` loads plots, else the package
        subs = {f"{PACKAGE}.{a.name}" for a in node.names} & known
        return subs or {PACKAGE}
    return {target} if target in known else set()


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """Statements run when the module is imported: the body and its ``if``/``try``/``with`` blocks
    (``if TYPE_CHECKING:`` included), not the bodies of functions and classes."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        stmt = todo.pop()
        out.append(stmt)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, (ast.stmt, ast.excepthandler)):
                todo.append(child)
    return out


def import_graph(lazy: bool) -> dict[str, set[str]]:
    """``{module: analysis modules it imports}``; ``lazy`` adds the imports inside functions."""
    graph = {}
    for module in [PACKAGE, *MODULES]:
        tree = ast.parse(_source(module).read_text())
        nodes = ast.walk(tree) if lazy else _module_level(tree)
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_split_modules_are_found() -> None:
    names = {m.rsplit(".", 1)[1] for m in MODULES}
    assert {"reader", "counters", "table", "recording", "plots", "report", "vad", "cli"} <= names


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-imports-in-functions"])
def test_no_import_cycle_among_analysis_modules(lazy: bool) -> None:
    graph = import_graph(lazy)
    # The package's __init__ imports its modules to re-export them; no module may import the package back.
    importers_of_package = sorted(m for m, edges in graph.items() if PACKAGE in edges)
    assert not importers_of_package, f"import the module, not the package: {importers_of_package}"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_plots_and_the_driver_share_the_table_module() -> None:
    graph = import_graph(lazy=True)
    assert f"{PACKAGE}.table" in graph[f"{PACKAGE}.plots"]
    assert f"{PACKAGE}.table" in graph[f"{PACKAGE}.recording"]
    assert f"{PACKAGE}.recording" not in graph[f"{PACKAGE}.plots"]


def test_the_formerly_cyclic_module_imports_first_in_a_fresh_interpreter() -> None:
    """``plots`` imported before anything else (the order the old plots <-> recording cycle broke on).
    One interpreter, not one per module: importing any submodule runs the package ``__init__`` anyway."""
    done = subprocess.run([sys.executable, "-c", f"import {PACKAGE}.plots"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
