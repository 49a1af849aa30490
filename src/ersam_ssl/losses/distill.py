"""Knowledge distillation weighted by the teacher's uncertainty.

ERSAM distils a large teacher into a small searched student and lets the teacher's uncertainty decide how
much each sample counts: confident teacher predictions are trusted, uncertain ones are down-weighted.
Uncertainty comes either from the teacher's predictive entropy (one forward pass) or from the variance of
Monte-Carlo dropout samples (Gal & Ghahramani, ICML 2016).

References:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", NeurIPS Deep Learning
    Workshop 2015.
    Li, Chen, Yuan, Lin, Sabharwal. "ERSAM: Neural Architecture Search for Energy-Efficient and Real-Time
    Social Ambiance Measurement", ICASSP 2023.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ersam_ssl.losses._checks import check_count, check_positive, check_shape


def _check_logit_pair(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> int:
    """Check the inputs of a KD loss; returns the batch size."""
    sizes = check_shape("student_logits", student_logits, "B, C", floating=True)
    check_shape("teacher_logits", teacher_logits, "B, C", floating=True, **sizes)
    check_positive("temperature", temperature)
    return sizes["B"]


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    weights: Tensor | None = None,
) -> Tensor:
    """Hinton et al.'s distillation loss ``T^2 KL(softmax(t / T) || softmax(s / T))``, optionally weighted.

    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015). The
    teacher is treated as fixed (its logits are detached). With ``weights`` the per-sample losses are
    averaged with weights normalised by their sum; if all weights are zero the loss is 0 (no NaN).

    Args:
        student_logits: Student logits, [B, C].
        teacher_logits: Teacher logits, [B, C].
        temperature: Softening temperature T > 0.
        weights: Optional non-negative per-sample weights, [B] (detached: they rank samples, they are not
            learned), e.g. from :func:`entropy_weights` or :func:`mc_dropout_weights`.

    Returns:
        Scalar loss.
    """
    batch = _check_logit_pair(student_logits, teacher_logits, temperature)
    if weights is not None:
        check_shape("weights", weights, "B", B=batch)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    per_sample_kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=1)
    per_sample_loss = per_sample_kl * temperature**2
    if weights is None:
        return per_sample_loss.mean()
    weights = weights.detach().to(per_sample_loss.dtype)
    # All weights are >= 0, so a zero sum means a zero numerator: clamping only avoids 0 / 0.
    total_weight = weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)
    return (weights * per_sample_loss).sum() / total_weight


def normalized_entropy(probs: Tensor) -> Tensor:
    """Predictive entropy divided by its maximum ``log C``, in [0, 1]; shape [B] from probs [B, C].

    With a single class the entropy is 0 and so is the result.
    """
    check_shape("probs", probs, "B, C", floating=True)
    entropy = -torch.special.xlogy(probs, probs).sum(dim=1)
    num_classes = probs.shape[1]
    if num_classes < 2:
        return torch.zeros_like(entropy)
    return entropy / math.log(num_classes)


def entropy_weights(
    teacher_probs: Tensor,
    kind: Literal["inverse", "exp"] = "inverse",
    temperature: float = 0.5,
) -> Tensor:
    """Per-sample distillation weights from the teacher's normalised predictive entropy ``h`` in [0, 1].

    ``kind="inverse"`` gives ``1 - h`` (a uniform teacher gets 0, a one-hot teacher 1); ``kind="exp"``
    gives ``exp(-h / temperature)``, which never reaches 0 and so keeps a little signal from uncertain
    samples. Used by ERSAM-style uncertainty-driven distillation (Li et al., ICASSP 2023).

    Args:
        teacher_probs: Teacher class probabilities, [B, C].
        kind: ``"inverse"`` or ``"exp"``.
        temperature: Decay scale of the ``"exp"`` weights.

    Returns:
        Weights of shape [B], detached.
    """
    check_shape("teacher_probs", teacher_probs, "B, C", floating=True)
    if kind not in ("inverse", "exp"):
        raise ValueError(f"kind must be 'inverse' or 'exp', got {kind!r}")
    if kind == "exp":
        check_positive("temperature", temperature)
    entropy = normalized_entropy(teacher_probs.detach())
    if kind == "inverse":
        return (1.0 - entropy).clamp(0.0, 1.0)
    return torch.exp(-entropy / temperature)


def mc_dropout_weights(prob_samples: Tensor, scale: float = 0.01) -> Tensor:
    """Per-sample weights ``1 / (1 + v / scale)`` from Monte-Carlo dropout predictive variance ``v``.

    ``v`` is the variance across the S dropout samples (population variance, divisor S) averaged over the
    classes. The map sends v = 0 to weight 1 and v = ``scale`` to 1/2 and decreases monotonically towards
    0; the default 0.01 halves the weight of a sample whose class probabilities typically move by 0.1
    between dropout samples.

    Args:
        prob_samples: Class probabilities from S stochastic passes, [S, B, C] (see
            :func:`mc_dropout_predict`).
        scale: Variance at which the weight halves (> 0).

    Returns:
        Weights of shape [B] in (0, 1], detached.
    """
    check_shape("prob_samples", prob_samples, "S, B, C", floating=True)
    check_positive("scale", scale)
    variance = prob_samples.detach().var(dim=0, correction=0).mean(dim=1)
    return 1.0 / (1.0 + variance / scale)


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, x: Tensor, samples: int) -> Tensor:
    """Class probabilities from ``samples`` forward passes with only the dropout layers active.

    Every other module (BatchNorm in particular) runs in eval mode, so the spread of the outputs comes
    from dropout alone (Gal & Ghahramani, ICML 2016). The model's train/eval flags are restored afterwards.

    Args:
        model: A classifier returning logits [B, C].
        x: Its input batch.
        samples: Number S of stochastic passes (>= 1).

    Returns:
        Softmax probabilities, [S, B, C].
    """
    check_count("samples", samples, 1)
    training_flags = {module: module.training for module in model.modules()}
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.train()
        return torch.stack([torch.softmax(model(x), dim=-1) for _ in range(samples)])
    finally:
        for module, was_training in training_flags.items():
            module.training = was_training


def uncertainty_weighted_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    weights: Tensor | None = None,
) -> Tensor:
    """ERSAM-style uncertainty-driven distillation (Li et al., ICASSP 2023): :func:`kd_loss` with weights.

    When ``weights`` is omitted, the teacher's inverse normalised entropy at temperature 1
    (:func:`entropy_weights`) is used; pass :func:`mc_dropout_weights` for the Monte-Carlo variant.

    Args:
        student_logits: Student logits, [B, C].
        teacher_logits: Teacher logits, [B, C].
        temperature: Distillation temperature.
        weights: Per-sample weights [B]; computed from the teacher's entropy when None.

    Returns:
        Scalar loss.
    """
    _check_logit_pair(student_logits, teacher_logits, temperature)
    if weights is None:
        weights = entropy_weights(torch.softmax(teacher_logits.detach(), dim=1), kind="inverse")
    return kd_loss(student_logits, teacher_logits, temperature=temperature, weights=weights)
