"""The end-to-end ERSAM-SSL pipeline behind ``python recipes/run.py`` and ``ersam-ssl run``.

Stages (each writes ``runs/<name>/<stage>/`` and a ``result.json`` when complete):

1. ``data``     — data engine: corpus, speaker bank, speaker-disjoint splits, clinical pool, label budget.
2. ``pretrain`` — mixture supervision (default): the teacher architecture trained on streamed, never-
                  repeating mixtures of the train speakers with their exact counts, every clip in a
                  randomized acoustic domain, half of them conversational; or contrastive pretraining
                  (SimCLR / BYOL) of the encoder on unlabeled clips.
3. ``teacher``  — semi-supervised adaptation (FixMatch family) of the teacher (the largest architecture of
                  the search space) to the few labels + unlabeled clips of the clinical target domain,
                  starting from the pretrained counter.
4. ``nas``      — ERSAM: weight-sharing supernet initialised from the teacher, trained with the sandwich
                  rule and uncertainty-weighted distillation on randomized-domain mixtures; hardware-aware
                  search under latency/energy budgets, the subnet chosen on validation mixtures of every
                  evaluation domain; the chosen subnet fine-tuned and exported to ONNX (fp32 + int8).
5. ``evaluate`` — speaker-disjoint test metrics of the teacher and the searched model (PyTorch and ONNX),
                  per evaluation domain (clinical, clean, conversational by default), cost (MACs, latency,
                  modeled energy), plots and ``summary.json``.

``data/bad_files.json`` lists the input files that failed the header check or decoding, and the files never
decoded (beyond ``data.max_seconds_per_speaker`` of their speaker).

``--resume`` skips completed stages and continues an interrupted stage from its last checkpoint; training
data order and augmentations are functions of (seed, step), so a resumed run reaches the same result.
A run folder has one writer at a time: the pipeline holds ``runs/<name>/.lock`` (an ``fcntl.flock``, so a
crash releases it) while it runs, and a second process on the same run name (``--resume``, ``--overwrite``)
is refused with the holder's PID before it changes anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ersam_ssl import config as cfglib
from ersam_ssl import ssl
from ersam_ssl.cli import add_debug_flag, config_parser, run_config_command
from ersam_ssl.data import DataConfig, DataEngine
from ersam_ssl.fileio import exclusive_lock, remove_partial_files, write_json, write_text
from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.ssl import BYOLConfig, FixMatchConfig, OptimConfig, SimCLRConfig
from ersam_ssl.ssl.specaugment import SpecAugmentConfig
from ersam_ssl.trainer import TrainerConfig

log = logging.getLogger("ersam_ssl.pipeline")

STAGES = ("data", "pretrain", "teacher", "nas", "evaluate")


def stage_methods(stage: str) -> list[str]:
    """The registered training methods (:data:`ersam_ssl.ssl.METHODS`) that ``stage`` can run."""
    return [name for name in ssl.METHODS if stage in getattr(ssl.METHODS.get(name), "PIPELINE_STAGES", ())]


def check_method(stage: str, method: str) -> None:
    """Refuse a ``<stage>.method`` that is neither ``none`` nor one of :func:`stage_methods`."""
    choices = [*stage_methods(stage), "none"]
    if method not in choices:
        raise cfglib.ConfigError(f"{stage}.method={method!r}: choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class PretrainStage:
    """Pretraining of the teacher: ``mixture`` supervision (the whole counter, on streamed mixtures with
    exact counts), ``simclr`` / ``byol`` (the encoder, on unlabeled clips) or ``none``.

    The sections are the library's own configs, handed to the method whole: ``optim`` (every method),
    ``simclr`` / ``byol`` (those objectives) and ``spec_augment`` (mixture supervision; off by default,
    ``pretrain.spec_augment.enabled=true`` turns it on).
    """

    method: str = "mixture"
    steps: int = 600
    batch_size: int = 32
    optim: OptimConfig = OptimConfig(lr=3e-3)
    simclr: SimCLRConfig = SimCLRConfig(temperature=0.1)
    byol: BYOLConfig = BYOLConfig()
    spec_augment: SpecAugmentConfig = SpecAugmentConfig(enabled=False)

    def validate(self) -> None:
        check_method("pretrain", self.method)
        cfglib.check_at_least("pretrain", self, 1, "steps", "batch_size")
        for name in ("optim", "simclr", "byol", "spec_augment"):
            cfglib.validate_section(f"pretrain.{name}", getattr(self, name))


@dataclass(frozen=True)
class TeacherStage:
    """Adaptation of the teacher (largest architecture by default) to the few clinical labels.

    ``method="none"`` (default) keeps the mixture-supervised counter of the pretrain stage as the teacher.
    Measured by ``benchmarks/accuracy.py --adapt`` (results/accuracy/adapt-*.json): fine-tuning the
    source counter on 10 clinical labels per count (``supervised``) or FixMatch with unlabeled clinical
    clips (``fixmatch``), 400 steps, left clinical MAE no better (1.10 → 1.28 / 1.22 on LibriSpeech test
    speakers) and tripled it in every other domain (clean 0.79 → 2.48 / 2.80): the few labels make the
    counter forget the domains they do not cover. Measured again on a stronger source (wide SAM default,
    12000 steps, 20 % conversational; results ``adapt-*-wide-conv0.2``): clinical MAE 0.76 / 0.79 (LibriSpeech /
    speechocean762 test speakers) without target labels, 1.00 / 1.23 fine-tuned on 10 labels per count,
    0.95 / 1.15 with FixMatch, 0.78 / 0.78 even with all 2200 clinical pool labels — and clean MAE 1.5-2.7
    after any of them. ``fixmatch`` / ``supervised`` remain options; their
    defaults (``teacher.fixmatch.threshold``: a fixed 0.95) follow the validation tuning of
    ``benchmarks/few_label.py``.
    ``replay`` (:class:`~ersam_ssl.ssl.ReplayAdapt`) trains on the few labels (``labeled_batch_size``)
    while replaying randomized-domain mixtures (``unlabeled_batch_size`` per step) against forgetting: it
    kept the other domains (clean 0.87 vs 0.79) and moved clinical 1.10 → 1.12 (LibriSpeech speakers) and
    1.29 → 1.06 (speechocean762 speakers) — one seed, no clear win over ``none`` yet.

    ``optim`` (every method) and ``fixmatch`` (its thresholds and loss weights) are the library's own
    configs, handed to the method whole.
    """

    method: str = "none"
    arch: str = "largest"
    steps: int = 400
    labeled_batch_size: int = 16
    unlabeled_batch_size: int = 32
    optim: OptimConfig = OptimConfig(lr=2e-3)
    fixmatch: FixMatchConfig = FixMatchConfig(threshold=0.95, lambda_u=1.0)

    def validate(self) -> None:
        check_method("teacher", self.method)
        if self.arch not in ("largest", "default", "smallest"):
            raise ValueError(f"teacher.arch={self.arch!r}: choose largest, default or smallest")
        cfglib.check_at_least("teacher", self, 1, "steps", "labeled_batch_size", "unlabeled_batch_size")
        for name in ("optim", "fixmatch"):
            cfglib.validate_section(f"teacher.{name}", getattr(self, name))
        # the library takes any threshold (above 1: never confident); a run asks for a meaningful one
        if not 0.0 <= self.fixmatch.threshold <= 1.0:
            raise cfglib.ConfigError(
                f"teacher.fixmatch.threshold={self.fixmatch.threshold}: must be in [0, 1]"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything one pipeline run needs; YAML presets in ``recipes/configs`` hold only differences."""

    name: str = "default"
    out_root: str = "runs"
    seed: int = 0
    stages: tuple[str, ...] = STAGES
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainStage = field(default_factory=PretrainStage)
    teacher: TeacherStage = field(default_factory=TeacherStage)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    nas: SearchConfig = field(default_factory=SearchConfig)
    threads: int = 0  # intra-op threads; 0: ersam_ssl.threads.default_threads() (half the usable CPUs)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stages {bad}; choose from {STAGES}")
        if self.teacher.method == "none" and self.pretrain.method != "mixture":
            raise ValueError(
                f"teacher.method=none keeps the pretrained counter, but pretrain.method={self.pretrain.method} "
                "trains an encoder only: use pretrain.method=mixture or teacher.method=fixmatch|supervised"
            )
        self.data.validate()
        self.pretrain.validate()
        self.teacher.validate()
        self.nas.validate()
        # In a pipeline run these come from the top level and the earlier stages, not from nas.*
        base = SearchConfig()
        owned = [
            k
            for k in ("data", "seed", "out_dir", "init", "teacher", "trainer")
            if getattr(self.nas, k) != getattr(base, k)
        ]
        if owned:
            raise ValueError(f"set {owned} at the top level (data.*, seed, trainer.*), not under nas.*: "
                             "the pipeline fills them in for the nas stage")  # fmt: skip
        late = [s for s in ("nas", "evaluate") if s in self.stages]
        if self.trainer.world_size > 1 and late:
            raise ValueError(
                f"stages {late} run in one process: with trainer.devices/num_nodes > 1 run "
                "--stages data,pretrain,teacher, then the rest with trainer.devices=1 --resume; the search "
                "scales out through nas.search.training_service instead"
            )

    @property
    def out_dir(self) -> Path:
        return Path(self.out_root) / self.name


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Defaults ← YAML preset ← ``key=value`` overrides (see :mod:`ersam_ssl.config`)."""
    cfg = cfglib.load(RunConfig, path, list(overrides))
    cfg.validate()
    return cfg


# ------------------------------------------------------------------------------------------ context
class Run:
    """Shared state of one run: config, output folders, the data engine and stage results."""

    def __init__(self, cfg: RunConfig, writes: bool = True) -> None:
        self.cfg = cfg
        self.writes = writes
        self.dir = cfg.out_dir
        self.results: dict[str, dict] = {}
        self._engine: DataEngine | None = None

    @property
    def engine(self) -> DataEngine:
        if self._engine is None:
            self._engine = DataEngine(self.cfg.data)
        return self._engine

    def stage_dir(self, stage: str) -> Path:
        d = self.dir / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def done(self, stage: str) -> dict | None:
        """The stage's result: from this process, else from a finished earlier run (``result.json``)."""
        if stage in self.results:
            return self.results[stage]
        p = self.dir / stage / "result.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def finish(self, stage: str, result: dict) -> dict:
        if self.writes:  # under DDP every rank computes the result, rank 0 records it
            write_json(self.stage_dir(stage) / "result.json", result, default=_jsonable)
        self.results[stage] = result
        return result

    def trainer_cfg(self, steps: int):
        return replace(self.cfg.trainer, max_steps=steps)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _teacher_arch(cfg: RunConfig) -> dict:
    from ersam_ssl.models import SAMSpace

    space = SAMSpace()
    return {"largest": space.largest, "default": space.default, "smallest": space.smallest}[
        cfg.teacher.arch
    ]()


