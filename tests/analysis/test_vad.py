"""Silero speech VAD: the wheel's model run by ONNX Runtime, streamed over a recording, per-window share.

References are computed the plain way (whole signal at once, one frame per call of the per-frame
export, as ``silero_vad.OnnxWrapper`` does) and compared with the streamed, block-by-block version.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from ersam_ssl import audio
from ersam_ssl.analysis.reader import AudioBlock, iter_windows
from ersam_ssl.analysis.vad import (
    CONTEXT,
    FRAME,
    FRAME_MODEL,
    SEQUENCE_MODEL,
    SileroVAD,
    SpeechTracker,
    SpeechVadConfig,
    VadUnavailable,
    load_speech_vad,
    silero_model_dir,
)

SR = 16000


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def speech(synth_source) -> np.ndarray:
    """~6 s of one synthesized voice, then 2 s of a -80 dBFS floor, then another voice."""
    by_spk = synth_source.by_speaker()
    a, b = (by_spk[s][0] for s in sorted(by_spk)[:2])
    floor = 1e-4 * np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32)
    return np.concatenate([audio.load(a.path), floor, audio.load(b.path)]).astype(np.float32)


def frame_by_frame(x: np.ndarray) -> np.ndarray:
    """Probabilities as ``silero_vad.OnnxWrapper`` computes them: one 512-sample frame per call of
    ``silero_vad.onnx``, the previous frame's last 64 samples prepended, the state carried."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(silero_model_dir() / FRAME_MODEL), providers=["CPUExecutionProvider"])
    n = -(-x.size // FRAME)
    padded = np.zeros(n * FRAME, np.float32)
    padded[: x.size] = x
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    out = []
    for i in range(n):
        chunk = padded[i * FRAME : (i + 1) * FRAME]
        p, state = session.run(
            None, {"input": np.concatenate([context, chunk])[None], "state": state, "sr": np.array(SR)}
        )
        out.append(float(p[0, 0]))
        context = chunk[-CONTEXT:]
    return np.array(out, np.float32)


def share_reference(probs: np.ndarray, start: int, length: int, end: int, threshold: float) -> float:
    """Frames entirely inside ``[start, start + length)``; the zero-padded last frame ends at ``end``."""
    lo = math.ceil(start / FRAME)
    hi = probs.size if start + length >= end else (start + length) // FRAME
    return float(np.mean(probs[lo:hi] >= threshold)) if hi > lo else math.nan


def test_both_exports_give_the_reference_probabilities(vad, speech):
    """The sequence export (default) and the per-frame export equal the reference loop."""
    assert vad.sequence and vad.path.name == SEQUENCE_MODEL
    ref = frame_by_frame(speech[: 3 * SR + 100])
    np.testing.assert_allclose(vad.probabilities(speech[: 3 * SR + 100]), ref, atol=1e-5)
    per_frame = SileroVAD(silero_model_dir() / FRAME_MODEL)
    assert not per_frame.sequence
    np.testing.assert_allclose(per_frame.probabilities(speech[: 3 * SR + 100]), ref, atol=1e-5)
    # frames_per_call splits the sequence without changing it (the state runs on between calls)
    np.testing.assert_allclose(
        SileroVAD(frames_per_call=7).probabilities(speech[: 3 * SR + 100]), ref, atol=1e-5
    )


def test_speech_scores_high_and_tones_noise_and_silence_low(vad, speech):
    rng = np.random.default_rng(0)
    t = np.arange(5 * SR) / SR
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)).astype(np.float32)
    noise = (0.05 * rng.standard_normal(5 * SR)).astype(np.float32)
    speech_part = speech[: int(2.5 * SR)]
    assert np.mean(vad.probabilities(speech_part) >= 0.5) > 0.5
    for x in (chord, noise, np.zeros(5 * SR, np.float32)):
        assert np.mean(vad.probabilities(x) >= 0.5) < 0.1


