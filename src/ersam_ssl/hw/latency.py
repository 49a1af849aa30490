"""Measured CPU latency of one inference (one 5 s, 16 kHz segment by default).

ERSAM (Li et al., ICASSP 2023) reports latency and energy of single-threaded CPU inference on a phone;
here we measure on this machine with one thread, both in eager PyTorch and in ONNX Runtime (the
deployment path), so that relative costs between architectures can be compared in the same run.
Absolute numbers depend on the host; :mod:`ersam_ssl.hw.energy` maps MACs to a device.

Latencies that are compared with each other (a per-op table, models ranked by latency) are timed with
:func:`measure_interleaved`: on a shared machine the speed drifts over seconds to minutes, so models timed one
after another are ranked partly by when they ran.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ersam_ssl.hw.cost import example_args

__all__ = [
    "LatencyReport",
    "export_onnx_for_latency",
    "measure_interleaved",
    "measure_onnx_latency",
    "measure_torch_latency",
    "round_normalised_median",
    "summarize",
]


@dataclass(frozen=True)
class LatencyReport:
    """Summary of repeated wall-clock timings of one inference, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    threads: int
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(times_s: Sequence[float], threads: int, backend: str) -> LatencyReport:
    """Summarise per-run wall-clock times (seconds) into a :class:`LatencyReport`."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("need at least one timing")
    return LatencyReport(
        median_ms=float(np.median(ms)),
        p10_ms=float(np.percentile(ms, 10)),
        p90_ms=float(np.percentile(ms, 90)),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        repeats=int(ms.size),
        threads=threads,
        backend=backend,
    )


def _time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _time_rounds(
    fns: Sequence[Callable[[], Any]], warmup: int, rounds: int, clock: Callable[[], float]
) -> np.ndarray:
    """``times[round, item]`` (seconds): in each round every item is called once, in order, after ``warmup``
    untimed rounds."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = np.empty((rounds, len(fns)))
    for r in range(rounds):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            times[r, i] = clock() - start
    return times


def round_normalised_median(times: np.ndarray) -> np.ndarray:
    """Per-item median of ``times[round, item]``, each round divided by its mean over items first, rescaled by
    the median round mean.

    A round in which the whole machine was slower (every item by the same factor) then counts like any other:
    only the items' ratios within a round matter, and the overall level is that of a typical round. With
    one item, this is its plain median.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 2 or times.size == 0:
        raise ValueError(f"times must be a non-empty [rounds, items] array, got shape {times.shape}")
    round_mean = times.mean(axis=1, keepdims=True)
    if not np.all(round_mean > 0):
        raise ValueError("every round must take a positive time")
    return np.median(times / round_mean, axis=0) * np.median(round_mean)


@contextlib.contextmanager
def _torch_timing(models: Sequence[nn.Module], threads: int) -> Iterator[None]:
    """Eval mode, ``threads`` intra-op threads and ``torch.inference_mode()`` inside the block; the thread
    count and each model's training flag are restored afterwards."""
    previous_threads = torch.get_num_threads()
    was_training = [model.training for model in models]
    try:
        torch.set_num_threads(threads)
        for model in models:
            model.eval()
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(previous_threads)
        for model, training in zip(models, was_training):
            model.train(training)


def measure_torch_latency(
    model: nn.Module,
    num_samples: int = 80000,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    *,
    example_input: Any = None,
) -> LatencyReport:
    """Time ``model(x)`` in eager PyTorch under ``torch.inference_mode()`` with ``threads`` intra-op threads.

    Args:
        model: Evaluated in ``eval()`` mode; its training flag is restored afterwards.
        num_samples: Length of the dummy waveform ``[1, num_samples]`` (80000 = 5 s at 16 kHz).
        threads: ``torch.set_num_threads`` for the measurement; the previous value is restored.
        warmup: Untimed calls first (allocator, caches, lazy init).
        repeats: Timed calls.
        example_input: A tensor or tuple of arguments instead of the dummy waveform.
    """
    args = example_args(num_samples, example_input)
    with _torch_timing([model], threads):
        times = _time_calls(lambda: model(*args), warmup, repeats)
    return summarize(times, threads, "torch")


