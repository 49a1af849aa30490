"""The thin LightningModule base every counter-training method shares, and the supervised counter.

A method module only defines ``training_step``; evaluation (validation/test metrics, confusion matrix),
the optimizer/scheduler and checkpoint metadata live here once. The network and the optimizer are injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ersam_ssl import config as cfglib
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.metrics import SCALAR_METRICS, CountMetrics
from ersam_ssl.models import CountModel
from ersam_ssl.ssl.methods import METHODS


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (linear warm-up, then cosine decay or constant).

    ``build(params, total_steps)`` returns Lightning's ``configure_optimizers`` dict.
    """

    name: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_frac: float = 0.05
    schedule: str = "cosine"
    min_lr_frac: float = 0.02

    def validate(self) -> None:
        if self.name not in ("adamw", "sgd"):
            raise ValueError(f"optim.name={self.name!r}: choose adamw or sgd")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule={self.schedule!r}: choose cosine or constant")
        cfglib.check_positive("optim", self, "lr")
        cfglib.check_at_least("optim", self, 0, "weight_decay", "momentum", "warmup_frac", "min_lr_frac")
        for name in ("warmup_frac", "min_lr_frac"):
            if getattr(self, name) > 1:
                raise cfglib.ConfigError(f"optim.{name}={getattr(self, name)}: must be <= 1")

    def build(self, params: Iterable[nn.Parameter], total_steps: int) -> dict[str, Any]:
        self.validate()
        params = [p for p in params if p.requires_grad]
        if self.name == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True,
                                  weight_decay=self.weight_decay)  # fmt: skip
        total = max(1, int(total_steps))
        warmup = int(self.warmup_frac * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if self.schedule == "constant":
                return 1.0
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            return self.min_lr_frac + (1 - self.min_lr_frac) * 0.5 * (
                1 + torch.cos(torch.tensor(t * torch.pi)).item()
            )

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


OptimizerFactory = Callable[[Iterable[nn.Parameter], int], dict[str, Any]]


def labeled_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a labeled batch: a ``{"x", "y"}`` dict, a dict of loaders' batches, or a tuple."""
    if isinstance(batch, dict):
        if "labeled" in batch:
            batch = batch["labeled"]
        return batch["x"], batch["y"]
    return batch[0], batch[1]


class CounterModule(pl.LightningModule):
    """Base of all training methods: owns the counter, evaluation and optimisation.

    Args:
        model: the counter being trained (a :class:`~ersam_ssl.models.CountModel`).
        optim: an :class:`OptimConfig` or any callable ``(params, total_steps) -> configure_optimizers dict``.
        levels: ambiance levels for the SAM-level accuracy.

    After ``trainer.test``, ``self.test_results`` holds every metric (including the confusion matrix).
    Checkpoints carry ``ersam_model_config`` so :func:`~ersam_ssl.checkpoint.load_model` can rebuild the
    counter from a checkpoint alone.
    """

    #: Pipeline stages (``pretrain``, ``teacher``) that may select this method by its registered name.
    PIPELINE_STAGES: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: CountModel,
        optim: OptimConfig | OptimizerFactory | None = None,
        levels: AmbianceLevels | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim or OptimConfig()
        levels = levels or AmbianceLevels()
        self.val_metrics = CountMetrics(model.num_classes, levels)
        self.test_metrics = CountMetrics(model.num_classes, levels)
        self.test_results: dict[str, Any] = {}
        self.val_results: dict[str, Any] = {}
        if isinstance(self.optim, OptimConfig):
            self.save_hyperparameters({"optim": asdict(self.optim), "model": model.config()})

    @classmethod
    def from_stage(cls, model: CountModel, stage: Any, levels: AmbianceLevels | None = None) -> CounterModule:
        """The method as a pipeline stage configures it.

        Args:
            model: the counter to train.
            stage: the stage's config (:class:`~ersam_ssl.pipeline.PretrainStage` / ``TeacherStage``): its
                ``optim`` section, and the method's own section where it has one (``fixmatch``, ``simclr``,
                ``byol``, ``spec_augment``), are handed over whole.
            levels: ambiance levels for the level accuracy.
        """
        return cls(model, stage.optim, levels=levels)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def trainable_modules(self) -> Iterable[nn.Parameter]:
        """Parameters the optimizer updates (methods with extra heads extend this)."""
        return self.parameters()

    def configure_optimizers(self):
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1000
        return self.optim.build(self.trainable_modules(), int(total))

    # -- evaluation, shared by every method ------------------------------------------------------
    def _eval_step(self, batch: Any, metrics: CountMetrics) -> None:
        x, y = labeled_batch(batch)
        out = self.model(x)
        metrics.update(self.model.head.predict(out), self.model.head.log_probs(out), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self.val_results = self.val_metrics.compute()
        self.log_dict({f"val/{k}": self.val_results[k] for k in SCALAR_METRICS}, prog_bar=False)
        self.log("val_mae", self.val_results["mae"], prog_bar=True)
        self.log("val_err", self.val_results["error_rate"], prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.test_results = self.test_metrics.compute()
        self.log_dict({f"test/{k}": self.test_results[k] for k in SCALAR_METRICS})
        self.test_metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ersam_model_config"] = self.model.config()


@METHODS.register("supervised")
class SupervisedCounter(CounterModule):
    """Supervised training on labeled clips (all labels, or a few-label budget from the data engine).

    The loss is the count head's own loss (cross-entropy for classification, as CountNet found best).
    """

    PIPELINE_STAGES: ClassVar[tuple[str, ...]] = ("teacher",)

    def train_forward(self, x: Tensor) -> Tensor:
        """The counter's raw output on a training batch (methods that augment features override it)."""
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = labeled_batch(batch)
        out = self.train_forward(x)
        loss = self.model.head.loss(out, y)
        acc = (self.model.head.predict(out) == y).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, batch_size=y.shape[0])
        return loss
