"""recipes/run.py end to end on the tiny preset, resume after a kill, config handling, sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ersam_ssl import config as cfglib
from ersam_ssl.pipeline import load_config, main
from ersam_ssl.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")


def test_tiny_pipeline_end_to_end(tmp_path, capsys):
    assert main(["--config", TINY, f"out_root={tmp_path}", "name=e2e"]) == 0
    out = tmp_path / "e2e"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("error_rate", "mae", "params", "macs", "latency_ms", "energy_mw_12h", "labels_used"):
        assert key in summary, key
    assert 0 <= summary["error_rate"] <= 1 and summary["labels_used"] == 2 * 4
    assert summary["macs"] > 0 and summary["params"] > 0 and summary["latency_ms"] > 0
    # scored in every evaluation domain, the searched model and the teacher (the teacher from mixtures)
    assert (
        set(summary["domains"])
        == set(summary["teacher"]["domains"])
        == {"clinical", "clean", "conversational"}
    )
    assert all(0 <= m["mae"] <= 3 for m in summary["domains"].values())
    for f in ("config.yaml", "config.diff.yaml", "evaluate/confusion.png", "nas/pareto.png", "nas/model.onnx",
              "nas/model.int8.onnx", "nas/arch.json", "teacher/model.pt", "pretrain/model.pt",
              "teacher/checkpoints/last.ckpt"):  # fmt: skip
        assert (out / f).is_file(), f
    assert "error rate" in capsys.readouterr().out
    # The exported models are what `ersam-ssl analyze` takes (the quickstart's second line).
    from ersam_ssl.analysis import read_windows
    from ersam_ssl.cli import main as cli_main

    rec = tmp_path / "rec.wav"
    sf.write(rec, 0.1 * np.random.default_rng(0).standard_normal(12 * 16000).astype(np.float32), 16000)
    for onnx_file in ("model.onnx", "model.int8.onnx"):
        dest = tmp_path / f"analysis-{onnx_file}"
        args = [
            "analyze",
            str(rec),
            "--model",
            str(out / "nas" / onnx_file),
            "--out",
            str(dest),
            "--window",
            "1",
        ]
        assert cli_main([*args, "--quiet", "--no-vad"]) == 0
        rows = read_windows(dest)
        assert len(rows) == 12 and all(0 <= r["count"] <= 3 for r in rows)
    # the resolved config rebuilds the same run; the diff holds only what tiny.yaml changed
    assert load_config(out / "config.yaml") == load_config(TINY, [f"out_root={tmp_path}", "name=e2e"])
    # a second call with --resume does nothing and keeps the result
    assert main(["--config", TINY, f"out_root={tmp_path}", "name=e2e", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["error_rate"] == summary["error_rate"]
    capsys.readouterr()
    assert main(["--config", TINY, f"out_root={tmp_path}", "name=e2e"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(["--config", TINY, f"out_root={tmp_path}", "name=e2e", "--resume", "teacher.optim.lr=0.5"]) == 2
    )
    assert "different config" in capsys.readouterr().err


def _cmd(tmp_path: Path, name: str) -> list[str]:
    return [sys.executable, str(ROOT / "recipes" / "run.py"), "--config", TINY, f"out_root={tmp_path}", f"name={name}",
            "--stages", "data,pretrain,teacher", "teacher.steps=40", "pretrain.steps=2"]  # fmt: skip


def test_killed_run_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_cmd(tmp_path, "full"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_cmd(tmp_path, "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    ckpt = tmp_path / "killed" / "teacher" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "teacher" / "result.json").exists(), (
        "the kill came too late to test resume"
    )
    assert ckpt.exists()
    subprocess.run([*_cmd(tmp_path, "killed"), "--resume"], check=True, env=env, capture_output=True)
    a = torch.load(tmp_path / "full" / "teacher" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "teacher" / "model.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = json.loads((tmp_path / "full" / "teacher" / "result.json").read_text())["test"]
    rb = json.loads((tmp_path / "killed" / "teacher" / "result.json").read_text())["test"]
    assert ra == rb


def test_run_pipeline_fills_a_given_run_of_its_own_config_only(tmp_path):
    from ersam_ssl.pipeline import Run, run_pipeline

    cfg = load_config(TINY, [f"out_root={tmp_path}", "name=shared", "stages=[data]"])
    run = Run(cfg)
    run_pipeline(cfg, run=run)
    assert run.results["data"]["speakers"] > 0 and (tmp_path / "shared" / "data" / "result.json").is_file()
    with pytest.raises(ValueError, match="another config"):
        run_pipeline(load_config(TINY, [f"out_root={tmp_path}", "name=other", "stages=[data]"]), run=run)
    assert not (tmp_path / "other").exists()


def test_config_errors_are_clear():
    with pytest.raises(cfglib.ConfigError, match="unknown config key 'teachr'"):
        load_config(None, ["teachr.steps=3"])
    with pytest.raises(ValueError, match="top level"):
        load_config(None, ["nas.seed=3"])
    with pytest.raises(ValueError, match="unknown stages"):
        load_config(None, ["stages=[data,train]"])
    cfg = load_config(
        TINY, ["data.labels_per_class=1", "nas.budget.max_latency_ms=3", "nas.budget.latency=lut"]
    )
    assert cfg.data.labels_per_class == 1 and cfg.nas.budget.max_latency_ms == 3.0


def test_stages_nest_the_library_configs_with_the_same_defaults():
    from ersam_ssl.pipeline import RunConfig
    from ersam_ssl.ssl import BYOLConfig, FixMatchConfig, OptimConfig, SimCLRConfig

    cfg = RunConfig()
    assert cfg.pretrain.optim == OptimConfig(lr=3e-3) and cfg.teacher.optim == OptimConfig(lr=2e-3)
    assert cfg.pretrain.simclr == SimCLRConfig(temperature=0.1) and cfg.pretrain.byol == BYOLConfig()
    assert not cfg.pretrain.spec_augment.enabled  # off until measured on real speech
    fm = cfg.teacher.fixmatch
    assert (fm.threshold, fm.lambda_u, fm.flexmatch, fm.distribution_alignment) == (0.95, 1.0, False, False)
    assert fm == FixMatchConfig()
    cfg = load_config(TINY, ["teacher.optim.lr=0.5", "teacher.fixmatch.threshold=0.8", "pretrain.simclr.temperature=0.2",
                             "pretrain.spec_augment.enabled=true", "pretrain.spec_augment.freq_masks=1"])  # fmt: skip
    assert cfg.teacher.optim.lr == 0.5 and cfg.teacher.optim.weight_decay == OptimConfig().weight_decay
    assert cfg.teacher.fixmatch.threshold == 0.8 and cfg.pretrain.simclr.temperature == 0.2
    assert cfg.pretrain.spec_augment.enabled and cfg.pretrain.spec_augment.freq_masks == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("teacher.lr=0.5", "unknown config key 'teacher.lr' (did you mean 'teacher.optim.lr'?)"),
        ("teacher.threshold=0.8", "(did you mean 'teacher.fixmatch.threshold'?)"),
        ("pretrain.temperature=0.2", "(did you mean 'pretrain.simclr.temperature'?)"),
        ("teacher.optim.lr=0", "teacher.optim.lr=0.0: must be > 0"),
        ("pretrain.optim.lr=-1", "pretrain.optim.lr=-1.0: must be > 0"),
        ("teacher.fixmatch.threshold=1.5", "teacher.fixmatch.threshold=1.5: must be in [0, 1]"),
        ("teacher.fixmatch.lambda_u=-1", "teacher.fixmatch.lambda_u=-1.0: must be >= 0"),
        ("pretrain.simclr.temperature=0", "pretrain.simclr.temperature=0.0: must be > 0"),
        ("pretrain.spec_augment.freq_masks=-1", "pretrain.spec_augment.freq_masks=-1: must be >= 0"),
        ("teacher.optim.name=adam", "teacher.optim.name='adam': choose adamw or sgd"),
    ],
)
def test_stage_sections_are_validated_with_their_full_key(override, message):
    with pytest.raises(ValueError) as err:
        load_config(TINY, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stages_select_their_methods_through_the_registry():
    from conftest import small_sam
    from ersam_ssl import ssl
    from ersam_ssl.pipeline import RunConfig, stage_methods

    assert stage_methods("pretrain") == ["byol", "mixture", "simclr"]
    assert stage_methods("teacher") == ["fixmatch", "replay", "supervised"]
    with pytest.raises(
        ValueError, match="teacher.method='distill': choose one of fixmatch, replay, supervised, none"
    ):
        load_config(TINY, ["teacher.method=distill"])
    with pytest.raises(
        ValueError, match="pretrain.method='fixmatch': choose one of byol, mixture, simclr, none"
    ):
        load_config(TINY, ["pretrain.method=fixmatch"])
    cfg = load_config(None, ["pretrain.spec_augment.enabled=true", "pretrain.simclr.temperature=0.3"])
    built = {m: ssl.METHODS.get(m).from_stage(small_sam(), cfg.pretrain) for m in stage_methods("pretrain")}
    built |= {m: ssl.METHODS.get(m).from_stage(small_sam(), cfg.teacher) for m in stage_methods("teacher")}
    expected = {"byol": ssl.BYOLPretrain, "mixture": ssl.MixtureSupervision, "simclr": ssl.SimCLRPretrain,
                "fixmatch": ssl.FixMatch, "replay": ssl.ReplayAdapt, "supervised": ssl.SupervisedCounter}  # fmt: skip
    assert {m: type(module) for m, module in built.items()} == expected
    assert built["fixmatch"].config is cfg.teacher.fixmatch and built["supervised"].optim is cfg.teacher.optim
    assert (
        built["simclr"].objective.config is cfg.pretrain.simclr
        and built["simclr"].optim is cfg.pretrain.optim
    )
    assert built["byol"].objective.config is cfg.pretrain.byol
    assert built["mixture"].spec_augment.config is cfg.pretrain.spec_augment
    assert ssl.METHODS.get("mixture").from_stage(small_sam(), RunConfig().pretrain).spec_augment is None


@pytest.mark.parametrize("sweep", sorted((ROOT / "recipes" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_sweep_yamls_are_valid_and_expand(sweep):
    spec = load_sweep(sweep)  # validates every combination against RunConfig
    runs = expand(spec)
    assert runs and all(all("=" in o for o in r) for r in runs)
    if spec["method"] == "grid":
        n = 1
        for p in spec["parameters"].values():
            n *= len(p.get("values", [p.get("value")]))
        assert len(runs) == n
    assert expand(spec, seed=1) == expand(spec, seed=1)


def test_local_sweep_runner_dry_run(capsys):
    from ersam_ssl.sweep import main as sweep_main

    assert (
        sweep_main([str(ROOT / "recipes" / "sweeps" / "few_label.yaml"), "--dry-run", "--max-runs", "3"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("recipes/run.py" in ln and "data.labels_per_class=" in ln for ln in lines)


def test_sweep_validation_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("program: recipes/run.py\nmethod: grid\nmetric: {name: x, goal: minimize}\n"
                   "parameters:\n  teacher.nope: {values: [1]}\n"
                   "command:\n  - python\n  - ${program}\n  - ${args_no_hyphens}\n")  # fmt: skip
    with pytest.raises(cfglib.ConfigError, match="nope"):
        load_sweep(bad)


def test_ddp_on_two_cpu_processes_is_configuration_only(tmp_path):
    """The documented scale-out: Lightning DDP (gloo on CPU) over the training stages, rank 0 records."""
    cmd = [sys.executable, str(ROOT / "recipes" / "run.py"), "--config", TINY, f"out_root={tmp_path}", "name=ddp",
           "--stages", "data,pretrain,teacher", "trainer.devices=2", "trainer.strategy=ddp"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout  # really two processes
    assert done.stdout.count("outputs:") == 1  # only rank 0 reports
    out = tmp_path / "ddp"
    teacher = json.loads((out / "teacher" / "result.json").read_text())
    assert 0 <= teacher["test"]["error_rate"] <= 1 and (out / "teacher" / "model.pt").is_file()
    # The search and evaluation run in one process: asking for them under DDP fails before any work ...
    with pytest.raises(ValueError, match="trainer.devices=1 --resume"):
        load_config(TINY, ["trainer.devices=2", "trainer.strategy=ddp"])
    # ... and the same run resumes with them in one process (execution settings may change on resume).
    assert main(["--config", TINY, f"out_root={tmp_path}", "name=ddp", "--resume"]) == 0
    assert json.loads((out / "teacher" / "result.json").read_text()) == teacher  # not retrained
    assert "error_rate" in json.loads((out / "summary.json").read_text())


def test_every_preset_loads_with_its_documented_command_line(tmp_path):
    """Presets hold only differences; a corpus preset leaves data.root to the command line."""
    for preset in sorted((ROOT / "recipes" / "configs").glob("*.yaml")):
        needs_root = "data.root=" in preset.read_text()
        cfg = load_config(preset, [f"data.root={tmp_path}"] if needs_root else [])
        assert cfg.pretrain.method == "mixture", preset
    real = load_config(
        ROOT / "recipes" / "configs" / "real.yaml", [f"data.root={tmp_path}", "pretrain.steps=5"]
    )
    assert real.data.source == "librispeech" and real.pretrain.steps == 5 and real.nas.supernet.steps == 1000


def test_default_teacher_is_the_mixture_supervised_counter(tmp_path):
    args = [
        "--config",
        TINY,
        f"out_root={tmp_path}",
        "name=t",
        "--stages",
        "data,pretrain,teacher",
        "teacher.method=none",
    ]
    assert main(args) == 0
    teacher = json.loads((tmp_path / "t" / "teacher" / "result.json").read_text())
    assert teacher["steps"] == 0 and set(teacher["domains"]) == {"clinical", "clean", "conversational"}
    a = torch.load(tmp_path / "t" / "pretrain" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "t" / "teacher" / "model.pt", weights_only=True)
    sa, sb = a.get("state_dict", a), b.get("state_dict", b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="encoder only"):
        load_config(TINY, ["teacher.method=none", "pretrain.method=simclr"])
