"""How the search modules depend on each other (see ``tests/test_imports.py`` for the cycle check).

``search.py`` once evaluated members, kept the results, drove NNI and ran the recipe, and ``trial.py``
(run by the strategy) imported it back for ``SubnetEvaluator``; each job now has its own module.
"""

from __future__ import annotations

import subprocess
import sys

from import_graph import import_graph

NAS = "ersam_ssl.nas"


def test_the_driver_sits_on_top_of_evaluation_results_and_strategies() -> None:
    graph = import_graph(NAS, lazy=True)
    assert {f"{NAS}.{m}" for m in ("evaluate", "results", "strategies")} <= graph[f"{NAS}.search"]
    importers_of_search = sorted(m for m, edges in graph.items() if f"{NAS}.search" in edges)
    assert importers_of_search == [NAS, f"{NAS}.cli"]  # the package re-exports run_search; the CLI runs it
    assert f"{NAS}.evaluate" in graph[f"{NAS}.trial"]
    assert graph[f"{NAS}.evaluate"] <= {f"{NAS}.supernet"}  # evaluation knows nothing of NNI or results
    assert graph[f"{NAS}.results"] <= {f"{NAS}.config"}


def test_importing_the_search_does_not_import_nni() -> None:
    """NNI is an optional dependency: only running a strategy imports it."""
    code = (
        "import sys, ersam_ssl.nas.search, ersam_ssl.nas.strategies, ersam_ssl.nas.results, "
        "ersam_ssl.nas.evaluate; assert 'nni' not in sys.modules, 'nni imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
