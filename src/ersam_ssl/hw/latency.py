"""Measured CPU latency of one inference (one 5 s, 16 kHz segment by default).

ERSAM (Li et al., ICASSP 2023) reports latency and energy of single-threaded CPU inference on a phone;
here we measure on this machine with one thread, both in eager PyTorch and in ONNX Runtime (the
deployment path), so that relative costs between architectures can be compared in the same run.
Absolute numbers depend on the host; :mod:`ersam_ssl.hw.energy` maps MACs to a device.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ersam_ssl.hw.cost import example_args

__all__ = [
    "LatencyReport",
    "export_onnx_for_latency",
    "measure_onnx_latency",
    "measure_torch_latency",
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
    previous_threads = torch.get_num_threads()
    was_training = model.training
    try:
        torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            times = _time_calls(lambda: model(*args), warmup, repeats)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return summarize(times, threads, "torch")


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
    import onnxruntime as ort

    args = example_args(num_samples, example_input)
    with tempfile.TemporaryDirectory() as tmp:
        source: str | bytes
        if isinstance(onnx_path_or_model, nn.Module):
            source = str(
                export_onnx_for_latency(onnx_path_or_model, Path(tmp) / "model.onnx", example_input=args)
            )
        elif isinstance(onnx_path_or_model, bytes):
            source = onnx_path_or_model
        else:
            source = str(onnx_path_or_model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    feeds = {name: np.ascontiguousarray(a.detach().cpu().numpy()) for name, a in zip(input_names, args)}
    times = _time_calls(lambda: session.run(None, feeds), warmup, repeats)
    return summarize(times, threads, "onnxruntime")
