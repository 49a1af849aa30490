"""Supervised fine-tuning of a counter whose frontend + backbone come from a pretraining stage.

``Finetune.from_pretrained(model, "pretrain/checkpoints/last.ckpt")`` copies the pretrained frontend and
backbone into ``model`` (:func:`ersam_ssl.checkpoint.load_weights`) and trains the whole counter on the
labeled clips, optionally

* with the encoder frozen (no gradient, BatchNorm statistics kept) for the first ``freeze_encoder_steps``
  steps, so the fresh head first fits the pretrained features (linear probing then fine-tuning; Kumar et
  al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022), and
* with a smaller learning rate for the encoder than for the head (``encoder_lr_mult``), the usual way to
  keep pretrained features from being overwritten by a few labeled clips (SimCLR's semi-supervised
  protocol fine-tunes the whole network; Chen et al., ICML 2020).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ersam_ssl.checkpoint import load_weights
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.models import CountModel
from ersam_ssl.ssl.base import CounterModule, OptimConfig, OptimizerFactory, labeled_batch
from ersam_ssl.ssl.methods import METHODS

ENCODER_PARTS = ("frontend", "backbone")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning schedule.

    Attributes:
        freeze_encoder_steps: optimizer steps during which frontend + backbone are frozen (head only).
            Under DDP the frozen encoder gets no gradient in those steps, so use
            ``strategy="ddp_find_unused_parameters_true"`` when this is > 0.
        encoder_lr_mult: learning rate of frontend + backbone relative to the head's (1 = same).
    """

    freeze_encoder_steps: int = 0
    encoder_lr_mult: float = 1.0

    def validate(self) -> None:
        if self.freeze_encoder_steps < 0 or self.encoder_lr_mult < 0:
            raise ValueError("freeze_encoder_steps and encoder_lr_mult must be non-negative")


@METHODS.register("finetune")
class Finetune(CounterModule):
    """Supervised training of a (pretrained) counter; see the module docstring.

    Args:
        model: the counter, usually already holding pretrained frontend/backbone weights.
        optim: optimizer config (the head's learning rate).
        config: :class:`FinetuneConfig`.
        pretrained_from: where the encoder weights came from (stored in the hyper-parameters).
        levels: ambiance levels for the level accuracy.
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "weak"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = None

    def __init__(
        self,
        model: CountModel,
        optim: OptimConfig | OptimizerFactory | None = None,
        config: FinetuneConfig = FinetuneConfig(),
        pretrained_from: str | None = None,
        levels: AmbianceLevels | None = None,
    ) -> None:
        super().__init__(model, optim, levels)
        config.validate()
        self.config = config
        self.save_hyperparameters({"finetune": asdict(config), "pretrained_from": pretrained_from})

    @classmethod
    def from_pretrained(
        cls,
        model: CountModel,
        checkpoint: str | Path | dict,
        optim: OptimConfig | OptimizerFactory | None = None,
        config: FinetuneConfig = FinetuneConfig(),
        parts: tuple[str, ...] = ENCODER_PARTS,
        **kwargs: Any,
    ) -> Finetune:
        """Load ``parts`` of a pretraining checkpoint (or model file / state dict) into ``model`` and wrap it.

        Example:
            >>> module = Finetune.from_pretrained(build_model(arch), "runs/x/pretrain/checkpoints/last.ckpt")
        """
        load_weights(model, checkpoint, parts=parts)
        source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else None
        return cls(model, optim, config, pretrained_from=source, **kwargs)

    def encoder_frozen(self) -> bool:
        """Whether this step trains the head only."""
        return self.global_step < self.config.freeze_encoder_steps

    def configure_optimizers(self):
        conf = super().configure_optimizers()
        if self.config.encoder_lr_mult != 1.0:
            _scale_encoder_lr(conf, self.model, self.config.encoder_lr_mult)
        return conf

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = labeled_batch(batch)
        frozen = self.encoder_frozen()
        for part in ENCODER_PARTS:
            # Frozen encoder: BatchNorm keeps its pretrained statistics as well as its weights.
            getattr(self.model, part).train(not frozen)
        with torch.set_grad_enabled(not frozen):
            embedding = self.model.embed(x)
        out = self.model.head(embedding)
        loss = self.model.head.loss(out, y)
        acc = (self.model.head.predict(out) == y).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, batch_size=y.shape[0])
        self.log("train/encoder_frozen", float(frozen), batch_size=y.shape[0])
        return loss


def _scale_encoder_lr(conf: dict[str, Any], model: CountModel, mult: float) -> None:
    """Move frontend/backbone parameters into their own optimizer group with ``mult`` × the learning rate.

    ``OptimConfig.build`` makes a single parameter group and its scheduler; the group is split here and
    the (stateless) schedule re-attached to both groups, so warm-up and cosine decay apply to each.
    """
    optimizer: torch.optim.Optimizer = conf["optimizer"]
    scheduler = conf["lr_scheduler"]["scheduler"]
    if len(optimizer.param_groups) != 1 or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise TypeError("encoder_lr_mult needs a single-group optimizer with a LambdaLR schedule")
    encoder_ids = {id(p) for part in ENCODER_PARTS for p in getattr(model, part).parameters()}
    group = optimizer.param_groups[0]
    params = group["params"]
    group["params"] = [p for p in params if id(p) not in encoder_ids]
    encoder_group = {k: v for k, v in group.items() if k != "params"}
    encoder_group["params"] = [p for p in params if id(p) in encoder_ids]
    encoder_group["initial_lr"] = group["initial_lr"] * mult
    encoder_group["lr"] = encoder_group["initial_lr"]
    optimizer.add_param_group(encoder_group)
    lr_lambda = scheduler.lr_lambdas[0]
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"]
    conf["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(optimizer, [lr_lambda, lr_lambda])
