"""The SAM search space as an NNI 3.0 model space, its hardware-cost profiler and the one-shot module.

This module imports NNI at the top; ``import ersam_ssl.nas`` does not import it (search code imports this
module inside functions), so the core library works without the optional ``nas`` dependencies.

:class:`SAMModelSpace` is an ``nni.nas.nn.pytorch.ModelSpace`` built only from ``LayerChoice`` (the one
primitive every NNI strategy supports, including ``Proxyless``); its modules are thin *views* that run
pieces of one shared :class:`~ersam_ssl.nas.supernet.ElasticSAM`, so any member (a frozen sample in
multi-trial search, or the sampled path of a one-shot supernet) computes with the inherited weights.
Choices and their labels::

    width_mult   LayerChoice over whole networks, one per width ("w0p5", "w0p75", "w1p0")
    s{i}_depth   per stage, LayerChoice over the stage with its first d blocks ("1".."4")
    s{i}_b{j}    per block position, LayerChoice over (kernel, expansion) ("k3_e1" ... "k7_e6")
    s{i}_se      per stage, LayerChoice inside every block: squeeze-excitation "on" / "off"
    head         LayerChoice over the pooling head + classifier ("gru", "attention")

The same label in several places is one decision (NNI shares it), so a sample is exactly an architecture
dict of :class:`~ersam_ssl.models.SAMSpace`: :func:`sample_to_arch` / :func:`arch_to_sample` convert, and a
frozen model carries its ``arch``, which :func:`~ersam_ssl.models.build_model` rebuilds.

Hardware costs are additive over ops (MACs, LUT latency; the modelled energy is affine in both), so a cost
is a constant plus one table per op indexed by the few labels that shape that op (:class:`CostTables`).
This gives NNI an exact :class:`~nni.nas.profiler.ExpressionProfiler` (:class:`ArchCostProfiler`) and an
exact, differentiable expected cost under the one-shot architecture distribution
(:class:`ExpectedCostPenalty`; ProxylessNAS's latency loss, Cai et al., ICLR 2019).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from nni.mutable import MutableExpression
from nni.nas.evaluator.pytorch import LightningModule as NNILightningModule
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.profiler import ExpressionProfiler
from torch import Tensor, nn

from ersam_ssl.models import SAMSpace, layer_specs
from ersam_ssl.nas.supernet import ElasticSAM

WIDTH_LABEL = "width_mult"
HEAD_LABEL = "head"
SE_NAMES = {False: "off", True: "on"}


def depth_label(stage: int) -> str:
    return f"s{stage}_depth"


def block_label(stage: int, index: int) -> str:
    return f"s{stage}_b{index}"


def se_label(stage: int) -> str:
    return f"s{stage}_se"


def op_name(kernel: int, expand: int) -> str:
    return f"k{kernel}_e{expand}"


def width_name(width: float) -> str:
    """``0.75 -> "w0p75"`` (module names may not contain dots)."""
    return "w" + repr(float(width)).replace(".", "p")


# -- samples <-> architectures -----------------------------------------------------------------------


def label_choices(space: SAMSpace) -> dict[str, list[str]]:
    """Every label of the NNI space with its choice names, in a stable order."""
    out = {WIDTH_LABEL: [width_name(w) for w in space.width_mults], HEAD_LABEL: list(space.pool_heads)}
    ops = [op_name(k, e) for k in space.kernels for e in space.expands]
    for s in range(space.num_stages):
        out[depth_label(s)] = [str(d) for d in space.depths]
        out[se_label(s)] = [SE_NAMES[v] for v in space.se_choices]
        for j in range(space.max_depth):
            out[block_label(s, j)] = list(ops)
    return out


def sample_to_arch(sample: Mapping[str, Any], space: SAMSpace) -> dict:
    """Architecture dict of an NNI sample of :class:`SAMModelSpace` (validated against ``space``)."""
    widths = {width_name(w): w for w in space.width_mults}
    se_of = {name: value for value, name in SE_NAMES.items()}
    stages = []
    for s in range(space.num_stages):
        kernels, expands = [], []
        for j in range(space.max_depth):
            kernel, expand = str(sample[block_label(s, j)]).removeprefix("k").split("_e")
            kernels.append(int(kernel))
            expands.append(int(expand))
        stages.append(
            {
                "depth": int(sample[depth_label(s)]),
                "kernel": kernels,
                "expand": expands,
                "se": se_of[str(sample[se_label(s)])],
            }
        )
    arch = {"width_mult": widths[str(sample[WIDTH_LABEL])], "head": str(sample[HEAD_LABEL]), "stages": stages}
    space.validate(arch)
    return arch


def arch_to_sample(arch: dict, space: SAMSpace) -> dict[str, str]:
    """The NNI sample of an architecture dict (inverse of :func:`sample_to_arch`)."""
    space.validate(arch)
    sample = {WIDTH_LABEL: width_name(arch["width_mult"]), HEAD_LABEL: arch["head"]}
    for s, stage in enumerate(arch["stages"]):
        sample[depth_label(s)] = str(stage["depth"])
        sample[se_label(s)] = SE_NAMES[stage["se"]]
        for j in range(space.max_depth):
            sample[block_label(s, j)] = op_name(stage["kernel"][j], stage["expand"][j])
    return sample


# -- views into the shared supernet ------------------------------------------------------------------


class SharedSupernet:
    """The reference every view holds. Copying a view (NNI deep-copies when it freezes a sample) keeps
    the reference, so all members keep computing with the one set of shared weights."""

    def __init__(self, supernet: ElasticSAM) -> None:
        self.supernet = supernet

    def __deepcopy__(self, memo: dict) -> SharedSupernet:
        return self


class _StemView(nn.Module):
    def __init__(self, ref: SharedSupernet, channels: int) -> None:
        super().__init__()
        self.ref, self.channels = ref, channels

    def forward(self, features: Tensor) -> Tensor:
        return self.ref.supernet.stem(features, self.channels)


class _SEView(nn.Module):
    def __init__(self, ref: SharedSupernet, stage: int, index: int) -> None:
        super().__init__()
        self.ref, self.stage, self.index = ref, stage, index

    def forward(self, hidden: Tensor) -> Tensor:
        return self.ref.supernet.block_se(hidden, self.stage, self.index)


class _BlockView(nn.Module):
    """One MBConv candidate (kernel, expansion) at block position ``(stage, index)``; squeeze-excitation is
    the stage's ``LayerChoice`` or, in a frozen member, fixed by ``se``."""

    def __init__(
        self,
        ref: SharedSupernet,
        space: SAMSpace,
        stage: int,
        index: int,
        out_ch: int,
        kernel: int,
        expand: int,
        se: bool | None = None,
    ) -> None:
        super().__init__()
        self.ref, self.stage, self.index = ref, stage, index
        self.out_ch, self.kernel, self.expand = out_ch, kernel, expand

        def excite(on: bool) -> nn.Module:
            return _SEView(ref, stage, index) if on else nn.Identity()

        if se is None:
            self.se: nn.Module = LayerChoice(
                {SE_NAMES[v]: excite(v) for v in space.se_choices}, label=se_label(stage)
            )
        else:
            self.se = excite(se)

    def forward(self, x: Tensor) -> Tensor:
        supernet = self.ref.supernet
        hidden = supernet.block_hidden(x, self.stage, self.index, self.kernel, self.expand)
        return supernet.block_output(self.se(hidden), x, self.stage, self.index, self.out_ch)


