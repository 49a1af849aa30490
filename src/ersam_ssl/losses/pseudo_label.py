"""Pseudo-labelling policies of the FixMatch family, as small composable callables.

A semi-supervised step composes them: predict on a weak view, optionally align the class distribution
(:func:`distribution_alignment`), select confident pseudo-labels (:func:`confidence_mask`, with a fixed
threshold or the class-wise thresholds of :class:`FlexMatchThresholds`) and train the strong view on them
(:func:`fixmatch_loss`).

References:
    Sohn et al. "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence",
    NeurIPS 2020.
    Zhang et al. "FlexMatch: Boosting Semi-Supervised Learning with Curriculum Pseudo Labeling",
    NeurIPS 2021.
    Berthelot et al. "ReMixMatch: Semi-Supervised Learning with Distribution Alignment and Augmentation
    Anchoring", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ersam_ssl.losses._checks import (
    check_count,
    check_finite,
    check_interval,
    check_positive,
    check_range,
    check_shape,
)

ProbsTransform = Callable[[Tensor], Tensor]


def confidence_mask(probs: Tensor, threshold: float | Tensor) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and the mask of samples confident enough to use them (FixMatch).

    A sample is kept when its top class probability is at or above the threshold of that class, as in the
    reference FixMatch code (``max_probs.ge(threshold)``).

    Args:
        probs: Class probabilities, shape [B, C]; treated as constants (no gradient flows through them).
        threshold: One threshold for all classes, or per-class thresholds of shape [C]; the threshold of
            each sample's predicted class applies.

    Returns:
        ``(mask, pseudo_labels)``: a float mask of shape [B] with values in {0, 1}, and long labels [B].
    """
    sizes = check_shape("probs", probs, "B, C", floating=True)
    if isinstance(threshold, Tensor) and threshold.dim() > 0:
        check_shape("threshold", threshold, "C", floating=True, C=sizes["C"])
    else:
        threshold = check_finite("threshold", threshold)
    confidence, pseudo_labels = probs.detach().max(dim=1)
    if isinstance(threshold, Tensor):
        sample_threshold = threshold.detach().to(confidence.device, confidence.dtype)[pseudo_labels]
    else:
        sample_threshold = torch.full_like(confidence, float(threshold))
    mask = (confidence >= sample_threshold).to(probs.dtype)
    return mask, pseudo_labels