# ------------------------------------------------------------------------------------------- stages
def stage_data(run: Run) -> dict:
    e = run.engine
    summary = e.summary()
    splits = {k: list(v) for k, v in e.splits.items()}
    write_json(run.stage_dir("data") / "splits.json", splits)
    bad = [{"path": b.path, "reason": b.reason} for b in e.bank.report.bad]
    # Files beyond a speaker's max_seconds_per_speaker are never decoded: say so, rather than let a short
    # list of bad files suggest that everything else was checked.
    write_json(run.stage_dir("data") / "bad_files.json", {
        "bad": bad,
        "not_decoded": e.bank.not_decoded,
        "note": "'bad' lists files that failed the header check or decoding; 'not_decoded' files were only "
                f"header-checked (their speaker already had data.max_seconds_per_speaker="
                f"{e.config.max_seconds_per_speaker:g} s of speech)",
    })  # fmt: skip
    return summary


def stage_pretrain(run: Run) -> dict:
    from ersam_ssl.checkpoint import save_model
    from ersam_ssl.models import build_model
    from ersam_ssl.trainer import fit

    p = run.cfg.pretrain
    out = run.stage_dir("pretrain")
    if p.method == "none":
        return {"skipped": True}
    pl.seed_everything(run.cfg.seed)
    model = build_model(_teacher_arch(run.cfg), num_classes=run.engine.num_classes)
    module = ssl.METHODS.get(p.method).from_stage(model, p, run.engine.levels)
    dm = ssl.datamodule_for(module, run.engine, batch_size=p.batch_size, unlabeled_batch_size=p.batch_size)
    t0 = time.perf_counter()
    fit(module, dm, run.trainer_cfg(p.steps), out, name="pretrain")
    wall = round(time.perf_counter() - t0, 1)
    save_model(module.model, out / "model.pt")
    result = {"model": str(out / "model.pt"), "method": p.method, "steps": p.steps, "wall_s": wall}
    if p.method == "mixture":  # a whole counter: score it where the later stages are scored
        result["domains"] = domain_metrics(module.model, run.engine)
    else:
        result["knn_probe"] = {k: module.val_results.get(k) for k in ("error_rate", "mae")}
    return result


