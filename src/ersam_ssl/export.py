"""Deployment export: ONNX (fp32), int8 quantization with ONNX Runtime, and checks against PyTorch.

- :func:`export_onnx` — the project-wide exporter: TorchScript-based ``torch.onnx.export(dynamo=False)``,
  opset 17, input ``wave [batch, samples]``, output ``logits [batch, C_out]``, dynamic batch axis. The
  SAM and CountNet frontends switch their STFT to a ``Conv`` with a DFT basis while exporting
  (:mod:`ersam_ssl.models.frontend`), so the whole counter, waveform to counts, is one ONNX graph.
- :func:`quantize_onnx` — int8 weights with ONNX Runtime: ``dynamic`` (weights int8 offline, activations
  quantized per call; ``ConvInteger``/``MatMulInteger``) or ``static`` (QDQ, activation ranges calibrated on
  training clips). Both run ORT's quantization pre-processing first (shape inference and graph
  optimisation, e.g. BatchNorm folded into the convolutions). By default the frontend (STFT-as-Conv and the
  mel matmul) stays fp32: log-mel features feed a log, where int8 rounding of small powers is amplified,
  and feature extraction is commonly kept in float on device. Recurrent layers (GRU) stay fp32 in both
  modes (ORT quantizes LSTM only).
- :func:`compare_with_torch` — runs PyTorch and ONNX models over the same labeled batches: max absolute
  output difference, counting metrics of each, and agreement of predicted counts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.fileio import atomic_path
from ersam_ssl.metrics import CountMetrics

log = logging.getLogger(__name__)

INPUT_NAME = "wave"
OUTPUT_NAME = "logits"
QUANT_MODES = ("dynamic", "static")
# Nodes of the exported log-mel / STFT frontends (module path "frontend").
FRONTEND_PREFIX = "/frontend/"
#: ONNX metadata key holding ``CountModel.config()`` (JSON), so an export is self-describing.
ONNX_CONFIG_KEY = "ersam_model_config"
#: ONNX metadata key holding ``{"temperature", "abstain_confidence"}`` (JSON, see :mod:`ersam_ssl.calibration`).
ONNX_CALIBRATION_KEY = "ersam_calibration"


def export_onnx(
    model: nn.Module,
    path: str | Path,
    num_samples: int = 80000,
    *,
    example_input: Any = None,
    opset_version: int = 17,
    dynamic_batch: bool = True,
    temperature: float | None = None,
    abstain_confidence: float | None = None,
) -> Path:
    """Export a counter (``wave [B, T] -> raw output``) to ONNX; returns ``path``.

    Args:
        model: exported in eval mode (its mode is restored afterwards).
        path: the ``.onnx`` file to write (parent folders are created).
        num_samples: length of the example waveform (80000 = 5 s at 16 kHz); the time axis is fixed.
        example_input: a tensor or tuple of arguments instead of the example waveform.
        opset_version: ONNX opset (17: the version verified with onnxruntime here).
        dynamic_batch: make the batch axis of the (single) input and of the output dynamic.
        temperature / abstain_confidence: calibration stored with the model (see
            :func:`attach_onnx_calibration`); None stores none.
    """
    from ersam_ssl.hw.cost import example_args

    args = example_args(num_samples, example_input)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    single = len(args) == 1
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch and single else None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                opset_version=opset_version,
                input_names=[INPUT_NAME] if single else None,
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
            )
    finally:
        model.train(was_training)
    if callable(getattr(model, "config", None)):
        attach_onnx_config(path, model)
    if temperature is not None or abstain_confidence is not None:
        attach_onnx_calibration(path, 1.0 if temperature is None else temperature, abstain_confidence)
    return path


def onnx_session(path: str | Path | bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, sequential execution,
    full graph optimisation (what analysis, latency timing and the export checks all run)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_outputs(session: Any, waves: Tensor | np.ndarray) -> np.ndarray:
    """Run a single-input session on a waveform batch ``[B, T]``."""
    array = waves.detach().cpu().numpy() if isinstance(waves, Tensor) else np.asarray(waves)
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(array, dtype=np.float32)})[0]


class _WaveReader:
    """ORT calibration data reader over waveform batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str) -> None:
        self._iter = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        pass


