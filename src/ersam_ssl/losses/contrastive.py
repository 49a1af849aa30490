"""Self-supervised objectives on two augmented views: SimCLR's NT-Xent and BYOL's normalised MSE.

References:
    Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR), ICML 2020.
    Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning" (BYOL),
    NeurIPS 2020.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ersam_ssl.losses._checks import check_interval, check_positive, check_shape


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """Normalised temperature-scaled cross entropy (NT-Xent) of SimCLR (Chen et al., ICML 2020).

    Both views are L2-normalised, concatenated into 2B embeddings, and every embedding is an anchor whose
    positive is the other view of the same clip; the other 2B - 2 embeddings are negatives, so each anchor
    scores 2B - 1 candidates (itself excluded). The loss is the mean over all 2B anchors, i.e. the average
    of the view-1 → view-2 and view-2 → view-1 directions.

    Args:
        z1: Projections of the first view, shape [B, D].
        z2: Projections of the second view, shape [B, D].
        temperature: Softmax temperature applied to cosine similarities.

    Returns:
        Scalar loss. It is invariant to the scale of each embedding and symmetric in (z1, z2).
    """
    sizes = check_shape("z1", z1, "B, D", floating=True)
    check_shape("z2", z2, "B, D", floating=True, **sizes)
    check_positive("temperature", temperature)
    batch_size = z1.shape[0]
    embeddings = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    logits = embeddings @ embeddings.T / temperature
    self_similarity = torch.eye(2 * batch_size, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_similarity, float("-inf"))
    anchor_index = torch.arange(batch_size, device=logits.device)
    positive_index = torch.cat([anchor_index + batch_size, anchor_index])
    return F.cross_entropy(logits, positive_index)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's normalised mean squared error ``2 - 2 cos(p, sg(z))`` (Grill et al., NeurIPS 2020).

    The target projection is detached (stop-gradient): only the online network learns from this loss, the
    target follows it by :func:`ema_update`. For the symmetric loss of the paper, sum both view orders with
    :func:`byol_symmetric_loss`.

    Args:
        p: Online predictions, shape [B, D].
        z: Target projections of the other view, shape [B, D].

    Returns:
        Scalar loss in [0, 4], the mean over the batch.
    """
    sizes = check_shape("p", p, "B, D", floating=True)
    check_shape("z", z, "B, D", floating=True, **sizes)
    cosine = F.cosine_similarity(p, z.detach(), dim=1)
    return (2.0 - 2.0 * cosine).mean()


def byol_symmetric_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """Symmetrised BYOL loss: the sum of :func:`byol_loss` over both view orders (Grill et al., 2020).

    Args:
        p1: Online predictions of view 1, shape [B, D].
        p2: Online predictions of view 2, shape [B, D].
        z1: Target projections of view 1, shape [B, D].
        z2: Target projections of view 2, shape [B, D].

    Returns:
        Scalar ``byol_loss(p1, z2) + byol_loss(p2, z1)``, in [0, 8].
    """
    sizes = check_shape("p1", p1, "B, D", floating=True)
    for name, x in (("p2", p2), ("z1", z1), ("z2", z2)):
        check_shape(name, x, "B, D", floating=True, **sizes)
    return byol_loss(p1, z2) + byol_loss(p2, z1)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Move the target network towards the online one in place: ``t ← m t + (1 - m) o`` (BYOL).

    Parameters are averaged; buffers (e.g. BatchNorm running statistics) are copied from the online
    network, because they are statistics of the data rather than learned weights, and a target in eval mode
    should normalise with statistics that match its weights.

    Args:
        target: The target (teacher) network, updated in place.
        online: The online (student) network; left unchanged.
        momentum: m in [0, 1]; 1 freezes the target, 0 copies the online network.
    """
    check_interval("momentum", momentum, 0.0, 1.0)
    target_params = dict(target.named_parameters())
    online_params = dict(online.named_parameters())
    target_buffers = dict(target.named_buffers())
    online_buffers = dict(online.named_buffers())
    if target_params.keys() != online_params.keys() or target_buffers.keys() != online_buffers.keys():
        raise ValueError("target and online networks must have the same parameter and buffer names")
    for name, target_param in target_params.items():
        target_param.lerp_(online_params[name].to(target_param.dtype), 1.0 - momentum)
    for name, target_buffer in target_buffers.items():
        target_buffer.copy_(online_buffers[name])


def cosine_momentum(step: int, total: int, base: float = 0.99) -> float:
    """BYOL's target momentum schedule ``1 - (1 - base) (cos(pi k / K) + 1) / 2`` (Grill et al., 2020).

    It rises from ``base`` at step 0 to 1 at step ``total``; steps outside [0, total] are clamped.

    Args:
        step: Current training step k.
        total: Total number of training steps K (> 0).
        base: Momentum at the start of training.

    Returns:
        The momentum for :func:`ema_update` at this step.
    """
    check_positive("total", total)
    check_interval("base", base, 0.0, 1.0)
    progress = min(max(step, 0), total) / total
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