def stage_teacher(run: Run) -> dict:
    from ersam_ssl.checkpoint import load_weights, save_model
    from ersam_ssl.models import build_model
    from ersam_ssl.trainer import fit

    t = run.cfg.teacher
    out = run.stage_dir("teacher")
    pl.seed_everything(run.cfg.seed)
    model = build_model(_teacher_arch(run.cfg), num_classes=run.engine.num_classes)
    pre = run.done("pretrain")
    if pre and not pre.get("skipped"):
        # a mixture-supervised counter hands over its count head too (same classes); SSL only the encoder
        whole = pre.get("method", run.cfg.pretrain.method) == "mixture"
        load_weights(model, pre["model"], parts=("",) if whole else ("frontend", "backbone"))
    if t.method == "none":  # the pretrained counter is the teacher (see TeacherStage)
        from ersam_ssl.data import SAMDataModule
        from ersam_ssl.metrics import evaluate

        model.eval()
        save_model(model, out / "model.pt")
        test = evaluate(model, SAMDataModule(run.engine, labeled_views={"x": "identity"}).test_dataloader())
        return {"model": str(out / "model.pt"), "arch": _teacher_arch(run.cfg), "steps": 0, "wall_s": 0.0,
                "test": test, "domains": domain_metrics(model, run.engine)}  # fmt: skip
    module = ssl.METHODS.get(t.method).from_stage(model, t, run.engine.levels)
    if getattr(module, "DATA", "pool") == "stream+target":  # replay: stream batch + the labeled target batch
        dm = ssl.datamodule_for(
            module, run.engine, batch_size=t.unlabeled_batch_size, target_batch_size=t.labeled_batch_size
        )
    else:
        dm = ssl.datamodule_for(
            module, run.engine, batch_size=t.labeled_batch_size, unlabeled_batch_size=t.unlabeled_batch_size
        )
    t0 = time.perf_counter()
    trainer = fit(module, dm, run.trainer_cfg(t.steps), out, name="teacher")
    wall = time.perf_counter() - t0
    trainer.test(module, datamodule=dm, verbose=False)
    save_model(module.model, out / "model.pt")
    return {"model": str(out / "model.pt"), "arch": _teacher_arch(run.cfg), "steps": t.steps,
            "wall_s": round(wall, 1), "test": module.test_results,
            "domains": domain_metrics(module.model, run.engine)}  # fmt: skip


