"""Item 3: one writer per run folder; a second ``--resume``/``--overwrite`` is refused naming the holder's PID,
``--overwrite`` deletes nothing while the lock is held, and a killed holder releases it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ersam_ssl import pipeline
from ersam_ssl.fileio import LockHeldError, exclusive_lock

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")


def _hold(lock: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock (as a running pipeline does)."""
    code = ("import sys, time\nfrom ersam_ssl.fileio import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_and_a_killed_holder_releases_the_lock(tmp_path, folder_corpus, capsys):
    args = ["--config", TINY, f"out_root={tmp_path}", "name=r", "data.source=folder", f"data.root={folder_corpus}",
            "--stages", "data"]  # fmt: skip
    assert pipeline.main(args) == 0
    run_dir = tmp_path / "r"
    holder = _hold(run_dir / pipeline.LOCK_FILE)
    try:
        capsys.readouterr()
        for flag in ("--resume", "--overwrite"):
            assert pipeline.main([*args, flag]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"in use by PID {holder.pid}" in err[0], err
        assert (run_dir / "data" / "result.json").is_file()  # --overwrite deleted nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert pipeline.main([*args, "--overwrite"]) == 0  # the kernel released the dead holder's lock


def test_the_lock_is_held_while_the_stages_run(tmp_path, folder_corpus, monkeypatch):
    seen = []

    def data_stage(run):
        with (
            pytest.raises(LockHeldError, match=f"PID {os.getpid()}"),
            exclusive_lock(run.dir / pipeline.LOCK_FILE),
        ):
            pass
        seen.append(True)
        return {}

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "data", data_stage)
    args = ["--config", TINY, f"out_root={tmp_path}", "name=r", "data.source=folder", f"data.root={folder_corpus}",
            "--stages", "data"]  # fmt: skip
    assert pipeline.main(args) == 0 and seen == [True]
    with exclusive_lock(tmp_path / "r" / pipeline.LOCK_FILE):  # released at the end of the run
        pass
