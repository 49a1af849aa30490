"""ERSAM's uncertainty-driven knowledge distillation of a large counter into a small one.

The student learns from the few labels (the head's loss) and from a frozen teacher on labeled *and*
unlabeled clips: ``ce_weight · loss(student, y) + kd_weight · KD(student, teacher)``, where every clip's
distillation term is weighted by how certain the teacher is (ERSAM, Li et al., ICASSP 2023), so the
teacher's likely mistakes on unlabeled clips teach the student less. Certainty is a small policy chosen by
config: the teacher's predictive entropy (one pass) or Monte-Carlo dropout variance (Gal & Ghahramani,
ICML 2016; needs a teacher with dropout), or none (plain Hinton et al. KD).

The policy is written once and shared: :func:`distill_from_teacher` computes the weighted distillation term
that :class:`Distill`, :class:`~ersam_ssl.ssl.mixture.StreamDistill` and the supernet training of
:class:`~ersam_ssl.nas.supernet.SupernetModule` (the largest member's teacher) use, configured by one
:class:`DistillConfig`.

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
from typing import Any, ClassVar, NamedTuple

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
        if self.entropy_kind not in ("inverse", "exp"):
            raise ValueError(f"entropy_kind={self.entropy_kind!r}: choose inverse or exp")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0")

    def objective(self, ce: Tensor, kd: Tensor) -> Tensor:
        """The student's loss ``ce_weight · ce + kd_weight · kd`` from its label loss and distillation term."""
        return self.ce_weight * ce + self.kd_weight * kd


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


def check_teacher(teacher: CountModel, num_classes: int, config: DistillConfig) -> None:
    """Refuse (``ValueError``) a config that is not valid or a teacher that ``config`` cannot distil from."""
    config.validate()
    if teacher.head.num_classes != num_classes:
        raise ValueError(f"teacher counts {teacher.head.num_classes} classes, student {num_classes}")
    if config.uncertainty == "mc_dropout" and not _has_active_dropout(teacher):
        raise ValueError("uncertainty='mc_dropout' needs a teacher with dropout (e.g. head dropout > 0)")


class TeacherTerm(NamedTuple):
    """One batch's distillation term (:func:`distill_from_teacher`).

    Attributes:
        kd: the uncertainty-weighted KD loss (a scalar with the student's gradient).
        teacher_log_probs: the teacher's log-probabilities over counts, [B, C] (no gradient).
        weights: the per-clip weights of the uncertainty policy, [B], or ``None`` (plain KD).
    """

    kd: Tensor
    teacher_log_probs: Tensor
    weights: Tensor | None


def distill_from_teacher(
    student_log_probs: Tensor, teacher: CountModel, x: Tensor, config: DistillConfig
) -> TeacherTerm:
    """ERSAM's distillation term of a student on inputs ``x`` from a frozen ``teacher``.

    The teacher's log-probabilities and the weights of ``config.uncertainty``'s policy
    (:data:`UNCERTAINTY_POLICIES`) are computed without gradient;
    ``kd = kd_loss(student_log_probs, teacher_log_probs, config.temperature, weights)``. Combine it with the
    label loss by :meth:`DistillConfig.objective`.

    Args:
        student_log_probs: the student's log-probabilities over counts for ``x``, [B, C].
        teacher: the frozen teacher (in eval mode).
        x: the clips (waveforms) the teacher sees, [B, T].
        config: :class:`DistillConfig`.
    """
    with torch.no_grad():
        teacher_log_probs = teacher.head.log_probs(teacher(x))
        weights = UNCERTAINTY_POLICIES[config.uncertainty](teacher, x, teacher_log_probs, config)
    kd = kd_loss(student_log_probs, teacher_log_probs, config.temperature, weights)
    return TeacherTerm(kd, teacher_log_probs, weights)


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
        check_teacher(teacher, model.num_classes, config)
        self.config = config
        self.teacher = teacher.eval().requires_grad_(False)
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
        kd, teacher_log_probs, weights = distill_from_teacher(
            head.log_probs(out), self.teacher, x, self.config
        )
        loss = self.config.objective(ce, kd)
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
