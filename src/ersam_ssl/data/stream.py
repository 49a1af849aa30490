"""Streamed, never-repeating training mixtures with their exact counts (free labels).

A generated mixture's count is known exactly, so the data engine is an unlimited labeled corpus of the
speakers it holds. :class:`MixtureStreamDataModule` serves one training epoch of ``steps x batch_size``
fresh mixtures (item ``i`` depends only on (seed, stream, i), so no item repeats and every worker renders
the same item for the same index), in the domain-randomized scenario by default, half of them
conversational. :class:`StreamSampler` starts the stream at ``global_step x batch_size``, so a run
resumed from a mid-epoch checkpoint continues with exactly the clips the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Sampler

from ersam_ssl.data.datamodule import DataEngine
from ersam_ssl.data.mixtures import MixtureDataset


class StreamSampler(Sampler[int]):
    """Indices ``clock() * batch_size, ..., num_items - 1`` in order (the stream is already random)."""

    def __init__(self, num_items: int, batch_size: int, clock: Callable[[], int] | None = None) -> None:
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.clock = clock

    def _start(self) -> int:
        return min(self.num_items, int(self.clock()) * self.batch_size) if self.clock else 0

    def __len__(self) -> int:
        return self.num_items - self._start()

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._start(), self.num_items))


def stream_dataset(
    engine: DataEngine, size: int, speakers: Sequence[str] | None = None, stream: str = "stream"
) -> MixtureDataset:
    """``size`` train mixtures in ``engine.config.train_scenario`` with ``train_conversation_prob``."""
    cfg = engine.config
    mixture = replace(cfg.mixture, conversation_prob=cfg.train_conversation_prob)
    return MixtureDataset(
        engine.bank,
        engine.splits["train"] if speakers is None else speakers,
        size,
        mixture,
        seed=cfg.seed,
        split=stream,
        scenario=engine.renderer(cfg.train_scenario),
    )


class _Named(Dataset):
    """``(x, y)`` items as ``{"x", "y"}`` dicts (``"y_hidden"`` for an unlabeled stream)."""

    def __init__(self, base: Dataset, hide_label: bool = False) -> None:
        self.base = base
        self.label_key = "y_hidden" if hide_label else "y"

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        x, y = self.base[i]
        return {"x": x, self.label_key: y}


class MixtureStreamDataModule(pl.LightningDataModule):
    """Train on ``max_steps x batch_size`` fresh mixtures; validate and test on the engine's sets.

    Args:
        engine: the data engine (bank, splits, scenarios).
        batch_size: clips per step (default ``engine.config.batch_size``).
        num_workers: DataLoader workers rendering mixtures (default ``engine.config.num_workers``).
        speakers: train speakers (default the engine's train split).
        val: validation set (default ``engine.val``).
        unlabeled_batch_size: also serve an unlabeled stream (other clips, label hidden): batches are then
            ``{"labeled": {"x", "y"}, "unlabeled": {"x", "y_hidden"}}``, the shape distillation and
            supernet training read.
        target_batch_size: also serve the engine's few labeled target-domain clips (its label budget,
            weak view, reshuffled every pass): batches are then ``{"stream": (x, y), "target": {"x", "y"}}``
            (adaptation with replay of the source stream).
    """

    def __init__(
        self,
        engine: DataEngine,
        batch_size: int | None = None,
        num_workers: int | None = None,
        speakers: Sequence[str] | None = None,
        val: Dataset | None = None,
        unlabeled_batch_size: int | None = None,
        target_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.batch_size = batch_size or engine.config.batch_size
        self.num_workers = engine.config.num_workers if num_workers is None else num_workers
        self.speakers = speakers
        self._val = val
        self.unlabeled_batch_size = unlabeled_batch_size
        self.target_batch_size = target_batch_size

    def _clock(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    def _stream_loader(self, steps: int, batch_size: int, stream: str, named: str | None) -> DataLoader:
        ds: Dataset = stream_dataset(self.engine, steps * batch_size, self.speakers, stream=stream)
        if named is not None:
            ds = _Named(ds, hide_label=named == "unlabeled")
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=StreamSampler(len(ds), batch_size, self._clock),
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        trainer = getattr(self, "trainer", None)
        steps = trainer.max_steps if trainer is not None else -1
        if steps is None or steps <= 0:
            raise ValueError("a mixture stream needs trainer max_steps > 0 (its length is steps x batch)")
        if self.target_batch_size:
            from ersam_ssl.data.augment import ViewDataset
            from ersam_ssl.data.sampling import EpochSampler

            e = self.engine
            target = ViewDataset(e.pool, {"x": "weak"}, indices=e.budget[0], seed=e.config.seed)
            bs = min(self.target_batch_size, len(target))
            return {
                "stream": self._stream_loader(steps, self.batch_size, "stream", None),
                "target": DataLoader(
                    target, batch_size=bs, drop_last=True, num_workers=0,
                    sampler=EpochSampler(len(target), seed=e.config.seed, clock=self._clock),
                ),
            }  # fmt: skip
        if not self.unlabeled_batch_size:
            return self._stream_loader(steps, self.batch_size, "stream", None)
        return {
            "labeled": self._stream_loader(steps, self.batch_size, "stream", "labeled"),
            "unlabeled": self._stream_loader(
                steps, self.unlabeled_batch_size, "stream-unlabeled", "unlabeled"
            ),
        }

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        if isinstance(ds, MixtureDataset):
            ds.precompute()  # read at every validation: render once
        return DataLoader(ds, batch_size=self.batch_size * 2, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._val if self._val is not None else self.engine.val)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.engine.test)
