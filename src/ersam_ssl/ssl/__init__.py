"""Training methods as thin LightningModules over the pure losses of :mod:`ersam_ssl.losses`.

Every method subclasses :class:`~ersam_ssl.ssl.base.CounterModule` (shared evaluation, optimizer,
checkpoint metadata), takes an injected :class:`~ersam_ssl.models.CountModel` and ``OptimConfig`` and a
frozen config dataclass of its own, and is registered in :data:`METHODS`:

- ``supervised``: :class:`SupervisedCounter` (labeled clips only).
- ``mixture``: :class:`MixtureSupervision` — supervised on streamed mixtures with exact counts.
- ``replay``: :class:`ReplayAdapt` — few target labels plus replay of the mixture stream.
- ``stream-distill``: :class:`StreamDistill` — distillation from a frozen teacher on the mixture stream.
- ``contrastive``: :class:`ContrastivePretrain` — SimCLR or BYOL pretraining of frontend + backbone;
  ``simclr`` / ``byol``: :class:`SimCLRPretrain` / :class:`BYOLPretrain`, the same with that objective.
- ``finetune``: :class:`Finetune` — supervised training from a pretrained encoder.
- ``fixmatch``: :class:`FixMatch` — FixMatch / FlexMatch / distribution alignment / count-aware mixing.
- ``distill``: :class:`Distill` — ERSAM's uncertainty-weighted distillation from a frozen teacher.

Stages hand over weights with :func:`ersam_ssl.checkpoint.load_weights` / ``load_model``::

    pre = ContrastivePretrain.simclr(build_model(arch));  fit(pre, datamodule_for(pre, engine), cfg, "pre")
    ft = Finetune.from_pretrained(build_model(arch), "pre/checkpoints/last.ckpt")
    kd = Distill.from_teacher_file(build_model(small_arch), "ft/checkpoints/last.ckpt")
"""

from ersam_ssl.ssl.base import CounterModule, OptimConfig, SupervisedCounter, labeled_batch
from ersam_ssl.ssl.contrastive import (
    BYOLConfig,
    BYOLObjective,
    BYOLPretrain,
    ContrastivePretrain,
    KNNProbe,
    SimCLRConfig,
    SimCLRObjective,
    SimCLRPretrain,
)
from ersam_ssl.ssl.distill import UNCERTAINTY_POLICIES, Distill, DistillConfig
from ersam_ssl.ssl.finetune import Finetune, FinetuneConfig
from ersam_ssl.ssl.fixmatch import AlignToUniform, FixMatch, FixMatchConfig
from ersam_ssl.ssl.methods import METHODS, datamodule_for, views_of
from ersam_ssl.ssl.mixture import MixtureSupervision, ReplayAdapt, StreamDistill

__all__ = [
    "METHODS",
    "UNCERTAINTY_POLICIES",
    "AlignToUniform",
    "BYOLConfig",
    "BYOLObjective",
    "BYOLPretrain",
    "ContrastivePretrain",
    "CounterModule",
    "Distill",
    "DistillConfig",
    "Finetune",
    "FinetuneConfig",
    "FixMatch",
    "FixMatchConfig",
    "KNNProbe",
    "MixtureSupervision",
    "StreamDistill",
    "OptimConfig",
    "ReplayAdapt",
    "SimCLRConfig",
    "SimCLRObjective",
    "SimCLRPretrain",
    "SupervisedCounter",
    "datamodule_for",
    "labeled_batch",
    "views_of",
]
