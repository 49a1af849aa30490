"""Calibrated confidence for counters: temperature scaling and the numbers an abstain rule needs.

A counter trained for minutes on few labels is over-confident: its 0.9 is right far less than 90 % of the
time, so a threshold on raw confidence means little. Temperature scaling (Guo, Pleiss, Sun, Weinberger,
"On Calibration of Modern Neural Networks", ICML 2017) divides the log-probabilities by one scalar ``T``
fitted on held-out labeled clips by minimising the negative log-likelihood; the predicted count does not
change (for a classification head), only the confidence. With calibrated confidence, "abstain below
``abstain_confidence``" is a rule a clinician can read: windows the model is unsure of are reported
``uncertain`` instead of with a wrong count.

The temperature and the abstain threshold travel with an ONNX export (metadata key ``ersam_calibration``,
see :func:`ersam_ssl.export.attach_onnx_calibration`); ``ersam-ssl analyze`` applies them.

Example (whoever ships a model)::

    result = calibrate("model.onnx", val_batches)          # {"temperature": 1.8, "ece_before": ..., ...}
    attach_onnx_calibration("model.onnx", result["temperature"], abstain_confidence=0.5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Temperatures searched by :func:`fit_temperature` (a fit at a bound says the data is degenerate).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def calibrated_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` for ``[N, C]`` logits or log-probabilities (the same for either: a
    log-softmax only shifts each row)."""
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    labels = np.asarray(labels, dtype=np.int64)
    lp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-lp[np.arange(labels.size), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T > 0`` minimising :func:`nll` (Guo et al. 2017).

    The NLL is convex in ``1/T`` (a log-sum-exp of linear functions minus a linear term), hence unimodal in
    ``log T``: a bounded Brent search over ``log T`` in :data:`TEMPERATURE_BOUNDS` finds the optimum.

    Args:
        logits: ``[N, C]`` logits or log-probabilities of held-out clips (not the training clips).
        labels: ``[N]`` true classes.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or labels.size == 0:
        raise ValueError(f"need logits [N, C] and labels [N] with N > 0, got {logits.shape}, {labels.shape}")
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (top-label, ``bins`` equal-width confidence bins, L1), computed by the
    same torchmetrics function :class:`ersam_ssl.metrics.CountMetrics` reports as ``ece``."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    p = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return float(multiclass_calibration_error(p, y, num_classes=p.shape[1], n_bins=bins, norm="l1"))


def ece_noise_floor(
    probs: np.ndarray, bins: int = 15, draws: int = 200, quantile: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """The ECE a perfectly calibrated counter would show on this many clips: the estimator's noise floor.

    Binned ECE is biased upwards on finite sets (every bin's accuracy is a noisy proportion), so "ECE ≤
    0.05" on 330 clips can be out of reach even for a calibrated model. Consistency resampling (Bröcker &
    Smith, "Increasing the Reliability of Reliability Diagrams", Weather and Forecasting 2007): draw labels
    from the model's own ``probs`` (so the model is calibrated by construction), compute the ECE, repeat.
    An observed ECE within the ``quantile`` of these draws is consistent with calibration at this sample
    size. Returns ``{"mean", "q" (the quantile), "n"}``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"need probs [N, C] with N > 0, got {probs.shape}")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    values = []
    for _ in range(draws):
        u = rng.random((probs.shape[0], 1))
        labels = np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)
        values.append(expected_calibration_error(probs, labels, bins))
    return {"mean": float(np.mean(values)), "q": float(np.quantile(values, quantile)), "n": int(probs.shape[0])}


def _batches(loader: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    for batch in loader:
        yield (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])


@torch.no_grad()
def collect_log_probs(model_or_onnx: torch.nn.Module | str | Path, loader: Iterable[Any]) -> tuple:
    """``(log_probs [N, C], labels [N])`` of a counter over labeled batches (``(x, y)`` or ``{"x", "y"}``).

    ``model_or_onnx`` is a :class:`~ersam_ssl.models.CountModel` or an exported ``.onnx`` file (its head
    is rebuilt from the config stored with it, as :class:`ersam_ssl.analysis.OnnxCounter` does), so the
    temperature is fitted on exactly what ships — e.g. the int8 file.
    """
    from ersam_ssl.models import CountModel

    if isinstance(model_or_onnx, torch.nn.Module):
        model, was_training = model_or_onnx, model_or_onnx.training
        model.eval()
        head = model.head

        def run(x: Any) -> torch.Tensor:
            return model(torch.as_tensor(x))
    else:
        from ersam_ssl.export import onnx_outputs, onnx_session, read_onnx_config

        session = onnx_session(model_or_onnx)
        head = CountModel.from_config(read_onnx_config(model_or_onnx)).head.eval()
        was_training = None

        def run(x: Any) -> torch.Tensor:
            return torch.from_numpy(onnx_outputs(session, x))

    out, labels = [], []
    try:
        for x, y in _batches(loader):
            out.append(head.log_probs(run(x)).double().cpu().numpy())
            labels.append(np.asarray(torch.as_tensor(y).cpu(), dtype=np.int64).reshape(-1))
    finally:
        if was_training is not None:
            model.train(was_training)
    if not out:
        raise ValueError("no batches to calibrate on")
    return np.concatenate(out), np.concatenate(labels)


def calibrate(model_or_onnx: torch.nn.Module | str | Path, val_loader: Iterable[Any], bins: int = 15) -> dict:
    """Fit a counter's temperature on held-out labeled clips and measure what it buys.

    Returns:
        ``{"temperature", "ece_before", "ece_after", "nll_before", "nll_after", "clips"}``; store the
        temperature with :func:`ersam_ssl.export.attach_onnx_calibration`.
    """
    log_probs, labels = collect_log_probs(model_or_onnx, val_loader)
    t = fit_temperature(log_probs, labels)
    return {
        "temperature": t,
        "ece_before": expected_calibration_error(calibrated_probs(log_probs), labels, bins),
        "ece_after": expected_calibration_error(calibrated_probs(log_probs, t), labels, bins),
        "nll_before": nll(log_probs, labels),
        "nll_after": nll(log_probs, labels, t),
        "clips": int(labels.size),
    }
