"""The SAM search space: a family of small 1-D MBConv speaker counters, defined once, in plain PyTorch.

A member ("architecture", ``arch``) is a plain JSON-serialisable dict::

    {"width_mult": 0.75, "head": "gru",
     "stages": [{"depth": 2, "kernel": [5, 3, 7, 3], "expand": [3, 6, 1, 1], "se": False}, ...]}

- ``"head"`` is the temporal *pooling* head (``"gru"`` or ``"attention"``); the *count* head
  (classification, Poisson, ordinal; see :mod:`ersam_ssl.models.heads`) is an argument of
  :func:`build_model`, not part of the searched architecture.
- ``"kernel"`` / ``"expand"`` always have ``max(space.depths)`` entries (fixed length, so mutating a depth
  never re-draws the other choices); entries past ``"depth"`` are ignored. :meth:`SAMSpace.canonical`
  resets them, so two archs build the same model iff their canonical forms are equal.

Model: log-mel ``[B, n_mels, frames]`` → stem (BatchNorm over mel bands, Conv1d k=3 stride 2) → stages of
inverted-residual blocks (MobileNetV2 / EfficientNet MBConv in 1-D: pointwise expand, depthwise conv,
optional squeeze-excitation, linear pointwise projection, residual when shapes match; the first block of a
stage carries the stage stride) → pooling head → count head.

Building blocks: :mod:`ersam_ssl.models.blocks`; the per-op view for hardware cost models:
:mod:`ersam_ssl.models.op_specs`; weight sharing between members (once-for-all style):
:mod:`ersam_ssl.models.slicing`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass
from typing import Any

from torch import nn

from ersam_ssl.models.base import MODELS, CountModel
from ersam_ssl.models.blocks import ACTIVATIONS, POOL_HEADS, MBConv1d, SAMBackbone, Stem, make_pool
from ersam_ssl.models.frontend import LogMel
from ersam_ssl.models.heads import build_head

_ARCH_KEYS = ("width_mult", "head", "stages")
_STAGE_KEYS = ("depth", "kernel", "expand", "se")
# Pooling heads from fewest to most weights (at equal width): used by smallest()/largest().
_POOL_HEAD_SIZE_ORDER = ("attention", "gru")
# The frontend's fixed parameters (16 kHz, 25 ms window, 10 ms hop).
SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160


def sam_frontend(n_mels: int, level_norm: str) -> LogMel:
    """The log-mel frontend of the space's models and of the supernet (the fixed parameters above)."""
    return LogMel(SAMPLE_RATE, N_FFT, HOP_LENGTH, n_mels, level_norm=level_norm)


