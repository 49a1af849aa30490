"""Counters: one interface (:class:`Counter`) over an ONNX export (ONNX Runtime) or a PyTorch model.

A counter maps windows ``[B, T]`` to a speaker count and a confidence per window (max of
``head.log_probs``, divided by the model's calibrated temperature, see :mod:`ersam_ssl.calibration`);
:func:`load_counter` builds one from whatever the caller has (a file, a model or a counter), and
:func:`model_window` says which window length it takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ersam_ssl import audio
from ersam_ssl.analysis.reader import _short
from ersam_ssl.export import onnx_session, read_onnx_calibration, read_onnx_config

#: Default analysis window (seconds): the 5 s clips the counters are trained on; the hop defaults to it.
DEFAULT_WINDOW = 5.0


class Counter(Protocol):
    """``counter(windows [B, T] float32) -> (counts int64 [B], confidence float [B])``.

    Attributes:
        num_classes: counts ``0..num_classes-1``.
        fixed_batch / fixed_samples: an input dimension the model requires (None: any).
        abstain_confidence: optional; windows whose confidence is below it get no count (``uncertain``).
    """

    num_classes: int
    fixed_batch: int | None
    fixed_samples: int | None

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def info(self) -> dict[str, Any]: ...


def _head_outputs(
    head: torch.nn.Module, out: torch.Tensor, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    log_probs = head.log_probs(out)
    counts = head.predict(out)
    probs = log_probs.exp() if temperature == 1.0 else torch.softmax(log_probs / temperature, dim=-1)
    confidence = probs.max(dim=-1).values
    return counts.long().cpu().numpy(), confidence.double().cpu().numpy()


class TorchCounter:
    """A :class:`~ersam_ssl.models.CountModel` (put in eval mode) run under ``torch.inference_mode``.

    Args:
        model: the counter.
        threads: intra-op threads while counting (the previous setting is restored after each call);
            None keeps PyTorch's setting.
        source: where the model came from (for the summary).
        temperature / abstain_confidence: calibration (see :mod:`ersam_ssl.calibration`); defaults: the
            model's own confidence, never abstain.
    """

    fixed_batch = None
    fixed_samples = None

    def __init__(
        self,
        model: torch.nn.Module,
        threads: int | None = 1,
        source: str | None = None,
        temperature: float = 1.0,
        abstain_confidence: float | None = None,
    ) -> None:
        self.model = model.eval()
        self.head = model.head
        self.num_classes = int(model.head.num_classes)
        self.threads = threads
        self.source = source
        self.temperature = float(temperature)
        self.abstain_confidence = abstain_confidence

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        previous = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                out = self.model(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)))
                return _head_outputs(self.head, out, self.temperature)
        finally:
            torch.set_num_threads(previous)

    def info(self) -> dict[str, Any]:
        config = self.model.config() if hasattr(self.model, "config") else None
        return {
            "backend": "pytorch",
            "source": self.source,
            "config": config,
            "num_classes": self.num_classes,
            "params": int(sum(p.numel() for p in self.model.parameters())),
            "threads": self.threads,
            "temperature": self.temperature,
            "abstain_confidence": self.abstain_confidence,
        }


class OnnxCounter:
    """An exported counter run by ONNX Runtime (CPU, ``threads`` intra-op threads, one inter-op thread).

    Contract with the exporter: the graph takes the waveform ``[B, T]`` float32 as its first input (any
    name; either dimension may be fixed) and returns the raw head output as its first output; the model
    config (``CountModel.config()``) is stored as JSON under the metadata key ``ersam_model_config`` (or
    in a sidecar JSON, see :func:`read_onnx_config`). The head's ``log_probs``/``predict`` — which do not
    depend on weights — are rebuilt from that config and applied to the output. A temperature and an abstain
    threshold stored under ``ersam_calibration`` (:func:`ersam_ssl.export.attach_onnx_calibration`) are
    applied too; files without them give the model's own confidence and never abstain.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from ersam_ssl.models import CountModel

        self.path = Path(path)
        try:
            self.session = onnx_session(self.path, threads)
        except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, ... derive from Exception only
            raise ValueError(f"{self.path}: not a usable ONNX model ({_short(e)})") from e
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config = read_onnx_config(self.path, meta)
        calibration = read_onnx_calibration(self.path, meta)
        self.temperature = calibration["temperature"]
        self.abstain_confidence = calibration["abstain_confidence"]
        self.head = CountModel.from_config(self.config).head.eval()
        self.num_classes = int(self.head.num_classes)
        self.threads = int(threads)
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 2:
            raise ValueError(f"{self.path}: expected a [batch, samples] input, got shape {inp.shape}")
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.fixed_samples = inp.shape[1] if isinstance(inp.shape[1], int) else None

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            return _head_outputs(self.head, torch.from_numpy(self.outputs(windows)), self.temperature)

    def outputs(self, windows: np.ndarray) -> np.ndarray:
        """The raw head output for ``windows [B, T]`` (a fixed batch size is served by padding the last part)."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        b = self.fixed_batch
        if b is None:
            out = self.session.run(None, {self.input_name: x})[0]
        else:
            parts = []
            for i in range(0, x.shape[0], b):
                chunk = x[i : i + b]
                if chunk.shape[0] < b:
                    chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], x.shape[1]), np.float32)])
                parts.append(self.session.run(None, {self.input_name: chunk})[0])
            out = np.concatenate(parts)[: x.shape[0]]
        return np.asarray(out)

    def info(self) -> dict[str, Any]:
        return {
            "backend": "onnxruntime",
            "source": str(self.path),
            "config": self.config,
            "num_classes": self.num_classes,
            "input": self.input_name,
            "fixed_batch": self.fixed_batch,
            "fixed_samples": self.fixed_samples,
            "threads": self.threads,
            "temperature": self.temperature,
            "abstain_confidence": self.abstain_confidence,
        }


def load_counter(model: str | Path | torch.nn.Module | Counter, threads: int = 1) -> Counter:
    """A :class:`Counter` from an ``.onnx`` file, a model file / Lightning checkpoint
    (:func:`ersam_ssl.checkpoint.load_model`), a :class:`~ersam_ssl.models.CountModel`, or a counter."""
    if isinstance(model, torch.nn.Module):
        return TorchCounter(model, threads)
    if not isinstance(model, (str, Path)):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxCounter(path, threads)
    from ersam_ssl.checkpoint import load_model

    return TorchCounter(load_model(path), threads, source=str(path))


def model_window(counter: Counter, window: float | None = None) -> float:
    """The analysis window in seconds: ``window`` if given, else the counter's fixed input length (an ONNX
    export fixes and so records it), else :data:`DEFAULT_WINDOW`.

    Raises:
        ValueError: ``window`` differs from the length the model takes.
    """
    fixed = counter.fixed_samples
    if fixed is None:
        return DEFAULT_WINDOW if window is None else window
    own = fixed / audio.SAMPLE_RATE
    if window is not None and int(round(window * audio.SAMPLE_RATE)) != fixed:
        raise ValueError(f"the model takes exactly {fixed} samples ({own:g} s windows), not {window:g} s; "
                         f"pass window={own:g} or leave the window out")  # fmt: skip
    return own