def fixmatch_loss(
    logits_weak: Tensor,
    logits_strong: Tensor,
    threshold: float = 0.95,
    temperature: float = 1.0,
    class_thresholds: Tensor | None = None,
    probs_transform: ProbsTransform | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """FixMatch's unlabeled loss: cross entropy of the strong view on confident weak-view labels.

    ``loss = sum_b mask_b * CE(logits_strong_b, pseudo_label_b) / B`` (Sohn et al., NeurIPS 2020): the sum
    is divided by the whole unlabeled batch size B, not by the number of confident samples, so the loss
    grows as the model becomes confident. When no sample passes, the loss is exactly 0 and its gradient is
    zero (no NaN). The weak logits are detached: the weak view only produces targets.

    Args:
        logits_weak: Logits of the weakly augmented view, shape [B, C].
        logits_strong: Logits of the strongly augmented view, shape [B, C].
        threshold: Confidence threshold shared by all classes.
        temperature: Temperature of the weak-view softmax before thresholding (< 1 sharpens).
        class_thresholds: Per-class thresholds [C] (e.g. :meth:`FlexMatchThresholds.thresholds`); they
            replace ``threshold`` when given.
        probs_transform: Optional policy applied to the weak-view probabilities before thresholding, e.g.
            ``lambda p: distribution_alignment(p, running.distribution)``.

    Returns:
        ``(loss, info)`` where ``info`` holds ``mask_rate`` (fraction of confident samples, a scalar
        tensor), ``mask`` [B] and ``pseudo_labels`` [B], and ``weak_probs`` [B, C] (after the transform),
        which :meth:`FlexMatchThresholds.update` consumes.
    """
    sizes = check_shape("logits_weak", logits_weak, "B, C", floating=True)
    check_shape("logits_strong", logits_strong, "B, C", floating=True, **sizes)
    check_positive("temperature", temperature)
    if class_thresholds is None:
        check_finite("threshold", threshold)
    else:
        check_shape("class_thresholds", class_thresholds, "C", floating=True, C=sizes["C"])
    weak_probs = torch.softmax(logits_weak.detach() / temperature, dim=1)
    if probs_transform is not None:
        weak_probs = probs_transform(weak_probs).detach()
    mask, pseudo_labels = confidence_mask(
        weak_probs, class_thresholds if class_thresholds is not None else threshold
    )
    per_sample_ce = F.cross_entropy(logits_strong, pseudo_labels, reduction="none")
    loss = (per_sample_ce * mask.to(per_sample_ce.dtype)).sum() / logits_strong.shape[0]
    info = {"mask_rate": mask.mean(), "mask": mask, "pseudo_labels": pseudo_labels, "weak_probs": weak_probs}
    return loss, info


def convex_threshold_map(beta: Tensor) -> Tensor:
    """FlexMatch's convex mapping ``M(x) = x / (2 - x)`` of the normalised learning effect (Zhang et al.)."""
    return beta / (2.0 - beta)


def flexmatch_thresholds(
    predictions: Tensor,
    confidences: Tensor,
    num_classes: int,
    tau: float,
    warmup: bool = True,
    threshold_map: ProbsTransform = convex_threshold_map,
) -> Tensor:
    """Class-wise flexible thresholds of FlexMatch's curriculum pseudo-labelling (Zhang et al., 2021).

    The learning effect of class c is ``sigma_c = #{n : prediction_n = c and confidence_n >= tau}``. It is
    normalised to ``beta_c = sigma_c / max(max_c sigma, N - sum_c sigma)`` with threshold warm-up (the
    samples not yet confidently predicted count as one more "class", so early thresholds stay low for every
    class), or ``beta_c = sigma_c / max_c sigma`` without it; ``beta`` is 0 when nothing is learned yet.
    The threshold is ``M(beta_c) * tau``.

    Args:
        predictions: Latest pseudo-label of each unlabeled sample, long [N]; -1 marks unused samples.
        confidences: Confidence of each of those predictions, [N].
        num_classes: C.
        tau: The fixed upper threshold (FixMatch's 0.95).
        warmup: Use the threshold warm-up normalisation.
        threshold_map: Monotone map from [0, 1] to [0, 1]; FlexMatch's convex one by default.

    Returns:
        Thresholds of shape [C], in [0, tau].
    """
    sizes = check_shape("predictions", predictions, "N", floating=False)
    check_shape("confidences", confidences, "N", **sizes)
    check_count("num_classes", num_classes, 1)
    check_finite("tau", tau)
    check_range("predictions", predictions, -1, num_classes - 1)
    learned = (predictions >= 0) & (confidences >= tau)
    learning_effect = torch.bincount(predictions[learned], minlength=num_classes)[:num_classes]
    learning_effect = learning_effect.to(
        confidences.dtype if confidences.is_floating_point() else torch.float32
    )
    normaliser = learning_effect.max()
    if warmup:
        num_unused = predictions.numel() - learning_effect.sum()
        normaliser = torch.maximum(normaliser, num_unused)
    beta = learning_effect / normaliser.clamp_min(1.0)
    return threshold_map(beta) * tau


class FlexMatchThresholds(nn.Module):
    """Running FlexMatch state: the latest confident pseudo-label of every unlabeled sample (Zhang et al.).

    As in FlexMatch's Algorithm 1, a sample's stored prediction changes only when the model predicts it
    with confidence at or above ``tau``; until then it is -1 (unused). The state lives in buffers, so a
    LightningModule that owns this module moves it across devices and saves it in checkpoints;
    ``state_dict()`` / ``load_state_dict()`` work as for any module.

    Args:
        num_unlabeled: Size N of the unlabeled set; samples are addressed by dataset index.
        num_classes: C.
        tau: The fixed upper threshold.
        warmup: Use the threshold warm-up (see :func:`flexmatch_thresholds`).
        threshold_map: Mapping of the normalised learning effect; convex by default.
    """

    predictions: Tensor
    confidences: Tensor

    def __init__(
        self,
        num_unlabeled: int,
        num_classes: int,
        tau: float = 0.95,
        warmup: bool = True,
        threshold_map: ProbsTransform = convex_threshold_map,
    ) -> None:
        super().__init__()
        check_count("num_unlabeled", num_unlabeled, 1)
        check_count("num_classes", num_classes, 1)
        check_finite("tau", tau)
        self.num_classes = num_classes
        self.tau = tau
        self.warmup = warmup
        self.threshold_map = threshold_map
        self.register_buffer("predictions", torch.full((num_unlabeled,), -1, dtype=torch.long))
        self.register_buffer("confidences", torch.zeros(num_unlabeled))

    @torch.no_grad()
    def update(self, indices: Tensor, probs: Tensor) -> None:
        """Record the confident predictions of a batch.

        Args:
            indices: Dataset indices of the unlabeled samples, long [B].
            probs: Their weak-view class probabilities, [B, C].
        """
        sizes = check_shape("probs", probs, "B, C", floating=True, C=self.num_classes)
        check_shape("indices", indices, "B", floating=False, **sizes)
        check_range("indices", indices, 0, self.predictions.numel() - 1)
        confidence, prediction = probs.detach().max(dim=1)
        confident = confidence >= self.tau
        selected = indices.to(self.predictions.device)[confident.to(self.predictions.device)]
        self.predictions[selected] = prediction[confident].to(self.predictions.device)
        self.confidences[selected] = confidence[confident].to(self.confidences.device, self.confidences.dtype)

    def thresholds(self) -> Tensor:
        """Current class-wise thresholds, shape [C], on this module's device."""
        return flexmatch_thresholds(
            self.predictions, self.confidences, self.num_classes, self.tau, self.warmup, self.threshold_map
        ).to(self.confidences.device)

    def extra_repr(self) -> str:
        return f"num_unlabeled={self.predictions.numel()}, num_classes={self.num_classes}, tau={self.tau}"


def distribution_alignment(probs: Tensor, model_dist: Tensor, target_dist: Tensor | None = None) -> Tensor:
    """ReMixMatch's distribution alignment ``normalise(p * target / model)`` (Berthelot et al., ICLR 2020).

    Scales each prediction by the ratio between the wanted marginal class distribution and the model's
    running marginal, so that pseudo-labels do not collapse onto the classes the model already favours.

    Args:
        probs: Class probabilities, [B, C].
        model_dist: The model's running mean prediction, [C] (e.g. :class:`RunningDistribution`).
        target_dist: The wanted marginal, [C]; uniform when omitted (the labeled marginal in ReMixMatch).

    Returns:
        Aligned probabilities, [B, C], each row summing to 1.
    """
    sizes = check_shape("probs", probs, "B, C", floating=True)
    check_shape("model_dist", model_dist, "C", floating=True, C=sizes["C"])
    if target_dist is not None:
        check_shape("target_dist", target_dist, "C", floating=True, C=sizes["C"])
    eps = torch.finfo(probs.dtype).tiny
    ratio = 1.0 / model_dist.to(probs).clamp_min(eps)
    if target_dist is not None:
        ratio = ratio * target_dist.to(probs)
    aligned = probs * ratio
    return aligned / aligned.sum(dim=1, keepdim=True).clamp_min(eps)


class RunningDistribution(nn.Module):
    """Exponential moving average of the mean predicted class distribution (for distribution alignment).

    ReMixMatch averages the last 128 batches; an EMA with ``momentum = 0.99`` has a similar memory and
    needs no queue. The estimate starts uniform and lives in a buffer (saved in checkpoints).

    Args:
        num_classes: C.
        momentum: Weight of the past in each update.
    """

    distribution: Tensor

    def __init__(self, num_classes: int, momentum: float = 0.99) -> None:
        super().__init__()
        check_count("num_classes", num_classes, 1)
        check_interval("momentum", momentum, 0.0, 1.0, high_open=True)
        self.momentum = momentum
        self.register_buffer("distribution", torch.full((num_classes,), 1.0 / num_classes))

    @torch.no_grad()
    def update(self, probs: Tensor) -> Tensor:
        """Fold the batch mean of ``probs`` [B, C] into the estimate and return the new estimate [C]."""
        check_shape("probs", probs, "B, C", floating=True, C=self.distribution.numel())
        batch_mean = probs.detach().mean(dim=0).to(self.distribution)
        self.distribution.mul_(self.momentum).add_(batch_mean, alpha=1.0 - self.momentum)
        return self.distribution.clone()

    def extra_repr(self) -> str:
        return f"num_classes={self.distribution.numel()}, momentum={self.momentum}"
