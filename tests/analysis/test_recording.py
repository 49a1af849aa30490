"""Long-recording analysis: streaming/resampling, windows, VAD gating, counting, outputs, robustness.

Counting is checked end to end with a deterministic counter whose truth we control: a real
:class:`~ersam_ssl.models.CountModel` (STFT frontend, classification head) that counts which of five pure
tones are present in a window. Recordings are concatenations of 5 s segments with known tone sets (and
silent segments), so every window's count is known exactly, including windows that straddle segments.
A trained speech counter is exercised in ``test_trained_counter.py`` (slow).
"""

from __future__ import annotations

import json
import math
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TONE_HZ, TONE_MODEL, build_tone_counter
from ersam_ssl import audio
from ersam_ssl.analysis import (
    ONNX_CONFIG_KEY,
    AudioBlock,
    OnnxCounter,
    StreamReport,
    VadConfig,
    WindowTable,
    aggregate,
    analyze_folder,
    analyze_recording,
    attach_onnx_config,
    iter_windows,
    load_counter,
    read_windows,
    stream_audio,
    vad_activity,
)
from ersam_ssl.data import AmbianceLevels
from ersam_ssl.export import export_onnx
from ersam_ssl.models import CountModel

SR = 16000
SEG = 5.0
TONE_AMP = 0.05


