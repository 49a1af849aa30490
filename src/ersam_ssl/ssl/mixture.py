"""Mixture supervision: a counter trained on streamed, never-repeating mixtures with their exact counts.

A generated mixture carries its count for free, so the source corpus is an unlimited labeled set. Trained
across randomized acoustic domains and conversational mixtures (:mod:`ersam_ssl.data.stream`), this is the
fully supervised reference every few-label / self-supervised result is compared against (its ceiling),
and the pretraining that the few-label stages start from. CountNet (Stöter et al., TASLP 2019) trained
its CRNN the same way on LibriCount's mixtures.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.models import CountModel
from ersam_ssl.ssl.base import SupervisedCounter
from ersam_ssl.ssl.distill import Distill
from ersam_ssl.ssl.methods import METHODS
from ersam_ssl.ssl.specaugment import SpecAugment, SpecAugmentConfig


@METHODS.register("mixture")
class MixtureSupervision(SupervisedCounter):
    """:class:`SupervisedCounter` whose labeled data is the mixture stream (``DATA = "stream"``).

    No waveform view: the stream's domain randomization (noise, reverberation, devices, colouration,
    level, conversation) is the augmentation, and every clip is new. ``spec_augment`` masks bands and
    spans of the frontend's output while training (:class:`SpecAugment`; ``None`` or a config that is not
    ``enabled`` turns it off).
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "identity"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = None
    DATA: ClassVar[str] = "stream"
    PIPELINE_STAGES: ClassVar[tuple[str, ...]] = ("pretrain",)

    def __init__(self, *args: Any, spec_augment: SpecAugmentConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        on = spec_augment is not None and spec_augment.enabled
        self.spec_augment = SpecAugment(spec_augment) if on else None

    @classmethod
    def from_stage(
        cls, model: CountModel, stage: Any, levels: AmbianceLevels | None = None
    ) -> MixtureSupervision:
        return cls(model, stage.optim, levels=levels, spec_augment=stage.spec_augment)

    def train_forward(self, x: Tensor) -> Tensor:
        if self.spec_augment is None:
            return super().train_forward(x)
        model = self.model
        return model.head(model.backbone(self.spec_augment(model.frontend(x))))


@METHODS.register("replay")
class ReplayAdapt(SupervisedCounter):
    """Few-label adaptation that keeps rehearsing the source: each step, the count loss on a batch of the
    few labeled target clips (weak view) plus ``replay_weight`` times the loss on a batch of fresh
    randomized-domain mixtures (``DATA = "stream+target"``).

    Fine-tuning a mixture-supervised counter on the clinical labels alone makes it forget every other
    domain (``benchmarks/accuracy.py --adapt``); replaying the stream is the classic remedy against such
    forgetting (experience replay / rehearsal, e.g. Rolnick et al., NeurIPS 2019). Both batches go through
    one forward pass, so BatchNorm statistics cover both domains.
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "weak"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = None
    DATA: ClassVar[str] = "stream+target"

    def __init__(self, *args: Any, replay_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if replay_weight < 0:
            raise ValueError("replay_weight must be >= 0")
        self.replay_weight = replay_weight

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        (xs, ys), target = batch["stream"], batch["target"]
        xt, yt = target["x"], target["y"]
        out = self.model(torch.cat([xt, xs]))
        head = self.model.head
        target_loss = head.loss(out[: yt.shape[0]], yt)
        replay_loss = head.loss(out[yt.shape[0] :], ys)
        loss = target_loss + self.replay_weight * replay_loss
        self.log_dict({"train/loss": loss, "train/target_loss": target_loss, "train/replay_loss": replay_loss},
                      prog_bar=True, batch_size=yt.shape[0] + ys.shape[0])  # fmt: skip
        return loss


@METHODS.register("stream-distill")
class StreamDistill(Distill):
    """ERSAM's uncertainty-weighted distillation on the mixture stream (``DATA = "stream"``).

    Every streamed clip has its exact count *and* the frozen teacher's distribution, so the student
    learns ``ce_weight · loss(student, count) + kd_weight · KD(student, teacher)`` on fresh randomized-domain
    mixtures, measured by ``benchmarks/accuracy.py --distill-from``. From the largest member into the
    default one it did not pay on 2 CPU cores: the teacher's forward pass halves the steps per minute, and
    3000 distilled steps (21.9 min) ended at LibriSpeech clean/clinical/conversational MAE 1.43/1.30/1.67
    against 0.94/1.20/1.45 for 6000 plain mixture-supervision steps (20.9 min).
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "identity"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = None
    DATA: ClassVar[str] = "stream"
