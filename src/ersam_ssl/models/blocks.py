"""The building blocks of the SAM space's models, in plain PyTorch (no search-space logic).

Stem (BatchNorm over mel bands, Conv1d k=3 stride 2) → stages of 1-D inverted-residual blocks
(:class:`MBConv1d`) → a temporal pooling head (:func:`make_pool`), assembled by :class:`SAMBackbone`.
Which blocks, with which shapes, is decided by :mod:`ersam_ssl.models.space`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

POOL_HEADS = ("gru", "attention")
ACTIVATIONS = ("relu6", "hardswish")


def make_activation(name: str) -> nn.Module:
    if name == "relu6":
        return nn.ReLU6()
    if name == "hardswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


class ConvBN1d(nn.Module):
    """Conv1d (no bias, 'same' padding) → BatchNorm1d → optional activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm1d(out_ch)
        self.act = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Stem(nn.Module):
    """Learnable per-mel-band BatchNorm (the level-preserving input normalisation) → Conv1d k=3 stride 2."""

    def __init__(self, n_mels: int, out_ch: int, activation: str = "relu6") -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)
        self.conv = ConvBN1d(n_mels, out_ch, kernel=3, stride=2, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class SqueezeExcite1d(nn.Module):
    """Squeeze-excitation over time (Hu et al., CVPR 2018): channel gates from the time-averaged input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv1d(channels, squeeze, 1)
        self.expand = nn.Conv1d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean(dim=-1, keepdim=True)))))
        return x * gate


class MBConv1d(nn.Module):
    """1-D inverted-residual block (Sandler et al., "MobileNetV2", CVPR 2018; Tan & Le, "EfficientNet",
    ICML 2019): pointwise expand (skipped when ``expand == 1``) → depthwise conv (carries the stride) →
    optional squeeze-excitation → linear pointwise projection, plus a residual when shapes match."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        expand: int,
        stride: int = 1,
        se: bool = False,
        activation: str = "relu6",
        se_ratio: int = 4,
    ) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.hidden = hidden
        self.expand = ConvBN1d(in_ch, hidden, activation=activation) if expand != 1 else None
        self.dw = ConvBN1d(hidden, hidden, kernel, stride, groups=hidden, activation=activation)
        self.se = SqueezeExcite1d(hidden, se_squeeze(hidden, se_ratio)) if se else None
        self.project = ConvBN1d(hidden, out_ch)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.dw(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.use_residual else out


def se_squeeze(hidden: int, se_ratio: int) -> int:
    """Squeeze-excitation bottleneck width (monotone in ``hidden``, so slices stay prefixes)."""
    return max(1, hidden // se_ratio)


class GRUPool(nn.Module):
    """GRU over time, then the mean of its outputs over time → ``[B, dim]``.

    The mean (not the last state) lets every frame contribute count evidence and keeps the output stable
    across input lengths.
    """

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(in_ch, dim, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x.transpose(1, 2))
        return out.mean(dim=1)


class AttentionPool(nn.Module):
    """Pointwise projection to ``dim``, then a softmax-over-time weighted mean → ``[B, dim]``."""

    def __init__(self, in_ch: int, dim: int, activation: str = "relu6") -> None:
        super().__init__()
        self.proj = ConvBN1d(in_ch, dim, activation=activation)
        self.score = nn.Conv1d(dim, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        values = self.proj(x)
        weights = torch.softmax(self.score(values), dim=-1)
        return (values * weights).sum(dim=-1)


def make_pool(kind: str, in_ch: int, dim: int, activation: str = "relu6") -> nn.Module:
    if kind == "gru":
        return GRUPool(in_ch, dim)
    if kind == "attention":
        return AttentionPool(in_ch, dim, activation)
    raise ValueError(f"unknown pooling head {kind!r}; choose one of {POOL_HEADS}")


class SAMBackbone(nn.Module):
    """Log-mel ``[B, n_mels, frames]`` → embedding ``[B, pool_dim]``: stem → stages → pooling head."""

    def __init__(self, stem: nn.Module, stages: list[list[nn.Module]], pool: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(nn.ModuleList(blocks) for blocks in stages)
        self.pool = pool

    def forward(self, features: Tensor) -> Tensor:
        x = self.stem(features)
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.pool(x)
