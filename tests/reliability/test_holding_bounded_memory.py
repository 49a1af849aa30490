"""Already holding, kept by this test: a 2-hour recording is analysed in bounded memory (streamed in blocks;
``tests/analysis/test_recording.py`` checks that the peak does not grow from 5 to 31 minutes)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ersam_ssl.analysis import analyze_recording


class OneCounter:
    """Counts 1 in every window it is given (the VAD gates the silent ones before they reach it)."""

    num_classes, fixed_batch, fixed_samples = 4, None, None

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(len(windows), np.int64), np.ones(len(windows))

    def info(self) -> dict:
        return {"backend": "test"}


def test_two_hour_recording_in_bounded_memory(tmp_path: Path) -> None:
    sr = 2000  # stored at a low rate to keep the file small; decoded and resampled to 16 kHz like any other
    path = tmp_path / "two_hours.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(120):  # every minute: 20 s of activity, 40 s of digital silence
            minute = np.zeros(60 * sr, np.float32)
            minute[: 20 * sr] = 0.1 * rng.standard_normal(20 * sr)
            f.write(minute)
    tracemalloc.start()
    try:
        s = analyze_recording(path, OneCounter(), tmp_path / "out", plot=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    decoded_bytes = 2 * 3600 * 16000 * 4  # 461 MB as float32 at 16 kHz
    assert s.windows == 1440 and s.hours_analysed == pytest.approx(2.0) and s.status == "ok"
    assert s.count_share["1"] == pytest.approx(1 / 3) and s.gated_windows == 960
    assert peak < decoded_bytes / 10, f"peak {peak / 1e6:.1f} MB"