def measure_interleaved(
    models: Sequence[nn.Module],
    num_samples: int = 80000,
    threads: int = 1,
    warmup: int = 5,
    rounds: int = 30,
    *,
    example_inputs: Sequence[Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median latency (ms) of each of ``models``, timed round-robin: in each round every model runs once.

    A shared machine (a VM, a laptop with other work) changes speed over seconds to minutes. Timing one model
    after another, as :func:`measure_torch_latency` does, then ranks models partly by when they ran: on a
    2-core VM, 20 random SAM members timed so three times in a row agreed with themselves only at Spearman
    0.43-0.76 (mean |difference| 24 %). Interleaved, every model sees the same slow and fast spells; dividing
    each round by its mean over the models (:func:`round_normalised_median`) also removes a spell that hits
    one round; the same 20 members then agreed at Spearman 0.97-0.99. The price: a model runs with the
    caches left by the others, not by itself.

    Args:
        models: Called as in :func:`measure_torch_latency` (``eval()`` mode, ``threads`` intra-op threads,
            ``torch.inference_mode()``; settings restored afterwards).
        num_samples: Length of the dummy waveform ``[1, num_samples]`` each model gets, unless
            ``example_inputs`` is given.
        warmup: Untimed rounds first.
        rounds: Timed rounds (each model is timed ``rounds`` times).
        example_inputs: One tensor or tuple of arguments per model, instead of the waveform.
        clock: Seconds, monotonic (a fake one in tests).

    Returns:
        The round-normalised median latency of each model in milliseconds, in order.
    """
    if len(models) == 0:
        raise ValueError("need at least one model to time")
    if example_inputs is None:
        waveform = example_args(num_samples, None)
        inputs = [waveform] * len(models)
    elif len(example_inputs) != len(models):
        raise ValueError(f"got {len(example_inputs)} example inputs for {len(models)} models")
    else:
        inputs = [example_args(num_samples, x) for x in example_inputs]
    calls = [partial(model, *args) for model, args in zip(models, inputs)]
    with _torch_timing(models, threads):
        times = _time_rounds(calls, warmup, rounds, clock)
    return [float(ms) for ms in round_normalised_median(times) * 1e3]


def export_onnx_for_latency(
    model: nn.Module,
    path: str | Path,
    num_samples: int = 80000,
    *,
    example_input: Any = None,
    opset_version: int = 17,
) -> Path:
    """Export ``model`` for timing with :func:`ersam_ssl.export.export_onnx` (``dynamo=False``, opset 17).

    The input is named ``wave`` and the batch axis is fixed to 1, as in streaming deployment.
    """
    from ersam_ssl.export import export_onnx

    return export_onnx(
        model,
        path,
        num_samples,
        example_input=example_input,
        opset_version=opset_version,
        dynamic_batch=False,
    )


def measure_onnx_latency(
    onnx_path_or_model: str | Path | bytes | nn.Module,
    num_samples: int = 80000,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    *,
    example_input: Any = None,
) -> LatencyReport:
    """Time one ONNX Runtime CPU inference with ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``.

    Args:
        onnx_path_or_model: An ``.onnx`` file, serialized model bytes, or an ``nn.Module`` (exported to a
            temporary file first with :func:`export_onnx_for_latency`).
        num_samples, threads, warmup, repeats, example_input: As in :func:`measure_torch_latency`.
    """
    args = example_args(num_samples, example_input)
    session, feeds = _ort_session(onnx_path_or_model, args, threads)
    times = _time_calls(lambda: session.run(None, feeds), warmup, repeats)
    return summarize(times, threads, "onnxruntime")


def measure_onnx_interleaved(
    models: Sequence[str | Path | bytes | nn.Module],
    num_samples: int = 80000,
    threads: int = 1,
    warmup: int = 5,
    rounds: int = 30,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median ONNX Runtime latency (ms) of each of ``models``, timed round-robin as in
    :func:`measure_interleaved` (every session runs once per round; rounds normalised by their mean).

    Args:
        models: As ``onnx_path_or_model`` of :func:`measure_onnx_latency`; each gets the dummy waveform
            ``[1, num_samples]``.
        threads, warmup, rounds, clock: As in :func:`measure_onnx_latency` / :func:`measure_interleaved`.
    """
    if len(models) == 0:
        raise ValueError("need at least one model to time")
    args = example_args(num_samples, None)
    calls = []
    for model in models:
        session, feeds = _ort_session(model, args, threads)
        calls.append(partial(session.run, None, feeds))
    times = _time_rounds(calls, warmup, rounds, clock)
    return [float(ms) for ms in round_normalised_median(times) * 1e3]


def _ort_session(source: str | Path | bytes | nn.Module, args: tuple, threads: int):
    """The session :func:`ersam_ssl.export.onnx_session` builds and its feeds built from ``args``; a module is
    exported to a temporary file first."""
    from ersam_ssl.export import onnx_session

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(source, nn.Module):
            source = export_onnx_for_latency(source, Path(tmp) / "model.onnx", example_input=args)
        session = onnx_session(source, threads)
    names = [i.name for i in session.get_inputs()]
    feeds = {name: np.ascontiguousarray(a.detach().cpu().numpy()) for name, a in zip(names, args)}
    return session, feeds
