"""The latency correction: least squares against a NumPy reference, known coefficients recovered, additivity."""

from __future__ import annotations

import numpy as np
import pytest

from ersam_ssl.hw.latency_fit import (
    AUTO,
    DEFAULT_FORM,
    FORMS,
    IDENTITY,
    SELECTION_TOLERANCE_PCT,
    LatencyCorrection,
    design_matrix,
    fit_correction,
    fit_linear,
    loo_error,
    op_feature,
    select_form,
)

OP_TYPES = ("frontend", "stem", "mbconv", "pool_head", "classifier")


def synthetic_archs(n: int, seed: int = 0) -> list[tuple[list[dict], list[float]]]:
    """``n`` fake members: frontend, stem, 1-12 mbconv blocks, pool head, classifier, with random op latencies."""
    rng = np.random.default_rng(seed)
    archs = []
    for _ in range(n):
        types = ["frontend", "stem"] + ["mbconv"] * int(rng.integers(1, 13)) + ["pool_head", "classifier"]
        specs = [{"op": t, "name": f"{t}.{i}"} for i, t in enumerate(types)]
        archs.append((specs, list(rng.uniform(0.05, 2.0, len(specs)))))
    return archs


def reference_features(archs) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per member by hand: sum of op latencies, number of ops, sum of latencies per op type."""
    total = np.array([sum(ms) for _, ms in archs])
    count = np.array([len(specs) for specs, _ in archs], dtype=float)
    per_type = {
        t: np.array([sum(m for s, m in zip(specs, ms) if s["op"] == t) for specs, ms in archs])
        for t in OP_TYPES
    }
    return total, count, per_type


def test_fit_linear_matches_numpy_least_squares():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(30), rng.uniform(1, 10, 30), rng.integers(5, 20, 30)])
    y = x @ np.array([0.5, 1.2, 0.05]) + rng.normal(0, 0.1, 30)
    # relative: minimise sum(((x b - y) / y)^2) = ordinary least squares on rows divided by y
    expected = np.linalg.lstsq(x / y[:, None], np.ones(30), rcond=None)[0]
    np.testing.assert_allclose(fit_linear(x, y, nonnegative=False), expected, rtol=1e-10)
    # all coefficients positive: the non-negative fit is the same optimum
    assert (expected > 0).all()
    np.testing.assert_allclose(fit_linear(x, y), expected, rtol=1e-6)
    absolute = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(fit_linear(x, y, relative=False, nonnegative=False), absolute, rtol=1e-10)


def test_nonnegative_fit_drops_a_coefficient_that_would_be_negative():
    rng = np.random.default_rng(2)
    x = np.column_stack([np.ones(40), rng.uniform(1, 10, 40), rng.uniform(0, 1, 40)])
    y = x @ np.array([1.0, 2.0, -0.5])  # the third column lowers latency: not allowed per op
    b = fit_linear(x, y)
    assert b[2] == 0.0 and (b >= 0).all()
    # with that coefficient at zero, the rest is the least-squares fit of the remaining columns
    reduced = np.linalg.lstsq(x[:, :2] / y[:, None], np.ones(40), rcond=None)[0]
    np.testing.assert_allclose(b[:2], reduced, rtol=1e-6)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_fit_correction_recovers_known_coefficients(form):
    archs = synthetic_archs(40)
    total, count, per_type = reference_features(archs)
    intercept, features = FORMS[form]
    true = {
        "ms": 1.3,
        "count": 0.04,
        "ms:stem": 1.1,
        "ms:mbconv": 1.4,
        "ms:pool_head": 1.2,
        "ms:classifier": 2.0,
    }
    a = 0.7 if intercept else 0.0
    columns = {"ms": total, "count": count, **{f"ms:{t}": v for t, v in per_type.items()}}
    measured = a + sum(true[f] * columns[f] for f in features)
    np.testing.assert_allclose(design_matrix(archs, features, intercept)[:, int(intercept) :],
                               np.column_stack([columns[f] for f in features]))  # fmt: skip

    correction = fit_correction(archs, measured, form)
    assert correction.form == form and correction.num_archs == 40 and correction.features == features
    assert correction.intercept == pytest.approx(a, abs=1e-9)
    assert correction.coef == pytest.approx([true[f] for f in features], rel=1e-7)
    predicted = [correction.predict(specs, ms) for specs, ms in archs]
    np.testing.assert_allclose(predicted, measured, rtol=1e-8)


def test_noisy_fit_matches_the_numpy_reference():
    archs = synthetic_archs(50, seed=3)
    total, count, _ = reference_features(archs)
    rng = np.random.default_rng(4)
    measured = (0.4 + 1.25 * total + 0.1 * count) * rng.uniform(0.99, 1.01, len(archs))
    x = np.column_stack([np.ones(len(archs)), total, count])
    reference = np.linalg.lstsq(x / measured[:, None], np.ones(len(archs)), rcond=None)[0]
    assert (reference > 0).all()
    correction = fit_correction(archs, measured, "affine+ops")
    assert [correction.intercept, *correction.coef] == pytest.approx(reference, rel=1e-5)


def test_correction_is_a_sum_over_ops_plus_a_constant():
    correction = LatencyCorrection(("ms", "count", "ms:mbconv"), (1.1, 0.05, 0.2), intercept=0.3)
    specs, ms = synthetic_archs(1)[0]
    by_hand = 0.3 + sum(1.1 * m + 0.05 + (0.2 * m if s["op"] == "mbconv" else 0.0) for s, m in zip(specs, ms))
    assert correction.predict(specs, ms) == pytest.approx(by_hand)
    assert correction.predict(specs, ms) == pytest.approx(
        correction.intercept + sum(correction.op_cost(s, m) for s, m in zip(specs, ms))
    )
    assert IDENTITY.predict(specs, ms) == pytest.approx(sum(ms))
    assert LatencyCorrection.from_dict(correction.to_dict()) == correction


def test_op_feature_values_and_bad_names():
    mbconv = {"op": "mbconv"}
    assert op_feature("ms", mbconv, 2.5) == 2.5 and op_feature("count", mbconv, 2.5) == 1.0
    assert op_feature("ms:mbconv", mbconv, 2.5) == 2.5 and op_feature("ms:stem", mbconv, 2.5) == 0.0
    with pytest.raises(ValueError, match="unknown latency feature 'flops'"):
        op_feature("flops", mbconv, 1.0)
    with pytest.raises(ValueError, match="unknown latency feature"):
        LatencyCorrection(("ms", "time"), (1.0, 1.0))


def test_bad_fit_inputs_raise_one_line_errors():
    archs = synthetic_archs(5)
    with pytest.raises(ValueError, match="unknown correction form 'cubic'; choose 'auto' or one of"):
        fit_correction(archs, [1.0] * 5, "cubic")
    with pytest.raises(ValueError, match="need at least 6 measured models to fit 6 coefficients"):
        fit_correction(archs, [1.0] * 5, "per-type+ops")
    with pytest.raises(ValueError, match="5 calibration members but 4 measurements"):
        fit_correction(archs, [1.0] * 4, DEFAULT_FORM)
    with pytest.raises(ValueError, match="positive measured latencies"):
        fit_correction(archs, [1.0, 2.0, 0.0, 1.0, 1.0], "affine")
    with pytest.raises(ValueError, match="need at least 2 measured models to choose a form"):
        fit_correction(archs[:1], [1.0], AUTO)
    with pytest.raises(ValueError, match="finite"):
        fit_linear(np.ones((3, 1)), np.array([1.0, np.nan, 1.0]))


def test_loo_error_matches_a_numpy_reference():
    archs = synthetic_archs(20, seed=5)
    total, count, _ = reference_features(archs)
    rng = np.random.default_rng(6)
    measured = (0.4 + 1.25 * total + 0.1 * count) * rng.uniform(0.98, 1.02, len(archs))
    x = np.column_stack([np.ones(len(archs)), total, count])
    errors = []
    for i in range(len(archs)):
        keep = np.arange(len(archs)) != i
        b = np.linalg.lstsq(x[keep] / measured[keep, None], np.ones(keep.sum()), rcond=None)[0]
        assert (b > 0).all()  # so the non-negative fit is the same
        errors.append(abs(x[i] @ b - measured[i]) / measured[i])
    assert loo_error(archs, measured, "affine+ops") == pytest.approx(100 * np.mean(errors), rel=1e-5)


@pytest.mark.parametrize("true_form", ["scale", "affine+ops", "per-type+ops"])
def test_auto_chooses_the_simplest_form_that_explains_the_timings(true_form):
    archs = synthetic_archs(30, seed=7)
    total, count, per_type = reference_features(archs)
    measured = {
        "scale": 1.3 * total,
        "affine+ops": 0.5 + 1.1 * total + 0.08 * count,
        "per-type+ops": 0.5
        + 2.0 * per_type["stem"]
        + 1.0 * per_type["mbconv"]
        + 1.5 * per_type["pool_head"]
        + 1.2 * per_type["classifier"]
        + 0.08 * count,
    }[true_form]
    chosen, errors = select_form(archs, measured)
    assert chosen == true_form and set(errors) == set(FORMS)
    assert errors[true_form] < SELECTION_TOLERANCE_PCT
    correction = fit_correction(archs, measured)  # DEFAULT_FORM is "auto"
    assert DEFAULT_FORM == AUTO and correction.form == true_form and correction.loo_errors == errors
    np.testing.assert_allclose([correction.predict(*a) for a in archs], measured, rtol=1e-6)
    # too few members for the largest form: it is not a candidate
    chosen_small, errors_small = select_form(archs[:6], measured[:6])
    assert "per-type+ops" not in errors_small and chosen_small in errors_small