@dataclass(frozen=True)
class SAMSpace:
    """Choices of the SAM search space; shrink or grow it by changing the fields.

    Attributes:
        kernels: depthwise kernel sizes (odd, so smaller kernels are centre crops of larger ones).
        expands: expansion ratios of the MBConv hidden layer.
        depths: number of blocks per stage.
        width_mults: multipliers of every channel count (stem, stages, pooling head).
        se_choices: whether a stage's blocks use squeeze-excitation.
        pool_heads: temporal pooling heads.
        stage_widths: output channels of each stage at width 1.0 (also fixes the number of stages).
        stage_strides: stride of the first block of each stage.
        stem_width: stem channels at width 1.0.
        pool_width: GRU hidden size / attention width at width 1.0 (the embedding size).
        activation: ``"relu6"`` or ``"hardswish"`` (fixed, not searched).
        se_ratio: squeeze-excitation reduction (squeeze channels = hidden // se_ratio).
        channel_divisor: scaled channel counts are rounded to a multiple of this.
    """

    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (1, 3, 6)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    width_mults: tuple[float, ...] = (0.5, 0.75, 1.0)
    se_choices: tuple[bool, ...] = (False, True)
    pool_heads: tuple[str, ...] = ("gru", "attention")
    stage_widths: tuple[int, ...] = (16, 24, 32, 48)
    stage_strides: tuple[int, ...] = (2, 2, 2, 2)
    stem_width: int = 16
    pool_width: int = 64
    activation: str = "relu6"
    se_ratio: int = 4
    channel_divisor: int = 4

    def __post_init__(self) -> None:
        def _set(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        # JSON gives lists: store sorted tuples so equal spaces compare (and hash) equal.
        for name in ("kernels", "expands", "depths", "width_mults", "se_choices"):
            values = tuple(getattr(self, name))
            if not values:
                raise ValueError(f"SAMSpace.{name} must not be empty")
            _set(name, tuple(sorted(set(values))))
        _set("pool_heads", tuple(dict.fromkeys(self.pool_heads)))
        _set("stage_widths", tuple(self.stage_widths))
        _set("stage_strides", tuple(self.stage_strides))
        if any(not _is_int(k) or k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"SAMSpace.kernels must be odd positive ints, got {self.kernels}")
        for name in ("expands", "depths", "stage_widths"):
            if any(not _is_int(v) or v < 1 for v in getattr(self, name)):
                raise ValueError(f"SAMSpace.{name} must be positive ints, got {getattr(self, name)}")
        if any(isinstance(w, bool) or w <= 0 for w in self.width_mults):
            raise ValueError(f"SAMSpace.width_mults must be positive, got {self.width_mults}")
        if any(not isinstance(s, bool) for s in self.se_choices):
            raise ValueError(f"SAMSpace.se_choices must be bools, got {self.se_choices}")
        if not self.pool_heads or any(h not in POOL_HEADS for h in self.pool_heads):
            raise ValueError(f"SAMSpace.pool_heads must be a non-empty subset of {POOL_HEADS}")
        if not self.stage_widths or len(self.stage_widths) != len(self.stage_strides):
            raise ValueError("SAMSpace.stage_widths and stage_strides need the same (non-zero) length")
        if any(s not in (1, 2) for s in self.stage_strides):
            raise ValueError(f"SAMSpace.stage_strides must be 1 or 2, got {self.stage_strides}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SAMSpace.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("stem_width", "pool_width", "se_ratio", "channel_divisor"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"SAMSpace.{name} must be a positive int, got {getattr(self, name)}")

    # -- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready dict (lists, not tuples); ``SAMSpace.from_dict`` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SAMSpace:
        return cls(**data)

    # -- members -------------------------------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return len(self.stage_widths)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def _arch(self, width: float, head: str, depth: int, kernel: int, expand: int, se: bool) -> dict:
        stages = [
            {
                "depth": depth,
                "kernel": [kernel] * self.max_depth,
                "expand": [expand] * self.max_depth,
                "se": se,
            }
            for _ in range(self.num_stages)
        ]
        return {"width_mult": width, "head": head, "stages": stages}

    def largest(self) -> dict:
        """Every choice at its maximum (the weight-sharing parent; GRU pooling if available)."""
        head = max(self.pool_heads, key=_POOL_HEAD_SIZE_ORDER.index)
        return self._arch(
            self.width_mults[-1],
            head,
            self.depths[-1],
            self.kernels[-1],
            self.expands[-1],
            self.se_choices[-1],
        )

    def smallest(self) -> dict:
        """Every choice at its minimum (attention pooling if available)."""
        head = min(self.pool_heads, key=_POOL_HEAD_SIZE_ORDER.index)
        return self._arch(
            self.width_mults[0], head, self.depths[0], self.kernels[0], self.expands[0], self.se_choices[0]
        )

    def default(self) -> dict:
        """The middle model: the middle (lower-middle for even counts) choice of kernel, expansion, depth
        and width, no squeeze-excitation unless the space requires it, and the first pooling head."""

        def mid(values: tuple) -> Any:
            return values[(len(values) - 1) // 2]

        return self._arch(
            mid(self.width_mults),
            self.pool_heads[0],
            mid(self.depths),
            mid(self.kernels),
            mid(self.expands),
            self.se_choices[0],
        )

    def sample(self, rng: random.Random) -> dict:
        """A uniformly random member (all per-block entries drawn, including ignored ones)."""
        stages = []
        for _ in range(self.num_stages):
            depth = rng.choice(self.depths)
            kernel = [rng.choice(self.kernels) for _ in range(self.max_depth)]
            expand = [rng.choice(self.expands) for _ in range(self.max_depth)]
            se = rng.choice(self.se_choices)
            stages.append({"depth": depth, "kernel": kernel, "expand": expand, "se": se})
        return {
            "width_mult": rng.choice(self.width_mults),
            "head": rng.choice(self.pool_heads),
            "stages": stages,
        }

    def canonical(self, arch: dict) -> dict:
        """Copy of ``arch`` with the ignored per-block entries (past ``depth``) set to the smallest choice."""
        self.validate(arch)
        stages = []
        for stage in arch["stages"]:
            depth = stage["depth"]
            pad = self.max_depth - depth
            stages.append(
                {
                    "depth": depth,
                    "kernel": list(stage["kernel"][:depth]) + [self.kernels[0]] * pad,
                    "expand": list(stage["expand"][:depth]) + [self.expands[0]] * pad,
                    "se": stage["se"],
                }
            )
        return {"width_mult": arch["width_mult"], "head": arch["head"], "stages": stages}

    def num_archs(self) -> int:
        """Number of distinct models (ignored per-block entries do not count)."""
        per_block = len(self.kernels) * len(self.expands)
        per_stage = len(self.se_choices) * sum(per_block**d for d in self.depths)
        return len(self.width_mults) * len(self.pool_heads) * per_stage**self.num_stages

    def validate(self, arch: Any) -> None:
        """Raise ``ValueError`` naming the first offending entry if ``arch`` is not a member."""
        if not isinstance(arch, dict):
            raise ValueError(f"arch must be a dict, got {type(arch).__name__}")
        _check_keys(arch, _ARCH_KEYS, "arch")
        width = arch["width_mult"]
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width not in self.width_mults:
            raise ValueError(f"arch['width_mult'] = {width!r} is not one of {self.width_mults}")
        if arch["head"] not in self.pool_heads:
            raise ValueError(f"arch['head'] = {arch['head']!r} is not one of {self.pool_heads}")
        stages = arch["stages"]
        if not isinstance(stages, (list, tuple)) or len(stages) != self.num_stages:
            got = len(stages) if isinstance(stages, (list, tuple)) else type(stages).__name__
            raise ValueError(f"arch['stages'] must be a list of {self.num_stages} stages, got {got}")
        for s, stage in enumerate(stages):
            where = f"arch['stages'][{s}]"
            if not isinstance(stage, dict):
                raise ValueError(f"{where} must be a dict, got {type(stage).__name__}")
            _check_keys(stage, _STAGE_KEYS, where)
            depth = stage["depth"]
            if not _is_int(depth) or depth not in self.depths:
                raise ValueError(f"{where}['depth'] = {depth!r} is not one of {self.depths}")
            for key, choices in (("kernel", self.kernels), ("expand", self.expands)):
                values = stage[key]
                if not isinstance(values, (list, tuple)) or len(values) != self.max_depth:
                    raise ValueError(
                        f"{where}['{key}'] must be a list of {self.max_depth} ints (one per possible block; "
                        f"entries past 'depth' are ignored), got {values!r}"
                    )
                for b, value in enumerate(values):
                    if not _is_int(value) or value not in choices:
                        raise ValueError(f"{where}['{key}'][{b}] = {value!r} is not one of {choices}")
            if not isinstance(stage["se"], bool) or stage["se"] not in self.se_choices:
                raise ValueError(f"{where}['se'] = {stage['se']!r} is not one of {self.se_choices}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(mapping: dict, expected: tuple[str, ...], where: str) -> None:
    missing = [k for k in expected if k not in mapping]
    unknown = sorted(str(k) for k in mapping if k not in expected)
    if missing:
        raise ValueError(f"{where} is missing {missing}; expected keys {list(expected)}")
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; expected keys {list(expected)}")


def scale_channels(channels: int, width_mult: float, divisor: int) -> int:
    """``channels * width_mult`` rounded half up to a multiple of ``divisor`` (at least ``divisor``).

    Monotone in ``width_mult``, so a narrower model's channels are always a prefix of a wider one's.
    """
    return max(divisor, int(math.floor(channels * width_mult / divisor + 0.5)) * divisor)


@dataclass(frozen=True)
class BlockPlan:
    """Resolved shape of one MBConv block of an architecture."""

    stage: int
    index: int
    in_ch: int
    out_ch: int
    kernel: int
    expand: int
    stride: int
    se: bool

    @property
    def name(self) -> str:
        return f"backbone.stages.{self.stage}.{self.index}"


def plan_blocks(arch: dict, space: SAMSpace) -> tuple[int, list[BlockPlan], int]:
    """``(stem channels, blocks, pooling width)`` of a validated ``arch``."""
    width = arch["width_mult"]
    stem_ch = scale_channels(space.stem_width, width, space.channel_divisor)
    blocks = []
    in_ch = stem_ch
    for s, stage in enumerate(arch["stages"]):
        out_ch = scale_channels(space.stage_widths[s], width, space.channel_divisor)
        for j in range(stage["depth"]):
            stride = space.stage_strides[s] if j == 0 else 1
            kernel, expand = stage["kernel"][j], stage["expand"][j]
            blocks.append(BlockPlan(s, j, in_ch, out_ch, kernel, expand, stride, stage["se"]))
            in_ch = out_ch
    pool_dim = scale_channels(space.pool_width, width, space.channel_divisor)
    return stem_ch, blocks, pool_dim


def mbconv_stages(blocks: list[BlockPlan], space: SAMSpace) -> list[list[nn.Module]]:
    """The :class:`~ersam_ssl.models.blocks.MBConv1d` modules of planned ``blocks``, grouped by stage."""
    stages: list[list[nn.Module]] = [[] for _ in range(space.num_stages)]
    for b in blocks:
        stages[b.stage].append(
            MBConv1d(b.in_ch, b.out_ch, b.kernel, b.expand, b.stride, b.se, space.activation, space.se_ratio)
        )
    return stages


# -- models ------------------------------------------------------------------------------------------


def as_space(space: SAMSpace | dict | None) -> SAMSpace:
    """A :class:`SAMSpace` from a space, its ``to_dict()`` or ``None`` (the default space)."""
    if space is None:
        return SAMSpace()
    if isinstance(space, SAMSpace):
        return space
    return SAMSpace.from_dict(space)


@MODELS.register("sam")
def build_model(
    arch: dict | None = None,
    num_classes: int = 11,
    head: str = "classify",
    n_mels: int = 64,
    space: SAMSpace | dict | None = None,
    head_kwargs: dict | None = None,
    level_norm: str = "clip",
) -> CountModel:
    """Instantiate a member of the SAM space as a :class:`CountModel` (log-mel frontend included).

    Args:
        arch: architecture dict (default: ``space.default()``); validated against ``space``.
        num_classes: counts ``0..num_classes-1``.
        head: count head name from :data:`~ersam_ssl.models.heads.HEADS`.
        n_mels: mel bands of the frontend.
        space: the search space (a :class:`SAMSpace` or its ``to_dict()``), default ``SAMSpace()``.
        head_kwargs: extra arguments of the count head (e.g. ``{"dropout": 0.2}``).
        level_norm: ``"clip"`` (default) makes the input level-invariant (per-clip log-mel mean removed,
            see :class:`~ersam_ssl.models.frontend.LogMel`); ``"none"`` keeps the absolute level. Model
            files written before this option existed carry no value and are rebuilt with ``"none"``
            (see :meth:`CountModel.from_config`).
    """
    space = as_space(space)
    arch = space.default() if arch is None else arch
    space.validate(arch)
    stem_ch, blocks, pool_dim = plan_blocks(arch, space)
    stages = mbconv_stages(blocks, space)
    last_ch = blocks[-1].out_ch
    backbone = SAMBackbone(
        Stem(n_mels, stem_ch, space.activation),
        stages,
        make_pool(arch["head"], last_ch, pool_dim, space.activation),
    )
    count_head = build_head(head, pool_dim, num_classes, **(head_kwargs or {}))
    config = {
        "name": "sam",
        "kwargs": {
            "arch": json.loads(json.dumps(arch)),  # plain lists, so the config JSON round-trips
            "num_classes": num_classes,
            "head": head,
            "n_mels": n_mels,
            "space": space.to_dict(),
            "head_kwargs": dict(head_kwargs or {}),
            "level_norm": level_norm,
        },
    }
    frontend = sam_frontend(n_mels, level_norm)
    return CountModel(frontend, backbone, count_head, pool_dim, config)
