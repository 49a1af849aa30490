"""Weights & Biases tracking of a pipeline run: one wandb run per pipeline run.

Offline by default (files under the run folder, ``wandb sync`` uploads them later); online when the user
is logged in (``wandb login`` wrote an API key to ``~/.netrc``, or ``WANDB_API_KEY`` is set) or
``WANDB_MODE=online``. Under ``wandb agent`` the run joins the sweep automatically (wandb reads the
sweep id from the environment), so ``recipes/sweeps/*.yaml`` work unchanged.

What is logged: the resolved config, every stage's training curves (Lightning's ``WandbLogger`` attaches
to the run opened here), the final ``test/*`` metrics and cost figures (the sweeps' ``metric.name``),
the confusion-matrix and Pareto-front plots, and the model (``model.pt``, ONNX files, ``arch.json``) as
a versioned ``model`` artifact.
"""

from __future__ import annotations

import math
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

WANDB_HOST = "api.wandb.ai"

#: summary.json keys logged as ``test/<key>`` (the sweeps optimise ``test/error_rate``).
TEST_KEYS = ("error_rate", "mae", "level_accuracy", "ece")
#: summary.json keys logged as ``cost/<key>``.
COST_KEYS = ("params", "macs", "latency_ms", "energy_mw_12h", "labels_used")


def wandb_mode() -> str:
    """``"online"`` if ``WANDB_MODE`` says so or the user is logged in, else ``"offline"``."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return "online" if mode in ("online", "run") else mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators(WANDB_HOST):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def start_run(project: str, name: str, config: dict, out_dir: Path) -> Any:
    """Open the wandb run that every stage's ``WandbLogger`` then reuses (resumable by run folder)."""
    import wandb

    out_dir.mkdir(parents=True, exist_ok=True)
    id_file = out_dir / "wandb_id.txt"
    # Under `wandb agent` the run id is the agent's (the sweep waits for that run's metric).
    run_id = os.environ.get("WANDB_RUN_ID") or (
        id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
    )
    id_file.write_text(run_id)
    return wandb.init(
        project=project,
        name=name,
        id=run_id,
        resume="allow",
        config=config,
        dir=str(out_dir),
        mode=wandb_mode(),
    )


def sweep_run_name() -> str | None:
    """A unique run name under ``wandb agent`` (which sets the sweep and run ids), else ``None``."""
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return f"sweep-{sweep}-{run}" if sweep and run else None


def final_metrics(summary: dict, teacher_test: dict | None) -> dict[str, float]:
    """Flat ``test/*`` and ``cost/*`` figures; without an evaluate stage, the teacher's test metrics."""
    source = summary if "error_rate" in summary else (teacher_test or {})
    out = {f"test/{k}": float(source[k]) for k in TEST_KEYS if source.get(k) is not None}
    out.update({f"cost/{k}": float(summary[k]) for k in COST_KEYS if summary.get(k) is not None})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def finish_run(run: Any, summary: dict, teacher_test: dict | None, run_dir: Path) -> None:
    """Log final metrics, plots and the model artifact, then close the run."""
    import wandb

    metrics = final_metrics(summary, teacher_test)
    if metrics:
        run.log(metrics)
        run.summary.update(metrics)
    images = {
        key: wandb.Image(str(path))
        for key, path in (
            ("plots/confusion", run_dir / "evaluate" / "confusion.png"),
            ("plots/pareto", run_dir / "nas" / "pareto.png"),
        )
        if path.is_file()
    }
    if images:
        run.log(images)
    files = [run_dir / "nas" / "model.pt", run_dir / "nas" / "arch.json"]
    files += sorted((run_dir / "nas").glob("*.onnx")) if (run_dir / "nas").is_dir() else []
    if not files[0].is_file():
        files = [run_dir / "teacher" / "model.pt"]
    files = [f for f in files if f.is_file()]
    if files:
        artifact = wandb.Artifact(f"{run.name}-model", type="model", metadata=metrics)
        for f in files:
            artifact.add_file(str(f), name=f"{f.parent.name}/{f.name}")
        run.log_artifact(artifact)
    run.finish()
