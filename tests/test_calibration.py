"""Temperature scaling and ECE against NumPy references; calibration fitted on a model and on its ONNX file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ersam_ssl.calibration import (
    TEMPERATURE_BOUNDS,
    calibrate,
    calibrated_probs,
    ece_noise_floor,
    expected_calibration_error,
    fit_temperature,
    nll,
)
from ersam_ssl.export import (
    ONNX_CALIBRATION_KEY,
    attach_onnx_calibration,
    export_onnx,
    quantize_onnx,
    read_onnx_calibration,
)
from ersam_ssl.models import SAMSpace, build_model


def np_nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def np_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Guo et al. 2017, eq. 3: sum over equal-width confidence bins of |accuracy - confidence| x bin share."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return ece


def overconfident(n: int, classes: int = 5, true_t: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z / true_t) while the classifier reports z: over-confident by true_t."""
    rng = np.random.default_rng(seed)
    z = 2.0 * rng.standard_normal((n, classes))
    p = calibrated_probs(z, true_t)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z, labels


def test_nll_and_probs_match_numpy():
    z, y = overconfident(50)
    for t in (0.5, 1.0, 3.0):
        assert nll(z, y, t) == pytest.approx(np_nll(z, y, t), rel=1e-12)
    np.testing.assert_allclose(calibrated_probs(z, 2.0).sum(1), 1.0)
    # logits and log-probabilities give the same calibrated distribution
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(calibrated_probs(log_p, 2.0), calibrated_probs(z, 2.0), atol=1e-12)


def test_fit_temperature_matches_a_numpy_grid_search():
    z, y = overconfident(2000)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10.0), 4001))
    best = grid[np.argmin([np_nll(z, y, t) for t in grid])]
    t = fit_temperature(z, y)
    assert t == pytest.approx(best, rel=2e-3)
    assert t == pytest.approx(3.0, rel=0.15)  # recovers the over-confidence it was given
    assert fit_temperature(z / 4.0, y) == pytest.approx(best / 4.0, rel=2e-3)  # less confident, lower T


def test_fit_temperature_validates_and_stays_in_bounds():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((4, 3)), np.zeros(5))
    separable = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    # Perfectly separated: the NLL falls towards 0 as T → 0 (numerically flat below ~0.2); the fit stays
    # inside the bounds instead of running off to T = 0.
    t = fit_temperature(separable, np.array([0, 1] * 10))
    assert TEMPERATURE_BOUNDS[0] <= t < 0.25


@pytest.mark.parametrize("bins", [15, 7])
def test_ece_matches_numpy(bins):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(4, 0.5), size=3000)
    labels = rng.integers(0, 4, 3000)
    assert expected_calibration_error(probs, labels, bins) == pytest.approx(
        np_ece(probs, labels, bins), abs=1e-5
    )


def test_temperature_scaling_lowers_ece_of_an_overconfident_classifier():
    z, y = overconfident(4000, seed=2)
    t = fit_temperature(z[:2000], y[:2000])  # fitted on one half, measured on the other
    before = expected_calibration_error(calibrated_probs(z[2000:]), y[2000:])
    after = expected_calibration_error(calibrated_probs(z[2000:], t), y[2000:])
    assert before > 0.1 and after < before / 3, (before, after)
    assert (calibrated_probs(z, t).argmax(1) == z.argmax(1)).all()  # the predicted class does not change


def test_ece_noise_floor_is_what_calibrated_predictions_show_and_shrinks_with_n():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(11, 0.4), size=2000)
    small, large = ece_noise_floor(probs[:300], draws=40), ece_noise_floor(probs, draws=20)
    assert small["n"] == 300 and large["n"] == 2000
    assert small["mean"] > large["mean"] > 0 and small["q"] >= small["mean"]
    # labels drawn from the probabilities (calibrated by construction): the ECE sits under the floor's
    # upper quantile, while an over-confident version of the same predictions sits far above it
    y = np.array([rng.choice(11, p=p) for p in probs[:300]])
    assert expected_calibration_error(probs[:300], y) <= small["q"] + 0.01
    sharp = calibrated_probs(np.log(probs[:300]), 0.3)
    assert expected_calibration_error(sharp, y) > 2 * small["q"]
    certain = np.eye(11)[rng.integers(0, 11, 50)]  # one-hot: sampled labels always agree, floor 0
    assert ece_noise_floor(certain, draws=10)["q"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"probs \[N, C\]"):
        ece_noise_floor(np.zeros((0, 3)))


@pytest.fixture(scope="module")
def loud_model():
    """A small SAM counter with inflated logits (over-confident) and labels it gets 60 % right."""
    torch.manual_seed(0)
    model = build_model(SAMSpace().smallest(), num_classes=4)
    with torch.no_grad():
        model.train()
        model(0.1 * torch.randn(16, 8000))  # BatchNorm statistics for these inputs
        model.head.linear.weight.mul_(1000.0)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.logspace(-2, 0, 96).unsqueeze(1) * torch.randn(96, 8000, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(96, generator=gen) < 0.4
    y[flip] = (y[flip] + 1 + torch.randint(0, 3, (int(flip.sum()),), generator=gen)) % 4
    return model, [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]


def test_calibrate_a_model_and_its_onnx_file(tmp_path, loud_model):
    model, batches = loud_model
    result = calibrate(model, batches)
    assert result["clips"] == 96 and result["temperature"] > 1.5
    assert result["ece_after"] < result["ece_before"] and result["nll_after"] < result["nll_before"]
    path = export_onnx(model, tmp_path / "m.onnx", 8000)
    from_onnx = calibrate(path, [{"x": x, "y": y} for x, y in batches])
    assert from_onnx["temperature"] == pytest.approx(result["temperature"], rel=1e-3)
    assert from_onnx["ece_before"] == pytest.approx(result["ece_before"], abs=1e-4)
    with pytest.raises(ValueError, match="no batches"):
        calibrate(model, [])


def test_calibration_travels_with_the_onnx_file(tmp_path, loud_model):
    model = loud_model[0]
    plain = export_onnx(model, tmp_path / "plain.onnx", 8000)
    assert read_onnx_calibration(plain) == {"temperature": 1.0, "abstain_confidence": None}
    path = export_onnx(model, tmp_path / "m.onnx", 8000, temperature=2.5, abstain_confidence=0.6)
    assert read_onnx_calibration(path) == {"temperature": 2.5, "abstain_confidence": 0.6}
    attach_onnx_calibration(path, 1.7)  # replaces, never duplicates
    import onnx

    keys = [p.key for p in onnx.load(str(path)).metadata_props]
    assert keys.count(ONNX_CALIBRATION_KEY) == 1
    assert read_onnx_calibration(path) == {"temperature": 1.7, "abstain_confidence": None}
    attach_onnx_calibration(path, 1.7, 0.55)
    int8 = quantize_onnx(path, tmp_path / "m.int8.onnx", "dynamic")
    assert read_onnx_calibration(int8) == {"temperature": 1.7, "abstain_confidence": 0.55}
    for bad in ({"temperature": 0.0}, {"temperature": float("nan")}, {"abstain_confidence": 1.5}):
        with pytest.raises(ValueError):
            attach_onnx_calibration(path, **bad)
