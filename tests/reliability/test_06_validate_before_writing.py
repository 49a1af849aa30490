"""Item 6: config ranges and the data source are checked before the run folder is created, so a failed
command leaves nothing behind and the corrected command is accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ersam_ssl import pipeline

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")


@pytest.fixture
def bad_roots(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "single"
    (single / "only_speaker").mkdir(parents=True)
    for i in range(3):
        sf.write(single / "only_speaker" / f"{i}.wav", np.full(16000, 0.1, np.float32), 16000)
    return {"missing": tmp_path / "missing", "empty": empty, "single": single}


def test_bad_data_and_values_are_refused_before_the_run_folder_exists(
    tmp_path, bad_roots, folder_corpus, capsys
):
    base = ["--config", TINY, f"out_root={tmp_path / 'runs'}", "name=r", "--stages", "data"]
    good = ["data.source=folder", f"data.root={folder_corpus}"]
    cases = [
        (["data.source=folder", f"data.root={bad_roots['missing']}"], "neither a folder"),
        (["data.source=folder", f"data.root={bad_roots['empty']}"], "no usable audio"),
        (["data.source=folder", f"data.root={bad_roots['single']}"], "1 speaker(s) found"),
        ([*good, "data.labels_per_class=100"], "exceeds the pool"),
        ([*good, "teacher.steps=-3"], "teacher.steps=-3: must be >= 1"),
        ([*good, "pretrain.batch_size=0"], "pretrain.batch_size=0: must be >= 1"),
    ]
    capsys.readouterr()
    for overrides, expected in cases:
        assert pipeline.main([*base, *overrides]) == 2, overrides
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (overrides, err)
        assert not (tmp_path / "runs" / "r").exists(), overrides
    assert pipeline.main([*base, *good]) == 0  # the corrected command, without --overwrite
