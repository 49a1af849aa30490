"""Weight-sharing supernet over the SAM space and its sandwich-rule training.

:class:`ElasticSAM` holds the weights of the largest member of a :class:`~ersam_ssl.models.SAMSpace` (plus
both pooling heads) and runs any member's forward pass on slices of them, once-for-all style (Cai et al.,
"Once-for-All: Train One Network and Specialize it for Efficient Deployment", ICLR 2020): the centre
``k`` taps of every depthwise kernel, the first channels of every expanded or width-scaled dimension
(including BatchNorm statistics, squeeze-excitation, the pooling head and the classifier input), the first
``depth`` blocks of each stage and, per gate, the first GRU units. These are exactly the slicing rules of
:func:`ersam_ssl.models.subnet_state_dict`, so :meth:`ElasticSAM.extract` returns a stand-alone
:func:`~ersam_ssl.models.build_model` counter that computes what the supernet computes in that mode.

:class:`SupernetModule` trains the supernet with the sandwich rule and in-place distillation of BigNAS
(Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage Models", ECCV 2020): every
step trains the largest, the smallest and ``N`` random members; the largest learns from the labels (and,
optionally, from an external teacher with uncertainty-weighted distillation as in ERSAM, Li et al.,
ICASSP 2023: the policies of :mod:`ersam_ssl.ssl.distill`, configured by its ``DistillConfig``), the
others from the labels and from the largest member's predictions on labeled and unlabeled clips. Before a
member is evaluated, :func:`recalibrate_bn` re-estimates its BatchNorm statistics on a few training
batches (OFA), since the shared running statistics mix all members.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ersam_ssl.checkpoint import load_blob, load_weights, save_model, strip_prefix
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.losses import kd_loss
from ersam_ssl.models import CountModel, SAMSpace, build_model, subnet_state_dict
from ersam_ssl.models.blocks import ConvBN1d, SAMBackbone, Stem, se_squeeze
from ersam_ssl.models.heads import build_head
from ersam_ssl.models.space import as_space, mbconv_stages, plan_blocks, sam_frontend, scale_channels
from ersam_ssl.ssl.base import CounterModule, OptimConfig, OptimizerFactory
from ersam_ssl.ssl.distill import DistillConfig, check_teacher, distill_from_teacher

SUPERNET_FORMAT = "ersam_ssl.supernet"


# -- elastic functional ops ------------------------------------------------------------------------


def elastic_batch_norm(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """BatchNorm over the first ``x.shape[1]`` channels of ``bn``.

    In training mode the running statistics of those channels are updated in place (the slices are views
    of the shared buffers), with ``bn.momentum`` or, when it is ``None``, a cumulative average, exactly as
    ``nn.BatchNorm1d`` does.
    """
    channels = x.shape[1]
    momentum = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        None if bn.running_mean is None else bn.running_mean[:channels],
        None if bn.running_var is None else bn.running_var[:channels],
        None if bn.weight is None else bn.weight[:channels],
        None if bn.bias is None else bn.bias[:channels],
        use_batch_stats,
        momentum,
        bn.eps,
    )


def elastic_conv_bn(
    layer: ConvBN1d,
    x: Tensor,
    out_channels: int | None = None,
    kernel: int | None = None,
    stride: int = 1,
    depthwise: bool = False,
) -> Tensor:
    """A :class:`ConvBN1d` on its first channels: ``x.shape[1]`` inputs, ``out_channels`` outputs (the same
    number for a depthwise conv) and the centre ``kernel`` taps of its kernel."""
    weight = layer.conv.weight  # [out, in / groups, taps]
    taps = weight.shape[-1] if kernel is None else kernel
    crop = (weight.shape[-1] - taps) // 2
    in_channels = x.shape[1]
    if depthwise:
        weight = weight[:in_channels, :, crop : crop + taps]
        groups = in_channels
    else:
        weight = weight[:out_channels, :in_channels, crop : crop + taps]
        groups = 1
    y = F.conv1d(x, weight, None, stride, taps // 2, 1, groups)
    return layer.act(elastic_batch_norm(layer.bn, y))


def _gru_gates(tensor: Tensor, units: int, columns: int | None = None) -> Tensor:
    """The first ``units`` rows of each of the three stacked GRU gates (and the first ``columns``)."""
    hidden = tensor.shape[0] // 3
    gates = [tensor[g * hidden : g * hidden + units] for g in range(3)]
    if columns is not None:
        gates = [g[:, :columns] for g in gates]
    return torch.cat(gates, dim=0)


class ElasticPool(nn.Module):
    """Both pooling heads at full width, with the attribute names of ``GRUPool`` / ``AttentionPool``, so the
    state-dict keys (``backbone.pool.gru.*``, ``backbone.pool.proj.*``, ``backbone.pool.score.*``) are those
    :func:`~ersam_ssl.models.subnet_state_dict` expects."""

    def __init__(self, in_ch: int, dim: int, heads: Sequence[str], activation: str) -> None:
        super().__init__()
        if "gru" in heads:
            self.gru = nn.GRU(in_ch, dim, batch_first=True)
        if "attention" in heads:
            self.proj = ConvBN1d(in_ch, dim, activation=activation)
            self.score = nn.Conv1d(dim, 1, 1)


# -- the supernet ----------------------------------------------------------------------------------


class ElasticSAM(nn.Module):
    """Once-for-all supernet of a :class:`~ersam_ssl.models.SAMSpace`; ``forward(wave, arch)`` runs a member.

    Args:
        space: the search space (default ``SAMSpace()``).
        num_classes, head, n_mels, head_kwargs, level_norm: as for :func:`~ersam_ssl.models.build_model`.

    The modules mirror the largest :class:`~ersam_ssl.models.CountModel` of the space (same state-dict
    keys), plus the weights of every pooling head. ``active_arch`` is the member that ``forward`` runs when
    no ``arch`` is given (the largest by default), so the supernet can stand in for a counter, e.g. in the
    validation loop of :class:`SupernetModule`. Like a counter it has ``frontend``, ``backbone``, ``head``,
    ``embed_dim``, ``num_classes`` and ``config()``.
    """

    def __init__(
        self,
        space: SAMSpace | dict | None = None,
        num_classes: int = 11,
        head: str = "classify",
        n_mels: int = 64,
        head_kwargs: dict | None = None,
        level_norm: str = "clip",
    ) -> None:
        super().__init__()
        self.space = as_space(space)
        self.level_norm = level_norm
        self.head_name = head
        self.n_mels = n_mels
        self.head_kwargs = dict(head_kwargs or {})
        largest = self.space.largest()
        stem_ch, blocks, pool_dim = plan_blocks(largest, self.space)
        act = self.space.activation
        stages = mbconv_stages(blocks, self.space)
        self.frontend = sam_frontend(n_mels, level_norm)
        self.backbone = SAMBackbone(
            Stem(n_mels, stem_ch, act),
            stages,
            ElasticPool(blocks[-1].out_ch, pool_dim, self.space.pool_heads, act),
        )
        self.head = build_head(head, pool_dim, num_classes, **self.head_kwargs)
        self.embed_dim = pool_dim
        self.num_classes = self.head.num_classes
        self.active_arch: dict = largest

    # -- description ---------------------------------------------------------------------------------

    def config(self) -> dict:
        """JSON-serialisable constructor arguments (``ElasticSAM.from_config`` inverts it)."""
        return {
            "name": "sam_supernet",
            "kwargs": {
                "space": self.space.to_dict(),
                "num_classes": self.num_classes,
                "head": self.head_name,
                "n_mels": self.n_mels,
                "head_kwargs": dict(self.head_kwargs),
                "level_norm": self.level_norm,
            },
        }

    @classmethod
    def from_config(cls, config: dict) -> ElasticSAM:
        if config.get("name") != "sam_supernet":
            raise ValueError(f"not a supernet config: {config.get('name')!r}")
        return cls(**{"level_norm": "none", **config["kwargs"]})  # files from before level_norm: "none"

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~ersam_ssl.models.build_model` that every member shares."""
        return {
            "num_classes": self.num_classes,
            "head": self.head_name,
            "n_mels": self.n_mels,
            "space": self.space,
            "head_kwargs": self.head_kwargs,
            "level_norm": self.level_norm,
        }

    # -- elastic pieces (also used by the NNI views of ersam_ssl.nas.nni_space) -----------------------

    def stem(self, features: Tensor, channels: int) -> Tensor:
        stem = self.backbone.stem
        return elastic_conv_bn(stem.conv, stem.norm(features), channels, stride=2)

    def _stride(self, stage: int, index: int) -> int:
        return self.space.stage_strides[stage] if index == 0 else 1

    def block_hidden(self, x: Tensor, stage: int, index: int, kernel: int, expand: int) -> Tensor:
        """Expand (skipped for ``expand == 1``) and depthwise conv of block ``(stage, index)``."""
        block = self.backbone.stages[stage][index]
        if expand != 1:
            if block.expand is None:
                raise ValueError(f"expansion {expand} > 1 but the largest block has no expand conv")
            x = elastic_conv_bn(block.expand, x, x.shape[1] * expand)
        return elastic_conv_bn(block.dw, x, kernel=kernel, stride=self._stride(stage, index), depthwise=True)

    def block_se(self, hidden: Tensor, stage: int, index: int) -> Tensor:
        """Squeeze-excitation of block ``(stage, index)`` on its first ``hidden.shape[1]`` channels."""
        se = self.backbone.stages[stage][index].se
        if se is None:
            raise ValueError("this space has no squeeze-excitation")
        channels = hidden.shape[1]
        squeeze = se_squeeze(channels, self.space.se_ratio)
        pooled = hidden.mean(dim=-1, keepdim=True)
        z = torch.relu(F.conv1d(pooled, se.reduce.weight[:squeeze, :channels], se.reduce.bias[:squeeze]))
        gate = torch.sigmoid(F.conv1d(z, se.expand.weight[:channels, :squeeze], se.expand.bias[:channels]))
        return hidden * gate

    def block_output(self, hidden: Tensor, x: Tensor, stage: int, index: int, out_channels: int) -> Tensor:
        """Linear projection of block ``(stage, index)`` plus the residual when shapes match."""
        block = self.backbone.stages[stage][index]
        y = elastic_conv_bn(block.project, hidden, out_channels)
        residual = self._stride(stage, index) == 1 and x.shape[1] == out_channels
        return y + x if residual else y

    def block(
        self, x: Tensor, stage: int, index: int, out_channels: int, kernel: int, expand: int, se: bool
    ) -> Tensor:
        hidden = self.block_hidden(x, stage, index, kernel, expand)
        if se:
            hidden = self.block_se(hidden, stage, index)
        return self.block_output(hidden, x, stage, index, out_channels)

    def pool(self, x: Tensor, kind: str, dim: int) -> Tensor:
        """Pooling head ``kind`` with ``dim`` units over ``x [B, C, T]`` → ``[B, dim]``."""
        pool = self.backbone.pool
        if kind == "gru":
            gru = pool.gru
            weights = [
                _gru_gates(gru.weight_ih_l0, dim, x.shape[1]),
                _gru_gates(gru.weight_hh_l0, dim, dim),
                _gru_gates(gru.bias_ih_l0, dim),
                _gru_gates(gru.bias_hh_l0, dim),
            ]
            seq = x.transpose(1, 2)
            h0 = seq.new_zeros(1, seq.shape[0], dim)
            # nn.GRU's own kernel on the sliced weights, so a member matches a stand-alone nn.GRU exactly.
            out, _ = torch._VF.gru(seq, h0, weights, True, 1, 0.0, self.training, False, True)
            return out.mean(dim=1)
        if kind == "attention":
            values = elastic_conv_bn(pool.proj, x, dim)
            scores = F.conv1d(values, pool.score.weight[:, :dim], pool.score.bias)
            return (values * torch.softmax(scores, dim=-1)).sum(dim=-1)
        raise ValueError(f"unknown pooling head {kind!r}")

    def classify(self, embedding: Tensor) -> Tensor:
        """Count head on the first ``embedding.shape[1]`` embedding units."""
        dim = embedding.shape[1]
        if dim == self.embed_dim:
            return self.head(embedding)
        params = {
            name: p[:, :dim] if p.dim() == 2 and p.shape[1] == self.embed_dim else p
            for name, p in self.head.named_parameters()
        }
        return functional_call(self.head, params, (embedding,))

    # -- whole members ---------------------------------------------------------------------------------

    def embed_features(self, features: Tensor, arch: dict | None = None) -> Tensor:
        """Embedding of member ``arch`` (default ``active_arch``) from log-mel features."""
        arch = self.active_arch if arch is None else arch
        self.space.validate(arch)
        stem_ch, blocks, pool_dim = plan_blocks(arch, self.space)
        x = self.stem(features, stem_ch)
        for b in blocks:
            x = self.block(x, b.stage, b.index, b.out_ch, b.kernel, b.expand, b.se)
        return self.pool(x, arch["head"], pool_dim)

    def forward_features(self, features: Tensor, arch: dict | None = None) -> Tensor:
        return self.classify(self.embed_features(features, arch))

    def embed(self, wave: Tensor, arch: dict | None = None) -> Tensor:
        return self.embed_features(self.frontend(wave), arch)

    def forward(self, wave: Tensor, arch: dict | None = None) -> Tensor:
        """Raw head output of member ``arch`` (default ``active_arch``) for waveforms ``[B, T]``."""
        return self.forward_features(self.frontend(wave), arch)

    def extract(self, arch: dict) -> CountModel:
        """The stand-alone counter ``build_model(arch, ...)`` with the supernet's weights (eval mode)."""
        kwargs = self.model_kwargs()
        model = build_model(arch, **kwargs)
        state = subnet_state_dict(
            self.state_dict(),
            arch,
            self.space,
            num_classes=kwargs["num_classes"],
            head=kwargs["head"],
            n_mels=kwargs["n_mels"],
            head_kwargs=kwargs["head_kwargs"],
        )
        model.load_state_dict(state)
        return model.eval()

    def channels(self, width_mult: float) -> tuple[int, list[int], int]:
        """``(stem channels, stage output channels, pooling width)`` at ``width_mult``."""
        div = self.space.channel_divisor
        return (
            scale_channels(self.space.stem_width, width_mult, div),
            [scale_channels(w, width_mult, div) for w in self.space.stage_widths],
            scale_channels(self.space.pool_width, width_mult, div),
        )

    # -- weights in and out --------------------------------------------------------------------------

    def load_largest(self, source: str | Path | dict | nn.Module) -> str:
        """Initialise from a trained largest-arch counter (a model file, checkpoint, state dict or module).

        The source may use either pooling head; the weights of the other head keep their initialisation
        (supernet training trains them). Returns the pooling head that was loaded.
        """
        largest = self.space.largest()
        heads = [largest["head"], *[h for h in self.space.pool_heads if h != largest["head"]]]
        errors = []
        for pool_head in heads:
            model = build_model({**largest, "head": pool_head}, **self.model_kwargs())
            try:
                load_weights(model, source, parts=("",))
            except (ValueError, KeyError) as e:
                errors.append(f"{pool_head}: {e}")
                continue
            missing, unexpected = self.load_state_dict(model.state_dict(), strict=False)
            if unexpected or any(not k.startswith("backbone.pool.") for k in missing):
                raise ValueError(f"supernet and largest model disagree: {unexpected=} {missing=}")
            return pool_head
        raise ValueError("source is not a largest-arch counter of this space: " + "; ".join(errors))

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write ``{"format", "version", "config", "state_dict", "extra"}`` atomically
        (:func:`~ersam_ssl.checkpoint.save_model` with the supernet's format)."""
        return save_model(self, path, extra, file_format=SUPERNET_FORMAT)

    @classmethod
    def load(cls, path: str | Path) -> ElasticSAM:
        """Rebuild a supernet from :meth:`save`'s file or a :class:`SupernetModule` checkpoint (eval mode)."""
        blob = load_blob(path)  # weights only; a file of another kind is a one-line ValueError
        if blob.get("format") == SUPERNET_FORMAT:
            net = cls.from_config(blob["config"])
            net.load_state_dict(blob["state_dict"])
        elif "ersam_supernet_config" in blob:
            net = cls.from_config(blob["ersam_supernet_config"])
            net.load_state_dict(strip_prefix(blob["state_dict"], "model."))
        else:
            raise ValueError(f"{path}: neither a supernet file nor a SupernetModule checkpoint")
        return net.eval()


# -- BatchNorm recalibration -----------------------------------------------------------------------


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any] | None = None
) -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches`` (OFA).

    Args:
        model: the network (its train/eval mode is restored afterwards).
        batches: inputs for ``forward`` (e.g. log-mel feature batches of training clips).
        forward: how to run one batch; default ``model(batch)``. For a counter on features use
            ``lambda f: model.head(model.backbone(f))``.

    Returns:
        The number of batches used.
    """
    forward = forward or model
    norms = _batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    was_training = model.training
    n = 0
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average = exact mean over the batches
        model.train()
        for batch in batches:
            forward(batch)
            n += 1
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.train(was_training)
    if n == 0:
        raise ValueError("recalibrate_bn needs at least one batch")
    return n


def counter_on_features(model: CountModel) -> Callable[[Tensor], Tensor]:
    """``features -> raw output`` of a counter (its frontend skipped: features were computed once)."""
    return lambda features: model.head(model.backbone(features))


def recalibrate_supernet_bn(supernet: ElasticSAM, arch: dict, feature_batches: Sequence[Tensor]) -> None:
    """Recalibrate the supernet's shared statistics for ``arch`` (and its other pooling heads)."""

    def run(features: Tensor) -> None:
        for head in supernet.space.pool_heads:
            supernet.forward_features(features, {**arch, "head": head})

    recalibrate_bn(supernet, feature_batches, run)


