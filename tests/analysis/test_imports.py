"""The analysis modules import on their own, and none of them imports another one that imports it back.

``recording.py`` once held the reader, the counters, the window table and the driver, and ``plots.py``
imported it while it imported ``plots.py``; both now import ``table.py``. The cycle check itself is
``tests/test_imports.py`` (for every package, with :mod:`ast`, including imports inside functions).
"""

from __future__ import annotations

import subprocess
import sys

from import_graph import import_graph, package_modules

PACKAGE = "ersam_ssl.analysis"


def test_the_split_modules_are_found() -> None:
    names = {m.rsplit(".", 1)[1] for m in package_modules(PACKAGE)}
    assert {"reader", "counters", "table", "recording", "plots", "report", "vad", "cli"} <= names


def test_plots_and_the_driver_share_the_table_module() -> None:
    graph = import_graph(PACKAGE, lazy=True)
    assert f"{PACKAGE}.table" in graph[f"{PACKAGE}.plots"]
    assert f"{PACKAGE}.table" in graph[f"{PACKAGE}.recording"]
    assert f"{PACKAGE}.recording" not in graph[f"{PACKAGE}.plots"]


def test_the_formerly_cyclic_module_imports_first_in_a_fresh_interpreter() -> None:
    """``plots`` imported before anything else (the order the old plots <-> recording cycle broke on).
    One interpreter, not one per module: importing any submodule runs the package ``__init__`` anyway."""
    done = subprocess.run([sys.executable, "-c", f"import {PACKAGE}.plots"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
