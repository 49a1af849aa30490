"""Count heads: embedding ``[B, D]`` → raw output, plus the loss, a distribution over counts and a count.

Every head shares one interface so training code never branches on the head type:

- ``forward(emb) -> out`` (raw output, e.g. logits),
- ``loss(out, target_counts) -> Tensor`` (scalar, batch mean),
- ``log_probs(out) -> Tensor[B, K + 1]`` (log-distribution over the counts ``0..K``, so semi-supervised
  losses — confidence masks, pseudo-labels, distillation — work for every head),
- ``predict(out) -> LongTensor[B]`` (the count; the argmax of ``log_probs`` unless a head says otherwise).

Heads are registered in :data:`HEADS` and built by :func:`build_head` from ``(dim, num_classes)`` with
``num_classes = K + 1``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ersam_ssl.registry import Registry

HEADS: Registry[type[CountHead]] = Registry("head")


class CountHead(nn.Module):
    """Base class of count heads (see the module docstring for the interface).

    Attributes:
        in_dim: embedding size the head takes.
        num_classes: number of counts ``K + 1`` (counts ``0..K``).
        out_dim: size of the raw output ``forward`` returns.
    """

    in_dim: int
    num_classes: int
    out_dim: int

    @classmethod
    def create(cls, dim: int, num_classes: int, **kwargs: Any) -> CountHead:
        """Build the head from the embedding size and the number of counts ``K + 1``."""
        return cls(dim, num_classes, **kwargs)

    def loss(self, out: Tensor, target_counts: Tensor) -> Tensor:
        raise NotImplementedError

    def log_probs(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def predict(self, out: Tensor) -> Tensor:
        """Most probable count (argmax of :meth:`log_probs`)."""
        return self.log_probs(out).argmax(dim=-1)


@HEADS.register("classify")
class ClassificationHead(CountHead):
    """Softmax classification over the counts ``0..K``; CountNet found classification best.

    Reference: Stöter et al., "CountNet: Estimating the Number of Concurrent Speakers Using Supervised
    Learning", IEEE/ACM TASLP 27(2), 2019.
    """

    def __init__(self, dim: int, num_classes: int = 11, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = dim
        self.num_classes = num_classes
        self.out_dim = num_classes
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, emb: Tensor) -> Tensor:
        return self.linear(self.dropout(emb))

    def loss(self, out: Tensor, target_counts: Tensor) -> Tensor:
        return F.cross_entropy(out, target_counts.long())

    def log_probs(self, out: Tensor) -> Tensor:
        return F.log_softmax(out, dim=-1)


def truncated_poisson_log_pmf(log_rate: Tensor, max_count: int) -> Tensor:
    """``log p(k)`` for ``k = 0..max_count`` of a Poisson(exp(log_rate)) truncated to that range.

    Args:
        log_rate: ``[B]`` log of the Poisson rate.
        max_count: largest count ``K``.

    Returns:
        ``[B, K + 1]`` log-probabilities that sum (in probability space) to one.
    """
    counts = torch.arange(max_count + 1, device=log_rate.device, dtype=log_rate.dtype)
    log_rate = log_rate.unsqueeze(-1)
    unnormalised = counts * log_rate - log_rate.exp() - torch.lgamma(counts + 1)
    return unnormalised - torch.logsumexp(unnormalised, dim=-1, keepdim=True)


@HEADS.register("poisson")
class PoissonHead(CountHead):
    """Poisson regression of the count: the output is the log-rate ``log λ`` (``[B, 1]``).

    The loss is the exact Poisson negative log-likelihood ``λ - y log λ + log y!``; ``log_probs`` is the
    Poisson pmf truncated to ``0..K`` and renormalised. ``predict`` is the rate rounded to the nearest
    count (clamped to ``0..K``), not the pmf's argmax: the Poisson mode is ``floor(λ)`` and ties with
    ``λ - 1`` at integer ``λ``, so a head that fits a count ``c`` exactly (``λ → c``) would predict
    ``c - 1`` about half the time.
    """

    def __init__(self, dim: int, max_count: int = 10) -> None:
        super().__init__()
        self.in_dim = dim
        self.max_count = max_count
        self.num_classes = max_count + 1
        self.out_dim = 1
        self.linear = nn.Linear(dim, 1)
        # Start at a rate in the middle of the count range so early exp(log λ) stays moderate.
        nn.init.constant_(self.linear.bias, math.log(max(max_count, 1) / 2.0))

    @classmethod
    def create(cls, dim: int, num_classes: int, **kwargs: Any) -> PoissonHead:
        return cls(dim, num_classes - 1, **kwargs)

    def forward(self, emb: Tensor) -> Tensor:
        return self.linear(emb)

    def loss(self, out: Tensor, target_counts: Tensor) -> Tensor:
        log_rate = out.squeeze(-1)
        target = target_counts.to(log_rate.dtype)
        nll = log_rate.exp() - target * log_rate + torch.lgamma(target + 1)
        return nll.mean()

    def log_probs(self, out: Tensor) -> Tensor:
        return truncated_poisson_log_pmf(out.squeeze(-1), self.max_count)

    def predict(self, out: Tensor) -> Tensor:
        return torch.round(out.squeeze(-1).exp()).clamp(0, self.max_count).long()


def coral_levels(target_counts: Tensor, max_count: int) -> Tensor:
    """Binary ordinal targets ``[B, K]``: entry ``k`` is ``1`` iff ``count > k``."""
    thresholds = torch.arange(max_count, device=target_counts.device)
    return (target_counts.unsqueeze(-1) > thresholds).float()


@HEADS.register("ordinal")
class OrdinalHead(CountHead):
    """CORAL ordinal regression: ``K`` binary tasks ``count > k`` sharing one weight vector.

    Reference: Cao, Mirjalili, Raschka, "Rank consistent ordinal regression for neural networks with
    application to age estimation", Pattern Recognition Letters 140, 2020.

    The output is ``[B, K]`` logits of ``P(count > k)``. ``log_probs`` takes differences of the exceedance
    probabilities after a running minimum (so the pmf is non-negative even if the biases are not yet
    ordered). ``predict`` is CORAL's rule, the number of tasks with ``P(count > k) > 0.5`` (on the same
    running minimum) — the median of that distribution, which minimises the expected absolute error.
    """

    def __init__(self, dim: int, num_classes: int = 11) -> None:
        super().__init__()
        self.in_dim = dim
        self.num_classes = num_classes
        self.out_dim = num_classes - 1
        self.linear = nn.Linear(dim, 1, bias=False)
        # CORAL's initialisation: ordered thresholds, so the exceedance probabilities start decreasing.
        self.bias = nn.Parameter(torch.arange(self.out_dim, 0, -1).float() / max(self.out_dim, 1))

    def forward(self, emb: Tensor) -> Tensor:
        return self.linear(emb) + self.bias

    def loss(self, out: Tensor, target_counts: Tensor) -> Tensor:
        levels = coral_levels(target_counts, self.out_dim)
        per_task = F.binary_cross_entropy_with_logits(out, levels, reduction="none")
        return per_task.sum(dim=-1).mean()

    @staticmethod
    def exceedance(out: Tensor) -> Tensor:
        """``P(count > k)`` for ``k = 0..K-1``, made non-increasing in ``k`` by a running minimum."""
        return torch.cummin(torch.sigmoid(out), dim=-1).values

    def log_probs(self, out: Tensor) -> Tensor:
        exceed = self.exceedance(out)
        ones = torch.ones_like(exceed[..., :1])
        zeros = torch.zeros_like(exceed[..., :1])
        upper = torch.cat([ones, exceed], dim=-1)  # P(count > k - 1) = P(count >= k)
        lower = torch.cat([exceed, zeros], dim=-1)  # P(count > k)
        probs = (upper - lower).clamp_min(1e-12)
        return torch.log(probs / probs.sum(dim=-1, keepdim=True))

    def predict(self, out: Tensor) -> Tensor:
        return (self.exceedance(out) > 0.5).sum(dim=-1)


def build_head(name: str, dim: int, num_classes: int, **kwargs: Any) -> CountHead:
    """Build the registered head ``name`` for embeddings of size ``dim`` and counts ``0..num_classes-1``."""
    return HEADS.get(name).create(dim, num_classes, **kwargs)