def frontend_nodes(path: str | Path) -> list[str]:
    """Names of the frontend's ``Conv``/``MatMul`` nodes in an exported counter."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [
        n.name for n in graph.node if n.name.startswith(FRONTEND_PREFIX) and n.op_type in ("Conv", "MatMul")
    ]


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.WARNING) -> Iterator[None]:
    """Raise the root logger to at least ``level`` inside the block; restore its level and handlers after.

    ONNX Runtime's quantizers log through the *root* logger (``logging.info(...)``): under an application
    that configured the root logger at INFO (``recipes/run.py``, ``ersam-ssl search``) a static
    quantization prints ~300 lines. A call to ``logging.info`` also installs a stderr handler on a root
    logger that has none (``logging.basicConfig``); the handlers are restored too, so no handler added
    inside the block outlives it.
    """
    root = logging.getLogger()
    previous_level, previous_handlers = root.level, list(root.handlers)
    root.setLevel(max(previous_level, level))
    try:
        yield
    finally:
        root.setLevel(previous_level)
        for handler in root.handlers[:]:
            if handler not in previous_handlers:
                root.removeHandler(handler)


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    mode: str = "dynamic",
    *,
    calibration: Iterable[Tensor | np.ndarray] | None = None,
    quantize_frontend: bool = False,
    per_channel: bool = False,
) -> Path:
    """Write an int8 version of ``src`` to ``dst`` (see the module docstring for the modes).

    Args:
        src / dst: fp32 model in, int8 model out.
        mode: ``"dynamic"`` or ``"static"``.
        calibration: waveform batches ``[B, T]`` for ``"static"`` (training clips, not test clips).
        quantize_frontend: also quantize the STFT/mel frontend's Conv/MatMul.
        per_channel: per-output-channel weight scales.
    """
    with quiet_root_logger():
        return _quantize_onnx(src, dst, mode, calibration, quantize_frontend, per_channel)


def _quantize_onnx(
    src: str | Path,
    dst: str | Path,
    mode: str,
    calibration: Iterable[Tensor | np.ndarray] | None,
    quantize_frontend: bool,
    per_channel: bool,
) -> Path:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANT_MODES:
        raise ValueError(f"mode must be one of {QUANT_MODES}, got {mode!r}")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        exclude = [] if quantize_frontend else frontend_nodes(prepared)
        if mode == "dynamic":
            quantize_dynamic(
                prepared, dst, per_channel=per_channel, weight_type=QuantType.QInt8, nodes_to_exclude=exclude
            )
        else:
            if calibration is None:
                raise ValueError("static quantization needs calibration batches")
            batches = [
                b.detach().cpu().numpy() if isinstance(b, Tensor) else np.asarray(b) for b in calibration
            ]
            if not batches:
                raise ValueError("static quantization needs at least one calibration batch")
            import onnx

            input_name = onnx.load(str(prepared)).graph.input[0].name
            quantize_static(
                prepared,
                dst,
                _WaveReader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    _copy_metadata(src, dst)
    return dst


def _copy_metadata(src: str | Path, dst: str | Path) -> None:
    """Carry the fp32 model's metadata (the model config and calibration) over to its quantized version."""
    import onnx

    props = onnx.load(str(src), load_external_data=False).metadata_props
    carried = {p.key: p.value for p in props if p.key in (ONNX_CONFIG_KEY, ONNX_CALIBRATION_KEY)}
    if carried:
        write_onnx_metadata(dst, carried)


