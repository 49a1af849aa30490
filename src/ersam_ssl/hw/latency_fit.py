"""Correct a per-op latency sum for what it misses: a small linear model fitted on measured whole models.

The sum of isolated op latencies (:class:`~ersam_ssl.hw.lut.LatencyLUT`) misses what happens between the
ops of a whole model: the framework's dispatch around every module call, code and data that are no longer
in cache when the next op runs, the model's own ``forward``. Latency predictors are judged against
measured whole models (nn-Meter, Zhang et al., MobiSys 2021; HW-NAS-Bench, Li et al., ICLR 2021); here a
linear model fitted on a few measured "calibration" members corrects the sum::

    measured_ms ≈ intercept + Σ_f coef_f · Σ_ops f(op)

where each feature ``f`` is a per-op quantity (:func:`op_feature`): ``"ms"`` (the op's table latency),
``"count"`` (1 per op: a cost per op boundary), or either restricted to one op type (``"ms:mbconv"``).
Being a sum over ops plus a constant, the corrected prediction stays additive, so a one-shot search can
still tabulate it per op (:meth:`LatencyCorrection.op_cost`).

:data:`FORMS` are the candidate corrections, from fewest coefficients to most. Only the forms with more
than a scale change the ranking of members (Spearman's rho), and which one fits best depends on the
machine, so by default (``form="auto"``) :func:`fit_correction` picks it by measurement, on the
calibration members alone: the simplest form whose leave-one-out mean |relative error| is within
:data:`SELECTION_TOLERANCE_PCT` of the best (:func:`select_form`). ``benchmarks/cost_models.py`` reports
every form on held-out members.

The fit minimises the squared *relative* error (what the benchmark reports), with non-negative
coefficients so that no op can have a negative cost (:func:`fit_linear`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AUTO",
    "DEFAULT_FORM",
    "FORMS",
    "IDENTITY",
    "SELECTION_TOLERANCE_PCT",
    "LatencyCorrection",
    "design_matrix",
    "fit_correction",
    "fit_linear",
    "loo_error",
    "op_feature",
    "select_form",
]

#: Candidate corrections, simplest first: ``name -> (has intercept, per-op features)``. The raw sum is
#: :data:`IDENTITY`.
FORMS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "scale": (False, ("ms",)),
    "affine": (True, ("ms",)),
    "affine+ops": (True, ("ms", "count")),
    "per-type+ops": (True, ("ms:stem", "ms:mbconv", "ms:pool_head", "ms:classifier", "count")),
}
#: ``form="auto"``: choose among :data:`FORMS` by leave-one-out error on the calibration members.
AUTO = "auto"
DEFAULT_FORM = AUTO
#: A more complex form must beat a simpler one by more than this (percentage points of leave-one-out mean
#: |relative error|, below the noise of a median of 20 timings) to be chosen.
SELECTION_TOLERANCE_PCT = 0.1
_KINDS = ("ms", "count")


def op_feature(name: str, spec: Mapping[str, Any], op_ms: float) -> float:
    """Value of per-op feature ``name`` for one op: ``"ms"`` → ``op_ms``, ``"count"`` → 1; with ``":<op>"``
    (e.g. ``"ms:mbconv"``) only for ops whose ``spec["op"]`` is ``<op>``, else 0."""
    kind, _, op_type = name.partition(":")
    if kind not in _KINDS:
        raise ValueError(f"unknown latency feature {name!r}: use 'ms' or 'count', optionally ':<op type>'")
    if op_type and spec.get("op") != op_type:
        return 0.0
    return float(op_ms) if kind == "ms" else 1.0


@dataclass(frozen=True)
class LatencyCorrection:
    """``intercept + Σ_f coef_f · Σ_ops op_feature(f, op)``: whole-model latency (ms) from per-op latencies.

    Attributes:
        features: Per-op feature names (:func:`op_feature`).
        coef: One coefficient per feature.
        intercept: Constant per model (ms).
        form: Name of the form in :data:`FORMS` (informational).
        num_archs: Calibration members the coefficients were fitted on (0: not fitted).
        loo_errors: With ``form="auto"``, each candidate form's leave-one-out mean |relative error| (%) on
            the calibration members, which chose :attr:`form`.
    """

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float = 0.0
    form: str = ""
    num_archs: int = 0
    loo_errors: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "coef", tuple(float(c) for c in self.coef))
        if len(self.features) != len(self.coef):
            raise ValueError(f"{len(self.features)} features but {len(self.coef)} coefficients")
        for name in self.features:
            op_feature(name, {}, 0.0)  # validates the name

    def op_cost(self, spec: Mapping[str, Any], op_ms: float) -> float:
        """One op's share of the corrected latency (ms); :attr:`intercept` is the rest."""
        return float(sum(c * op_feature(f, spec, op_ms) for f, c in zip(self.features, self.coef)))

    def predict(self, specs: Sequence[Mapping[str, Any]], op_ms: Sequence[float]) -> float:
        """Corrected latency (ms) of a model given as its op specs and their table latencies."""
        if len(specs) != len(op_ms):
            raise ValueError(f"{len(specs)} op specs but {len(op_ms)} op latencies")
        return self.intercept + sum(self.op_cost(s, ms) for s, ms in zip(specs, op_ms))

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "intercept": self.intercept,
            "features": list(self.features),
            "coef": list(self.coef),
            "num_archs": self.num_archs,
            "loo_errors": dict(self.loo_errors),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyCorrection:
        return cls(
            tuple(data["features"]),
            tuple(float(v) for v in data["coef"]),
            float(data.get("intercept", 0.0)),
            str(data.get("form", "")),
            int(data.get("num_archs", 0)),
            {str(k): float(v) for k, v in data.get("loo_errors", {}).items()},
        )


