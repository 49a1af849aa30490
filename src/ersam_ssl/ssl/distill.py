"""ERSAM's uncertainty-driven knowledge distillation of a large counter into a small one.

The student learns from the few labels (the head's loss) and from a frozen teacher on labeled *and*
unlabeled clips: ``ce_weight · loss(student, y) + kd_weight · KD(student, teacher)``, where every clip's
distillation term is weighted by how certain the teacher is (ERSAM, Li et al., ICASSP 2023), so the
teacher's likely mistakes on unlabeled clips teach the student less. Certainty is a small policy chosen by
config: the teacher's predictive entropy (one pass) or Monte-Carlo dropout variance (Gal & Ghahramani,
ICML 2016; needs a teacher with dropout), or none (plain Hinton et al. KD).

The teacher is a submodule (so Lightning places it on the right device) but it is frozen
(``requires_grad=False``), always in eval mode, outside the optimizer, and *not* written to checkpoints:
a checkpoint holds the student under ``model.`` and the teacher's path in the hyper-parameters, so
``load_model(ckpt)`` returns the student and resuming re-uses the teacher given to the constructor.

References:
    Li, Chen, Yuan, Lin, Sabharwal. "ERSAM: Neural Architecture Search for Energy-Efficient and Real-Time
    Social Ambiance Measurement", ICASSP 2023.
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015.
    Gal, Ghahramani. "Dropout as a Bayesian Approximation", ICML 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ersam_ssl.checkpoint import load_model
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.losses import entropy_weights, kd_loss, mc_dropout_predict, mc_dropout_weights
from ersam_ssl.models import CountModel
from ersam_ssl.ssl.base import CounterModule, OptimConfig, OptimizerFactory, labeled_batch
from ersam_ssl.ssl.methods import METHODS

TEACHER_PREFIX = "teacher."


@dataclass(frozen=True)
class DistillConfig:
    """Distillation hyper-parameters.

    Attributes:
        temperature: softening temperature of the KD term.
        ce_weight / kd_weight: weights of the labeled loss and of the distillation term.
        uncertainty: ``"entropy"`` (teacher entropy), ``"mc_dropout"`` (dropout variance) or ``"none"``.
        entropy_kind: ``"inverse"`` (1 − h) or ``"exp"`` (exp(−h / entropy_temperature)).
        entropy_temperature: decay of the ``"exp"`` entropy weights.
        mc_samples: dropout passes of the MC-dropout teacher.
        mc_scale: variance at which an MC-dropout weight halves.
    """

    temperature: float = 4.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    uncertainty: str = "entropy"
    entropy_kind: str = "inverse"
    entropy_temperature: float = 0.5
    mc_samples: int = 8
    mc_scale: float = 0.01

    def validate(self) -> None:
        if self.uncertainty not in UNCERTAINTY_POLICIES:
            raise ValueError(
                f"uncertainty={self.uncertainty!r}: choose one of {sorted(UNCERTAINTY_POLICIES)}"
            )


class _TeacherLogProbs(nn.Module):
    """The teacher as a map wave → log-probabilities over counts (any head), for MC dropout."""

    def __init__(self, teacher: CountModel) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher.head.log_probs(self.teacher(x))


WeightPolicy = Callable[[CountModel, Tensor, Tensor, DistillConfig], Tensor | None]


def no_weights(teacher: CountModel, x: Tensor, teacher_log_probs: Tensor, cfg: DistillConfig) -> None:
    """Plain KD: every clip counts the same."""
    return None


def teacher_entropy_weights(
    teacher: CountModel, x: Tensor, teacher_log_probs: Tensor, cfg: DistillConfig
) -> Tensor:
    """Weights from the teacher's normalised predictive entropy (one pass, already computed)."""
    return entropy_weights(
        teacher_log_probs.exp(), kind=cfg.entropy_kind, temperature=cfg.entropy_temperature
    )  # type: ignore[arg-type]


def teacher_mc_dropout_weights(
    teacher: CountModel, x: Tensor, teacher_log_probs: Tensor, cfg: DistillConfig
) -> Tensor:
    """Weights from the variance of ``mc_samples`` dropout passes of the teacher."""
    return mc_dropout_weights(mc_dropout_predict(_TeacherLogProbs(teacher), x, cfg.mc_samples), cfg.mc_scale)