@pytest.mark.parametrize("block", [SR, 7777])
def test_tracker_streams_windows_like_the_whole_signal(vad, speech, block):
    """Streamed block by block (state carried), windows with overlap and a padded tail get the share of
    the whole-signal probabilities; a block size changes nothing."""
    x = speech
    probs = vad.probabilities(x)
    tracker = SpeechTracker(vad, threshold=0.5)
    blocks = (AudioBlock(a, x[a : a + block]) for a in range(0, x.size, block))
    window, hop = 2 * SR, SR + 333
    shares, expected = [], []
    for wb in iter_windows(tracker.track(blocks), window, hop, min_tail=SR // 2, batch_size=3):
        shares.extend(tracker.speech_share(wb.starts, wb.lengths))
        expected.extend(share_reference(probs, s, n, x.size, 0.5) for s, n in zip(wb.starts, wb.lengths))
        assert tracker._speech.size <= (3 * hop + window + 2 * block) // FRAME + 2  # released as it goes
    np.testing.assert_allclose(shares, expected)
    assert len(shares) == 1 + -(-(x.size - window) // hop)  # includes the tail window
    assert 0.0 < min(shares) < 0.3 and max(shares) > 0.7  # the silent gap and the voices
    assert tracker.seconds == pytest.approx(-(-x.size // FRAME) * FRAME / SR)


def test_tracker_refuses_windows_it_cannot_answer(vad):
    tracker = SpeechTracker(vad)
    blocks = tracker.track([AudioBlock(0, np.zeros(4 * FRAME, np.float32))])
    next(blocks)
    with pytest.raises(ValueError, match="past"):
        tracker.speech_share(np.array([0]), np.array([5 * FRAME]))
    assert np.isnan(tracker.speech_share(np.array([10]), np.array([FRAME]))[0])  # no whole frame inside
    assert tracker.speech_share(np.array([FRAME]), np.array([2 * FRAME]))[0] == 0.0
    with pytest.raises(ValueError, match="released"):
        tracker.speech_share(np.array([0]), np.array([2 * FRAME]))


def test_a_model_that_is_not_silero_is_refused_and_the_analysis_falls_back(tmp_path, caplog):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    with pytest.raises(VadUnavailable, match="not a Silero"):
        SileroVAD(other)
    with caplog.at_level(logging.WARNING, logger="ersam_ssl.analysis.vad"):
        model, reason = load_speech_vad(SpeechVadConfig(model_path=str(tmp_path / "missing.onnx")))
    assert model is None and "missing.onnx" in reason
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]  # one line
    assert "energy VAD" in caplog.records[0].getMessage()
    assert load_speech_vad(SpeechVadConfig(backend="energy")) == (None, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"backend": "webrtc"}, {"threshold": 1.0}, {"min_speech_share": 0.3, "min_count_share": 0.2},
     {"min_count_share": 1.5}],
)  # fmt: skip
def test_speech_vad_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SpeechVadConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------
# In the analysis: speech share per window, no-speech gate, too little speech → uncertain


class ConstantCounter:
    """Says "one speaker, 99 % sure" for every window it is run on (and counts the windows)."""

    num_classes = 4
    fixed_batch = None
    fixed_samples = None

    def __init__(self) -> None:
        self.windows = 0

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.windows += windows.shape[0]
        return np.ones(len(windows), np.int64), np.full(len(windows), 0.99)

    def info(self) -> dict:
        return {"backend": "constant"}


def _rms(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-20)).astype(np.float32)


