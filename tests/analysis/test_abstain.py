"""Calibrated abstention in the analysis: temperature and abstain threshold read from the ONNX file.

The counter is built, not trained, so its confidence is known: it counts which of five pure tones are
held through a window (STFT magnitude at five bins, each squashed by a sigmoid at the level a tone held
for *half* the window reaches, then logits ``-beta (c - j)^2``). Sustained tones — the input it was built
for — give an integer ``c`` and a confident count. An arpeggio of three notes, each held for half the
window, puts every note at the decision threshold: ``c = 1.5``, halfway between 1 and 2, and the model is
unsure. That is the case abstention is for.

Abstention is no defence against every out-of-domain input: a small counter *trained* on 240 speech
mixtures (log-mel statistics + linear head, 91 % validation accuracy) gave 0.77–1.0 calibrated confidence
on pure-tone chords, all counted as 3 speakers. Music and noise are caught by the speech-share gate
(``test_vad.py``), not by confidence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TONE_HZ, build_tone_counter
from ersam_ssl.analysis import TorchCounter, analyze_recording, load_counter, read_windows
from ersam_ssl.export import export_onnx
from ersam_ssl.models import CountModel

SR = 16000
SEG = 5.0
AMP = 0.05  # a tone held for the whole window: mean bin magnitude 5.0; for half of it: 2.5
TEMPERATURE, ABSTAIN = 2.0, 0.7


def build_note_counter(beta: float = 5.0):
    """The tone counter with its decision threshold at the level of a note held for half the window."""
    return build_tone_counter(beta, threshold=2.5, sharpness=4.0)


def segment(held: tuple[int, ...] = (), half: tuple[int, ...] = (), seed: int = 0) -> np.ndarray:
    """``held`` tones through the whole segment; ``half`` notes each for half of it (staggered)."""
    rng = np.random.default_rng(seed)
    n = int(SEG * SR)
    t = np.arange(n) / SR
    x = 1e-4 * rng.standard_normal(n)
    for k in held:
        x += AMP * np.sin(2 * np.pi * TONE_HZ[k] * t)
    for i, k in enumerate(half):
        start = int(i * n / (2 * len(half)))
        x[start : start + n // 2] += AMP * np.sin(2 * np.pi * TONE_HZ[k] * t[start : start + n // 2])
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    segments = [segment((0,)), segment(half=(0, 2, 4)), segment((1, 2)), segment(), segment(half=(1, 3, 4)),
                segment((0, 1, 2))]  # fmt: skip
    path = tmp_path_factory.mktemp("notes") / "notes.wav"
    sf.write(str(path), np.concatenate(segments), SR, subtype="FLOAT")
    return path, np.stack(segments)


def reference(model: CountModel, windows: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        log_p = model.head.log_probs(model(torch.from_numpy(windows)))
    p = torch.softmax(log_p / temperature, dim=-1).numpy()
    return p.argmax(1), p.max(1)


def test_calibrated_onnx_counter_abstains_on_ambiguous_windows(recording, tmp_path):
    path, windows = recording
    model = build_note_counter()
    counts, conf = reference(model, windows, TEMPERATURE)
    assert counts.tolist() == [1, 1, 2, 0, 1, 3] or counts.tolist() == [1, 2, 2, 0, 2, 3]
    assert conf[[0, 2, 3, 5]].min() > 0.8 and conf[[1, 4]].max() < 0.55  # sure on held tones only

    onnx_path = export_onnx(model, tmp_path / "notes.onnx", int(SEG * SR), temperature=TEMPERATURE,
                            abstain_confidence=ABSTAIN)  # fmt: skip
    counter = load_counter(onnx_path)
    assert (counter.temperature, counter.abstain_confidence) == (TEMPERATURE, ABSTAIN)
    s = analyze_recording(path, onnx_path, tmp_path / "out")
    t = s.table
    assert t.status.tolist() == ["analysed", "uncertain", "analysed", "gated", "uncertain", "analysed"]
    assert t.count.tolist() == [1, -1, 2, 0, -1, 3] and (t.level[[1, 4]] == -1).all()
    np.testing.assert_allclose(t.confidence[[0, 1, 2, 4, 5]], conf[[0, 1, 2, 4, 5]], rtol=1e-4)
    assert s.uncertain_windows == 2 and s.uncertain_share == pytest.approx(2 / 6)
    assert s.mean_count == pytest.approx((1 + 2 + 0 + 3) / 4)  # over the counted windows
    assert s.model["temperature"] == TEMPERATURE and s.model["abstain_confidence"] == ABSTAIN
    rows = read_windows(tmp_path / "out")
    assert [r["count"] for r in rows] == [1, None, 2, 0, None, 3]
    assert rows[1]["confidence"] == pytest.approx(conf[1], rel=1e-3)  # why it abstained stays visible
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["uncertain_share"] == pytest.approx(2 / 6)
    assert (tmp_path / "out" / "timeline.png").is_file()

    # The same model as PyTorch with the same calibration gives the same table.
    torch_run = analyze_recording(path, TorchCounter(model, temperature=TEMPERATURE, abstain_confidence=ABSTAIN),
                                  tmp_path / "torch", plot=False)  # fmt: skip
    assert torch_run.table.status.tolist() == t.status.tolist()


def test_files_without_calibration_count_every_window(recording, tmp_path):
    path, windows = recording
    model = build_note_counter()
    plain = export_onnx(model, tmp_path / "plain.onnx", int(SEG * SR))
    counter = load_counter(plain)
    assert (counter.temperature, counter.abstain_confidence) == (1.0, None)
    s = analyze_recording(path, plain, tmp_path / "out", plot=False)
    assert "uncertain" not in s.table.status.tolist() and s.uncertain_share == 0.0
    counts, conf = reference(model, windows, 1.0)
    np.testing.assert_allclose(s.table.confidence[[0, 1, 2, 4, 5]], conf[[0, 1, 2, 4, 5]], rtol=1e-4)
    assert (s.table.count[[0, 2, 5]] == [1, 2, 3]).all()
