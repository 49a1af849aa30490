"""FixMatch for speaker counting, with optional FlexMatch thresholds, distribution alignment and the
count-aware mixing loss.

One step: supervised loss of the labeled (weak) clips + ``lambda_u`` × FixMatch's loss on unlabeled clips
(the strong view learns the confident weak-view pseudo-label) + ``lambda_mix`` × a count-aware loss on sums
of two unlabeled clips (a mixture of two recordings holds at least as many talkers as either part). The
pieces are small policies chosen once at construction — a confidence-threshold policy (fixed, or FlexMatch's
class-wise curriculum), an optional probability transform (distribution alignment) and an optional mixing
objective — not string-dispatched hooks.

All logits handed to the pure losses are the head's ``log_probs``, so every count head works (for the
classification head they equal the logits up to a per-row constant, which no softmax-based loss sees).

DDP: the FlexMatch state and the running class distribution are updated with the predictions of all
devices (``all_gather``), so every replica holds the same state; dataset indices are global because the
distributed sampler only partitions them.

References:
    Sohn et al. "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence",
    NeurIPS 2020.
    Zhang et al. "FlexMatch: Boosting Semi-Supervised Learning with Curriculum Pseudo Labeling",
    NeurIPS 2021.
    Berthelot et al. "ReMixMatch: Semi-Supervised Learning with Distribution Alignment and Augmentation
    Anchoring", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ersam_ssl import config as cfglib
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.losses import (
    FlexMatchThresholds,
    RunningDistribution,
    distribution_alignment,
    fixmatch_loss,
    mix_waveforms,
    mixing_cdf_loss,
    mixing_rank_loss,
)
from ersam_ssl.models import CountModel
from ersam_ssl.ssl.base import CounterModule, OptimConfig, OptimizerFactory
from ersam_ssl.ssl.methods import METHODS

MIXING_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "rank": mixing_rank_loss,
    "cdf": mixing_cdf_loss,
}


@dataclass(frozen=True)
class FixMatchConfig:
    """FixMatch hyper-parameters.

    Attributes:
        threshold: confidence threshold tau of the pseudo-labels (FlexMatch's upper threshold).
        temperature: temperature of the weak-view softmax before thresholding.
        lambda_u: weight of the unlabeled loss.
        flexmatch: use FlexMatch's class-wise curriculum thresholds instead of a fixed one.
        flexmatch_warmup: FlexMatch's threshold warm-up.
        distribution_alignment: align weak-view probabilities to a uniform class marginal (ReMixMatch).
        alignment_momentum: EMA momentum of the model's running class distribution.
        lambda_mix: weight of the count-aware mixing loss (0 = off).
        mixing_loss: ``"rank"`` (expected counts) or ``"cdf"`` (stochastic dominance).
        mixing_gain_db: relative level range of the second clip of a mixture.
    """

    threshold: float = 0.95
    temperature: float = 1.0
    lambda_u: float = 1.0
    flexmatch: bool = False
    flexmatch_warmup: bool = True
    distribution_alignment: bool = False
    alignment_momentum: float = 0.999
    lambda_mix: float = 0.0
    mixing_loss: str = "rank"
    mixing_gain_db: tuple[float, float] = (-3.0, 3.0)

    def validate(self) -> None:
        if self.mixing_loss not in MIXING_LOSSES:
            raise ValueError(
                f"fixmatch.mixing_loss={self.mixing_loss!r}: choose one of {sorted(MIXING_LOSSES)}"
            )
        cfglib.check_positive("fixmatch", self, "temperature")
        cfglib.check_at_least("fixmatch", self, 0, "lambda_u", "lambda_mix")
        if not 0.0 <= self.alignment_momentum <= 1.0:
            raise cfglib.ConfigError(
                f"fixmatch.alignment_momentum={self.alignment_momentum}: must be in [0, 1]"
            )


class AlignToUniform:
    """Distribution-alignment policy: fold the batch into the running marginal, then align to uniform.

    ``gather`` collects the probabilities of all devices so the running estimate is the same everywhere.
    """

    def __init__(self, running: RunningDistribution, gather: Callable[[Tensor], Tensor]) -> None:
        self.running = running
        self.gather = gather

    def __call__(self, probs: Tensor) -> Tensor:
        model_distribution = self.running.update(self.gather(probs))
        return distribution_alignment(probs, model_distribution)


@METHODS.register("fixmatch")
class FixMatch(CounterModule):
    """Semi-supervised counter training with FixMatch (Sohn et al., 2020) and its options.

    Args:
        model: the counter (e.g. a pretrained one: pretrain → FixMatch).
        optim: optimizer config.
        config: :class:`FixMatchConfig`.
        num_unlabeled: size of the unlabeled dataset (FlexMatch state); read from the datamodule's
            ``unlabeled_dataset()`` at setup when omitted.
        levels: ambiance levels for the level accuracy.

    Logged: ``train/sup``, ``train/unsup``, ``train/mix``, ``train/mask_rate`` and, for monitoring only,
    ``train/pseudo_acc`` (accuracy of the confident pseudo-labels against the hidden true counts) and
    ``train/pseudo_acc_all`` (of all weak-view predictions). Hidden labels never enter a loss.
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "weak"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = {"weak": "weak", "strong": "strong"}
    PIPELINE_STAGES: ClassVar[tuple[str, ...]] = ("teacher",)

    def __init__(
        self,
        model: CountModel,
        optim: OptimConfig | OptimizerFactory | None = None,
        config: FixMatchConfig = FixMatchConfig(),
        num_unlabeled: int | None = None,
        levels: AmbianceLevels | None = None,
    ) -> None:
        super().__init__(model, optim, levels)
        config.validate()
        self.config = config
        self.flexmatch: FlexMatchThresholds | None = None
        if config.flexmatch and num_unlabeled is not None:
            self._make_flexmatch(num_unlabeled)
        self.running_distribution: RunningDistribution | None = None
        self.probs_transform: AlignToUniform | None = None
        if config.distribution_alignment:
            self.running_distribution = RunningDistribution(model.num_classes, config.alignment_momentum)
            self.probs_transform = AlignToUniform(self.running_distribution, self._gather)
        self.mixing_objective = MIXING_LOSSES[config.mixing_loss] if config.lambda_mix > 0 else None
        self.save_hyperparameters({"fixmatch": asdict(config)})

    @classmethod
    def from_stage(cls, model: CountModel, stage: Any, levels: AmbianceLevels | None = None) -> FixMatch:
        return cls(model, stage.optim, stage.fixmatch, levels=levels)

    def _make_flexmatch(self, num_unlabeled: int) -> None:
        self.flexmatch = FlexMatchThresholds(
            num_unlabeled, self.model.num_classes, self.config.threshold, self.config.flexmatch_warmup
        )

    def setup(self, stage: str) -> None:
        if self.config.flexmatch and self.flexmatch is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "unlabeled_dataset"):
                raise ValueError("FixMatch(flexmatch=True) needs num_unlabeled or a SAMDataModule")
            self._make_flexmatch(len(datamodule.unlabeled_dataset()))

    def _gather(self, values: Tensor) -> Tensor:
        """Values of every device concatenated along the batch dimension (identity on one device)."""
        gathered = self.all_gather(values)
        return gathered.reshape(-1, *values.shape[1:])

    def class_thresholds(self) -> Tensor | None:
        """FlexMatch's current class-wise thresholds (``None``: the fixed threshold applies)."""
        return self.flexmatch.thresholds() if self.flexmatch is not None else None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x, y = labeled["x"], labeled["y"]
        weak, strong = unlabeled["weak"], unlabeled["strong"]
        n_labeled, n_unlabeled = x.shape[0], weak.shape[0]
        inputs = [x, weak, strong]
        if self.mixing_objective is not None:
            # Each weak clip is mixed with its neighbour in the batch (two different recordings).
            inputs.append(mix_waveforms(weak, weak.roll(1, dims=0), self.config.mixing_gain_db))
        # One forward pass over all views, so BatchNorm statistics cover labeled and unlabeled clips.
        outputs = self.model(torch.cat(inputs))
        head = self.model.head
        out_labeled, out_weak, out_strong, *out_mix = outputs.split([t.shape[0] for t in inputs])
        sup_loss = head.loss(out_labeled, y)
        log_probs_weak = head.log_probs(out_weak)
        unsup_loss, info = fixmatch_loss(
            log_probs_weak,
            head.log_probs(out_strong),
            threshold=self.config.threshold,
            temperature=self.config.temperature,
            class_thresholds=self.class_thresholds(),
            probs_transform=self.probs_transform,
        )
        if self.flexmatch is not None:
            self.flexmatch.update(self._gather(unlabeled["idx"]), self._gather(info["weak_probs"]))
        loss = sup_loss + self.config.lambda_u * unsup_loss
        logs = {"train/sup": sup_loss, "train/unsup": unsup_loss, "train/mask_rate": info["mask_rate"]}
        if self.mixing_objective is not None:
            mix_loss = self.mixing_objective(
                head.log_probs(out_mix[0]), log_probs_weak, log_probs_weak.roll(1, dims=0)
            )
            loss = loss + self.config.lambda_mix * mix_loss
            logs["train/mix"] = mix_loss
        logs.update(self._pseudo_label_accuracy(info, unlabeled.get("y_hidden")))
        logs["train/loss"] = loss
        self.log_dict(logs, batch_size=n_unlabeled)
        self.log("train/acc", (head.predict(out_labeled) == y).float().mean(), prog_bar=True,
                 batch_size=n_labeled)  # fmt: skip
        return loss

    @staticmethod
    def _pseudo_label_accuracy(info: dict[str, Tensor], hidden: Tensor | None) -> dict[str, Tensor]:
        """Monitoring only: how often the (confident) pseudo-labels equal the hidden true counts."""
        if hidden is None:
            return {}
        correct = (info["pseudo_labels"] == hidden).float()
        logs = {"train/pseudo_acc_all": correct.mean()}
        mask = info["mask"]
        if mask.sum() > 0:  # the accuracy of an empty selection is undefined, not 0
            logs["train/pseudo_acc"] = (correct * mask).sum() / mask.sum()
        return logs
