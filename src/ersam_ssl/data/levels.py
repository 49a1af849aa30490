"""Map speaker counts to social ambiance levels (the clinical read-out of a count)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AmbianceLevels:
    """Counts → SAM levels by lower bounds.

    Default: ``0`` none (no one speaking), ``1`` one-to-one (one talker, e.g. a conversation partner or the
    patient alone), ``2–3`` small group, ``4+`` crowd.

    Args:
        lower_bounds: the smallest count of each level after the first (strictly increasing, > 0).
        names: one name per level (len(lower_bounds) + 1).
    """

    lower_bounds: tuple[int, ...] = (1, 2, 4)
    names: tuple[str, ...] = ("none", "one-to-one", "small group", "crowd")

    def __post_init__(self) -> None:
        b = self.lower_bounds
        if any(x <= 0 for x in b) or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError(f"lower_bounds {b} must be positive and strictly increasing")
        if len(self.names) != len(b) + 1:
            raise ValueError(f"need {len(b) + 1} level names for bounds {b}, got {len(self.names)}")

    @property
    def num_levels(self) -> int:
        return len(self.names)

    def level(self, counts):
        """Level index per count (array-like or int in, same kind out)."""
        out = np.searchsorted(np.asarray(self.lower_bounds), np.asarray(counts), side="right")
        return int(out) if np.ndim(out) == 0 else out

    def name(self, count: int) -> str:
        return self.names[self.level(count)]

    def matrix(self, num_classes: int) -> np.ndarray:
        """[num_classes, num_levels] 0/1 matrix summing count probabilities into level probabilities."""
        m = np.zeros((num_classes, self.num_levels), dtype=np.float32)
        m[np.arange(num_classes), self.level(np.arange(num_classes))] = 1.0
        return m
