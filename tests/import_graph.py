"""The import graph among the modules of one ``ersam_ssl`` package, read with :mod:`ast` (nothing runs).

Used by the import-cycle tests (``tests/test_imports.py`` and the per-package ``test_imports.py``). With
``lazy=True`` the graph also holds the imports inside functions, which only run when the function does
but still close a cycle then (and make a split that only moved the cycle into a function look done).
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path


def package_dir(package: str) -> Path:
    """The folder of ``package`` as Python finds it (the one under test); only its parents are imported."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"no package {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_modules(package: str) -> list[str]:
    """The modules and subpackages directly in ``package`` (dotted names, sorted; a subpackage stands for
    its ``__init__``, its modules are not walked)."""
    return sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules([str(package_dir(package))]))


def _source(package: str, module: str) -> Path:
    folder = package_dir(package)
    if module == package:
        return folder / "__init__.py"
    name = module.rsplit(".", 1)[1]
    return folder / name / "__init__.py" if (folder / name).is_dir() else folder / f"{name}.py"


def _imported(node: ast.Import | ast.ImportFrom, package: str, known: set[str]) -> set[str]:
    """The modules of ``package`` (or the package itself) that one import statement inside it loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:  # relative: resolve against the package
        base = package if node.level == 1 else package.rsplit(".", node.level - 1)[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if target == package:  # ``from ersam_ssl.nas import trial`` loads trial; ``import X`` the package
        subs = {f"{package}.{a.name}" for a in node.names} & known
        return subs or {package}
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


def import_graph(package: str, lazy: bool) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}``; ``lazy`` adds the imports inside functions."""
    modules = package_modules(package)
    known = {package, *modules}
    graph = {}
    for module in [package, *modules]:
        tree = ast.parse(_source(package, module).read_text())
        nodes = ast.walk(tree) if lazy else _module_level(tree)
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, package, known)
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


def importers_of_package(graph: dict[str, set[str]], package: str) -> list[str]:
    """Modules that import their own package (whose ``__init__`` imports them back to re-export them)."""
    return sorted(m for m, edges in graph.items() if m != package and package in edges)