UNCERTAINTY_POLICIES: dict[str, WeightPolicy] = {
    "none": no_weights,
    "entropy": teacher_entropy_weights,
    "mc_dropout": teacher_mc_dropout_weights,
}


def _has_active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


@METHODS.register("distill")
class Distill(CounterModule):
    """Uncertainty-weighted distillation of a frozen ``teacher`` into ``model`` (the student).

    Build it from a teacher file with :meth:`from_teacher_file` (a :func:`~ersam_ssl.checkpoint.save_model`
    file or a Lightning checkpoint of any ersam_ssl module).

    Args:
        model: the student counter (trained).
        teacher: the trained teacher counter (frozen here).
        optim: optimizer config of the student.
        config: :class:`DistillConfig`.
        teacher_path: where the teacher came from (stored in the hyper-parameters; not its weights).
        levels: ambiance levels for the level accuracy.
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "weak"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "weak"}

    def __init__(
        self,
        model: CountModel,
        teacher: CountModel,
        optim: OptimConfig | OptimizerFactory | None = None,
        config: DistillConfig = DistillConfig(),
        teacher_path: str | None = None,
        levels: AmbianceLevels | None = None,
    ) -> None:
        super().__init__(model, optim, levels)
        config.validate()
        if teacher.num_classes != model.num_classes:
            raise ValueError(f"teacher counts {teacher.num_classes} classes, student {model.num_classes}")
        if config.uncertainty == "mc_dropout" and not _has_active_dropout(teacher):
            raise ValueError("uncertainty='mc_dropout' needs a teacher with dropout (e.g. head dropout > 0)")
        self.config = config
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight_policy = UNCERTAINTY_POLICIES[config.uncertainty]
        self.save_hyperparameters(
            {"distill": asdict(config), "teacher_path": teacher_path, "teacher_model": teacher.config()}
        )

    @classmethod
    def from_teacher_file(
        cls,
        model: CountModel,
        teacher_path: str | Path,
        optim: OptimConfig | OptimizerFactory | None = None,
        config: DistillConfig = DistillConfig(),
        **kwargs: Any,
    ) -> Distill:
        """Student ``model`` + the teacher rebuilt by :func:`~ersam_ssl.checkpoint.load_model`."""
        return cls(model, load_model(teacher_path), optim, config, teacher_path=str(teacher_path), **kwargs)

    def train(self, mode: bool = True) -> Distill:
        super().train(mode)
        self.teacher.eval()  # Lightning switches the whole module to train mode every epoch
        return self

    def trainable_modules(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = labeled_batch(batch)
        n_labeled = x.shape[0]
        if isinstance(batch, dict) and "unlabeled" in batch:
            x = torch.cat([x, batch["unlabeled"]["x"]])
        head = self.model.head
        out = self.model(x)
        ce = head.loss(out[:n_labeled], y)
        with torch.no_grad():
            teacher_log_probs = self.teacher.head.log_probs(self.teacher(x))
            weights = self.weight_policy(self.teacher, x, teacher_log_probs, self.config)
        kd = kd_loss(head.log_probs(out), teacher_log_probs, self.config.temperature, weights)
        loss = self.config.ce_weight * ce + self.config.kd_weight * kd
        logs = {
            "train/loss": loss,
            "train/ce": ce,
            "train/kd": kd,
            "train/acc": (head.predict(out[:n_labeled]) == y).float().mean(),
            "train/teacher_acc": (teacher_log_probs[:n_labeled].argmax(dim=1) == y).float().mean(),
        }
        if weights is not None:
            logs["train/kd_weight_mean"] = weights.mean()
        self.log_dict(logs, prog_bar=False, batch_size=x.shape[0])
        self.log("train/acc_labeled", logs["train/acc"], prog_bar=True, batch_size=n_labeled)
        return loss

    # -- checkpoints hold the student only -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The teacher is not in the file; keep the one this module was built with (strict loading).
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state.setdefault(TEACHER_PREFIX + key, value)