# -- sandwich-rule training --------------------------------------------------------------------------


class SupernetModule(CounterModule):
    """Trains an :class:`ElasticSAM` with the sandwich rule and in-place distillation (BigNAS, ECCV 2020).

    Each step, on a labeled batch ``x_l, y_l`` and an unlabeled batch ``x_u`` (Lightning's
    ``{"labeled", "unlabeled"}`` batch of :class:`~ersam_ssl.data.SAMDataModule`):

    - the largest member minimises the count-head loss on ``(x_l, y_l)``; with an external ``teacher`` it
      is distilled exactly as :class:`~ersam_ssl.ssl.Distill` distils a student:
      ``distill.ce_weight * loss + distill.kd_weight * kd_loss(largest, teacher, distill.temperature, w)``
      on ``x_l ∪ x_u``, with the weights ``w`` of the ``distill.uncertainty`` policy (ERSAM's teacher
      entropy by default; :func:`~ersam_ssl.ssl.distill.distill_from_teacher`);
    - the smallest and ``num_random_subnets`` random members minimise
      ``ce_weight * loss(x_l, y_l) + kd_weight * kd_loss(member, largest.detach(), T)`` on ``x_l ∪ x_u``
      (in-place distillation).

    Gradients of all members are summed into one optimizer step. Log-mel features are computed once per
    step and shared by all members. Validation evaluates the largest member after recalibrating its
    BatchNorm statistics on the most recent training batches.
    """

    def __init__(
        self,
        supernet: ElasticSAM,
        optim: OptimConfig | OptimizerFactory | None = None,
        levels: AmbianceLevels | None = None,
        *,
        num_random_subnets: int = 2,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        kd_temperature: float = 1.0,
        teacher: CountModel | None = None,
        distill: DistillConfig | None = None,
        calib_batches: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(supernet, optim, levels)  # type: ignore[arg-type]
        distill = distill or DistillConfig()
        distill.validate()
        if teacher is not None:
            check_teacher(teacher, supernet.num_classes, distill)
            teacher.eval().requires_grad_(False)
        self.num_random_subnets = num_random_subnets
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.distill = distill
        self.seed = seed
        self.teacher = teacher
        self._calibration: deque[Tensor] = deque(maxlen=max(1, calib_batches))

    @property
    def supernet(self) -> ElasticSAM:
        return self.model  # type: ignore[return-value]

    def trainable_modules(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    def train(self, mode: bool = True) -> SupernetModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher's dropout and BatchNorm stay in inference mode
        return self

    def sandwich_archs(self, step: int) -> list[dict]:
        """Largest, smallest and ``num_random_subnets`` random members (deterministic in ``seed, step``)."""
        space = self.supernet.space
        rng = random.Random(self.seed * 1_000_003 + step)
        return [
            space.largest(),
            space.smallest(),
            *(space.sample(rng) for _ in range(self.num_random_subnets)),
        ]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["x"], labeled["y"]
        waves = torch.cat([x_l, unlabeled["x"]])
        n_labeled = y_l.shape[0]
        head = self.supernet.head
        with torch.no_grad():
            features = self.supernet.frontend(waves)
        self._calibration.append(features[n_labeled:].detach())

        largest, *children = self.sandwich_archs(self.global_step)
        out = self.supernet.forward_features(features, largest)
        loss_largest = head.loss(out[:n_labeled], y_l)
        logs = {"train/ce_largest": loss_largest.detach()}
        if self.teacher is not None:
            teacher_kd = distill_from_teacher(head.log_probs(out), self.teacher, waves, self.distill).kd
            loss_largest = self.distill.objective(loss_largest, teacher_kd)
            logs["train/kd_teacher"] = teacher_kd.detach()
        target = head.log_probs(out).detach()
        loss = loss_largest
        child_ce, child_kd = [], []
        for arch in children:
            child_out = self.supernet.forward_features(features, arch)
            ce = head.loss(child_out[:n_labeled], y_l)
            kd = kd_loss(head.log_probs(child_out), target, self.kd_temperature)
            loss = loss + self.ce_weight * ce + self.kd_weight * kd
            child_ce.append(ce.detach())
            child_kd.append(kd.detach())
        acc = (head.predict(out[:n_labeled]) == y_l).float().mean()
        logs.update({"train/loss": loss.detach(), "train/acc_largest": acc})
        if children:
            logs["train/ce_children"] = torch.stack(child_ce).mean()
            logs["train/kd_children"] = torch.stack(child_kd).mean()
        self.log_dict(logs, prog_bar=False, batch_size=n_labeled)
        self.log("train/loss_step", loss.detach(), prog_bar=True, batch_size=n_labeled, logger=False)
        return loss

    def on_validation_epoch_start(self) -> None:
        if self._calibration:
            recalibrate_supernet_bn(self.supernet, self.supernet.space.largest(), list(self._calibration))
        self.supernet.active_arch = self.supernet.space.largest()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A supernet is not a counter: store its own config so ElasticSAM.load (not load_model) reads it.
        checkpoint["ersam_supernet_config"] = self.supernet.config()
