"""wandb tracking of a pipeline run (offline): config, final metrics, plots and the model artifact."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ersam_ssl import tracking
from ersam_ssl.pipeline import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")


def test_mode_is_offline_unless_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tracking.wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert tracking.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.wandb_mode() == "offline"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode() == "online"


def test_final_metrics_fall_back_to_the_teacher_and_drop_non_finite():
    summary = {"error_rate": 0.25, "mae": 0.5, "params": 10, "macs": 1e6, "latency_ms": math.nan}
    got = tracking.final_metrics(summary, {"error_rate": 0.9})
    assert got == {"test/error_rate": 0.25, "test/mae": 0.5, "cost/params": 10.0, "cost/macs": 1e6}
    # A sweep that stops after the teacher stage still reports the sweep metric.
    got = tracking.final_metrics({}, {"error_rate": 0.4, "mae": 1.25, "ece": 0.1})
    assert got == {"test/error_rate": 0.4, "test/mae": 1.25, "test/ece": 0.1}


def test_pipeline_logs_metrics_and_model_artifact_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["--config", TINY, f"out_root={tmp_path}", "name=tracked", "--stages", "data,teacher",
            "teacher.steps=2", "trainer.wandb=true"]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "tracked"
    runs = list(out.glob("wandb/offline-run-*"))
    assert len(runs) == 1, runs  # the stage's WandbLogger joined the pipeline's run
    record = next(runs[0].glob("*.wandb")).read_bytes()
    teacher = json.loads((out / "teacher" / "result.json").read_text())["test"]
    assert b"test/error_rate" in record and b"trainer/global_step" in record
    assert b"tracked-model" in record  # the artifact
    assert b"labels_per_class" in record  # the resolved config
    # The logged value is the teacher's test error (JSON-encoded in the record; no evaluate stage ran).
    assert json.dumps(teacher["error_rate"]).encode() in record
    # Resuming reopens the same wandb run instead of starting another.
    assert main([*args, "--resume"]) == 0
    assert (out / "wandb_id.txt").read_text().strip() in runs[0].name


def test_agent_runs_get_the_agents_run_id_and_their_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    assert tracking.sweep_run_name() == "sweep-sw1-agentrun"
    args = ["--config", TINY, f"out_root={tmp_path}", "--stages", "data", "trainer.wandb=true"]
    assert main(args) == 0
    out = tmp_path / "sweep-sw1-agentrun"
    assert (out / "wandb_id.txt").read_text() == "agentrun"
    assert [p.name.split("-")[-1] for p in out.glob("wandb/offline-run-*")] == ["agentrun"]
