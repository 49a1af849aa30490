"""A real speech counter, trained here, analysing a 10-minute recording of mixtures with known counts.

About 15 s of CPU training on an idle 2-core box. The tests in ``test_recording.py`` check the same plumbing
exactly with a deterministic tone counter; this one checks that real speech counts come out within tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ersam_ssl.analysis import analyze_recording
from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig
from ersam_ssl.models import SAMSpace, build_model

SR = 16000


def test_trained_counter_on_a_ten_minute_recording(synth_source, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = DataConfig(
        synth_speakers=30,
        synth_seconds=6.0,
        mixture=MixtureConfig(max_speakers=3, duration=5.0),
        split_fractions=(0.6, 0.15, 0.15, 0.1),
        pool_size=240,
        labels_per_class=-1,
        val_size=8,
        test_size=8,
        num_workers=0,
        labeled_scenario="clean",
        unlabeled_scenario="clean",
        test_scenario="clean",
    )
    engine = DataEngine(cfg, source=synth_source)
    pool = engine.pool
    x_train = torch.stack([pool[i][0] for i in range(len(pool))])
    y_train = torch.from_numpy(pool.counts())
    model = build_model(SAMSpace().default(), num_classes=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(250):
        idx = torch.randint(0, len(x_train), (16,), generator=gen)
        loss = model.head.loss(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    # 10 minutes: 90 unseen test-speaker mixtures (counts 0..3) and 30 silent segments, shuffled.
    test = engine.mixtures("test", 90, "clean")
    rng = np.random.default_rng(1)
    order = rng.permutation(120)
    truth, gated_truth = [], []
    path = tmp_path / "ward.flac"
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for k in order:
            if k < 90:
                m = test.generate(int(k))
                f.write(m.audio)
                truth.append(m.count)
                gated_truth.append(False)
            else:
                f.write((1e-4 * rng.standard_normal(5 * SR)).astype(np.float32))
                truth.append(0)
                gated_truth.append(True)
    s = analyze_recording(path, model, tmp_path / "out")
    truth_arr, silent = np.array(truth), np.array(gated_truth)
    t = s.table
    assert len(t) == 120
    np.testing.assert_array_equal(t.start_s, np.arange(120) * 5.0)
    assert (t.count[silent] == 0).all() and t.gated[silent].all()  # silence: exact, model not run
    speech = (~silent) & (truth_arr > 0)
    assert not t.gated[speech].any()
    mae = np.abs(t.count[~silent] - truth_arr[~silent]).mean()
    acc = (t.count[~silent] == truth_arr[~silent]).mean()
    print(f"trained counter on the recording: MAE {mae:.3f}, accuracy {acc:.3f}")
    assert mae <= 0.3 and acc >= 0.75, f"MAE {mae:.2f}, accuracy {acc:.2f}"
    assert s.mean_count == pytest.approx(t.count.mean())
