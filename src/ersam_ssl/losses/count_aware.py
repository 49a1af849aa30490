"""Count-aware self-supervision from mixing unlabeled clips (this library's own objective).

Adding two clips a and b of different recordings gives a clip in which everyone who speaks in a or in b
still speaks, so its speaker count is at least ``max(count(a), count(b))``. That inequality holds without
any label, so it can train a speaker counter (CountNet-style classifier over counts 0..C-1; Stöter et al.,
IEEE/ACM TASLP 2019) on unlabeled audio:

* :func:`mixing_rank_loss` asks the expected count of the mixture to exceed the parts' expected counts;
* :func:`mixing_cdf_loss` asks the mixture's count distribution to stochastically dominate each part's
  (first-order dominance: ``P(K_mix <= k) <= P(K_part <= k)`` for every k).

Both detach the parts: the constraint should raise the mixture's count, not lower the parts' counts, which
would be an easy way to satisfy it (collapsing every clip towards 0 speakers) that destroys the counter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ersam_ssl.losses._checks import check_finite, check_same_shape, check_shape


def _class_probs(scores: Tensor, from_logits: bool) -> Tensor:
    check_shape("scores", scores, "B, C", floating=True)
    return torch.softmax(scores, dim=1) if from_logits else scores


def _check_mixing_logits(logits_mix: Tensor, logits_a: Tensor, logits_b: Tensor) -> None:
    sizes = check_shape("logits_mix", logits_mix, "B, C", floating=True)
    check_shape("logits_a", logits_a, "B, C", floating=True, **sizes)
    check_shape("logits_b", logits_b, "B, C", floating=True, **sizes)


def expected_count(scores: Tensor, from_logits: bool = True) -> Tensor:
    """Expected speaker count ``E[K] = sum_k k P(K = k)`` under a distribution over counts 0..C-1.

    Args:
        scores: Logits (default) or probabilities over counts, [B, C].
        from_logits: Whether ``scores`` are logits (softmax applied) or already probabilities.

    Returns:
        Expected counts, [B].
    """
    probs = _class_probs(scores, from_logits)
    counts = torch.arange(probs.shape[1], device=probs.device, dtype=probs.dtype)
    return probs @ counts


def mixing_rank_loss(
    logits_mix: Tensor,
    logits_a: Tensor,
    logits_b: Tensor,
    margin: float = 0.0,
) -> Tensor:
    """Hinge ``max(0, max(E[K_a], E[K_b]) - E[K_mix] + margin)`` averaged over the batch.

    Only mixtures whose expected count falls below the larger part's (plus ``margin``) are penalised. The
    parts' expected counts are detached (see the module docstring).

    Args:
        logits_mix: Count logits of the mixtures, [B, C].
        logits_a: Count logits of the first parts, [B, C].
        logits_b: Count logits of the second parts, [B, C].
        margin: Extra count the mixture should exceed the parts by (0 = the plain inequality).

    Returns:
        Scalar loss.
    """
    _check_mixing_logits(logits_mix, logits_a, logits_b)
    check_finite("margin", margin)
    with torch.no_grad():
        lower_bound = torch.maximum(expected_count(logits_a), expected_count(logits_b))
    violation = lower_bound - expected_count(logits_mix) + margin
    return torch.relu(violation).mean()


def mixing_cdf_loss(logits_mix: Tensor, logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Squared hinge on violations of first-order stochastic dominance of the mixture's count.

    For every threshold k in 0..C-2 the mixture's CDF ``F_mix(k) = P(K_mix <= k)`` must not exceed
    ``min(F_a(k), F_b(k))``; the loss is ``mean_{b,k} max(0, F_mix(k) - min(F_a(k), F_b(k)))^2``. The last
    threshold k = C-1 is left out because every CDF equals 1 there. With C = 1 the loss is 0. The parts'
    CDFs are detached (see the module docstring).

    Args:
        logits_mix: Count logits of the mixtures, [B, C].
        logits_a: Count logits of the first parts, [B, C].
        logits_b: Count logits of the second parts, [B, C].

    Returns:
        Scalar loss.
    """
    _check_mixing_logits(logits_mix, logits_a, logits_b)
    num_thresholds = logits_mix.shape[1] - 1
    with torch.no_grad():
        cdf_a = torch.softmax(logits_a, dim=1).cumsum(dim=1)
        cdf_b = torch.softmax(logits_b, dim=1).cumsum(dim=1)
        cdf_bound = torch.minimum(cdf_a, cdf_b)[:, :num_thresholds]
    cdf_mix = torch.softmax(logits_mix, dim=1).cumsum(dim=1)[:, :num_thresholds]
    if num_thresholds == 0:
        return cdf_mix.sum() * 0.0
    return torch.relu(cdf_mix - cdf_bound).square().mean()


def mix_waveforms(
    a: Tensor,
    b: Tensor,
    gain_db_range: tuple[float, float] = (-3.0, 3.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mix two batches of clips at a random relative level, keeping the loudness of the louder part.

    ``b`` is scaled by a gain drawn uniformly in ``gain_db_range`` (dB) per clip, the parts are added, and
    the sum is rescaled to the RMS of the louder of ``a`` and the scaled ``b``: the mixture then differs
    from its parts in content, not in level, so a counter cannot read the count off the loudness.

    Args:
        a: First clips, [..., T].
        b: Second clips, same shape as ``a``.
        gain_db_range: (low, high) of the uniform gain applied to ``b``, in dB.
        generator: Random generator for the gains (its device is used for drawing).

    Returns:
        Mixtures with the shape of ``a``. A silent sum stays silent.
    """
    check_same_shape(floating=True, a=a, b=b)
    low_db, high_db = gain_db_range
    if not check_finite("gain_db_range[0]", low_db) <= check_finite("gain_db_range[1]", high_db):
        raise ValueError(f"gain_db_range must be (low, high) with low <= high, got {gain_db_range}")
    draw_device = generator.device if generator is not None else a.device
    uniform = torch.rand(a.shape[:-1], generator=generator, device=draw_device, dtype=a.dtype).to(a.device)
    gain = 10.0 ** ((low_db + (high_db - low_db) * uniform) / 20.0)
    b_scaled = b * gain.unsqueeze(-1)
    mixture = a + b_scaled

    def rms(signal: Tensor) -> Tensor:
        # Clamped before the square root so that silent clips do not produce infinite gradients.
        return signal.square().mean(dim=-1, keepdim=True).clamp_min(torch.finfo(signal.dtype).tiny).sqrt()

    target_rms = torch.maximum(rms(a), rms(b_scaled))
    mixture_rms = rms(mixture).clamp_min(torch.finfo(a.dtype).eps)
    return mixture * (target_rms / mixture_rms)
