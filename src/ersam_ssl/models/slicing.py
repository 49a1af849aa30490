"""Weight sharing between the members of the SAM space: the largest model's weights sliced to a member.

Once-for-all style (Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020): blocks are *static*, and every static block's weights have exactly the
shape of a slice of the largest block's weights: the centre ``k`` taps of the largest depthwise kernel,
the first channels of every expanded / width-scaled dimension (incl. squeeze-excitation, BatchNorm running
statistics, the pooling head and the classifier input), the first ``depth`` blocks of each stage, and per
gate the first hidden units of the GRU. An expansion of 1 has no expand convolution (as in MobileNetV2):
the depthwise conv then uses the first ``in_ch`` channels of the largest one. :func:`subnet_state_dict`
implements that slicing; a supernet must apply the same rules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ersam_ssl.models.space import SAMSpace, build_model

_GRU_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def subnet_state_dict(
    largest_state_dict: dict[str, Tensor],
    arch: dict,
    space: SAMSpace | dict | None = None,
    *,
    num_classes: int = 11,
    head: str = "classify",
    n_mels: int = 64,
    head_kwargs: dict | None = None,
) -> dict[str, Tensor]:
    """Slice the largest model's weights to ``arch`` (see the module docstring for the rules).

    Args:
        largest_state_dict: state dict of ``build_model(space.largest(), ...)`` (or of a supernet with the
            same keys). It must hold the weights of ``arch["head"]``'s pooling head; to serve archs of every
            pooling head, merge in the ``backbone.pool.*`` entries of the largest model built with the other
            head (their keys differ: ``backbone.pool.gru.*`` vs ``backbone.pool.proj.*``/``score.*``).
        arch: the target architecture.
        space, num_classes, head, n_mels, head_kwargs: as for :func:`build_model`; must match the model
            the weights come from (checked where the shapes tell).

    Returns:
        A state dict that ``build_model(arch, ...).load_state_dict`` accepts (strictly).
    """
    target = build_model(arch, num_classes, head, n_mels, space, head_kwargs).state_dict()
    sliced: dict[str, Tensor] = {}
    for key, like in target.items():
        if key not in largest_state_dict:
            hint = (
                " (merge in the largest model with that pooling head)"
                if key.startswith("backbone.pool.")
                else ""
            )
            raise ValueError(f"largest_state_dict has no entry {key!r} needed by this arch{hint}")
        sliced[key] = _slice_like(key, largest_state_dict[key], tuple(like.shape))
    return sliced


def _slice_like(key: str, source: Tensor, shape: tuple[int, ...]) -> Tensor:
    if source.dim() != len(shape):
        raise ValueError(f"{key}: cannot slice shape {tuple(source.shape)} to {shape}")
    if not shape:  # e.g. BatchNorm's num_batches_tracked
        return source.clone()
    if any(t > s for t, s in zip(shape, source.shape)):
        raise ValueError(
            f"{key}: target shape {shape} exceeds the source {tuple(source.shape)}; "
            "largest_state_dict must come from the largest architecture of the same space"
        )
    exact = _exact_dims(key, len(shape))
    if any(shape[d] != source.shape[d] for d in exact):
        raise ValueError(
            f"{key}: shape {tuple(source.shape)} does not match {shape} in dims {exact}; "
            "n_mels / num_classes / head must equal those of the largest model"
        )
    name = key.rsplit(".", 1)[-1]
    if ".gru." in key and name in _GRU_KEYS:
        return _slice_gru(source, shape)
    if key.endswith(".dw.conv.weight"):
        crop = (source.shape[-1] - shape[-1]) // 2
        if (source.shape[-1] - shape[-1]) % 2:
            raise ValueError(f"{key}: cannot centre-crop a {source.shape[-1]}-tap kernel to {shape[-1]} taps")
        return source[: shape[0], : shape[1], crop : crop + shape[-1]].clone()
    return source[tuple(slice(0, n) for n in shape)].clone()


def _exact_dims(key: str, ndim: int) -> tuple[int, ...]:
    """Dimensions that are not sliced by width (mel bands, classes) and so must match exactly."""
    if key.startswith("backbone.stem.norm."):
        return tuple(range(ndim))
    if key == "backbone.stem.conv.conv.weight":
        return (1,)
    if key.startswith("head."):
        return tuple(range(ndim - 1)) if ndim >= 2 else tuple(range(ndim))
    return ()


def _slice_gru(source: Tensor, shape: tuple[int, ...]) -> Tensor:
    """GRU tensors stack the (reset, update, new) gates along dim 0: slice each gate's first units."""
    hidden, new_hidden = source.shape[0] // 3, shape[0] // 3
    gates = [source[g * hidden : g * hidden + new_hidden] for g in range(3)]
    stacked = torch.cat(gates, dim=0)
    if len(shape) == 2:
        stacked = stacked[:, : shape[1]]
    return stacked.clone()
