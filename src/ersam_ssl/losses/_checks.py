"""Input checks shared by the loss functions of :mod:`ersam_ssl.losses`.

Every failed check raises a one-line ``ValueError`` that names the offending argument and says what was
expected and what was given, e.g. ``teacher_logits must have shape [B=3, C=4], got (3, 5)`` or
``temperature must be finite and > 0, got nan``. The checks read shapes, dtypes and Python scalars only,
except :func:`check_range`, which reads the values of labels and indices (one reduction).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor


def _dims(dims: str) -> list[str]:
    return [d.strip() for d in dims.split(",")]


def check_shape(name: str, x: Any, dims: str, floating: bool | None = None, **sizes: int) -> dict[str, int]:
    """``x`` is a tensor of shape ``[dims]`` (e.g. ``"B, C"``) whose named sizes equal ``sizes`` (``B=3``).

    Args:
        name: the argument's name, for the message.
        x: the argument.
        dims: comma-separated dimension names; their number is the required rank.
        floating: ``True``: a floating-point dtype is required; ``False``: an integer dtype (not bool).
        sizes: sizes the named dimensions must have (e.g. those of another argument).

    Returns:
        ``{dimension name: size}`` of ``x``, to pin the dimensions of the next argument.
    """
    names = _dims(dims)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor of shape [{dims}], got {type(x).__name__}")
    if x.dim() != len(names) or any(x.shape[i] != sizes[d] for i, d in enumerate(names) if d in sizes):
        wanted = ", ".join(f"{d}={sizes[d]}" if d in sizes else d for d in names)
        raise ValueError(f"{name} must have shape [{wanted}], got {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
    return dict(zip(names, x.shape))


def check_same_shape(floating: bool = False, **tensors: Any) -> None:
    """The ``tensors`` (any rank) share one shape (and, with ``floating``, have floating-point dtypes)."""
    names = list(tensors)
    for name in names:
        x = tensors[name]
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
        if floating and not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    shapes = [str(tuple(tensors[n].shape)) for n in names]
    if len(set(shapes)) > 1:
        raise ValueError(
            f"{', '.join(names[:-1])} and {names[-1]} must have the same shape, "
            f"got {', '.join(shapes[:-1])} and {shapes[-1]}"
        )


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def check_finite(name: str, value: Any) -> float:
    """``value`` is a finite number; returned as a float."""
    v = _scalar(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def check_positive(name: str, value: Any) -> float:
    """``value`` is a finite number > 0 (temperatures, scales); returned as a float."""
    v = _scalar(name, value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    return v


def check_interval(name: str, value: Any, low: float, high: float, high_open: bool = False) -> float:
    """``low <= value <= high`` (``< high`` with ``high_open``); NaN fails. Returned as a float."""
    v = _scalar(name, value)
    if not (low <= v and (v < high if high_open else v <= high)):
        raise ValueError(f"{name} must lie in [{low}, {high}{')' if high_open else ']'}, got {v}")
    return v


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` is an integer >= ``minimum`` (sample counts, class counts, steps)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_range(name: str, values: Tensor, low: int, high: int) -> None:
    """Every integer in ``values`` (labels, dataset indices) lies in ``[low, high]`` (one reduction)."""
    if values.numel() == 0:
        return
    smallest, largest = int(values.min()), int(values.max())
    if smallest < low or largest > high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {smallest if smallest < low else largest}")