#: The uncorrected sum of op latencies.
IDENTITY = LatencyCorrection(("ms",), (1.0,), 0.0, "sum")


def design_matrix(
    archs: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[float]]],
    features: Sequence[str],
    intercept: bool,
) -> np.ndarray:
    """``[len(archs), intercept + len(features)]``: per member (its op specs, their latencies), a leading 1
    if ``intercept`` and then each feature summed over the member's ops."""
    rows = []
    for specs, op_ms in archs:
        if len(specs) != len(op_ms):
            raise ValueError(f"{len(specs)} op specs but {len(op_ms)} op latencies")
        row = [1.0] if intercept else []
        row += [sum(op_feature(f, s, ms) for s, ms in zip(specs, op_ms)) for f in features]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), int(intercept) + len(features))


def fit_linear(
    x: np.ndarray, y: np.ndarray, *, relative: bool = True, nonnegative: bool = True
) -> np.ndarray:
    """Coefficients ``b`` minimising ``Σ_i ((x_i·b − y_i) / y_i)²`` (``relative``) or ``Σ_i (x_i·b − y_i)²``,
    with ``b ≥ 0`` if ``nonnegative`` (``scipy.optimize.nnls``) else by ``numpy.linalg.lstsq``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need x [n, k] and y [n], got {x.shape} and {y.shape}")
    if x.shape[0] < x.shape[1]:
        raise ValueError(f"need at least {x.shape[1]} measured models to fit {x.shape[1]} coefficients")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features and measurements must be finite")
    if relative:
        if (y <= 0).any():
            raise ValueError("a relative fit needs positive measured latencies")
        x, y = x / y[:, None], np.ones_like(y)
    if nonnegative:
        from scipy.optimize import nnls  # imported here: only fitting needs SciPy

        return nnls(x, y)[0]
    return np.linalg.lstsq(x, y, rcond=None)[0]


def _num_coef(form: str) -> int:
    intercept, features = FORMS[form]
    return int(intercept) + len(features)


def _check_form(form: str) -> None:
    if form not in FORMS and form != AUTO:
        raise ValueError(f"unknown correction form {form!r}; choose {AUTO!r} or one of {list(FORMS)}")


def loo_error(
    archs: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[float]]],
    measured_ms: Sequence[float],
    form: str,
    *,
    nonnegative: bool = True,
) -> float:
    """Leave-one-out mean |relative error| (%) of ``form``: each member predicted by a fit on the others."""
    _check_form(form)
    intercept, features = FORMS[form]
    x, y = design_matrix(archs, features, intercept), np.asarray(measured_ms, dtype=np.float64)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} calibration members but {len(y)} measurements")
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        b = fit_linear(x[keep], y[keep], nonnegative=nonnegative)
        errors.append(abs(x[i] @ b - y[i]) / y[i])
    return float(np.mean(errors) * 100)


def select_form(
    archs: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[float]]],
    measured_ms: Sequence[float],
    *,
    nonnegative: bool = True,
) -> tuple[str, dict[str, float]]:
    """``(form, {form: leave-one-out error %})``: the simplest form of :data:`FORMS` whose leave-one-out error is
    within :data:`SELECTION_TOLERANCE_PCT` of the best. Forms with as many coefficients as members are skipped."""
    errors = {
        form: loo_error(archs, measured_ms, form, nonnegative=nonnegative)
        for form in FORMS
        if _num_coef(form) < len(measured_ms)
    }
    if not errors:
        raise ValueError(f"need at least {_num_coef(next(iter(FORMS))) + 1} measured models to choose a form")
    best = min(errors.values())
    chosen = next(form for form, error in errors.items() if error <= best + SELECTION_TOLERANCE_PCT)
    return chosen, errors


def fit_correction(
    archs: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[float]]],
    measured_ms: Sequence[float],
    form: str = DEFAULT_FORM,
    *,
    nonnegative: bool = True,
) -> LatencyCorrection:
    """Fit a correction to measured whole-model latencies.

    Args:
        archs: Per calibration member, its op specs and their table latencies (ms).
        measured_ms: Measured latency of each whole member.
        form: A name in :data:`FORMS`, or ``"auto"`` to choose one with :func:`select_form`.
        nonnegative: Constrain intercept and coefficients to ``>= 0``.
    """
    _check_form(form)
    if len(archs) != len(measured_ms):
        raise ValueError(f"{len(archs)} calibration members but {len(measured_ms)} measurements")
    loo_errors: dict[str, float] = {}
    if form == AUTO:
        form, loo_errors = select_form(archs, measured_ms, nonnegative=nonnegative)
    intercept, features = FORMS[form]
    b = fit_linear(
        design_matrix(archs, features, intercept), np.asarray(measured_ms), nonnegative=nonnegative
    )
    a, coef = (float(b[0]), b[1:]) if intercept else (0.0, b)
    return LatencyCorrection(features, tuple(coef), a, form, len(archs), loo_errors)