@torch.no_grad()
def compare_with_torch(
    model: nn.Module,
    onnx_models: Mapping[str, str | Path],
    batches: Iterable[Any],
    *,
    levels: AmbianceLevels | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Evaluate a PyTorch counter and ONNX exports of it on the same labeled batches.

    Args:
        model: a :class:`~ersam_ssl.models.CountModel` (``head.predict`` / ``head.log_probs`` give counts).
        onnx_models: ``{name: path}``, e.g. ``{"onnx_fp32": ..., "onnx_int8": ...}``.
        batches: ``{"x", "y"}`` dicts or ``(x, y)`` tuples of waveforms and counts.

    Returns:
        ``{"torch": metrics, name: {**metrics, "max_abs_diff", "mean_abs_diff", "agreement"}, "clips": n}``
        where metrics are ``mae``, ``accuracy``, ``error_rate``, ``level_accuracy``, ``ece``; the
        differences are of raw outputs vs PyTorch, ``agreement`` the share of equal predicted counts.
    """
    model.eval()
    head = model.head
    sessions = {name: onnx_session(path, threads) for name, path in onnx_models.items()}
    metrics = {name: CountMetrics(head.num_classes, levels) for name in ["torch", *sessions]}
    max_diff = dict.fromkeys(sessions, 0.0)
    sum_diff = dict.fromkeys(sessions, 0.0)
    agree = dict.fromkeys(sessions, 0)
    n = 0
    for batch in batches:
        x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])
        ref = model(x)
        ref_pred = head.predict(ref)
        metrics["torch"].update(ref_pred, head.log_probs(ref), y)
        for name, session in sessions.items():
            out = torch.from_numpy(onnx_outputs(session, x))
            diff = (out - ref).abs()
            max_diff[name] = max(max_diff[name], float(diff.max()))
            sum_diff[name] += float(diff.mean()) * y.shape[0]
            pred = head.predict(out)
            agree[name] += int((pred == ref_pred).sum())
            metrics[name].update(pred, head.log_probs(out), y)
        n += int(y.shape[0])
    if n == 0:
        raise ValueError("no batches to compare on")
    result: dict[str, Any] = {"clips": n}
    for name, m in metrics.items():
        values = m.compute()
        result[name] = {k: values[k] for k in ("mae", "accuracy", "error_rate", "level_accuracy", "ece")}
        if name in sessions:
            result[name].update(
                max_abs_diff=max_diff[name], mean_abs_diff=sum_diff[name] / n, agreement=agree[name] / n
            )
    return result


def onnx_size_bytes(path: str | Path) -> int:
    return os.path.getsize(path)


def batched(waves: Sequence[Tensor] | Tensor, batch_size: int) -> list[Tensor]:
    """Split ``[N, T]`` (or a list of ``[T]``) into ``[B, T]`` batches."""
    stacked = waves if isinstance(waves, Tensor) else torch.stack(list(waves))
    return [stacked[i : i + batch_size] for i in range(0, stacked.shape[0], batch_size)]


def read_onnx_config(path: str | Path, metadata: dict[str, str] | None = None) -> dict:
    """The model config (``CountModel.config()``) stored with an exported ONNX model.

    Looked up in this order: the ONNX metadata entry ``ersam_model_config`` (JSON), then a sidecar JSON
    file ``<model>.json`` or ``<model stem>.json`` holding either that config or
    ``{"ersam_model_config": config}``.
    """
    path = Path(path)
    if metadata is None:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        metadata = {p.key: p.value for p in proto.metadata_props}
    if ONNX_CONFIG_KEY in metadata:
        return json.loads(metadata[ONNX_CONFIG_KEY])
    for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if sidecar.is_file():
            blob = json.loads(sidecar.read_text())
            return blob.get(ONNX_CONFIG_KEY, blob)
    raise ValueError(
        f"{path}: no model config found (ONNX metadata key {ONNX_CONFIG_KEY!r} or a sidecar "
        f"{path.name}.json); add it with ersam_ssl.export.attach_onnx_config(path, model)"
    )


def attach_onnx_config(path: str | Path, model_or_config: torch.nn.Module | dict) -> Path:
    """Store ``model.config()`` (or a config dict) in an ONNX file's metadata under ``ersam_model_config``,
    so :class:`ersam_ssl.analysis.OnnxCounter` can rebuild the count head. :func:`export_onnx` does this for
    every model with a ``config()``; call it for other exports. Rewrites ``path`` atomically and returns
    it."""
    config = model_or_config if isinstance(model_or_config, dict) else model_or_config.config()
    return write_onnx_metadata(path, {ONNX_CONFIG_KEY: json.dumps(config)})


def write_onnx_metadata(path: str | Path, entries: Mapping[str, str]) -> Path:
    """Set (or replace) string metadata entries of an ONNX file, atomically; returns ``path``."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key in entries:
            del proto.metadata_props[i]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def attach_onnx_calibration(
    path: str | Path, temperature: float = 1.0, abstain_confidence: float | None = None
) -> Path:
    """Store a counter's calibration in its ONNX metadata (key ``ersam_calibration``).

    Args:
        temperature: divides the log-probabilities before the softmax (fit it with
            :func:`ersam_ssl.calibration.calibrate` on held-out clips).
        abstain_confidence: windows whose calibrated top probability is below it are reported
            ``uncertain`` (no count) by ``ersam-ssl analyze``; None: never abstain.
    """
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if abstain_confidence is not None and not 0.0 <= abstain_confidence <= 1.0:
        raise ValueError(f"abstain_confidence must be in [0, 1], got {abstain_confidence}")
    value = {"temperature": float(temperature), "abstain_confidence": abstain_confidence}
    return write_onnx_metadata(path, {ONNX_CALIBRATION_KEY: json.dumps(value)})


def read_onnx_calibration(path: str | Path, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """``{"temperature", "abstain_confidence"}`` stored with an ONNX model (or in its sidecar JSON, as for
    :func:`read_onnx_config`); files without it get ``temperature=1.0`` and ``abstain_confidence=None``
    (confidences as the model gives them, no abstention)."""
    path = Path(path)
    if metadata is None:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        metadata = {p.key: p.value for p in proto.metadata_props}
    stored: dict[str, Any] = {}
    if ONNX_CALIBRATION_KEY in metadata:
        stored = json.loads(metadata[ONNX_CALIBRATION_KEY])
    else:
        for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
            if sidecar.is_file():
                stored = json.loads(sidecar.read_text()).get(ONNX_CALIBRATION_KEY, {})
                break
    return {
        "temperature": float(stored.get("temperature", 1.0)),
        "abstain_confidence": stored.get("abstain_confidence"),
    }
