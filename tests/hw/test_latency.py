"""Latency measurement: reports are well-formed and settings are restored (timings are never asserted);
interleaved timing's round normalisation with a fake clock."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from ersam_ssl.hw.latency import (
    LatencyReport,
    export_onnx_for_latency,
    measure_interleaved,
    measure_onnx_interleaved,
    measure_onnx_latency,
    measure_torch_latency,
    round_normalised_median,
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


# ------------------------------------------------------------------------------------ interleaved timing
class FakeClock:
    """A clock that only moves when a :class:`Takes` module runs: by its latency times the machine's
    slowness, ``slowness(n)`` for the ``n``-th call since the start."""

    def __init__(self, slowness) -> None:
        self.now = 0.0
        self.calls = 0
        self.slowness = slowness

    def __call__(self) -> float:
        return self.now


class Takes(nn.Module):
    """A module that "takes" ``ms`` milliseconds on ``clock`` at full speed."""

    def __init__(self, ms: float, clock: FakeClock) -> None:
        super().__init__()
        self.ms, self.clock = ms, clock

    def forward(self, x):
        self.clock.now += self.ms * 1e-3 * self.clock.slowness(self.clock.calls)
        self.clock.calls += 1
        return x


def test_round_normalised_median_against_numpy():
    times = np.random.default_rng(0).uniform(0.5, 2.0, size=(7, 4))
    mean = times.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(
        round_normalised_median(times), np.median(times / mean, axis=0) * np.median(mean)
    )
    column = times[:, :1]
    np.testing.assert_allclose(round_normalised_median(column), [np.median(column)])  # one item: its median
    for bad in (np.ones(3), np.ones((0, 2)), np.zeros((2, 2))):
        with pytest.raises(ValueError):
            round_normalised_median(bad)


def test_slow_rounds_scale_every_item_alike_and_leave_the_medians_unchanged():
    true_ms = np.array([1.0, 0.2, 3.0, 0.05])
    slowness = np.array([1.0, 4.0, 1.0, 1.0, 9.0, 1.0, 2.5])  # 3 of 7 rounds slow, by different factors
    times = slowness[:, None] * true_ms
    np.testing.assert_allclose(round_normalised_median(times), true_ms)
    np.testing.assert_allclose(round_normalised_median(2 * times), 2 * true_ms)  # the level is kept
    every_round_differs = np.array([1.0, 4.0, 1.5, 3.0, 9.0, 1.2, 2.5])[:, None] * true_ms
    np.testing.assert_allclose(round_normalised_median(every_round_differs), 2.5 * true_ms)  # a typical round

    # the same through measure_interleaved, with a fake clock whose rounds 1, 4 and 6 are slow
    clock = FakeClock(lambda n: slowness[n // len(true_ms) - 2] if n >= 2 * len(true_ms) else 1.0)
    models = [Takes(ms, clock) for ms in true_ms]
    measured = measure_interleaved(models, 64, warmup=2, rounds=len(slowness), clock=clock)
    np.testing.assert_allclose(measured, true_ms)


def test_interleaving_recovers_the_order_that_a_drifting_machine_scrambles_when_timed_in_turn():
    true_ms = [1.0, 1.1, 1.2, 1.3, 1.4]
    warmup, rounds = 2, 9
    total_calls = len(true_ms) * (warmup + rounds)

    def drifting_clock() -> FakeClock:  # the machine speeds up from half speed to full speed
        return FakeClock(lambda n: 2.0 - n / total_calls)

    clock = drifting_clock()
    interleaved = measure_interleaved([Takes(ms, clock) for ms in true_ms], 64, warmup=warmup, rounds=rounds,
                                      clock=clock)  # fmt: skip
    assert np.argsort(interleaved).tolist() == [0, 1, 2, 3, 4]
    clock = drifting_clock()
    in_turn = [  # one model alone, then the next: what measure_torch_latency does
        measure_interleaved([Takes(ms, clock)], 64, warmup=warmup, rounds=rounds, clock=clock)[0]
        for ms in true_ms
    ]
    assert np.argsort(in_turn).tolist() == [4, 3, 2, 1, 0]  # the drift outweighs the differences


def test_measure_interleaved_calls_each_model_with_its_input_and_restores_settings():
    first, second = TinyCounter().train(), nn.Conv1d(2, 2, 3).eval()
    inputs_seen = {0: [], 1: []}
    for i, module in enumerate((first, second)):
        module.register_forward_hook(lambda m, args, out, i=i: inputs_seen[i].append(tuple(args[0].shape)))
    threads_before = torch.get_num_threads()
    ms = measure_interleaved([first, second], warmup=2, rounds=5,
                             example_inputs=[torch.randn(1, 1600), torch.randn(1, 2, 30)])  # fmt: skip
    assert len(ms) == 2 and all(m > 0 for m in ms)
    assert inputs_seen == {0: [(1, 1600)] * 7, 1: [(1, 2, 30)] * 7}  # warm-up and timed rounds
    assert first.training and not second.training and torch.get_num_threads() == threads_before
    waveform = []
    first.register_forward_hook(lambda m, args, out: waveform.append(tuple(args[0].shape)))
    measure_interleaved([first], num_samples=800, warmup=0, rounds=1)
    assert waveform == [(1, 800)]


def test_measure_interleaved_rejects_bad_input():
    model = nn.Identity()
    with pytest.raises(ValueError, match="at least one model"):
        measure_interleaved([])
    with pytest.raises(ValueError, match="got 1 example inputs for 2 models"):
        measure_interleaved([model, model], example_inputs=[torch.zeros(1)])
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        measure_interleaved([model], 8, rounds=0)
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        measure_interleaved([model], 8, warmup=-1)


def test_onnx_interleaved_times_each_session_once_per_round_and_normalises_rounds(tmp_path, monkeypatch):
    from ersam_ssl.hw import latency

    true_ms = [2.0, 0.5, 1.0]
    slowness = [1.0, 3.0, 1.0, 1.0, 6.0]
    clock = FakeClock(lambda n: slowness[n // len(true_ms) - 1] if n >= len(true_ms) else 1.0)
    built = []

    class FakeSession:
        def __init__(self, ms):
            self.ms = ms

        def run(self, outputs, feeds):
            assert outputs is None and list(feeds) == ["wave"]
            clock.now += self.ms * 1e-3 * clock.slowness(clock.calls)
            clock.calls += 1

    def fake_session(source, args, threads):
        built.append((source, threads))
        return FakeSession(true_ms[len(built) - 1]), {"wave": args[0].numpy()}

    monkeypatch.setattr(latency, "_ort_session", fake_session)
    measured = measure_onnx_interleaved(["a", "b", "c"], 64, threads=2, warmup=1, rounds=len(slowness), clock=clock)
    np.testing.assert_allclose(measured, true_ms)
    assert built == [("a", 2), ("b", 2), ("c", 2)]
    assert clock.calls == len(true_ms) * (1 + len(slowness))  # warmup round + timed rounds, each session once
    with pytest.raises(ValueError):
        measure_onnx_interleaved([], 64)


def test_onnx_interleaved_runs_real_sessions_from_module_path_and_bytes(tmp_path):
    model = TinyCounter()
    path = export_onnx_for_latency(model, tmp_path / "tiny.onnx", num_samples=1600)
    measured = measure_onnx_interleaved([model, path, path.read_bytes()], 1600, warmup=1, rounds=3)
    assert len(measured) == 3 and all(np.isfinite(m) and m > 0 for m in measured)
