"""Validation metrics of members of the space with weights inherited from a supernet (no retraining).

Both search strategies (:mod:`ersam_ssl.nas.strategies`) and the trial processes of NNI's training services
(:mod:`ersam_ssl.nas.trial`) score members with :class:`SubnetEvaluator`, on log-mel feature batches
computed once (:func:`feature_batches`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ersam_ssl.data import DataEngine
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.hw import arch_key
from ersam_ssl.metrics import SCALAR_METRICS, CountMetrics
from ersam_ssl.models import CountModel
from ersam_ssl.nas.supernet import ElasticSAM, counter_on_features, recalibrate_bn


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
