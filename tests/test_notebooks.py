"""Notebooks are generated from ``notebooks/src/*.py`` (jupytext) and committed without outputs.

Regenerate after editing a source:  ``jupytext --to ipynb --output notebooks/NAME.ipynb notebooks/src/NAME.py``
(CI executes the ``.ipynb`` files with nbmake as part of ``pytest``).
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

NB = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted((NB / "src").glob("*.py"))


def test_there_are_four_notebooks():
    assert [p.stem[:2] for p in SOURCES] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source_and_has_no_outputs(src: Path):
    ipynb = NB / f"{src.stem}.ipynb"
    assert ipynb.is_file(), f"missing {ipynb.name}: run jupytext --to ipynb on {src}"
    committed = nbformat.read(ipynb, as_version=4)
    expected = jupytext.read(src)
    got = [(c.cell_type, c.source) for c in committed.cells]
    want = [(c.cell_type, c.source) for c in expected.cells]
    assert got == want, f"{ipynb.name} drifted from {src.name}; regenerate it with jupytext"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{ipynb.name} has outputs"
