"""Self-supervised pretraining of the counter's frontend + backbone on unlabeled clips (SimCLR or BYOL).

Two strongly augmented views of every unlabeled clip go through ``model.embed``; an objective — a small
``nn.Module`` holding its own projection MLP (and, for BYOL, the predictor and the EMA target) — turns the
two embeddings into a loss. The objective's modules live under ``objective.``, not under ``model.``, so
``load_weights(student, "pretrain/last.ckpt")`` hands over exactly the frontend and backbone.

Validation: the untrained count head says nothing about the embedding, so validation is a weighted kNN
probe (Wu et al., CVPR 2018): the labeled budget (identity view) is embedded once per validation epoch and
every validation clip takes the similarity-weighted vote of its k nearest labeled neighbours. It needs
one forward pass over the ≤ 110 labeled clips and trains nothing (a linear probe would add an inner
optimisation loop with its own hyper-parameters), and it measures what fine-tuning will start from.
``val/*``, ``val_err`` and ``val_mae`` of this module are the kNN probe's metrics.

References:
    Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR), ICML 2020.
    Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning" (BYOL),
    NeurIPS 2020.
    Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
    CVPR 2018 (weighted kNN evaluation).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ersam_ssl import config as cfglib
from ersam_ssl.data.augment import ViewDataset
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.losses import byol_symmetric_loss, cosine_momentum, ema_update, nt_xent_loss
from ersam_ssl.models import CountModel
from ersam_ssl.ssl.base import CounterModule, OptimConfig, OptimizerFactory, labeled_batch
from ersam_ssl.ssl.methods import METHODS


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear → BatchNorm → ReLU → Linear, the projector/predictor of SimCLR and BYOL."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


@dataclass(frozen=True)
class SimCLRConfig:
    """SimCLR hyper-parameters (Chen et al., 2020): projector size and NT-Xent temperature."""

    hidden_dim: int = 256
    projection_dim: int = 64
    temperature: float = 0.1

    def validate(self) -> None:
        cfglib.check_at_least("simclr", self, 1, "hidden_dim", "projection_dim")
        cfglib.check_positive("simclr", self, "temperature")


class SimCLRObjective(nn.Module):
    """NT-Xent on projections of both views; negatives are the other clips of the (per-device) batch.

    Under DDP the negatives are those of each device's batch (no cross-device gather), so the effective
    number of negatives is set by the per-device batch size.
    """

    def __init__(self, embed_dim: int, config: SimCLRConfig = SimCLRConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.projector = projection_mlp(embed_dim, config.hidden_dim, config.projection_dim)

    def forward(self, model: CountModel, view1: Tensor, view2: Tensor) -> Tensor:
        # One pass over both views: BatchNorm sees both, as in SimCLR.
        z1, z2 = self.projector(model.embed(torch.cat([view1, view2]))).chunk(2)
        return nt_xent_loss(z1, z2, self.config.temperature)

    def after_optimizer_step(self, model: CountModel, step: int, total_steps: int) -> None:
        """SimCLR keeps no state between steps."""


@dataclass(frozen=True)
class BYOLConfig:
    """BYOL hyper-parameters (Grill et al., 2020): projector/predictor size and base target momentum."""

    hidden_dim: int = 256
    projection_dim: int = 64
    base_momentum: float = 0.99

    def validate(self) -> None:
        cfglib.check_at_least("byol", self, 1, "hidden_dim", "projection_dim")
        if not 0.0 <= self.base_momentum <= 1.0:
            raise cfglib.ConfigError(f"byol.base_momentum={self.base_momentum}: must be in [0, 1]")


class BYOLObjective(nn.Module):
    """BYOL: the online predictor regresses the EMA target's projection of the other view; no negatives.

    The target (a copy of frontend, backbone and projector) never receives gradients; after every optimizer
    step it moves towards the online network with the cosine momentum schedule of the paper.
    """

    def __init__(self, model: CountModel, config: BYOLConfig = BYOLConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.projector = projection_mlp(model.embed_dim, config.hidden_dim, config.projection_dim)
        self.predictor = projection_mlp(config.projection_dim, config.hidden_dim, config.projection_dim)
        self.target = copy.deepcopy(self._online(model))
        self.target.requires_grad_(False)

    def _online(self, model: CountModel) -> nn.ModuleDict:
        # Built on the fly (not registered) so the online weights are not stored twice in the state dict.
        return nn.ModuleDict(
            {"frontend": model.frontend, "backbone": model.backbone, "projector": self.projector}
        )

    def forward(self, model: CountModel, view1: Tensor, view2: Tensor) -> Tensor:
        views = torch.cat([view1, view2])
        p1, p2 = self.predictor(self.projector(model.embed(views))).chunk(2)
        with torch.no_grad():
            target = self.target
            z1, z2 = target["projector"](target["backbone"](target["frontend"](views))).chunk(2)
        return byol_symmetric_loss(p1, p2, z1, z2)

    def after_optimizer_step(self, model: CountModel, step: int, total_steps: int) -> None:
        momentum = cosine_momentum(step, max(1, total_steps), self.config.base_momentum)
        ema_update(self.target, self._online(model), momentum)


@dataclass(frozen=True)
class KNNProbe:
    """Similarity-weighted kNN classifier over embeddings (Wu et al., CVPR 2018).

    Each query takes the ``k`` most cosine-similar references; neighbour ``j`` votes for its label with
    weight ``exp(sim_j / temperature)``. Returns log-probabilities over the classes (votes normalised).
    """

    k: int = 5
    temperature: float = 0.07

    def __call__(
        self, query: Tensor, reference: Tensor, reference_labels: Tensor, num_classes: int
    ) -> Tensor:
        similarity = F.normalize(query, dim=1) @ F.normalize(reference, dim=1).T
        top_sim, top_idx = similarity.topk(min(self.k, reference.shape[0]), dim=1)
        votes = torch.zeros(query.shape[0], num_classes, device=query.device, dtype=query.dtype)
        votes.scatter_add_(1, reference_labels[top_idx], torch.exp(top_sim / self.temperature))
        probs = votes / votes.sum(dim=1, keepdim=True)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


Objective = SimCLRObjective | BYOLObjective


@METHODS.register("contrastive")
class ContrastivePretrain(CounterModule):
    """Contrastive (SimCLR) or bootstrap (BYOL) pretraining of ``model.frontend`` + ``model.backbone``.

    Build it with :meth:`simclr` or :meth:`byol` (registered as ``simclr`` / ``byol``:
    :class:`SimCLRPretrain`, :class:`BYOLPretrain`), or inject another objective. Trains on unlabeled
    clips only (views ``v1``, ``v2``, both strong); validates with a kNN probe on the labeled budget (see
    the module docstring).

    Args:
        model: the counter whose frontend and backbone are pretrained (the head is left untouched).
        objective: a :class:`SimCLRObjective` or :class:`BYOLObjective` (their modules are not under
            ``model.``).
        optim: optimizer config.
        probe: the kNN probe (``None``: skip validation).
        probe_reference: labeled batches ``{"x", "y"}`` the probe votes with; by default the datamodule's
            labeled budget with the identity view.
        levels: ambiance levels for the level accuracy.
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = None
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = {"v1": "strong", "v2": "strong"}

    def __init__(
        self,
        model: CountModel,
        objective: Objective,
        optim: OptimConfig | OptimizerFactory | None = None,
        probe: KNNProbe | None = KNNProbe(),
        probe_reference: Iterable | None = None,
        levels: AmbianceLevels | None = None,
    ) -> None:
        super().__init__(model, optim, levels)
        self.objective = objective
        self.probe = probe
        self.probe_reference = probe_reference
        self._reference: tuple[Tensor, Tensor] | None = None
        self.save_hyperparameters(
            {
                "objective": type(objective).__name__,
                "objective_config": asdict(objective.config),
                "probe": asdict(probe) if probe else None,
            }
        )

    @classmethod
    def simclr(
        cls, model: CountModel, config: SimCLRConfig = SimCLRConfig(), optim: OptimConfig | None = None, **kw
    ) -> ContrastivePretrain:
        """SimCLR pretraining (NT-Xent with a projection MLP on ``model.embed``)."""
        return SimCLRPretrain(model, config, optim, **kw)

    @classmethod
    def byol(
        cls, model: CountModel, config: BYOLConfig = BYOLConfig(), optim: OptimConfig | None = None, **kw
    ) -> ContrastivePretrain:
        """BYOL pretraining (predictor + EMA target, no negatives)."""
        return BYOLPretrain(model, config, optim, **kw)

    def trainable_modules(self) -> Iterable[nn.Parameter]:
        # The count head gets no gradient here; the BYOL target is excluded by requires_grad=False.
        return chain(self.model.frontend.parameters(), self.model.backbone.parameters(),
                     self.objective.parameters())  # fmt: skip

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if "unlabeled" in batch:
            batch = batch["unlabeled"]
        loss = self.objective(self.model, batch["v1"], batch["v2"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["v1"].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        total = (
            self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        )
        self.objective.after_optimizer_step(self.model, self.global_step, int(total))

    # -- the head is not trained here ----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            # DDP refuses parameters that require a gradient but never get one; the head gets none here.
            self._head_trainable = [p for p in self.model.head.parameters() if p.requires_grad]
            self.model.head.requires_grad_(False)
        self._setup_probe()

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            for p in getattr(self, "_head_trainable", []):
                p.requires_grad_(True)

    # -- kNN probe validation ------------------------------------------------------------------------
    def _setup_probe(self) -> None:
        if self.probe is None or self.probe_reference is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        engine = getattr(datamodule, "engine", None)
        if engine is None:
            return
        indices = getattr(datamodule, "labeled_indices", None)
        indices = engine.budget[0] if indices is None else indices
        if len(indices) == 0:
            return
        self.probe_reference = DataLoader(
            ViewDataset(engine.pool, {"x": "identity"}, indices=indices),
            batch_size=getattr(datamodule, "batch_size", 32) * 2,
        )

    def on_validation_epoch_start(self) -> None:
        self._reference = None
        if self.probe is None or self.probe_reference is None:
            return
        embeddings, labels = [], []
        with torch.no_grad():
            for batch in self.probe_reference:
                x, y = labeled_batch(batch)
                embeddings.append(self.model.embed(x.to(self.device)))
                labels.append(y.to(self.device))
        self._reference = torch.cat(embeddings), torch.cat(labels).long()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self._reference is None:
            return
        x, y = labeled_batch(batch)
        log_probs = self.probe(self.model.embed(x), *self._reference, self.model.num_classes)
        self.val_metrics.update(log_probs.argmax(dim=1), log_probs, y)

    def on_validation_epoch_end(self) -> None:
        if self._reference is not None:
            super().on_validation_epoch_end()


@METHODS.register("simclr")
class SimCLRPretrain(ContrastivePretrain):
    """:class:`ContrastivePretrain` with the SimCLR objective (same as :meth:`ContrastivePretrain.simclr`)."""

    PIPELINE_STAGES: ClassVar[tuple[str, ...]] = ("pretrain",)

    def __init__(
        self, model: CountModel, config: SimCLRConfig = SimCLRConfig(), optim: OptimConfig | None = None, **kw
    ) -> None:
        super().__init__(model, SimCLRObjective(model.embed_dim, config), optim, **kw)

    @classmethod
    def from_stage(
        cls, model: CountModel, stage: Any, levels: AmbianceLevels | None = None
    ) -> SimCLRPretrain:
        return cls(model, stage.simclr, stage.optim, levels=levels)


@METHODS.register("byol")
class BYOLPretrain(ContrastivePretrain):
    """:class:`ContrastivePretrain` with the BYOL objective (same as :meth:`ContrastivePretrain.byol`)."""

    PIPELINE_STAGES: ClassVar[tuple[str, ...]] = ("pretrain",)

    def __init__(
        self, model: CountModel, config: BYOLConfig = BYOLConfig(), optim: OptimConfig | None = None, **kw
    ) -> None:
        super().__init__(model, BYOLObjective(model, config), optim, **kw)

    @classmethod
    def from_stage(cls, model: CountModel, stage: Any, levels: AmbianceLevels | None = None) -> BYOLPretrain:
        return cls(model, stage.byol, stage.optim, levels=levels)
