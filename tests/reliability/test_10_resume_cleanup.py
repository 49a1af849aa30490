"""Item 10: resuming removes what kills left behind: half-written checkpoint files and the NNI experiment
folders of earlier (interrupted) searches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_space
from ersam_ssl import trainer as trainer_mod
from ersam_ssl.fileio import remove_partial_files

ROOT = Path(__file__).resolve().parents[2]


def _killed_write(path: Path) -> Path:
    """Kill a process (SIGKILL) inside ``atomic_path``: it leaves the temporary file, never renamed."""
    code = ("import os, signal, sys\nfrom ersam_ssl.fileio import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half a checkpoint')\n"
            "    print(tmp, flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr
    tmp = Path(done.stdout.strip())
    assert tmp.is_file() and tmp.parent == path.parent
    return tmp


def test_resume_removes_half_written_checkpoints(tmp_path: Path, monkeypatch) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.ckpt").write_bytes(b"complete")
    (ckpts / ".notes.part").write_text("not ours: no mkstemp suffix")
    stale = [_killed_write(ckpts / "last.ckpt"), _killed_write(ckpts / "epoch=0-step=2.ckpt")]
    assert all(p.name.startswith(".") and ".part" in p.name for p in stale)

    class FakeTrainer:
        def fit(self, module, datamodule=None, ckpt_path=None):
            self.ckpt_path = ckpt_path

    monkeypatch.setattr(trainer_mod, "make_trainer", lambda *a, **k: FakeTrainer())
    t = trainer_mod.fit(None, None, trainer_mod.TrainerConfig(), tmp_path)
    assert t.ckpt_path == str(ckpts / "last.ckpt")
    assert sorted(p.name for p in ckpts.iterdir()) == [".notes.part", "last.ckpt"]
    nested = _killed_write(tmp_path / "teacher" / "model.pt")
    assert remove_partial_files(tmp_path, recursive=True) == [nested]


@pytest.mark.nas
def test_repeated_search_keeps_one_nni_experiment(tmp_path: Path, folder_corpus: Path) -> None:
    pytest.importorskip("nni")
    from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig
    from ersam_ssl.nas.config import (
        BudgetConfig,
        ExportConfig,
        SearchConfig,
        StrategyConfig,
        SubnetFinetuneConfig,
        SupernetConfig,
    )
    from ersam_ssl.nas.search import run_search

    data = DataConfig(source="folder", root=str(folder_corpus), mixture=MixtureConfig(max_speakers=3, duration=1.0),
                      split_fractions=(0.6, 0.15, 0.15, 0.1), pool_size=16, labels_per_class=1, val_size=4,
                      test_size=4, num_workers=0, precompute_pool=False)  # fmt: skip
    cfg = SearchConfig(
        out_dir=str(tmp_path / "nas"), space=tiny_space().to_dict(), data=data,
        supernet=SupernetConfig(steps=0), finetune=SubnetFinetuneConfig(steps=0), export=ExportConfig(enabled=False),
        budget=BudgetConfig(latency="none", num_samples=8000, max_energy_mw=None),
        search=StrategyConfig(trials=1, population_size=1, sample_size=1, calib_batches=1, calib_batch_size=4),
    )  # fmt: skip
    engine = DataEngine(data)
    for _ in range(2):  # a search that ran (or was killed) before, then the resumed one
        run_search(cfg, engine)
    experiments = [p for p in (tmp_path / "nas" / "nni").iterdir() if p.is_dir()]
    assert len(experiments) == 1, experiments