def stage_nas(run: Run) -> dict:
    from ersam_ssl.nas.search import run_search

    teacher = run.done("teacher")
    if teacher is None:
        raise RuntimeError("the nas stage needs the teacher stage (add it to stages or run it first)")
    c = run.cfg
    nas_cfg = replace(c.nas, data=c.data, seed=c.seed, out_dir=str(run.stage_dir("nas")), init=teacher["model"],
                      teacher=teacher["model"], trainer=c.trainer)  # fmt: skip
    return run_search(nas_cfg, run.engine)


def stage_evaluate(run: Run) -> dict:
    return evaluate_run(run)


STAGE_FUNCS: dict[str, Callable[[Run], dict]] = {
    "data": stage_data,
    "pretrain": stage_pretrain,
    "teacher": stage_teacher,
    "nas": stage_nas,
    "evaluate": stage_evaluate,
}


def domain_metrics(model, engine: DataEngine) -> dict[str, dict]:
    """Test metrics of ``model`` in every ``data.eval_domains`` domain (speaker-disjoint test speakers)."""
    from torch.utils.data import DataLoader

    from ersam_ssl.metrics import evaluate

    keys = ("mae", "error_rate", "level_accuracy", "ece")
    out = {}
    for domain, ds in engine.test_domains().items():
        m = evaluate(model, DataLoader(ds, batch_size=64))
        out[domain] = {k: round(float(m[k]), 4) for k in keys}
    return out


