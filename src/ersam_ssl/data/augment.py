"""Weak and strong augmentation views (audiomentations) for pseudo-labeling and contrastive learning.

Every transform here preserves the speaker count: no time stretching beyond what keeps all talkers,
short time masks only, no mixing with speech. Weak = gain + circular shift (FixMatch's "flip-and-shift"
analogue, Sohn et al. 2020); strong = weak followed by two to four distortions drawn from noise, filtering,
distortion and masking (RandAugment-style, as FixMatch's strong branch).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import numpy as np
import torch
from audiomentations import (
    AddColorNoise,
    BandPassFilter,
    Compose,
    Gain,
    GainTransition,
    HighPassFilter,
    LowPassFilter,
    PolarityInversion,
    Shift,
    SomeOf,
    TanhDistortion,
    TimeMask,
)
from torch.utils.data import Dataset

from ersam_ssl.audio import SAMPLE_RATE
from ersam_ssl.data.sampling import split_key
from ersam_ssl.registry import Registry

View = Callable[[np.ndarray], np.ndarray]
VIEWS: Registry[Callable[[], View]] = Registry("view")


class _Audiomentation:
    """Adapter: ``Compose`` → ``f(np.ndarray) -> np.ndarray`` at 16 kHz, float32, finite."""

    def __init__(self, compose: Compose, sample_rate: int = SAMPLE_RATE) -> None:
        self.compose = compose
        self.sample_rate = sample_rate

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.compose(samples=np.asarray(x, dtype=np.float32), sample_rate=self.sample_rate)
        return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


@VIEWS.register("identity")
def identity_view() -> View:
    return lambda x: np.asarray(x, dtype=np.float32)


def _weak_parts() -> list:
    return [
        Gain(min_gain_db=-6.0, max_gain_db=6.0, p=1.0),
        Shift(min_shift=-0.5, max_shift=0.5, shift_unit="fraction", rollover=True, p=1.0),
    ]


@VIEWS.register("weak")
def weak_view() -> View:
    """Gain ±6 dB and a random circular shift."""
    return _Audiomentation(Compose(_weak_parts()))


@VIEWS.register("strong")
def strong_view() -> View:
    """Weak view plus 2–4 count-preserving distortions."""
    distortions = SomeOf(
        (2, 4),
        [
            AddColorNoise(min_snr_db=5.0, max_snr_db=25.0, p=1.0),
            BandPassFilter(min_center_freq=300.0, max_center_freq=2500.0, p=1.0),
            LowPassFilter(min_cutoff_freq=2000.0, max_cutoff_freq=6000.0, p=1.0),
            HighPassFilter(min_cutoff_freq=50.0, max_cutoff_freq=400.0, p=1.0),
            TanhDistortion(min_distortion=0.05, max_distortion=0.4, p=1.0),
            GainTransition(min_gain_db=-12.0, max_gain_db=6.0, p=1.0),
            TimeMask(min_band_part=0.02, max_band_part=0.08, p=1.0),
            PolarityInversion(p=1.0),
        ],
    )
    return _Audiomentation(Compose([*_weak_parts(), distortions]))


def make_view(name: str) -> View:
    return VIEWS.get(name)()


class ViewDataset(Dataset):
    """Wrap a ``(waveform, count)`` dataset and return named augmented views.

    Args:
        base: dataset of ``(waveform tensor, count tensor)``.
        views: ``{key: view name}``, e.g. ``{"x": "weak"}`` for labeled batches,
            ``{"weak": "weak", "strong": "strong"}`` for FixMatch, ``{"v1": "strong", "v2": "strong"}``
            for contrastive pretraining.
        indices: optional subset of ``base`` (e.g. the labeled budget).
        hide_label: store the label as ``y_hidden`` (for monitoring pseudo-label accuracy only) instead of
            ``y``, so an unlabeled loader cannot leak labels into a loss by accident.
        seed: with :class:`~ersam_ssl.data.sampling.EpochSampler` keys ``(index, epoch, round)``, views are
            drawn from a generator seeded by (seed, epoch, round, index): reproducible in any worker.

    Items are dicts: the view keys, ``idx`` (position in this dataset, used by FlexMatch) and ``y`` or
    ``y_hidden``. Indexed with a plain int, views use the global generators (seed them with
    ``lightning.seed_everything(seed, workers=True)``); indexed with an EpochSampler key they are exact.
    """

    def __init__(
        self,
        base: Dataset,
        views: Mapping[str, str],
        indices: np.ndarray | list[int] | None = None,
        hide_label: bool = False,
        seed: int = 0,
    ) -> None:
        self.base = base
        self.seed = int(seed)
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.view_names = dict(views)
        self._views = {k: make_view(v) for k, v in self.view_names.items()}
        self.hide_label = hide_label

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else int(self.indices.size)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, torch.Tensor]:
        i, epoch = split_key(key)
        j = i if self.indices is None else int(self.indices[i])
        wave, y = self.base[j]
        x = wave.numpy()
        if epoch is None:
            views = {k: v(x) for k, v in self._views.items()}
        else:
            # audiomentations draws from the global `random` and `np.random` generators: seed them from
            # (seed, epoch, round, item) and restore them afterwards (same draws in any worker, any order).
            py_state, np_state = random.getstate(), np.random.get_state()
            ss = np.random.SeedSequence([self.seed, *epoch, i])
            random.seed(int(ss.generate_state(1)[0]))
            np.random.seed(ss.generate_state(4))
            try:
                views = {k: v(x) for k, v in self._views.items()}
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in views.items()}
        out["idx"] = torch.tensor(i, dtype=torch.int64)
        out["y_hidden" if self.hide_label else "y"] = y
        return out
