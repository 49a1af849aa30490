"""Search strategies on NNI: multi-trial evolution / random search and one-shot Proxyless.

:func:`run_multi_trial` and :func:`run_proxyless` search a trained supernet under the budgets of a
:class:`~ersam_ssl.nas.config.SearchConfig`; they need of the hardware only a
:class:`~ersam_ssl.hw.CostOracle` and score members with a :class:`~ersam_ssl.nas.evaluate.SubnetEvaluator`.
Each returns the evaluated records and rejected candidates of :mod:`ersam_ssl.nas.results`.

NNI is imported inside the functions that need it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.fileio import write_json
from ersam_ssl.hw import CostOracle, arch_key
from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.nas.evaluate import SubnetEvaluator
from ersam_ssl.nas.nni_experiment import run_experiment
from ersam_ssl.nas.results import budget_violations, candidate_record, rejected_record
from ersam_ssl.nas.supernet import ElasticSAM

log = logging.getLogger(__name__)


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
            rejected.append(rejected_record(arch, cost, violations))
        return not violations

    def add(arch: dict, metrics: dict) -> None:
        records.append(candidate_record(len(records), s.strategy, arch, metrics, cost_model.cost(arch), True))
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
        run_experiment(model_space, FunctionalEvaluator(evaluate), strategy, out_dir / "nni", s.trials)
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
    run_experiment(model_space, lightning, strategy, out_dir / "nni", None)

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
            rejected.append(rejected_record(arch, cost, violations))
        records.append(candidate_record(len(records), source, arch, evaluator(arch), cost, not violations))
    return records, rejected, evaluator