def evaluate_run(run: Run) -> dict:
    """Test metrics + cost of the final model; writes ``summary.json`` and the confusion-matrix PNG."""
    from ersam_ssl.checkpoint import load_model
    from ersam_ssl.data import SAMDataModule
    from ersam_ssl.hw import count_macs, load_profile, measure_torch_latency, report_energy
    from ersam_ssl.metrics import evaluate, plot_confusion

    out = run.stage_dir("evaluate")
    nas = run.done("nas")
    teacher = run.done("teacher")
    if nas is not None:
        final_path = str(run.dir / "nas" / "model.pt")
    elif teacher is not None:
        final_path = teacher["model"]
    else:
        raise RuntimeError("nothing to evaluate: run the teacher (and nas) stages first")
    model = load_model(final_path)
    dm = SAMDataModule(run.engine, labeled_views={"x": "identity"})
    metrics = evaluate(model, dm.test_dataloader())
    plot_confusion(metrics["confusion"], out / "confusion.png", title="searched model, test set")
    n = run.engine.config.mixture.num_samples
    cost = count_macs(model, num_samples=n)
    lat = measure_torch_latency(model, num_samples=n, threads=1)
    profile = load_profile(run.cfg.nas.budget.profile)
    energy = report_energy(cost.macs, profile)
    lab, _ = run.engine.budget
    summary = {
        "error_rate": metrics["error_rate"],
        "mae": metrics["mae"],
        "params": cost.params,
        "macs": cost.macs,
        "latency_ms": lat.median_ms,
        "energy_mw_12h": energy.avg_power_mw,
        "labels_used": int(lab.size),
        "window_s": run.engine.config.mixture.duration,
        "level_accuracy": metrics["level_accuracy"],
        "ece": metrics["ece"],
        "domains": domain_metrics(model, run.engine),
        "model": final_path,
        "device": profile.name,
    }
    if nas:
        summary["arch"] = nas["arch"]
        summary["pareto_png"] = str(run.dir / "nas" / "pareto.png")
        summary["search"] = {
            "strategy": nas["strategy"],
            "evaluated": nas["evaluated"],
            "rejected": nas["rejected"],
        }
        export = nas.get("export")
        if export:
            summary["onnx"] = export["files"]
            summary["onnx_test"] = export["test"]
            summary["onnx_latency_1_thread"] = export["latency_1_thread"]
    if teacher:
        summary["teacher"] = {k: teacher["test"].get(k) for k in ("error_rate", "mae")}
        summary["teacher"]["domains"] = teacher.get("domains")
    write_json(run.dir / "summary.json", summary, default=_jsonable)
    return {"summary": summary, "metrics": metrics}


