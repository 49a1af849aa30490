"""Pure loss functions of the semi-supervised, distillation and count-aware objectives.

Every function here is a differentiable, device-agnostic map of batched tensors, checked against a NumPy
reference in ``tests/losses``. Their inputs go through one set of checks (``_checks``): a tensor of the
wrong rank, dtype or size, a label out of range or a non-finite temperature is a one-line ``ValueError``
that names the argument. The only state lives in three small modules: :class:`FlexMatchThresholds`,
:class:`RunningDistribution` (buffers, saved in checkpoints) and the BYOL target updated by
:func:`ema_update`.
"""

from ersam_ssl.losses.contrastive import (
    byol_loss,
    byol_symmetric_loss,
    cosine_momentum,
    ema_update,
    nt_xent_loss,
)
from ersam_ssl.losses.count_aware import expected_count, mix_waveforms, mixing_cdf_loss, mixing_rank_loss
from ersam_ssl.losses.distill import (
    entropy_weights,
    kd_loss,
    mc_dropout_predict,
    mc_dropout_weights,
    normalized_entropy,
    uncertainty_weighted_kd,
)
from ersam_ssl.losses.pseudo_label import (
    FlexMatchThresholds,
    RunningDistribution,
    confidence_mask,
    convex_threshold_map,
    distribution_alignment,
    fixmatch_loss,
    flexmatch_thresholds,
)

__all__ = [
    "FlexMatchThresholds",
    "RunningDistribution",
    "byol_loss",
    "byol_symmetric_loss",
    "confidence_mask",
    "convex_threshold_map",
    "cosine_momentum",
    "distribution_alignment",
    "ema_update",
    "entropy_weights",
    "expected_count",
    "fixmatch_loss",
    "flexmatch_thresholds",
    "kd_loss",
    "mc_dropout_predict",
    "mc_dropout_weights",
    "mix_waveforms",
    "mixing_cdf_loss",
    "mixing_rank_loss",
    "normalized_entropy",
    "nt_xent_loss",
    "uncertainty_weighted_kd",
]
