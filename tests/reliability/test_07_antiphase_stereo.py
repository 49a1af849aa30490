"""Item 7: channels that cancel each other are not averaged to silence; the loudest one is used, and the
user is told."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ersam_ssl import audio
from ersam_ssl.checkpoint import save_model
from ersam_ssl.cli import main
from ersam_ssl.models import create_model

SR = 16000


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    return (0.1 * rng.standard_normal(n) * (np.sin(np.arange(n) * 2 * np.pi * 3 / SR) > 0)).astype(np.float32)


def test_downmix_falls_back_to_the_louder_channel_only_when_channels_cancel() -> None:
    x = _speechlike(1.0)
    mono, channel = audio.downmix(np.stack([x, -0.9 * x], axis=1))  # reversed polarity, 1 dB quieter
    assert channel == 0 and np.array_equal(mono, x)
    mono, channel = audio.downmix(np.stack([0.9 * x, -x], axis=1))
    assert channel == 1 and np.array_equal(mono, -x)
    same, other = _speechlike(1.0), _speechlike(1.0, seed=1)
    for pair in (np.stack([x, x], axis=1), np.stack([same, other], axis=1), np.zeros((SR, 2), np.float32)):
        mono, channel = audio.downmix(pair)  # in phase, uncorrelated, silent: the mean as before
        assert channel is None and np.array_equal(mono, pair.mean(axis=1, dtype=np.float32))


def test_antiphase_stereo_is_analysed_and_reported(tmp_path: Path, capsys, caplog) -> None:
    x = _speechlike(10.0)
    rec = tmp_path / "antiphase.wav"
    sf.write(rec, np.stack([x, -x], axis=1), SR, subtype="FLOAT")  # the mean is exactly zero
    with caplog.at_level(logging.WARNING, logger="ersam_ssl.audio"):
        loaded = audio.load(rec)
    assert np.sqrt(np.mean(loaded**2)) > 0.03 and "anti-phase" in caplog.text
    torch.manual_seed(0)
    model = save_model(create_model("sam", num_classes=4), tmp_path / "sam.pt")
    out = tmp_path / "out"
    # a tone, not speech: the energy gate is what the anti-phase downmix used to fool
    assert main(["analyze", str(rec), "--model", str(model), "--out", str(out), "--quiet", "--no-plot",
                 "--vad", "energy"]) == 0  # fmt: skip
    assert "anti-phase" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gated_windows"] == 0 and summary["analysed_windows"] == 2  # not gated as silence
    assert summary["input"]["antiphase_s"] == 10.0 and "anti-phase" in summary["warnings"][0]