class _PoolHeadView(nn.Module):
    def __init__(self, ref: SharedSupernet, kind: str, dim: int) -> None:
        super().__init__()
        self.ref, self.kind, self.dim = ref, kind, dim

    def forward(self, x: Tensor) -> Tensor:
        supernet = self.ref.supernet
        return supernet.classify(supernet.pool(x, self.kind, self.dim))


class _WidthNet(nn.Module):
    """All members at one width: stem → per-stage depth choice of per-block op choices → head choice."""

    def __init__(self, ref: SharedSupernet, space: SAMSpace, width: float) -> None:
        super().__init__()
        stem_ch, stage_ch, pool_dim = ref.supernet.channels(width)
        self.stem = _StemView(ref, stem_ch)
        ops = [(k, e) for k in space.kernels for e in space.expands]
        stages = []
        for s in range(space.num_stages):
            by_depth = {}
            for depth in space.depths:
                blocks = [
                    LayerChoice(
                        {op_name(k, e): _BlockView(ref, space, s, j, stage_ch[s], k, e) for k, e in ops},
                        label=block_label(s, j),
                    )
                    for j in range(depth)
                ]
                by_depth[str(depth)] = nn.Sequential(*blocks)
            stages.append(LayerChoice(by_depth, label=depth_label(s)))
        self.stages = nn.Sequential(*stages)
        self.head = LayerChoice(
            {kind: _PoolHeadView(ref, kind, pool_dim) for kind in space.pool_heads}, label=HEAD_LABEL
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(features)))