# --------------------------------------------------------------------------------------------- main
def run_pipeline(cfg: RunConfig, resume: bool = False, overwrite: bool = False, run: Run | None = None) -> dict:
    """Run the configured stages; returns ``summary.json``'s content.

    ``run``: a :class:`Run` of ``cfg`` to fill (its data engine is then built once, shared with the caller,
    e.g. a benchmark that goes on to train a reference model on the same data)."""
    from pytorch_lightning.utilities import rank_zero_only

    from ersam_ssl.threads import configure_threads

    cfg.validate()
    configure_threads(cfg.threads)
    # Under DDP, Lightning re-runs this script once per extra rank (and torchrun/SLURM start every rank):
    # only rank 0 owns the run folder; the other ranks run the same stages and join every fit().
    rank_zero = rank_zero_only.rank == 0
    if run is None:
        run = Run(cfg, writes=rank_zero)
    elif run.cfg != cfg:
        raise ValueError("run_pipeline: the given Run holds another config")
    # Everything that can be checked cheaply is checked before the run folder is touched, so a corrected
    # command is not refused because a failed one left a config.yaml behind.
    if rank_zero:
        _check_run_dir(cfg, resume, overwrite)
    run.engine.check()
    with contextlib.ExitStack() as held:
        if rank_zero:
            held.enter_context(exclusive_lock(cfg.out_dir / LOCK_FILE, what=f"run folder {cfg.out_dir}"))
            _prepare_run_dir(cfg, resume, overwrite)
        return _run_stages(run, resume, rank_zero)


def _run_stages(run: Run, resume: bool, rank_zero: bool) -> dict:
    cfg = run.cfg
    tracker = None
    if cfg.trainer.wandb and rank_zero:
        from ersam_ssl import tracking

        tracker = tracking.start_run(cfg.trainer.wandb_project, cfg.name, cfglib.to_dict(cfg), cfg.out_dir)
    t0 = time.perf_counter()
    timings = {}
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        prev = run.done(stage)
        if prev is not None and resume:
            log.info("stage %s: done, skipping", stage)
            run.results[stage] = prev
            continue
        log.info("stage %s: start", stage)
        s0 = time.perf_counter()
        run.finish(stage, STAGE_FUNCS[stage](run))
        timings[stage] = round(time.perf_counter() - s0, 1)
    if not rank_zero:
        return {}
    summary_path = cfg.out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    wall = {k: v for k, v in summary.get("wall_s", {}).items() if k in STAGES}
    wall.update(timings)
    summary["wall_s"] = {**wall, "total": round(sum(wall.values()), 1)}
    teacher = run.done("teacher")
    if teacher and "teacher" not in summary:  # runs without the evaluate stage still report the teacher
        summary["teacher"] = {k: teacher["test"].get(k) for k in ("error_rate", "mae")}
        data = run.done("data") or {}
        if "labeled" in data:
            summary["labels_used"] = int(data["labeled"])
    log.info("this call took %.1f s", time.perf_counter() - t0)
    write_json(summary_path, summary, default=_jsonable)
    if tracker is not None:
        tracking.finish_run(tracker, summary, teacher and teacher.get("test"), cfg.out_dir)
    return summary


#: Settings a resumed run may change: where and how it executes, not what it computes.
RESUME_FREE_KEYS = frozenset(
    {"stages", "threads"}
    | {f"trainer.{k}" for k in ("accelerator", "devices", "num_nodes", "strategy", "progress_bar", "wandb",
                                 "wandb_project")}
    | {f"nas.search.{k}" for k in ("training_service", "trial_concurrency", "trial_dir", "machines", "nni_port",
                                    "nni_manager_ip")}
)  # fmt: skip


#: The lock file a running pipeline holds in its run folder (see :func:`ersam_ssl.fileio.exclusive_lock`).
LOCK_FILE = ".lock"


