"""Hardware-aware architecture search over the SAM space (ERSAM, Li et al., ICASSP 2023).

:func:`run_search` is the whole recipe, writing everything into ``cfg.out_dir``:

1. train a weight-sharing supernet (:class:`~ersam_ssl.nas.supernet.SupernetModule`: sandwich rule,
   in-place distillation, optional uncertainty-weighted teacher KD) on the few labels plus unlabeled clips,
   initialised from a trained largest-arch counter (``cfg.init``);
2. search under hardware budgets (latency on this CPU, modelled device energy, MACs; :class:`~ersam_ssl.hw.
   CostModel`) with NNI: multi-trial ``RegularizedEvolution`` / ``Random`` whose trials inherit supernet
   weights (no retraining; once-for-all, Cai et al., ICLR 2020) and over-budget candidates filtered before
   evaluation, or one-shot ``Proxyless`` (Cai et al., ICLR 2019) with an expected-cost penalty; every
   member is evaluated after recalibrating its BatchNorm statistics (:class:`SubnetEvaluator`);
3. write all candidates (JSON + CSV), the Pareto fronts (error vs latency / energy, PNG), the chosen arch;
4. fine-tune the chosen member briefly, evaluate it on the test set, export it to ONNX (fp32 + int8),
   check the exports against PyTorch and re-measure latency (:mod:`ersam_ssl.export`).

The multi-trial search scales out from the config alone (``search.training_service``,
``search.trial_concurrency``, ``search.machines``; :mod:`ersam_ssl.nas.trial`), e.g. two trial processes
at a time on this machine::

    ersam-ssl search search.training_service=local search.trial_concurrency=2

NNI is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ersam_ssl import config as config_io
from ersam_ssl.checkpoint import load_model, save_model
from ersam_ssl.data import DataEngine, MixtureStreamDataModule, SAMDataModule, ViewDataset, stream_dataset
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.fileio import json_default, write_json
from ersam_ssl.hw import CostModel, CostOracle, arch_key
from ersam_ssl.metrics import SCALAR_METRICS, CountMetrics
from ersam_ssl.models import CountModel, build_model, layer_specs
from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.nas.supernet import ElasticSAM, SupernetModule, counter_on_features, recalibrate_bn
from ersam_ssl.ssl.base import OptimConfig, SupervisedCounter
from ersam_ssl.trainer import fit

log = logging.getLogger(__name__)

COST_KEYS = ("macs", "params", "latency_ms", "device_latency_ms", "energy_mj", "avg_power_mw")
CSV_COLUMNS = (
    "index",
    "source",
    "score",
    "accuracy",
    "error_rate",
    "mae",
    "level_accuracy",
    "ece",
    *COST_KEYS,
    "within_budget",
    "chosen",
    "arch",
)


class ExportMismatchError(RuntimeError):
    """The fp32 ONNX export disagrees with PyTorch beyond the configured tolerance."""


# -- data ------------------------------------------------------------------------------------------


@torch.no_grad()
def feature_batches(
    frontend: torch.nn.Module,
    dataset: Any,
    indices: Sequence[int] | None = None,
    batch_size: int = 64,
    with_counts: bool = True,
) -> list[Any]:
    """Log-mel features of ``(wave, count)`` items, computed once: ``[(features, counts), ...]``.

    The SAM frontend has no weights, so members of the space can share these features.
    """
    subset = dataset if indices is None else Subset(dataset, [int(i) for i in indices])
    out = []
    for wave, count in DataLoader(subset, batch_size=batch_size, shuffle=False):
        features = frontend(wave)
        out.append((features, count) if with_counts else features)
    return out


def calibration_indices(engine: DataEngine, num: int, seed: int) -> list[int]:
    """Random training-pool clips (labeled or not) for BatchNorm recalibration."""
    size = len(engine.pool)
    rng = random.Random(seed)
    return sorted(rng.sample(range(size), min(num, size)))


# -- evaluation of members with inherited weights --------------------------------------------------


def score_of(metrics: dict[str, float], mae_weight: float) -> float:
    """The search objective: ``accuracy - mae_weight * MAE`` (higher is better)."""
    return float(metrics["accuracy"] - mae_weight * metrics["mae"])


@torch.no_grad()
def evaluate_on_features(
    model: CountModel, batches: Sequence[tuple[Tensor, Tensor]], levels: AmbianceLevels | None = None
) -> dict[str, float]:
    """Scalar counting metrics of a counter on precomputed feature batches."""
    model.eval()
    metrics = CountMetrics(model.head.num_classes, levels)
    forward = counter_on_features(model)
    for features, counts in batches:
        out = forward(features)
        metrics.update(model.head.predict(out), model.head.log_probs(out), counts)
    values = metrics.compute()
    return {k: float(values[k]) for k in SCALAR_METRICS}


class SubnetEvaluator:
    """Validation metrics of members with weights inherited from a supernet (no retraining).

    A member is extracted as a stand-alone counter (:meth:`ElasticSAM.extract`), its BatchNorm statistics
    are re-estimated on ``calibration`` feature batches of training clips (once-for-all, Cai et al., ICLR
    2020: shared running statistics do not fit any single member), then it is evaluated on ``validation``.
    Results are cached per canonical architecture.
    """

    def __init__(
        self,
        supernet: ElasticSAM,
        calibration: Sequence[Tensor],
        validation: Sequence[tuple[Tensor, Tensor]],
        *,
        levels: AmbianceLevels | None = None,
        mae_weight: float = 0.1,
    ) -> None:
        if not calibration or not validation:
            raise ValueError("SubnetEvaluator needs calibration and validation batches")
        self.supernet = supernet
        self.calibration = list(calibration)
        self.validation = list(validation)
        self.levels = levels
        self.mae_weight = mae_weight
        self._cache: dict[str, dict[str, float]] = {}

    def model(self, arch: dict) -> CountModel:
        """The member as a stand-alone counter with recalibrated BatchNorm (eval mode)."""
        model = self.supernet.extract(arch)
        recalibrate_bn(model, self.calibration, counter_on_features(model))
        return model.eval()

    def evaluate_model(self, model: CountModel) -> dict[str, float]:
        metrics = evaluate_on_features(model, self.validation, self.levels)
        return {**metrics, "score": score_of(metrics, self.mae_weight)}

    def __call__(self, arch: dict) -> dict[str, float]:
        key = arch_key(self.supernet.space.canonical(arch))
        if key not in self._cache:
            start = time.perf_counter()
            self._cache[key] = {
                **self.evaluate_model(self.model(arch)),
                "eval_s": time.perf_counter() - start,
            }
        return dict(self._cache[key])


# -- hardware costs --------------------------------------------------------------------------------


def make_cost_model(cfg: SearchConfig, num_classes: int) -> CostModel:
    """The :class:`~ersam_ssl.hw.CostModel` of ``cfg``'s space, heads and budget settings."""
    b = cfg.budget
    return CostModel(
        profile=b.profile,
        latency=b.latency,
        build_model=functools.partial(
            build_model,
            num_classes=num_classes,
            head=cfg.head,
            n_mels=cfg.n_mels,
            space=cfg.sam_space,
            level_norm=cfg.level_norm,
        ),
        layer_specs=functools.partial(
            layer_specs,
            space=cfg.sam_space,
            n_mels=cfg.n_mels,
            level_norm=cfg.level_norm,
            num_samples=b.num_samples,
            num_classes=num_classes,
            head=cfg.head,
        ),
        canonicalize=cfg.sam_space.canonical,
        num_samples=b.num_samples,
        num_classes=num_classes,
        threads=b.threads,
        warmup=b.warmup,
        repeats=b.repeats,
    )