def tone_segment(tones: frozenset[int], start: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = (start + np.arange(n)) / sr
    x = 1e-4 * rng.standard_normal(n)  # -80 dBFS floor: silence is not digital zero
    for k in tones:
        x += TONE_AMP * np.sin(2 * np.pi * TONE_HZ[k] * t)
    return x.astype(np.float32)


def random_plan(n_segments: int, seed: int = 0, silent_share: float = 0.3) -> list[frozenset[int]]:
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(n_segments):
        k = 0 if rng.random() < silent_share else int(rng.integers(1, len(TONE_HZ) + 1))
        plan.append(frozenset(rng.choice(len(TONE_HZ), size=k, replace=False).tolist()))
    return plan


def write_recording(
    path: Path, plan: list[frozenset[int]], sr: int = SR, channels: int = 1, subtype: str | None = None,
    tail_seconds: float = 0.0,
) -> Path:  # fmt: skip
    """Write segments of ``SEG`` seconds (streamed to disk, so long files cost no memory)."""
    rng = np.random.default_rng(1)
    n = int(SEG * sr)
    with sf.SoundFile(str(path), "w", sr, channels, subtype=subtype) as f:
        for i, tones in enumerate(plan):
            x = tone_segment(tones, i * n, n, sr, rng)
            f.write(np.stack([x] * channels, axis=1) if channels > 1 else x)
        if tail_seconds:
            m = int(tail_seconds * sr)
            x = tone_segment(plan[-1], len(plan) * n, m, sr, rng)
            f.write(np.stack([x] * channels, axis=1) if channels > 1 else x)
    return path


def expected_counts(plan: list[frozenset[int]], window: float, hop: float, duration: float) -> list[int]:
    """Tones covering at least half of each window's real audio (the model's threshold is 20 %)."""
    out = []
    start = 0.0
    while start + window <= duration + 1e-9:
        out.append(_union(plan, start, start + window))
        start += hop
    return out


def _union(plan: list[frozenset[int]], a: float, b: float) -> int:
    tones: set[int] = set()
    for i, seg in enumerate(plan):
        overlap = min(b, (i + 1) * SEG) - max(a, i * SEG)
        if overlap >= 0.45 * (b - a):
            tones |= seg
    return len(tones)


@pytest.fixture(scope="module")
def tone_model() -> CountModel:
    return build_tone_counter()


def export_bare_onnx(model: CountModel, path: Path, samples: int, batch: int) -> Path:
    """Export with only :class:`OnnxCounter`'s documented contract: waveform in, raw head output out, config
    in the metadata; here with other input/output names than ``export_onnx``'s and both dimensions fixed."""
    # Raw export on purpose: a file from another exporter than ersam_ssl.export.export_onnx.
    torch.onnx.export(model, (torch.zeros(batch, samples),), str(path), dynamo=False, opset_version=17,
                      input_names=["audio"], output_names=["head_output"])  # fmt: skip
    return attach_onnx_config(path, model)


# ---------------------------------------------------------------------------------------------------
# Streaming and windows


@pytest.mark.parametrize("rate", [44100, 8000, 48000])
def test_stream_equals_whole_file_resampling_without_block_artefacts(tmp_path: Path, rate: int) -> None:
    rng = np.random.default_rng(0)
    n = int(6.3 * rate)
    x = (0.05 * np.sin(2 * np.pi * 440 * np.arange(n) / rate) + 0.005 * rng.standard_normal(n)).astype(
        np.float32
    )
    x[int(4.0 * rate)] += 0.9
    stereo = np.stack([x, 0.5 * x], axis=1)
    path = tmp_path / "x.wav"
    sf.write(str(path), stereo, rate, subtype="FLOAT")
    whole = audio.resample(stereo.mean(axis=1, dtype=np.float32), rate, SR)
    blocks = list(stream_audio(path, SR, block_seconds=0.53))
    assert len(blocks) > 10
    assert [b.start for b in blocks] == list(np.cumsum([0] + [b.samples.size for b in blocks[:-1]]))
    streamed = np.concatenate([b.samples for b in blocks])
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    assert abs(int(np.argmax(streamed)) - 4 * SR) <= 1  # no delay introduced by resampling


def test_stream_reports_and_fills_nan_regions(tmp_path: Path) -> None:
    x = np.full(SR * 4, 0.1, dtype=np.float32)
    x[SR : SR + 800] = np.nan
    x[3 * SR] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    report = StreamReport(str(path), SR, 1, x.size)
    blocks = list(stream_audio(path, SR, block_seconds=1.5, report=report))
    y = np.concatenate([b.samples for b in blocks])
    bad = np.concatenate(
        [b.corrupt if b.corrupt is not None else np.zeros(b.samples.size, bool) for b in blocks]
    )
    assert report.nonfinite_samples == 801
    assert np.isfinite(y).all() and (y[bad] == 0).all()
    assert bad.sum() == 801 and bad[SR : SR + 800].all() and bad[3 * SR]


def test_windows_start_exactly_at_hops_and_keep_tails(tmp_path: Path) -> None:
    ramp = np.arange(10_000, dtype=np.float32)
    blocks = [AudioBlock(s, ramp[s : s + 777]) for s in range(0, ramp.size, 777)]

    def cut(window: int, hop: int, min_tail: int) -> list[tuple[int, int, float]]:
        out = []
        for wb in iter_windows(iter(blocks), window, hop, min_tail, batch_size=3):
            for s, n, x in zip(wb.starts, wb.lengths, wb.audio):
                assert x[0] == s and (x[:n] == ramp[s : s + n]).all() and (x[n:] == 0).all()
                out.append((int(s), int(n), float(x[-1])))
        return out

    full = cut(2000, 2000, 500)
    assert [(s, n) for s, n, _ in full] == [(0, 2000), (2000, 2000), (4000, 2000), (6000, 2000), (8000, 2000)]
    over = cut(3000, 2000, 500)  # hop < window: full windows, then one padded tail covering the rest
    assert [(s, n) for s, n, _ in over] == [(s, 3000) for s in range(0, 6001, 2000)] + [(8000, 2000)]
    assert [(s, n) for s, n, _ in cut(3000, 2000, 2500)] == [(s, 3000) for s in range(0, 6001, 2000)]
    # No tail when the full windows already reach the end.
    assert [(s, n) for s, n, _ in cut(3000, 1000, 500)] == [(s, 3000) for s in range(0, 7001, 1000)]
    sparse = cut(1000, 3000, 500)  # hop > window: the stream between windows is skipped
    assert [(s, n) for s, n, _ in sparse] == [(0, 1000), (3000, 1000), (6000, 1000), (9000, 1000)]
    assert [(s, n) for s, n, _ in cut(20_000, 20_000, 500)] == [(0, 10_000)]  # shorter than one window
    assert cut(20_000, 20_000, 10_001) == []


# ---------------------------------------------------------------------------------------------------
# Voice-activity gating


def _speech_windows(synth_source, n: int, seed: int) -> list[np.ndarray]:
    """5 s mixtures of 1-3 synthesized speakers (real espeak-ng speech with its natural pauses)."""
    rng = np.random.default_rng(seed)
    by_speaker = synth_source.by_speaker()
    speakers = sorted(by_speaker)
    out = []
    for i in range(n):
        mix = np.zeros(int(SEG * SR), dtype=np.float32)
        for spk in rng.choice(len(speakers), size=1 + i % 3, replace=False):
            utt = audio.load(by_speaker[speakers[spk]][0].path)
            start = int(rng.integers(0, int(SEG * SR) // 2))
            seg = utt[: mix.size - start]
            mix[start : start + seg.size] += seg / (np.sqrt(np.mean(seg**2)) + 1e-9)
        out.append(mix)
    return out


def _at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * (10 ** (dbfs / 20) / np.sqrt(np.mean(x.astype(np.float64) ** 2)))).astype(np.float32)


def test_vad_gates_silence_but_never_quiet_speech(synth_source) -> None:
    vad = VadConfig()
    windows = _speech_windows(synth_source, 12, seed=0)
    full = np.full(len(windows), int(SEG * SR))
    for dbfs in (-26.0, -40.0, -50.0, -56.0):  # down to 30 dB below the training mixtures' speech level
        batch = np.stack([_at_dbfs(w, dbfs) for w in windows])
        active, level = vad_activity(batch, full, vad, SR)
        assert (active >= vad.min_active).all(), f"quiet speech at {dbfs} dBFS would be gated: {active}"
        np.testing.assert_allclose(level, dbfs, atol=0.05)
    # A short utterance (0.4 s) in an otherwise silent window still counts as activity.
    lone = np.zeros(int(SEG * SR), dtype=np.float32)
    speech = windows[0][np.flatnonzero(np.abs(windows[0]) > 0.01)[0] :][: int(0.4 * SR)]
    lone[SR : SR + speech.size] = _at_dbfs(speech, -40.0)
    rng = np.random.default_rng(0)
    floor = lambda db: _at_dbfs(rng.standard_normal(int(SEG * SR)), db)  # noqa: E731
    silent = np.stack([np.zeros(int(SEG * SR), np.float32), floor(-70.0), floor(-62.0), lone])
    active, _ = vad_activity(silent, np.full(4, int(SEG * SR)), vad, SR)
    assert (active[:3] < vad.min_active).all() and active[3] >= vad.min_active
    # The threshold is configurable: a -62 dBFS floor is activity for a -65 dB gate.
    active, _ = vad_activity(silent, np.full(4, int(SEG * SR)), VadConfig(threshold_db=-65.0), SR)
    assert active[2] == 1.0 and active[1] == 0.0


def test_vad_ignores_zero_padding_of_partial_windows() -> None:
    x = np.zeros((1, int(SEG * SR)), dtype=np.float32)
    x[0, : SR // 2] = 0.01 * np.sin(np.arange(SR // 2))  # 0.5 s of activity, then padding
    active, level = vad_activity(x, np.array([SR // 2]), VadConfig(), SR)
    assert active[0] == 1.0
    assert level[0] == pytest.approx(20 * np.log10(0.01 / np.sqrt(2)), abs=0.1)


# ---------------------------------------------------------------------------------------------------
# Counting a known recording end to end


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[frozenset[int]]]:
    plan = random_plan(120, seed=3)  # 10 minutes, ~30 % silent segments
    path = write_recording(tmp_path_factory.mktemp("rec") / "ten_minutes.flac", plan)
    return path, plan


def test_ten_minute_recording_counts_every_window_exactly(ten_minutes, tone_model, tmp_path: Path) -> None:
    path, plan = ten_minutes
    s = analyze_recording(path, tone_model, tmp_path / "out", batch_size=7)
    t = s.table
    truth = np.array([len(seg) for seg in plan])
    assert len(t) == 120
    np.testing.assert_array_equal(t.start_s, np.arange(120) * SEG)
    np.testing.assert_array_equal(t.end_s, np.arange(1, 121) * SEG)
    np.testing.assert_array_equal(t.count, truth)
    silent = truth == 0
    np.testing.assert_array_equal(t.gated, silent)  # every silent segment gated, no tone segment
    assert np.isnan(t.confidence[silent]).all() and (t.confidence[~silent] > 0.9).all()
    levels = AmbianceLevels()
    np.testing.assert_array_equal(t.level, levels.level(truth))
    # Summary: time shares per level and mean count equal the truth exactly.
    for i, name in enumerate(levels.names):
        assert s.level_share[name] == pytest.approx(np.mean(levels.level(truth) == i))
    assert s.mean_count == pytest.approx(truth.mean())
    assert s.gated_share == pytest.approx(silent.mean())
    assert s.hours_analysed == pytest.approx(600 / 3600)
    assert s.analysed_windows == (~silent).sum() and s.unreadable_windows == 0
    # Files: CSV rows match the table; summary.json is strict JSON with the documented keys.
    rows = read_windows(tmp_path / "out")
    assert [r["count"] for r in rows] == truth.tolist()
    assert [r["level_name"] for r in rows] == [levels.names[k] for k in levels.level(truth)]
    assert [r["gated"] for r in rows] == silent.tolist()
    assert all(r["confidence"] is None for r, g in zip(rows, silent) if g)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["windows"] == 120 and summary["model"]["config"]["name"] == TONE_MODEL
    assert summary["input"]["sample_rate"] == SR and summary["input"]["duration_s"] == pytest.approx(600)
    assert summary["settings"]["vad"]["threshold_db"] == VadConfig().threshold_db
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000


def test_overlapping_windows_see_both_segments(ten_minutes, tone_model, tmp_path: Path) -> None:
    path, plan = ten_minutes
    s = analyze_recording(path, tone_model, tmp_path / "out", hop=2.5, plot=False)
    want = expected_counts(plan, 5.0, 2.5, 600.0)
    assert len(s.table) == len(want) == 239
    np.testing.assert_array_equal(s.table.start_s, np.arange(239) * 2.5)
    np.testing.assert_array_equal(s.table.count, want)
    # Time shares: every window stands for the 2.5 s around its centre, so shares are still exact sums.
    truth = np.array([len(seg) for seg in plan])
    assert s.hours_analysed == pytest.approx(600 / 3600)
    assert s.mean_count >= truth.mean()  # straddling windows see the union of two segments


def test_gating_off_runs_the_model_on_silence(ten_minutes, tone_model, tmp_path: Path) -> None:
    path, plan = ten_minutes
    s = analyze_recording(path, tone_model, tmp_path / "out", vad=VadConfig(enabled=False), plot=False)
    assert not s.table.gated.any() and s.analysed_windows == 120
    np.testing.assert_array_equal(s.table.count, [len(seg) for seg in plan])


def test_onnx_counter_matches_pytorch(ten_minutes, tone_model, tmp_path: Path) -> None:
    path, plan = ten_minutes
    onnx_path = export_onnx(tone_model, tmp_path / "tone.onnx", num_samples=int(SEG * SR))
    counter = load_counter(onnx_path)
    assert isinstance(counter, OnnxCounter) and counter.num_classes == 6
    s_onnx = analyze_recording(path, onnx_path, tmp_path / "onnx", plot=False)
    s_torch = analyze_recording(path, tone_model, tmp_path / "torch", plot=False)
    np.testing.assert_array_equal(s_onnx.table.count, s_torch.table.count)
    np.testing.assert_allclose(s_onnx.table.confidence, s_torch.table.confidence, rtol=1e-4)
    assert s_onnx.model["backend"] == "onnxruntime" and s_onnx.model["threads"] == 1


def test_onnx_with_fixed_shapes_and_sidecar_config(ten_minutes, tone_model, tmp_path: Path) -> None:
    path, plan = ten_minutes
    fixed = export_bare_onnx(tone_model, tmp_path / "fixed.onnx", samples=int(SEG * SR), batch=1)
    s = analyze_recording(path, fixed, tmp_path / "out", batch_size=5, plot=False)
    np.testing.assert_array_equal(s.table.count, [len(seg) for seg in plan])
    with pytest.raises(ValueError, match="takes exactly 80000 samples"):
        analyze_recording(path, fixed, tmp_path / "bad", window=4.0)
    # a fixed batch of 2 serves 3 windows: the raw outputs are the model's, the padding is cut off
    pairs = load_counter(export_bare_onnx(tone_model, tmp_path / "pairs.onnx", samples=int(SEG * SR), batch=2))
    x = (0.05 * np.random.default_rng(0).standard_normal((3, int(SEG * SR)))).astype(np.float32)
    with torch.no_grad():
        expected = tone_model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pairs.outputs(x), expected, rtol=1e-4, atol=1e-5)
    # Config in a sidecar JSON instead of the metadata.
    import onnx

    proto = onnx.load(str(fixed))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="no model config"):
        load_counter(bare)
    (tmp_path / "bare.json").write_text(json.dumps({ONNX_CONFIG_KEY: tone_model.config()}))
    assert load_counter(bare).num_classes == 6


def test_model_file_and_checkpoint_paths(tone_model, tmp_path: Path) -> None:
    plan = [frozenset({0, 2}), frozenset(), frozenset({1})]
    path = write_recording(tmp_path / "r.wav", plan)
    from ersam_ssl.checkpoint import save_model

    model_file = save_model(tone_model, tmp_path / "tone.pt")
    s = analyze_recording(path, model_file, tmp_path / "out", plot=False)
    assert s.table.count.tolist() == [2, 0, 1] and s.model["source"] == str(model_file)
    with pytest.raises(FileNotFoundError):
        load_counter(tmp_path / "missing.onnx")


# ---------------------------------------------------------------------------------------------------
# Odd inputs


def test_stereo_44k_ogg_and_file_shorter_than_a_window(tone_model, tmp_path: Path) -> None:
    plan = random_plan(12, seed=5, silent_share=0.2)
    path = write_recording(tmp_path / "stereo.ogg", plan, sr=44100, channels=2, tail_seconds=2.0)
    s = analyze_recording(path, tone_model, tmp_path / "out")
    assert s.input["sample_rate"] == 44100 and s.input["channels"] == 2
    truth = [len(seg) for seg in plan]
    # 12 full windows, then the 2 s tail (continuing the last segment's tones), zero-padded.
    assert s.table.count.tolist() == truth + [truth[-1]]
    assert s.table.end_s[-1] == pytest.approx(62.0) and s.table.start_s[-1] == 60.0
    assert s.hours_analysed == pytest.approx(62.0 / 3600)

    short = write_recording(tmp_path / "short.wav", [frozenset({1, 3, 4})], sr=44100, channels=2)
    sf.write(str(short), sf.read(str(short))[0][: int(3.2 * 44100)], 44100)
    s = analyze_recording(short, tone_model, tmp_path / "short")
    assert len(s.table) == 1 and s.table.count.tolist() == [3]
    assert s.table.start_s[0] == 0.0 and s.table.end_s[0] == pytest.approx(3.2)

    tiny = tmp_path / "tiny.wav"
    sf.write(str(tiny), np.full(int(0.3 * SR), 0.1, np.float32), SR)
    s = analyze_recording(tiny, tone_model, tmp_path / "tiny")
    assert s.windows == 0 and math.isnan(s.mean_count)
    assert json.loads((tmp_path / "tiny" / "summary.json").read_text())["mean_count"] is None


def test_corrupt_region_in_a_long_flac_keeps_the_rest(tone_model, tmp_path: Path) -> None:
    plan = random_plan(36, seed=7, silent_share=0.1)  # 3 minutes
    path = write_recording(tmp_path / "damaged.flac", plan)
    data = bytearray(path.read_bytes())
    a = len(data) // 2
    data[a : a + len(data) // 40] = (
        np.random.default_rng(0).integers(0, 256, len(data) // 40, np.uint8).tobytes()
    )
    path.write_bytes(bytes(data))
    s = analyze_recording(path, tone_model, tmp_path / "out")
    t, truth = s.table, np.array([len(seg) for seg in plan])
    assert len(t) == 36 and s.input["unreadable"], "the damaged region must be reported"
    lost = t.status == "unreadable"
    assert 0 < lost.sum() <= 4
    assert (t.count[lost] == -1).all()
    lo, hi = np.flatnonzero(lost)[[0, -1]]
    # Everything before and after the damage is counted correctly.
    np.testing.assert_array_equal(t.count[: lo - 1], truth[: lo - 1])
    np.testing.assert_array_equal(t.count[hi + 2 :], truth[hi + 2 :])
    assert s.hours_analysed == pytest.approx((36 - lost.sum()) * SEG / 3600)
    rows = read_windows(tmp_path / "out")
    assert all(r["count"] is None and r["status"] == "unreadable" for r in np.array(rows)[lost])


def test_truncated_flac_keeps_what_decodes(tone_model, tmp_path: Path) -> None:
    plan = random_plan(24, seed=8, silent_share=0.1)  # 2 minutes
    path = write_recording(tmp_path / "cut.flac", plan)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still promises 2 minutes
    s = analyze_recording(path, tone_model, tmp_path / "out", block_seconds=10.0)
    cut = s.input["truncated_at_s"]
    assert cut is not None and 30.0 < cut < 90.0
    t = s.table
    assert t.end_s[-1] <= cut + 1e-6 and len(t) >= int(cut // SEG)
    full = t.end_s - t.start_s == SEG
    np.testing.assert_array_equal(t.count[full], [len(plan[i]) for i in np.flatnonzero(full)])
    assert s.unreadable_windows == 0


def test_nan_region_is_unreadable_or_flagged(tone_model, tmp_path: Path) -> None:
    plan = [frozenset({0})] * 4 + [frozenset({1, 2})] * 4
    path = write_recording(tmp_path / "nan.wav", plan, subtype="FLOAT")
    x, _ = sf.read(str(path), dtype="float32")
    x[int(5 * SR) : int(11 * SR)] = np.nan  # all of window 1, 1 s of window 2
    sf.write(str(path), x, SR, subtype="FLOAT")
    s = analyze_recording(path, tone_model, tmp_path / "out", plot=False)
    assert s.table.status.tolist()[:3] == ["analysed", "unreadable", "analysed"]
    assert s.table.corrupt_s[2] == pytest.approx(1.0) and s.input["nonfinite_samples"] == 6 * SR
    assert s.table.count.tolist() == [1, -1, 1, 1, 2, 2, 2, 2]


def test_folder_with_corrupt_and_empty_files(tone_model, tmp_path: Path) -> None:
    rec = tmp_path / "recs"
    (rec / "ward_b").mkdir(parents=True)
    write_recording(rec / "p01.wav", [frozenset({0}), frozenset()])
    write_recording(rec / "ward_b" / "p02.flac", [frozenset({1, 2, 3})] * 2, sr=48000, channels=2)
    (rec / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(4000))
    (rec / "empty.flac").write_bytes(b"")
    (rec / "notes.txt").write_text("not audio")
    messages: list[str] = []
    rows = analyze_folder(rec, tone_model, tmp_path / "out", log=messages.append, plot=False)
    by_file = {r["file"]: r for r in rows}
    assert set(by_file) == {"p01.wav", "ward_b/p02.flac", "broken.wav", "empty.flac"}
    assert by_file["p01.wav"]["status"] == "ok" and by_file["ward_b/p02.flac"]["status"] == "ok"
    assert by_file["broken.wav"]["status"] == "error" and by_file["empty.flac"]["status"] == "error"
    assert "empty" in by_file["empty.flac"]["reason"]
    assert len(messages) == 2
    assert by_file["ward_b/p02.flac"]["summary"].table.count.tolist() == [3, 3]
    assert (tmp_path / "out" / "p01" / "windows.csv").is_file()
    assert (tmp_path / "out" / "ward_b__p02" / "summary.json").is_file()
    import csv

    with open(tmp_path / "out" / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["file"] for r in table] == [r["file"] for r in rows]
    assert {r["file"]: r["status"] for r in table}["broken.wav"] == "error"
    assert float({r["file"]: r for r in table}["p01.wav"]["share_one-to-one"]) == pytest.approx(0.5)


def test_thirty_one_minutes_in_bounded_memory(tone_model, tmp_path: Path) -> None:
    """tracemalloc sees every NumPy/Python allocation (decoding, buffers, windows, results, plot): the peak
    does not grow with the recording and stays far below its decoded size (31 min at 16 kHz = 119 MB)."""
    peaks = {}
    for minutes in (5, 31):
        plan = random_plan(12 * minutes, seed=11, silent_share=0.6)
        path = write_recording(tmp_path / f"{minutes}.wav", plan, subtype="PCM_16")
        tracemalloc.start()
        try:
            s = analyze_recording(path, tone_model, tmp_path / f"out{minutes}", batch_size=8)
            peaks[minutes] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(s.table.count, [len(seg) for seg in plan])
    decoded_bytes = 31 * 60 * SR * 4
    assert peaks[31] < decoded_bytes / 5, f"peak {peaks[31] / 1e6:.1f} MB"
    assert peaks[31] < 1.2 * peaks[5] + 1e6, f"peak grows with length: {peaks}"
    assert (tmp_path / "out31" / "timeline.png").is_file()  # per-minute timeline beyond 30 min


def test_per_minute_aggregate_is_time_weighted() -> None:
    levels = AmbianceLevels()
    starts = np.arange(24) * 5.0  # two minutes of 5 s windows
    count = np.array([0] * 6 + [2] * 6 + [1] * 12)
    table = WindowTable(
        start_s=starts, end_s=starts + 5.0, count=count, confidence=np.ones(24), level=levels.level(count),
        gated=count == 0, status=np.array(["analysed"] * 23 + ["unreadable"]), active_frac=np.ones(24),
        rms_dbfs=np.zeros(24), corrupt_s=np.zeros(24),
    )  # fmt: skip
    b = aggregate(table, levels, bin_s=60.0)
    np.testing.assert_allclose(b.mean_count, [1.0, 1.0])
    np.testing.assert_allclose(b.covered_s, [60.0, 55.0])
    assert b.max_count.tolist() == [2, 1] and b.level.tolist() == [0, 1]  # tie → first level
    np.testing.assert_allclose(b.level_share, [[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]])