def _has_outputs(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds anything besides the lock file (a folder with only that never ran)."""
    return out_dir.is_dir() and any(p.name != LOCK_FILE for p in out_dir.iterdir())


def _check_run_dir(cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    """Refuse (without writing) an existing run without --resume/--overwrite, or a resume with another config."""
    if cfg.out_dir.exists() and not cfg.out_dir.is_dir():
        raise FileExistsError(f"{cfg.out_dir} is a file; choose another name= or out_root=")
    if _has_outputs(cfg.out_dir) and not (resume or overwrite):
        raise FileExistsError(
            f"{cfg.out_dir} exists: pass --resume to continue it or --overwrite to start over"
        )
    saved = cfg.out_dir / "config.yaml"
    if resume and not overwrite and saved.is_file():
        changed = sorted(set(cfglib.flatten(cfglib.diff(cfg, load_config(saved)))) - RESUME_FREE_KEYS)
        if changed:
            raise ValueError(f"--resume with a different config than {saved} ({', '.join(changed)}); "
                             "start a new run name instead")  # fmt: skip


def _prepare_run_dir(cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    """Create (or, with ``overwrite``, empty) ``runs/<name>``; refuse to mix configs on ``resume``.

    Called with the run folder's lock held, so ``overwrite`` never deletes the files of a running run.
    """
    _check_run_dir(cfg, resume, overwrite)
    if overwrite:
        for child in cfg.out_dir.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if resume:  # half-written files of a killed run (results, model files, checkpoints)
        for stale in remove_partial_files(cfg.out_dir, recursive=True):
            log.info("removed %s, left by an interrupted write", stale)
    saved = cfg.out_dir / "config.yaml"
    cfglib.save(cfg, saved)
    write_text(cfg.out_dir / "config.diff.yaml", _yaml(cfglib.diff(cfg)))


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def format_summary(summary: dict) -> str:
    """The printed end-of-run table; rows of stages that did not run are left out."""
    rows = []
    if "error_rate" in summary:
        rows += [("error rate", f"{summary['error_rate']:.3f}"), ("MAE", f"{summary['mae']:.3f}")]
    if "macs" in summary:
        rows += [
            ("params", f"{summary['params']:,}"),
            (f"MACs / {summary.get('window_s', 5.0):g} s window", f"{summary['macs'] / 1e6:.2f} M"),
            ("latency (1 thread)", f"{summary['latency_ms']:.2f} ms"),
            ("energy", f"{summary['energy_mw_12h']:.3f} mW·12 h ({summary.get('device', '')})"),
        ]
    if "labels_used" in summary:
        rows.append(("labels used", str(summary["labels_used"])))
    for name, domains in (
        ("", summary.get("domains")),
        ("teacher ", summary.get("teacher", {}).get("domains")),
    ):
        for d, m in (domains or {}).items():
            rows.append((f"{name}MAE / level error, {d}", f"{m['mae']:.3f} / {1 - m['level_accuracy']:.3f}"))
    if "teacher" in summary:
        t = summary["teacher"]
        rows.append(("teacher error / MAE", f"{t['error_rate']:.3f} / {t['mae']:.3f}"))
    if "wall_s" in summary:
        rows.append(("wall time", ", ".join(f"{k} {v}s" for k, v in summary["wall_s"].items())))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def build_parser() -> argparse.ArgumentParser:
    p = config_parser(
        "recipes/run.py",
        __doc__,
        config_help="YAML preset (only the values that differ from defaults)",
        example="data.labels_per_class=5",
    )
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--resume", action="store_true", help="continue runs/<name> (skips finished stages)")
    p.add_argument("--overwrite", action="store_true", help="delete runs/<name> first")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python recipes/run.py``: errors are one line on stderr (``--debug`` shows the traceback)."""
    return run_config_command(build_parser, _main, argv)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = list(args.overrides)
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    from ersam_ssl.tracking import sweep_run_name

    if sweep_run_name() and not any(o.startswith("name=") for o in overrides):
        overrides.insert(0, f"name={sweep_run_name()}")  # each agent run gets its own folder
    cfg = load_config(args.config, overrides)
    summary = run_pipeline(cfg, resume=args.resume, overwrite=args.overwrite)
    if summary:  # empty on DDP ranks other than 0
        print("\n" + format_summary(summary))
        print(f"\noutputs: {cfg.out_dir}")
    return 0
