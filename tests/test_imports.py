"""No import cycle among the modules of each package (read with :mod:`ast`; see ``tests/import_graph.py``).

A module that imports another one that imports it back works or fails depending on which is imported
first; a cycle closed by an import inside a function only shows when that function runs. Both are checked.
"""

from __future__ import annotations

import pkgutil

import pytest

import ersam_ssl
from import_graph import find_cycle, import_graph, importers_of_package

ACYCLIC = [
    "ersam_ssl.analysis",
    "ersam_ssl.data",
    "ersam_ssl.hw",
    "ersam_ssl.losses",
    "ersam_ssl.models",
    "ersam_ssl.nas",
    "ersam_ssl.ssl",
]


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_package_with_modules_is_checked_or_listed() -> None:
    packages = {
        f"ersam_ssl.{m.name}"
        for m in pkgutil.iter_modules(ersam_ssl.__path__)
        if m.ispkg and len(import_graph(f"ersam_ssl.{m.name}", lazy=False)) > 1
    }
    assert packages == set(ACYCLIC)  # every package with modules, so a new one is checked too


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-imports-in-functions"])
@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle_within_package(package: str, lazy: bool) -> None:
    graph = import_graph(package, lazy)
    # The package's __init__ imports its modules to re-export them; no module may import the package back.
    assert not importers_of_package(graph, package), "import the module, not the package"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
