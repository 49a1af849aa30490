"""The SAM space's models as sequences of JSON-able op specs, for per-op hardware cost models.

:func:`layer_specs` lists the ops of a member input to output (the keys of a per-op latency table, see
:mod:`ersam_ssl.hw.lut`); :func:`make_op` builds any one op alone, to measure it.
"""

from __future__ import annotations

import itertools
import json

import torch
from torch import Tensor, nn

from ersam_ssl.models.blocks import MBConv1d, Stem, make_pool, se_squeeze
from ersam_ssl.models.frontend import LogMel, num_frames
from ersam_ssl.models.heads import build_head
from ersam_ssl.models.space import HOP_LENGTH, N_FFT, SAMPLE_RATE, SAMSpace, as_space, plan_blocks


def _strided(length: int, stride: int) -> int:
    """Output length of a 'same'-padded odd-kernel conv: ``ceil(length / stride)``."""
    return (length + stride - 1) // stride


def layer_specs(
    arch: dict,
    space: SAMSpace | dict | None = None,
    n_mels: int = 64,
    num_samples: int = 80000,
    num_classes: int = 11,
    head: str = "classify",
    level_norm: str = "clip",
) -> list[dict]:
    """The model as a sequence of JSON-able op specs, input to output (for per-op latency tables).

    Each spec has ``"op"`` (``frontend``, ``stem``, ``mbconv``, ``pool_head``, ``classifier``), ``"name"``
    (the module's path in the :class:`CountModel`), the op's hyper-parameters and its input ``"length"``
    (samples for the frontend, frames otherwise) at batch size 1. :func:`make_op` builds any spec alone.
    """
    space = as_space(space)
    space.validate(arch)
    stem_ch, blocks, pool_dim = plan_blocks(arch, space)
    frames = num_frames(num_samples, HOP_LENGTH)
    specs: list[dict] = [
        {
            "op": "frontend",
            "name": "frontend",
            "kind": "logmel",
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "n_mels": n_mels,
            "level_norm": level_norm,
            "length": num_samples,
            "out_length": frames,
        }
    ]
    length = _strided(frames, 2)
    specs.append(
        {
            "op": "stem",
            "name": "backbone.stem",
            "in_ch": n_mels,
            "out_ch": stem_ch,
            "kernel": 3,
            "stride": 2,
            "activation": space.activation,
            "length": frames,
            "out_length": length,
        }
    )
    for b in blocks:
        out_length = _strided(length, b.stride)
        hidden = b.in_ch * b.expand
        specs.append(
            {
                "op": "mbconv",
                "name": b.name,
                "in_ch": b.in_ch,
                "out_ch": b.out_ch,
                "hidden": hidden,
                "kernel": b.kernel,
                "expand": b.expand,
                "stride": b.stride,
                "se": b.se,
                "se_channels": se_squeeze(hidden, space.se_ratio) if b.se else 0,
                "residual": b.stride == 1 and b.in_ch == b.out_ch,
                "activation": space.activation,
                "se_ratio": space.se_ratio,
                "length": length,
                "out_length": out_length,
            }
        )
        length = out_length
    specs.append(
        {
            "op": "pool_head",
            "name": "backbone.pool",
            "kind": arch["head"],
            "in_ch": blocks[-1].out_ch,
            "dim": pool_dim,
            "activation": space.activation,
            "length": length,
        }
    )
    count_head = build_head(head, pool_dim, num_classes)
    specs.append(
        {
            "op": "classifier",
            "name": "head",
            "kind": head,
            "in_dim": pool_dim,
            "num_classes": num_classes,
            "out_dim": count_head.out_dim,
        }
    )
    return specs


def space_op_specs(
    space: SAMSpace | dict | None = None,
    n_mels: int = 64,
    num_samples: int = 80000,
    num_classes: int = 11,
    head: str = "classify",
    level_norm: str = "clip",
) -> list[dict]:
    """Every distinct op spec that a member of ``space`` can contain (arguments as in :func:`layer_specs`).

    An MBConv block's spec depends only on the width, its stage, its position (the first block of a stage
    carries the stride and takes the previous stage's channels; the blocks after it are alike), its kernel
    and expansion and its stage's squeeze-excitation; stem, pooling head and classifier depend on the width
    and the pooling head. So for each width and pooling head, and each block choice ``(kernel, expand,
    se)``, the member with that choice in every block of every stage at the maximum depth has every
    (stage, position) with that choice; together these members contain every op of the space. Specs that
    differ only in ``"name"`` (their place in a model) are one op; the first is kept.
    """
    space = as_space(space)
    seen: dict[str, dict] = {}
    choices = itertools.product(
        space.width_mults, space.pool_heads, space.kernels, space.expands, space.se_choices
    )
    for width, pool_head, kernel, expand, se in choices:
        stage = {
            "depth": space.max_depth,
            "kernel": [kernel] * space.max_depth,
            "expand": [expand] * space.max_depth,
            "se": se,
        }
        arch = {
            "width_mult": width,
            "head": pool_head,
            "stages": [dict(stage) for _ in range(space.num_stages)],
        }
        for spec in layer_specs(arch, space, n_mels, num_samples, num_classes, head, level_norm):
            key = json.dumps({k: v for k, v in spec.items() if k != "name"}, sort_keys=True)
            seen.setdefault(key, spec)
    return list(seen.values())


def make_op(spec: dict) -> tuple[nn.Module, Tensor]:
    """Build the op of a :func:`layer_specs` entry alone, in eval mode, with a random batch-1 input."""
    op = spec["op"]
    if op == "frontend":
        module: nn.Module = LogMel(
            spec["sample_rate"],
            spec["n_fft"],
            spec["hop_length"],
            spec["n_mels"],
            level_norm=spec.get("level_norm", "none"),
        )
        example = torch.randn(1, spec["length"])
    elif op == "stem":
        module = Stem(spec["in_ch"], spec["out_ch"], spec["activation"])
        example = torch.randn(1, spec["in_ch"], spec["length"])
    elif op == "mbconv":
        module = MBConv1d(
            spec["in_ch"],
            spec["out_ch"],
            spec["kernel"],
            spec["expand"],
            spec["stride"],
            spec["se"],
            spec["activation"],
            spec["se_ratio"],
        )
        example = torch.randn(1, spec["in_ch"], spec["length"])
    elif op == "pool_head":
        module = make_pool(spec["kind"], spec["in_ch"], spec["dim"], spec["activation"])
        example = torch.randn(1, spec["in_ch"], spec["length"])
    elif op == "classifier":
        module = build_head(spec["kind"], spec["in_dim"], spec["num_classes"])
        example = torch.randn(1, spec["in_dim"])
    else:
        raise ValueError(f"unknown op {op!r} in spec {spec}")
    return module.eval(), example
