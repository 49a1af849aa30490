"""Epoch-seeded sampling: every epoch's order and every augmentation draw depend only on (seed, epoch, item).

This is what lets a killed run, resumed from its last epoch-boundary checkpoint, reproduce the uninterrupted
run exactly, whatever the number of DataLoader workers: :class:`EpochSampler` yields
``(index, pass_id, round)`` keys and :class:`~ersam_ssl.data.augment.ViewDataset` seeds its views from them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

Key = tuple[int, ...]


class EpochSampler(Sampler[Key]):
    """Shuffled keys ``(index, pass_id, round)``; the permutation is a function of (seed, pass_id, round).

    ``pass_id`` identifies one pass over the data. With a ``clock`` (the datamodule passes the trainer's
    ``global_step``) it is the optimizer step at which the pass starts — identical in an uninterrupted run
    and in a run resumed from a checkpoint, unlike Lightning's epoch counter, which can differ by one after
    resuming from an end-of-epoch checkpoint. Without a clock it is the epoch given to :meth:`set_epoch`.
    ``round`` counts passes started at the same clock value (so a loader re-iterated within a step still
    gets a new order). ``repeats`` > 1 makes one pass ``repeats`` shuffled copies of the data (a few-label
    set then forms an epoch of useful length instead of one batch followed by a full validation).
    """

    def __init__(
        self, num_items: int, seed: int = 0, shuffle: bool = True, clock=None, repeats: int = 1
    ) -> None:
        self.num_items = int(num_items)
        self.repeats = max(1, int(repeats))
        self.seed = int(seed)
        self.shuffle = shuffle
        self.clock = clock
        self.epoch = 0
        self._last: int | None = None
        self._round = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items * self.repeats

    def __iter__(self) -> Iterator[Key]:
        pass_id = int(self.clock()) if self.clock is not None else self.epoch
        self._round = self._round + 1 if pass_id == self._last else 0
        self._last = pass_id
        keys: list[Key] = []
        for r in range(self.repeats):
            order = (
                np.random.default_rng([self.seed, pass_id, self._round, r]).permutation(self.num_items)
                if self.shuffle
                else np.arange(self.num_items)
            )
            keys.extend((int(i), pass_id, self._round, r) for i in order)
        return iter(keys)


def split_key(key: int | Key) -> tuple[int, tuple[int, ...] | None]:
    """``(index, (epoch, round) or None)`` from an integer index or an :class:`EpochSampler` key."""
    if isinstance(key, tuple | list):
        return int(key[0]), tuple(int(k) for k in key[1:])
    return int(key), None