def budget_violations(cost: dict[str, Any], cfg: SearchConfig) -> list[str]:
    """Which budgets ``cost`` exceeds (empty: within budget)."""
    out = []
    for key, limit in cfg.budget.limits().items():
        if limit is not None and cost.get(key) is not None and cost[key] > limit:
            out.append(f"{key} {cost[key]:.4g} > {limit:.4g}")
    return out


# -- results ---------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates minimised), by the first one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(records: Sequence[dict], path: Path, chosen: int | None, cfg: SearchConfig) -> Path:
    """Error rate vs host latency and vs modelled average power, with Pareto fronts and budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = cfg.budget.limits()
    panels = [
        ("latency_ms", "latency (ms, 1 thread, this CPU)", limits["latency_ms"]),
        (
            "avg_power_mw",
            f"modelled power (mW, {cfg.budget.profile}, 1 window / 5 s)",
            limits["avg_power_mw"],
        ),
    ]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in records)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, (key, label, limit) in zip(axes[0], panels):
        rows = [r for r in records if r.get(key) is not None]
        xs = [r[key] for r in rows]
        ys = [100 * r["error_rate"] for r in rows]
        ax.scatter(xs, ys, s=14, c="0.6", label="evaluated")
        front = pareto_front(list(zip(xs, ys)))
        ax.plot(
            [xs[i] for i in front], [ys[i] for i in front], "o-", c="tab:blue", ms=4, label="Pareto front"
        )
        for r in rows:
            if r["index"] == chosen:
                ax.scatter([r[key]], [100 * r["error_rate"]], marker="*", s=180, c="tab:red", label="chosen")
        if limit is not None and limit <= 1.5 * max(xs, default=limit):
            ax.axvline(limit, ls="--", c="tab:red", lw=1, label="budget")
        elif limit is not None:  # far right of every member: a line there would squash the plot
            label = f"{label}; budget {limit:g} (off scale)"
        ax.set_xlabel(label)
        ax.set_ylabel("validation error rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_candidates(
    records: Sequence[dict], rejected: Sequence[dict], out_dir: Path, chosen: int | None
) -> None:
    """``candidates.json`` (everything) and ``candidates.csv`` (one row per evaluated member)."""
    rows = [{**r, "chosen": r["index"] == chosen} for r in records]
    payload = {"candidates": rows, "rejected": list(rejected)}
    write_json(out_dir / "candidates.json", payload, default=json_default)
    with open(out_dir / "candidates.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "arch": json.dumps(r["arch"], separators=(",", ":"))})


def choose(records: Sequence[dict]) -> dict:
    """The best within-budget member: highest score, then lowest modelled power, then fewest MACs."""
    admissible = [r for r in records if r["within_budget"]]
    if not admissible:
        raise RuntimeError("no evaluated member is within the budget; loosen the budget or search longer")
    return max(admissible, key=lambda r: (r["score"], -(r.get("avg_power_mw") or 0.0), -r["macs"]))


# -- NNI plumbing ----------------------------------------------------------------------------------


@contextlib.contextmanager
def nni_home(directory: Path) -> Iterator[None]:
    """Keep NNI's experiment manifest (``~/nni-experiments/.experiment``) under ``directory``.

    ``NasExperiment`` records every run in that manifest through ``Experiments()``, whose default folder
    is fixed to the user's home when NNI is imported; a run should only write into its own output folder.
    """
    import nni.nas.experiment.experiment as nas_experiment
    from nni.tools.nnictl.config_utils import Experiments

    directory.mkdir(parents=True, exist_ok=True)
    original = nas_experiment.Experiments
    nas_experiment.Experiments = functools.partial(Experiments, home_dir=str(directory))
    try:
        yield
    finally:
        nas_experiment.Experiments = original


def _experiment_config(directory: Path, max_trials: int | None = None) -> Any:
    from nni.nas.experiment import NasExperimentConfig

    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(directory)
    if max_trials is not None:
        config.max_trial_number = max_trials
    return config


def _run_experiment(
    model_space: Any, evaluator: Any, strategy: Any, directory: Path, max_trials: int | None
) -> Any:
    from nni.nas.experiment import NasExperiment

    with nni_home(directory):
        exp = NasExperiment(model_space, evaluator, strategy, _experiment_config(directory, max_trials))
        try:
            exp.run()
        finally:
            exp.stop()
    return exp


def _record(index: int, source: str, arch: dict, metrics: dict, cost: dict, within: bool) -> dict:
    return {
        "index": index,
        "source": source,
        "arch": arch,
        **metrics,
        **{k: cost.get(k) for k in COST_KEYS},
        "within_budget": within,
    }


def run_multi_trial(
    supernet: ElasticSAM, evaluator: SubnetEvaluator, cost_model: CostOracle, cfg: SearchConfig, out_dir: Path
) -> tuple[list[dict], list[dict]]:
    """NNI ``RegularizedEvolution`` (or ``Random``) over :class:`SAMModelSpace` with inherited weights.

    Over-budget candidates are filtered by NNI's ``Filter`` middleware before evaluation (they cost only a
    cost-model query and do not count as trials). Trials run in this process (``search.training_service``
    ``sequential``) or as separate processes of NNI's ``local`` / ``remote`` training service
    (:mod:`ersam_ssl.nas.trial`), with the same metrics for the same member. Returns
    ``(evaluated records, rejected candidates)``; records are in evaluation (submission) order.
    """
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.strategy import Random as RandomStrategy
    from nni.nas.strategy import RegularizedEvolution
    from nni.nas.strategy.middleware import Chain, Filter

    from ersam_ssl.nas.nni_space import build_model_space, sample_to_arch

    s = cfg.search
    model_space = build_model_space(supernet)
    records: list[dict] = []
    rejected: list[dict] = []

    def admissible(model: Any) -> bool:
        arch = sample_to_arch(model.sample, supernet.space)
        cost = cost_model.cost(arch)
        violations = budget_violations(cost, cfg)
        if violations:
            rejected.append({"arch": arch, **{k: cost.get(k) for k in COST_KEYS}, "violations": violations})
        return not violations

    def add(arch: dict, metrics: dict) -> None:
        records.append(_record(len(records), s.strategy, arch, metrics, cost_model.cost(arch), True))
        log.info("trial %d: score %.4f err %.3f mae %.3f", len(records), metrics["score"],
                 metrics["error_rate"], metrics["mae"])  # fmt: skip

    def evaluate(model: Any) -> None:
        metrics = evaluator(model.arch)
        add(model.arch, metrics)
        nni.report_final_result(metrics["score"])

    if s.strategy == "evolution":
        population = max(1, min(s.population_size, s.trials))
        base: Any = RegularizedEvolution(
            population_size=population,
            sample_size=max(1, min(s.sample_size, population)),
            mutation_prob=s.mutation_prob,
            seed=cfg.seed,
        )
    else:
        base = RandomStrategy(seed=cfg.seed)
    strategy = Chain(base, Filter(admissible, patience=s.max_filtered))
    if s.training_service == "sequential":
        _run_experiment(model_space, FunctionalEvaluator(evaluate), strategy, out_dir / "nni", s.trials)
        return records, rejected

    from ersam_ssl.nas.trial import run_on_training_service

    for arch, metrics in run_on_training_service(supernet, evaluator, strategy, s, out_dir):
        add(arch, metrics)
    return records, rejected


def run_proxyless(
    supernet: ElasticSAM,
    cost_model: CostOracle,
    cfg: SearchConfig,
    train: Sequence[tuple[Tensor, Tensor]],
    validation: Sequence[tuple[Tensor, Tensor]],
    calibration: Sequence[Tensor],
    out_dir: Path,
    levels: AmbianceLevels | None = None,
) -> tuple[list[dict], list[dict], SubnetEvaluator]:
    """One-shot search with NNI ``Proxyless`` on a copy of the supernet, with an expected-cost penalty.

    The architecture step (on validation batches) minimises ``loss + scale * relu(E[cost] / baseline - 1)``,
    the weight step (on labeled training batches) fine-tunes the shared weights of the sampled path. Then
    the most likely member and ``proxyless.samples`` members drawn from the learned distribution are
    evaluated with the one-shot weights. Returns ``(records, rejected, evaluator)``.
    """
    import nni.nas.evaluator.pytorch as nni_pl
    from nni.nas.strategy import Proxyless
    from pytorch_lightning.loggers import CSVLogger

    from ersam_ssl.nas.nni_space import (
        ArchCostProfiler,
        ExpectedCostPenalty,
        OneShotCounter,
        architecture_probabilities,
        build_model_space,
        cost_tables,
        label_choices,
        most_likely_sample,
        sample_to_arch,
    )

    p = cfg.proxyless
    limits = cfg.budget.limits()
    baseline = p.penalty_baseline if p.penalty_baseline is not None else limits[p.penalty_metric]
    if baseline is None:
        raise ValueError(
            f"proxyless needs a penalty baseline: set proxyless.penalty_baseline or the "
            f"{p.penalty_metric} budget"
        )
    oneshot = copy.deepcopy(supernet).train()
    model_space = build_model_space(oneshot)
    op_cost, constant = cost_model.op_cost_function(p.penalty_metric)
    tables = cost_tables(
        oneshot.space,
        op_cost,
        constant_offset=constant,
        num_samples=cfg.budget.num_samples,
        num_classes=oneshot.num_classes,
        head=cfg.head,
        n_mels=cfg.n_mels,
    )
    penalty = ExpectedCostPenalty(
        ArchCostProfiler(model_space, tables), model_space, baseline, p.penalty_scale
    )

    def loader(batches: Sequence[tuple[Tensor, Tensor]]) -> Any:
        dataset = torch.utils.data.TensorDataset(
            torch.cat([f for f, _ in batches]), torch.cat([y for _, y in batches])
        )
        return nni_pl.DataLoader(dataset, batch_size=min(p.batch_size, len(dataset)), shuffle=True)

    directory = out_dir / "proxyless"
    trainer = nni_pl.Trainer(
        max_steps=p.steps,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(directory), name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, cfg.trainer.log_every_steps),
    )
    lightning = nni_pl.Lightning(
        OneShotCounter(oneshot, lr=p.weight_lr),
        trainer,
        train_dataloaders=loader(train),
        val_dataloaders=loader(validation),
    )
    strategy = Proxyless(arc_learning_rate=p.arc_lr, penalty=penalty)
    _run_experiment(model_space, lightning, strategy, out_dir / "nni", None)

    mutated = strategy.supernet
    probs = {k: v.detach() for k, v in architecture_probabilities(mutated).items()}
    choices = label_choices(oneshot.space)
    write_json(
        directory / "probabilities.json",
        {label: dict(zip(choices[label], probs[label].tolist())) for label in probs},
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    samples = [most_likely_sample(mutated)]
    for _ in range(p.samples):
        samples.append(
            {
                label: choices[label][int(torch.multinomial(pr, 1, generator=generator))]
                for label, pr in probs.items()
            }
        )
    oneshot.eval()
    evaluator = SubnetEvaluator(
        oneshot, calibration, validation, levels=levels, mae_weight=cfg.search.mae_weight
    )
    records, rejected, seen = [], [], set()
    for i, sample in enumerate(samples):
        arch = sample_to_arch(sample, oneshot.space)
        key = arch_key(oneshot.space.canonical(arch))
        if key in seen:
            continue
        seen.add(key)
        cost = cost_model.cost(arch)
        violations = budget_violations(cost, cfg)
        source = "proxyless_argmax" if i == 0 else "proxyless_sample"
        if violations:
            rejected.append({"arch": arch, **{k: cost.get(k) for k in COST_KEYS}, "violations": violations})
        records.append(_record(len(records), source, arch, evaluator(arch), cost, not violations))
    return records, rejected, evaluator


# -- the whole recipe ------------------------------------------------------------------------------


def build_supernet(cfg: SearchConfig, num_classes: int) -> ElasticSAM:
    """A supernet for ``cfg``: loaded from ``supernet_checkpoint``, or fresh and initialised from ``init``."""
    if cfg.supernet_checkpoint:
        supernet = ElasticSAM.load(cfg.supernet_checkpoint)
        if supernet.space != cfg.sam_space or supernet.num_classes != num_classes:
            raise ValueError(f"{cfg.supernet_checkpoint}: supernet space / classes differ from the config")
        return supernet
    supernet = ElasticSAM(
        cfg.sam_space, num_classes=num_classes, head=cfg.head, n_mels=cfg.n_mels, level_norm=cfg.level_norm
    )
    if cfg.init:
        head = supernet.load_largest(cfg.init)
        log.info("supernet initialised from %s (%s pooling head)", cfg.init, head)
    else:
        log.warning("no init checkpoint: the supernet starts from random weights")
    return supernet


def train_supernet(
    supernet: ElasticSAM,
    engine: DataEngine,
    cfg: SearchConfig,
    out_dir: Path,
    teacher: CountModel | None = None,
) -> ElasticSAM:
    """Sandwich-rule training with :func:`ersam_ssl.trainer.fit` (checkpoints and resume in ``out_dir``)."""
    sc = cfg.supernet
    if sc.steps <= 0:
        return supernet.eval()
    datamodule: SAMDataModule | MixtureStreamDataModule
    if sc.data == "stream":
        datamodule = MixtureStreamDataModule(
            engine,
            batch_size=sc.batch_size or None,
            unlabeled_batch_size=sc.unlabeled_batch_size or engine.config.unlabeled_batch_size,
            val=engine.selection_val,
        )
    else:
        datamodule = SAMDataModule(
            engine,
            labeled_views={"x": sc.labeled_view},
            unlabeled_views={"x": sc.unlabeled_view},
            batch_size=sc.batch_size or None,
            unlabeled_batch_size=sc.unlabeled_batch_size or None,
        )
    module = SupernetModule(
        supernet,
        OptimConfig(lr=sc.lr, weight_decay=sc.weight_decay, warmup_frac=sc.warmup_frac),
        engine.levels,
        num_random_subnets=sc.num_random_subnets,
        ce_weight=sc.ce_weight,
        kd_weight=sc.kd_weight,
        kd_temperature=sc.kd_temperature,
        teacher=teacher,
        teacher_weight=sc.teacher_weight,
        teacher_temperature=sc.teacher_temperature,
        uncertainty=sc.uncertainty,
        calib_batches=sc.calib_batches,
        seed=cfg.seed,
    )
    trainer_cfg = dataclasses.replace(
        cfg.trainer, max_steps=sc.steps, max_epochs=-1, val_every_steps=sc.val_every_steps
    )
    fit(module, datamodule, trainer_cfg, out_dir, name="supernet")
    return module.supernet.eval()


def finetune_member(
    model: CountModel, engine: DataEngine, cfg: SearchConfig, out_dir: Path, evaluator: SubnetEvaluator
) -> tuple[CountModel, dict]:
    """Short supervised fine-tuning of the chosen member; kept only if the validation score does not drop."""
    f = cfg.finetune
    before = evaluator.evaluate_model(model)
    info: dict[str, Any] = {"steps": f.steps, "val_before": before}
    if f.steps <= 0:
        return model, {**info, "kept": False}
    candidate = copy.deepcopy(model).train()
    module = SupervisedCounter(candidate, OptimConfig(lr=f.lr, weight_decay=f.weight_decay), engine.levels)
    if cfg.supernet.data == "stream":
        datamodule: Any = MixtureStreamDataModule(engine, batch_size=cfg.supernet.batch_size or None)
    else:
        datamodule = SAMDataModule(engine, labeled_views={"x": cfg.supernet.labeled_view})
    trainer_cfg = dataclasses.replace(cfg.trainer, max_steps=f.steps, max_epochs=-1, limit_val_batches=0.0)
    fit(module, datamodule, trainer_cfg, out_dir, name="finetune")
    candidate.eval()
    after = evaluator.evaluate_model(candidate)
    kept = after["score"] >= before["score"]
    info.update(val_after=after, kept=kept)
    return (candidate if kept else model), info


def _test_clips(engine: DataEngine, batch_size: int = 32) -> DataLoader:
    return DataLoader(ViewDataset(engine.test, {"x": "identity"}), batch_size=batch_size, shuffle=False)


def export_member(model: CountModel, engine: DataEngine, cfg: SearchConfig, out_dir: Path) -> dict:
    """ONNX fp32 + int8 exports, their agreement with PyTorch on the test set and 1-thread latencies.

    Raises:
        ExportMismatchError: the fp32 export's outputs differ from PyTorch by more than
            ``export.max_abs_diff`` (after ``export.json`` is written).
    """
    from ersam_ssl.export import compare_with_torch, export_onnx, quantize_onnx
    from ersam_ssl.hw import measure_onnx_latency, measure_torch_latency

    e = cfg.export
    num_samples = engine.config.mixture.num_samples
    fp32 = export_onnx(model, out_dir / "model.onnx", num_samples)
    paths = {"onnx_fp32": fp32}
    if e.quantize != "none":
        calib = None
        if e.quantize == "static":
            idx = calibration_indices(engine, e.calib_clips, cfg.seed + 1)
            waves = torch.stack([engine.pool[i][0] for i in idx])
            calib = list(torch.split(waves, 16))
        paths["onnx_int8"] = quantize_onnx(
            fp32,
            out_dir / "model.int8.onnx",
            e.quantize,
            calibration=calib,
            quantize_frontend=e.quantize_frontend,
        )
    report: dict[str, Any] = {
        "num_samples": num_samples,
        "quantize": e.quantize,
        "files": {k: str(v) for k, v in paths.items()},
    }
    report["test"] = compare_with_torch(model, paths, _test_clips(engine), levels=engine.levels)
    latency = {"torch_ms": measure_torch_latency(model, num_samples, threads=1, repeats=e.repeats).median_ms}
    for name, path in paths.items():
        latency[f"{name}_ms"] = measure_onnx_latency(
            path, num_samples, threads=1, repeats=e.repeats
        ).median_ms
        latency[f"{name}_vs_torch"] = latency[f"{name}_ms"] / latency["torch_ms"]
    report["latency_1_thread"] = latency
    report["sizes_bytes"] = {k: Path(v).stat().st_size for k, v in paths.items()}
    write_json(out_dir / "export.json", report, default=json_default)
    diff = report["test"]["onnx_fp32"]["max_abs_diff"]
    if diff > e.max_abs_diff:
        raise ExportMismatchError(f"fp32 ONNX differs from PyTorch by {diff:.3g} > {e.max_abs_diff:.3g}")
    return report


def run_search(cfg: SearchConfig, engine: DataEngine | None = None) -> dict:
    """Run the whole search recipe (module docstring) and return the summary written to ``summary.json``."""
    import pytorch_lightning as pl

    cfg.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_io.save(cfg, out / "config.yaml")
    pl.seed_everything(cfg.seed, workers=True)
    engine = engine or DataEngine(cfg.data)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    supernet = build_supernet(cfg, engine.num_classes)
    if not cfg.supernet_checkpoint:
        teacher = load_model(cfg.teacher) if cfg.teacher else None
        supernet = train_supernet(supernet, engine, cfg, out / "supernet", teacher)
        supernet.save(out / "supernet.pt", extra={"config": config_io.to_dict(cfg)})
    timings["supernet_s"] = time.perf_counter() - start

    start = time.perf_counter()
    s = cfg.search
    frontend = supernet.frontend
    n_calib = s.calib_batches * s.calib_batch_size
    if cfg.supernet.data == "stream":  # BatchNorm statistics of the domains the members were trained on
        calib_set: Any = stream_dataset(engine, n_calib, stream="calibration")
        calib_idx = None
    else:
        calib_set, calib_idx = engine.pool, calibration_indices(engine, n_calib, cfg.seed)
    calibration = [f for f, _ in feature_batches(frontend, calib_set, calib_idx, s.calib_batch_size)]
    validation = feature_batches(frontend, engine.selection_val)
    cost_model = make_cost_model(cfg, engine.num_classes)
    # The search restarts from scratch when a run resumes; NNI names each experiment's folder by a random
    # id, so without this every resumed (or repeated) search would leave one more nni/<id> behind.
    shutil.rmtree(out / "nni", ignore_errors=True)
    if s.strategy == "proxyless":
        labeled = feature_batches(frontend, engine.pool, engine.budget[0])
        records, rejected, evaluator = run_proxyless(
            supernet, cost_model, cfg, labeled, validation, calibration, out, engine.levels
        )
    else:
        evaluator = SubnetEvaluator(
            supernet, calibration, validation, levels=engine.levels, mae_weight=s.mae_weight
        )
        records, rejected = run_multi_trial(supernet, evaluator, cost_model, cfg, out)
    timings["search_s"] = time.perf_counter() - start
    if not records:
        raise RuntimeError("the search evaluated no member; loosen the budget or raise search.max_filtered")

    best = choose(records)
    write_candidates(records, rejected, out, best["index"])
    plot_pareto(records, out / "pareto.png", best["index"], cfg)
    arch = best["arch"]
    write_json(out / "arch.json", arch)

    start = time.perf_counter()
    model, finetune_info = finetune_member(evaluator.model(arch), engine, cfg, out / "finetune", evaluator)
    timings["finetune_s"] = time.perf_counter() - start
    test_metrics = evaluate_on_features(model, feature_batches(frontend, engine.test), engine.levels)
    summary: dict[str, Any] = {
        "arch": arch,
        "strategy": s.strategy,
        "cost": {k: best.get(k) for k in COST_KEYS},
        "val": {k: best[k] for k in (*SCALAR_METRICS, "score")},
        "test": test_metrics,
        "finetune": finetune_info,
        "evaluated": len(records),
        "rejected": len(rejected),
    }
    save_model(model, out / "model.pt", extra={"arch": arch, "test": test_metrics})
    if cfg.export.enabled:
        start = time.perf_counter()
        summary["export"] = export_member(model, engine, cfg, out)
        timings["export_s"] = time.perf_counter() - start
    summary["timings_s"] = timings
    write_json(out / "summary.json", summary, default=json_default)
    return summary