@pytest.fixture(scope="module")
def mixed_recording(tmp_path_factory, synth_source) -> tuple:
    """5 s segments: speech, chord, speech, pink-ish noise, -80 dBFS floor, a 0.3 s word in the floor."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = 5 * SR
    by_spk = synth_source.by_speaker()
    voices = [np.resize(audio.load(by_spk[s][0].path), n) for s in sorted(by_spk)[:2]]
    t = np.arange(n) / SR
    chord = sum(np.sin(2 * np.pi * f * t) * np.exp(-((t % 1.25) * 2)) for f in (220.0, 277.2, 329.6))
    noise = np.cumsum(rng.standard_normal(n))
    noise -= np.convolve(noise, np.ones(400) / 400, mode="same")  # brown, high-passed
    floor = 1e-4 * rng.standard_normal(n)
    word = floor.copy()
    onset = np.flatnonzero(np.abs(voices[0]) > 0.05 * np.abs(voices[0]).max())[0]
    word[SR : SR + int(0.3 * SR)] += _rms(voices[0][onset : onset + int(0.3 * SR)], -26.0)
    segments = [_rms(voices[0], -26.0), _rms(chord, -20.0), _rms(voices[1], -30.0), _rms(noise, -25.0), floor,
                word]  # fmt: skip
    path = tmp_path_factory.mktemp("mixed") / "mixed.wav"
    sf.write(str(path), np.concatenate(segments).astype(np.float32), SR, subtype="FLOAT")
    return path, ["speech", "chord", "speech", "noise", "floor", "word"]


def test_analysis_gates_music_and_noise_with_silero_but_not_with_energy(mixed_recording, tmp_path):
    from ersam_ssl.analysis import analyze_recording, read_windows

    path, kinds = mixed_recording
    counter = ConstantCounter()
    s = analyze_recording(path, counter, tmp_path / "silero", speech_vad=SpeechVadConfig(), plot=False)
    t = s.table
    status = dict(zip(range(6), t.status.tolist()))
    assert [status[i] for i in (0, 2)] == ["analysed", "analysed"]
    assert [status[i] for i in (1, 3, 4)] == ["gated"] * 3  # chord, noise: no speech; floor: silence
    assert status[5] == "uncertain"  # a 0.3 s word: speech, but too little for a count
    assert t.count.tolist() == [1, 0, 1, 0, 0, -1] and counter.windows == 2  # the model ran twice
    assert (t.speech_share[[0, 2]] > 0.5).all() and (t.speech_share[[1, 3, 4]] < 0.02).all()
    assert 0.02 <= t.speech_share[5] < 0.1
    assert s.uncertain_windows == 1 and s.uncertain_share == pytest.approx(1 / 6)
    assert s.gated_share == pytest.approx(3 / 6) and s.hours_analysed == pytest.approx(30 / 3600)
    assert sum(s.level_share.values()) == pytest.approx(1.0)  # over the counted (not uncertain) time
    assert s.level_share["none"] == pytest.approx(3 / 5)
    assert s.settings["speech_vad"]["used"] == "silero"
    rows = read_windows(tmp_path / "silero")
    np.testing.assert_allclose([r["speech_share"] for r in rows], t.speech_share, atol=5e-4)
    assert rows[5]["status"] == "uncertain" and rows[5]["count"] is None and rows[5]["level_name"] is None

    energy = analyze_recording(path, ConstantCounter(), tmp_path / "energy", plot=False)
    assert energy.table.status.tolist() == ["analysed"] * 4 + ["gated", "analysed"]
    assert np.isnan(energy.table.speech_share).all() and energy.settings["speech_vad"]["used"] == "energy"
    assert [r["speech_share"] for r in read_windows(tmp_path / "energy")] == [None] * 6


def test_no_vad_still_reports_the_speech_share_but_gates_nothing(mixed_recording, tmp_path):
    from ersam_ssl.analysis import VadConfig, analyze_recording

    path, _ = mixed_recording
    s = analyze_recording(path, ConstantCounter(), tmp_path / "o", vad=VadConfig(enabled=False),
                          speech_vad=SpeechVadConfig(), plot=False)  # fmt: skip
    assert s.table.status.tolist() == ["analysed"] * 6 and np.isfinite(s.table.speech_share).all()


def test_missing_silero_model_falls_back_to_the_energy_gate(mixed_recording, tmp_path, caplog):
    from ersam_ssl.analysis import analyze_recording

    path, _ = mixed_recording
    config = SpeechVadConfig(model_path=str(tmp_path / "gone.onnx"))
    with caplog.at_level(logging.WARNING, logger="ersam_ssl.analysis.vad"):
        s = analyze_recording(path, ConstantCounter(), tmp_path / "o", speech_vad=config, plot=False)
    assert (
        s.settings["speech_vad"]["used"] == "energy"
        and "gone.onnx" in s.settings["speech_vad"]["fallback_reason"]
    )
    assert s.table.status.tolist() == ["analysed"] * 4 + ["gated", "analysed"]
    assert len(caplog.records) == 1


def test_cli_uses_silero_by_default(mixed_recording, tmp_path, capsys):
    import json

    import torch

    from ersam_ssl.checkpoint import save_model
    from ersam_ssl.cli import main
    from ersam_ssl.models import create_model

    path, _ = mixed_recording
    torch.manual_seed(0)
    model = save_model(create_model("sam", num_classes=4).eval(), tmp_path / "sam.pt")
    assert main(["analyze", str(path), "--model", str(model), "--out", str(tmp_path / "a"), "--quiet",
                 "--no-plot"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["settings"]["speech_vad"]["used"] == "silero"
    assert summary["gated_windows"] == 3 and summary["uncertain_windows"] == 1
    assert main(["analyze", str(path), "--model", str(model), "--out", str(tmp_path / "b"), "--quiet",
                 "--no-plot", "--vad", "energy"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["gated_windows"] == 1
    assert main(["analyze", str(path), "--model", str(model), "--out", str(tmp_path / "c"),
                 "--min-speech-share", "0.5", "--min-count-share", "0.2"]) == 2  # fmt: skip
    assert "min_speech_share" in capsys.readouterr().err
