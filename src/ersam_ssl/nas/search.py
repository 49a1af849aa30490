"""Hardware-aware architecture search over the SAM space (ERSAM, Li et al., ICASSP 2023).

:func:`run_search` is the whole recipe, writing everything into ``cfg.out_dir``:

1. train a weight-sharing supernet (:class:`~ersam_ssl.nas.supernet.SupernetModule`: sandwich rule,
   in-place distillation, optional uncertainty-weighted teacher KD) on the few labels plus unlabeled clips,
   initialised from a trained largest-arch counter (``cfg.init``);
2. search under hardware budgets (latency on this CPU, modelled device energy, MACs; :class:`~ersam_ssl.hw.
   CostModel`) with NNI (:mod:`ersam_ssl.nas.strategies`): multi-trial ``RegularizedEvolution`` /
   ``Random`` whose trials inherit supernet weights (no retraining; once-for-all, Cai et al., ICLR 2020)
   and over-budget candidates filtered before evaluation, or one-shot ``Proxyless`` (Cai et al., ICLR 2019)
   with an expected-cost penalty; every member is evaluated after recalibrating its BatchNorm statistics
   (:class:`~ersam_ssl.nas.evaluate.SubnetEvaluator`);
3. write all candidates (JSON + CSV), the Pareto fronts (error vs latency / energy, PNG), the chosen arch
   (:mod:`ersam_ssl.nas.results`);
4. fine-tune the chosen member briefly, evaluate it on the test set, export it to ONNX (fp32 + int8),
   check the exports against PyTorch and re-measure latency (:mod:`ersam_ssl.export`).

The multi-trial search scales out from the config alone (``search.training_service``,
``search.trial_concurrency``, ``search.machines``; :mod:`ersam_ssl.nas.trial`), e.g. two trial processes
at a time on this machine::

    ersam-ssl search search.training_service=local search.trial_concurrency=2

This module does not import NNI; the strategies import it when they run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ersam_ssl import config as config_io
from ersam_ssl.checkpoint import load_model, save_model
from ersam_ssl.data import DataEngine, MixtureStreamDataModule, SAMDataModule, ViewDataset, stream_dataset
from ersam_ssl.fileio import json_default, write_json
from ersam_ssl.hw import CostModel, sam_latency_predictor
from ersam_ssl.metrics import SCALAR_METRICS
from ersam_ssl.models import CountModel, build_model, layer_specs
from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.nas.evaluate import SubnetEvaluator, calibration_indices, evaluate_on_features, feature_batches
from ersam_ssl.nas.results import COST_KEYS, choose, plot_pareto, write_candidates
from ersam_ssl.nas.strategies import run_multi_trial, run_proxyless
from ersam_ssl.nas.supernet import ElasticSAM, SupernetModule
from ersam_ssl.ssl.base import OptimConfig, SupervisedCounter
from ersam_ssl.trainer import fit

log = logging.getLogger(__name__)


class ExportMismatchError(RuntimeError):
    """The fp32 ONNX export disagrees with PyTorch beyond the configured tolerance."""


def make_cost_model(cfg: SearchConfig, num_classes: int) -> CostModel:
    """The :class:`~ersam_ssl.hw.CostModel` of ``cfg``'s space, heads and budget settings."""
    b = cfg.budget
    predictor = None
    if b.latency == "lut":  # this machine's table of the space's ops, corrected (measured once, then reused)
        predictor = sam_latency_predictor(
            cfg.sam_space,
            n_mels=cfg.n_mels,
            num_samples=b.num_samples,
            num_classes=num_classes,
            head=cfg.head,
            level_norm=cfg.level_norm,
            threads=b.threads,
            warmup=b.warmup,
            repeats=b.repeats,
        )
    return CostModel(
        profile=b.profile,
        latency=b.latency,
        lut=predictor,
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
        distill=sc.distill,
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
    from ersam_ssl.hw import measure_onnx_interleaved, measure_torch_latency

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
    # the exports are timed round-robin, so that a slow spell of a shared machine hits fp32 and int8 alike
    ort_ms = measure_onnx_interleaved(list(paths.values()), num_samples, threads=1, rounds=e.repeats)
    for name, ms in zip(paths, ort_ms):
        latency[f"{name}_ms"] = ms
        latency[f"{name}_vs_torch"] = ms / latency["torch_ms"]
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
