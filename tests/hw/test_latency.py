"""Latency measurement: reports are well-formed and settings are restored (timings are never asserted)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from ersam_ssl.hw.latency import (
    LatencyReport,
    export_onnx_for_latency,
    measure_onnx_latency,
    measure_torch_latency,
    summarize,
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # onnxruntime may write caches under ~/.cache


class TinyCounter(nn.Module):
    """Waveform [B, T] -> logits [B, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 16, stride=8)
        self.fc = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, wave):
        x = torch.relu(self.conv(wave.unsqueeze(1))).mean(dim=-1)
        return self.fc(self.drop(x))


def _timed(measure, *args, **kwargs) -> tuple[LatencyReport, float]:
    """``measure(*args, **kwargs)`` and the wall-clock seconds the whole call took."""
    start = time.perf_counter()
    report = measure(*args, **kwargs)
    return report, time.perf_counter() - start


def _check(report: LatencyReport, repeats: int, threads: int, backend: str, elapsed_s: float) -> None:
    assert report.repeats == repeats and report.threads == threads and report.backend == backend
    assert 0 < report.p10_ms <= report.median_ms <= report.p90_ms
    assert report.mean_ms > 0
    # the timed calls lie within the whole call, and are reported in milliseconds (no timing threshold)
    assert report.repeats * report.mean_ms <= elapsed_s * 1e3 * (1 + 1e-9)
    # a standard deviation of the same timings: never below the gap between their mean and median
    assert report.std_ms >= abs(report.mean_ms - report.median_ms) * (1 - 1e-9)
    assert set(report.to_dict()) >= {"median_ms", "p10_ms", "p90_ms", "mean_ms", "repeats"}


def test_summarize_matches_numpy():
    times = [0.003, 0.001, 0.002, 0.010, 0.004]
    report = summarize(times, threads=1, backend="torch")
    ms = np.array(times) * 1e3
    assert report.median_ms == pytest.approx(np.median(ms))
    assert report.p10_ms == pytest.approx(np.percentile(ms, 10))
    assert report.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert report.mean_ms == pytest.approx(ms.mean())
    assert report.std_ms == pytest.approx(ms.std())
    with pytest.raises(ValueError):
        summarize([], threads=1, backend="torch")


def test_torch_latency_report_and_restored_state():
    model = TinyCounter().train()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    threads_before = torch.get_num_threads()
    report, elapsed = _timed(measure_torch_latency, model, num_samples=1600, threads=1, warmup=2, repeats=7)
    _check(report, repeats=7, threads=1, backend="torch", elapsed_s=elapsed)
    assert len(calls) == 2 + 7  # warm-up calls, then the timed ones
    assert torch.get_num_threads() == threads_before
    assert model.training


def test_torch_latency_with_explicit_input_and_bad_repeats():
    op = nn.Conv1d(4, 4, 3)
    report, elapsed = _timed(
        measure_torch_latency, op, example_input=torch.randn(1, 4, 50), warmup=0, repeats=3
    )
    _check(report, repeats=3, threads=1, backend="torch", elapsed_s=elapsed)
    with pytest.raises(ValueError):
        measure_torch_latency(op, example_input=torch.randn(1, 4, 50), repeats=0)


def test_onnx_latency_from_module_path_and_bytes(tmp_path):
    import onnxruntime as ort

    model = TinyCounter()
    path = export_onnx_for_latency(model, tmp_path / "tiny.onnx", num_samples=1600)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["wave"]
    assert list(session.get_inputs()[0].shape) == [1, 1600]
    wave = torch.randn(1, 1600)
    with torch.no_grad():
        expected = model.eval()(wave).numpy()
    np.testing.assert_allclose(session.run(None, {"wave": wave.numpy()})[0], expected, rtol=1e-4, atol=1e-5)

    for source in (model, path, path.read_bytes()):
        report, elapsed = _timed(measure_onnx_latency, source, num_samples=1600, warmup=1, repeats=4)
        _check(report, repeats=4, threads=1, backend="onnxruntime", elapsed_s=elapsed)
