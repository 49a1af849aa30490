"""Counting metrics (torchmetrics where it has them) and a plain evaluation loop.

Reported everywhere: MAE of the count, accuracy and error rate (1 − accuracy, ERSAM's headline metric),
per-count MAE, SAM-level accuracy, expected calibration error (Guo et al., ICML 2017) and the confusion
matrix (with a PNG plot).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)
from torchmetrics.regression import MeanAbsoluteError

from ersam_ssl.data.levels import AmbianceLevels


class PerCountMAE(Metric):
    """MAE of the predicted count, separately for every true count 0..K (NaN where a count is absent)."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("abs_err", default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        err = (preds.double() - target.double()).abs()
        self.abs_err += torch.bincount(target, weights=err, minlength=self.num_classes)[: self.num_classes]
        self.n += torch.bincount(target, minlength=self.num_classes)[: self.num_classes].double()

    def compute(self) -> Tensor:
        return torch.where(
            self.n > 0, self.abs_err / self.n.clamp_min(1), torch.full_like(self.n, float("nan"))
        )


class CountMetrics(nn.Module):
    """All counting metrics of one evaluation set.

    ``update(preds, log_probs, target)`` takes the predicted counts (from ``head.predict``), the
    distribution over counts (``head.log_probs``, used for calibration) and the true counts.
    """

    def __init__(self, num_classes: int, levels: AmbianceLevels | None = None) -> None:
        super().__init__()
        self.levels = levels or AmbianceLevels()
        self.num_classes = num_classes
        self.mae = MeanAbsoluteError()
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.level_accuracy = MulticlassAccuracy(self.levels.num_levels, average="micro")
        self.ece = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.per_count = PerCountMAE(num_classes)
        self.register_buffer(
            "_level_of", torch.as_tensor(self.levels.level(np.arange(num_classes))), persistent=False
        )

    @torch.no_grad()
    def update(self, preds: Tensor, log_probs: Tensor, target: Tensor) -> None:
        preds = preds.clamp(0, self.num_classes - 1).long()
        target = target.long()
        self.mae.update(preds.float(), target.float())
        self.accuracy.update(preds, target)
        self.level_accuracy.update(self._level_of[preds], self._level_of[target])
        self.ece.update(log_probs.exp().float(), target)
        self.confusion.update(preds, target)
        self.per_count.update(preds, target)

    def compute(self) -> dict[str, float | list[float] | list[list[int]]]:
        acc = float(self.accuracy.compute())
        return {
            "mae": float(self.mae.compute()),
            "accuracy": acc,
            "error_rate": 1.0 - acc,
            "level_accuracy": float(self.level_accuracy.compute()),
            "ece": float(self.ece.compute()),
            "per_count_mae": [float(x) for x in self.per_count.compute()],
            "confusion": self.confusion.compute().long().tolist(),
        }

    def reset(self) -> None:
        for m in (self.mae, self.accuracy, self.level_accuracy, self.ece, self.confusion, self.per_count):
            m.reset()


SCALAR_METRICS = ("mae", "accuracy", "error_rate", "level_accuracy", "ece")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, levels: AmbianceLevels | None = None) -> dict:
    """Evaluate a :class:`~ersam_ssl.models.CountModel` on batches of ``{"x", "y"}`` or ``(x, y)``."""
    was_training = model.training
    model.eval()
    metrics: CountMetrics | None = None
    try:
        for batch in batches:
            x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch
            out = model(x)
            if metrics is None:
                metrics = CountMetrics(model.head.num_classes, levels)
            metrics.update(model.head.predict(out), model.head.log_probs(out), y)
    finally:
        model.train(was_training)
    if metrics is None:
        raise ValueError("no batches to evaluate")
    return metrics.compute()


def plot_confusion(confusion: list[list[int]] | np.ndarray, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true count × predicted count) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    n = cm.shape[0]
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