class SAMMember(nn.Module):
    """One member of the space as views into the shared supernet (what :meth:`SAMModelSpace.freeze` returns).

    Attributes:
        arch: the plain architecture dict (``build_model(arch)`` rebuilds the member stand-alone).
    """

    def __init__(self, ref: SharedSupernet, arch: dict) -> None:
        super().__init__()
        space = ref.supernet.space
        space.validate(arch)
        self.ref = ref
        self.arch = arch
        stem_ch, stage_ch, pool_dim = ref.supernet.channels(arch["width_mult"])
        self.stem = _StemView(ref, stem_ch)
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    *(
                        _BlockView(
                            ref, space, s, j, stage_ch[s], stage["kernel"][j], stage["expand"][j], stage["se"]
                        )
                        for j in range(stage["depth"])
                    )
                )
                for s, stage in enumerate(arch["stages"])
            )
        )
        self.head = _PoolHeadView(ref, arch["head"], pool_dim)

    def forward(self, x: Tensor) -> Tensor:
        features = self.ref.supernet.frontend(x) if x.dim() == 2 else x
        return self.head(self.stages(self.stem(features)))


class SAMModelSpace(ModelSpace):
    """The SAM search space as an NNI model space over a shared :class:`ElasticSAM` (see module doc).

    Build it with :func:`build_model_space`. ``forward`` takes waveforms ``[B, T]`` or log-mel features
    ``[B, n_mels, frames]``. ``freeze(sample)`` returns a :class:`SAMMember` carrying ``.arch``.
    """

    def __init__(self, ref: SharedSupernet) -> None:
        super().__init__()
        self.ref = ref
        self.sam_space = ref.supernet.space
        self.net = LayerChoice(
            {width_name(w): _WidthNet(ref, self.sam_space, w) for w in self.sam_space.width_mults},
            label=WIDTH_LABEL,
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.ref.supernet.frontend(x) if x.dim() == 2 else x
        return self.net(features)

    def freeze(self, sample: dict[str, Any]) -> SAMMember:
        # Built directly from the sample: NNI's generic freeze deep-copies the whole (view) tree first,
        # which costs about a second per trial for the default space.
        self.validate(sample)
        return SAMMember(self.ref, sample_to_arch(sample, self.sam_space))


def build_model_space(supernet: ElasticSAM) -> SAMModelSpace:
    """The NNI model space of ``supernet.space`` whose members compute with ``supernet``'s weights."""
    return SAMModelSpace(SharedSupernet(supernet))


def architecture_probabilities(model: nn.Module) -> dict[str, Tensor]:
    """``{label: softmax(alpha)}`` of every architecture weight in a one-shot supernet (differentiable)."""
    probs: dict[str, Tensor] = {}
    for module in model.modules():
        alpha = getattr(module, "_arch_alpha", None)
        label = getattr(module, "label", None)
        if isinstance(alpha, Tensor) and label is not None and label not in probs:
            probs[label] = module._softmax(alpha)
    return probs


def most_likely_sample(model: nn.Module) -> dict[str, str]:
    """The argmax choice of every label of a one-shot supernet."""
    out = {}
    for module in model.modules():
        alpha = getattr(module, "_arch_alpha", None)
        if isinstance(alpha, Tensor) and getattr(module, "label", None) not in out:
            out[module.label] = module.names[int(torch.argmax(alpha))]
    return out


# -- hardware costs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostTerm:
    """``table[i_1, ..., i_n]`` = cost of one op given the choice indices of ``labels``."""

    name: str
    labels: tuple[str, ...]
    table: np.ndarray


class CostTables:
    """An additive cost over NNI labels: ``constant + sum_t term_t.table[choice indices of term_t.labels]``.

    Args:
        terms: the per-op tables.
        constant: cost of the ops no choice changes (the frontend), plus any fixed offset.
        choices: ``{label: [choice names]}`` (the index order of the tables).
    """

    def __init__(
        self, terms: Sequence[CostTerm], constant: float, choices: Mapping[str, Sequence[str]]
    ) -> None:
        self.terms = list(terms)
        self.constant = float(constant)
        self.choices = {k: list(v) for k, v in choices.items()}

    def value(self, sample: Mapping[str, Any]) -> float:
        """Cost of one sample."""
        total = self.constant
        for term in self.terms:
            index = tuple(self.choices[label].index(str(sample[label])) for label in term.labels)
            total += float(term.table[index])
        return total

    def expectation(self, probs: Mapping[str, Tensor]) -> Tensor:
        """Expected cost when each label is drawn independently from ``probs[label]`` (differentiable)."""
        some = next(iter(probs.values()))
        total = torch.tensor(self.constant, dtype=some.dtype, device=some.device)
        for term in self.terms:
            table = torch.as_tensor(term.table, dtype=some.dtype, device=some.device)
            letters = "abcdefgh"[: len(term.labels)]
            spec = f"{letters},{','.join(letters)}->"
            total = total + torch.einsum(spec, table, *[probs[label] for label in term.labels])
        return total

    def expression(self, mutables: Mapping[str, Any]) -> MutableExpression | float:
        """The cost as an NNI ``MutableExpression`` over the model space's categorical mutables."""
        expr: Any = self.constant
        for term in self.terms:
            names = [self.choices[label] for label in term.labels]

            def lookup(*values: Any, _table: np.ndarray = term.table, _names: list = names) -> float:
                return float(_table[tuple(n.index(str(v)) for n, v in zip(_names, values))])

            args = [mutables[label] for label in term.labels]
            expr = expr + MutableExpression(lookup, f"{term.name}({', '.join(term.labels)})", args)
        return expr


def cost_tables(
    space: SAMSpace,
    op_cost: Callable[[dict], float],
    *,
    constant_offset: float = 0.0,
    num_samples: int = 80000,
    num_classes: int = 11,
    head: str = "classify",
    n_mels: int = 64,
) -> CostTables:
    """Tabulate an additive cost ``sum(op_cost(spec) for spec in layer_specs(arch)) + constant_offset``.

    ``op_cost`` maps one op spec of :func:`~ersam_ssl.models.layer_specs` to its cost (MACs, LUT latency,
    marginal energy, ...). Each op's spec depends on only a few choices (a block on the width, its stage's
    depth and squeeze-excitation and its own kernel/expansion), so the tables stay small.
    """
    choices = label_choices(space)

    def specs_of(width: float, kernel: int, expand: int, se: bool, pool_head: str) -> dict[str, dict]:
        arch = {
            "width_mult": width,
            "head": pool_head,
            "stages": [
                {
                    "depth": space.max_depth,
                    "kernel": [kernel] * space.max_depth,
                    "expand": [expand] * space.max_depth,
                    "se": se,
                }
                for _ in range(space.num_stages)
            ],
        }
        specs = layer_specs(arch, space, n_mels, num_samples, num_classes, head)
        return {spec["name"]: spec for spec in specs}

    widths, heads = space.width_mults, space.pool_heads
    first = specs_of(widths[0], space.kernels[0], space.expands[0], space.se_choices[0], heads[0])
    constant = op_cost(first["frontend"]) + constant_offset
    stem = np.array(
        [
            op_cost(specs_of(w, space.kernels[0], space.expands[0], False, heads[0])["backbone.stem"])
            for w in widths
        ]
    )
    pool = np.zeros((len(widths), len(heads)))
    classifier = np.zeros(len(widths))
    n_depth, n_se = len(space.depths), len(space.se_choices)
    n_ops = len(space.kernels) * len(space.expands)
    blocks = {
        (s, j): np.zeros((len(widths), n_depth, n_ops, n_se))
        for s in range(space.num_stages)
        for j in range(space.max_depth)
    }
    for wi, w in enumerate(widths):
        for hi, h in enumerate(heads):
            specs = specs_of(w, space.kernels[0], space.expands[0], space.se_choices[0], h)
            pool[wi, hi] = op_cost(specs["backbone.pool"])
            classifier[wi] = op_cost(specs["head"])
        for oi, (k, e) in enumerate(itertools.product(space.kernels, space.expands)):
            for si, se in enumerate(space.se_choices):
                specs = specs_of(w, k, e, se, heads[0])
                for (s, j), table in blocks.items():
                    cost = op_cost(specs[f"backbone.stages.{s}.{j}"])
                    for di, depth in enumerate(space.depths):
                        table[wi, di, oi, si] = cost if j < depth else 0.0
    terms = [
        CostTerm("stem", (WIDTH_LABEL,), stem),
        CostTerm("pool", (WIDTH_LABEL, HEAD_LABEL), pool),
        CostTerm("classifier", (WIDTH_LABEL,), classifier),
    ]
    for (s, j), table in blocks.items():
        labels = (WIDTH_LABEL, depth_label(s), block_label(s, j), se_label(s))
        terms.append(CostTerm(f"block_{s}_{j}", labels, table))
    return CostTables(terms, constant, choices)


class ArchCostProfiler(ExpressionProfiler):
    """NNI profiler of one hardware cost of :class:`SAMModelSpace` members (an exact expression)."""

    def __init__(self, model_space: ModelSpace, tables: CostTables) -> None:
        self.tables = tables
        self.expression = tables.expression(model_space.simplify())


class ExpectedCostPenalty(ExpectationProfilerPenalty):
    """ProxylessNAS-style hardware loss: ``loss + scale * nonlinear(E[cost] / baseline - 1)``.

    NNI 3.0's one-shot modules hand the penalty the architecture distribution as Python floats
    (``export_probs`` calls ``.tolist()``), which would make the penalty a constant without gradient. This
    penalty reads the live architecture weights of ``model_space`` (mutated in place by the strategy)
    instead and returns the exact expected cost as a differentiable tensor, so the penalty moves the
    architecture distribution towards cheaper members.
    """

    def __init__(
        self,
        profiler: ArchCostProfiler,
        model_space: ModelSpace,
        baseline: float,
        scale: float = 1.0,
        *,
        nonlinear: str = "positive",
        aggregate: str = "add",
    ) -> None:
        super().__init__(profiler, baseline, scale, nonlinear=nonlinear, aggregate=aggregate)  # type: ignore
        self._model_space = [model_space]  # a list: not a registered submodule of this nn.Module

    def profile(self, sample: Mapping[str, Any]) -> Any:
        probs = architecture_probabilities(self._model_space[0])
        if not probs:  # not mutated into a one-shot supernet yet
            return super().profile(sample)
        return self.profiler.tables.expectation(probs)  # type: ignore[attr-defined]


# -- one-shot training module -----------------------------------------------------------------------


class OneShotCounter(NNILightningModule):
    """The Lightning module NNI's one-shot strategies wrap: the count-head loss of the sampled member.

    ``Proxyless`` calls ``training_step`` on a validation batch for its architecture step and on a training
    batch for its weight step. Batches are ``(features or waves, counts)``. The supernet is registered here
    (the views in the model space only reference it), so the weight optimizer updates the shared weights.
    """

    def __init__(self, supernet: ElasticSAM, lr: float = 5e-4, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.supernet = supernet
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        out = self.model(x)
        loss = self.supernet.head.loss(out, y)
        self.log("oneshot/loss", loss.detach(), batch_size=y.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        err = (self.supernet.head.predict(out) != y).float().mean()
        self.log("oneshot/val_err", err, batch_size=y.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.supernet.parameters(), lr=self.lr, weight_decay=self.weight_decay)
