"""Uncertainty-weighted knowledge distillation against hand-written NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import numpy_softmax
from ersam_ssl.losses import (
    entropy_weights,
    kd_loss,
    mc_dropout_predict,
    mc_dropout_weights,
    normalized_entropy,
    uncertainty_weighted_kd,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


def numpy_kd(student, teacher, temperature, weights=None):
    p_teacher = numpy_softmax(teacher / temperature)
    p_student = numpy_softmax(student / temperature)
    per_sample = np.array(
        [
            sum(pt * (np.log(pt) - np.log(ps)) for pt, ps in zip(row_t, row_s) if pt > 0)
            for row_t, row_s in zip(p_teacher, p_student)
        ]
    )
    per_sample = per_sample * temperature**2
    if weights is None:
        return float(per_sample.mean())
    if weights.sum() == 0:
        return 0.0
    return float(np.sum(weights * per_sample) / weights.sum())


def numpy_normalized_entropy(probs: np.ndarray) -> np.ndarray:
    entropy = np.array([-sum(p * np.log(p) for p in row if p > 0) for row in probs])
    return entropy / np.log(probs.shape[1]) if probs.shape[1] > 1 else np.zeros(len(probs))


@pytest.mark.parametrize(("batch", "classes"), [(1, 2), (6, 4), (20, 11)])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_kd_loss_matches_numpy(batch: int, classes: int, temperature: float, weighted: bool) -> None:
    rng = np.random.default_rng(batch * classes)
    student = rng.normal(scale=3.0, size=(batch, classes))
    teacher = rng.normal(scale=3.0, size=(batch, classes))
    weights = rng.uniform(size=batch) if weighted else None
    expected = numpy_kd(student, teacher, temperature, weights)
    got = kd_loss(
        torch.from_numpy(student),
        torch.from_numpy(teacher),
        temperature,
        torch.from_numpy(weights) if weighted else None,
    )
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), **TOL)


def test_kd_loss_small_temperature_and_saturated_teacher_are_finite() -> None:
    rng = np.random.default_rng(3)
    student = rng.normal(size=(5, 3))
    teacher = rng.normal(scale=50.0, size=(5, 3))  # near one-hot teacher, tiny probabilities underflow
    got = kd_loss(torch.from_numpy(student), torch.from_numpy(teacher), temperature=0.05)
    assert torch.isfinite(got)
    torch.testing.assert_close(
        got, torch.tensor(numpy_kd(student, teacher, 0.05), dtype=torch.float64), **TOL
    )


def test_kd_loss_is_zero_when_student_equals_teacher_and_weights_scale_free() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(kd_loss(logits, logits.clone()), torch.tensor(0.0, dtype=torch.float64))
    student = torch.randn(4, 5, dtype=torch.float64)
    weights = torch.rand(4, dtype=torch.float64)
    torch.testing.assert_close(
        kd_loss(student, logits, weights=weights), kd_loss(student, logits, weights=7 * weights)
    )
    # Uniform weights give the plain mean; a one-hot weight picks one sample.
    torch.testing.assert_close(
        kd_loss(student, logits, weights=torch.ones(4, dtype=torch.float64)), kd_loss(student, logits)
    )
    one_hot = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(kd_loss(student, logits, weights=one_hot), kd_loss(student[2:3], logits[2:3]))


def test_kd_loss_zero_weights_give_zero_loss_and_finite_grads() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    loss = kd_loss(student, torch.randn(3, 4), weights=torch.zeros(3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(student.grad).all() and torch.count_nonzero(student.grad) == 0


def test_kd_loss_gradcheck_and_teacher_is_detached() -> None:
    torch.manual_seed(1)
    student = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, teacher, 2.0, weights), (student,))
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, teacher, 0.5), (student,))
    kd_loss(student, teacher).backward()
    assert teacher.grad is None


def test_kd_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        kd_loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        kd_loss(torch.randn(3, 4), torch.randn(3, 4), weights=torch.ones(2))


@pytest.mark.parametrize("classes", [1, 2, 7])
def test_entropy_weights_match_numpy(classes: int) -> None:
    rng = np.random.default_rng(classes)
    probs = numpy_softmax(rng.normal(scale=2.0, size=(10, classes)))
    entropy = numpy_normalized_entropy(probs)
    torch.testing.assert_close(normalized_entropy(torch.from_numpy(probs)), torch.from_numpy(entropy), **TOL)
    torch.testing.assert_close(entropy_weights(torch.from_numpy(probs)), torch.from_numpy(1 - entropy), **TOL)
    torch.testing.assert_close(
        entropy_weights(torch.from_numpy(probs), kind="exp", temperature=0.3),
        torch.from_numpy(np.exp(-entropy / 0.3)),
        **TOL,
    )


def test_entropy_weights_extremes_and_ordering() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.8, 0.1, 0.1]])
    weights = entropy_weights(probs)
    torch.testing.assert_close(weights[:2], torch.tensor([1.0, 0.0]))
    assert 0 < weights[2] < 1
    exp_weights = entropy_weights(probs, kind="exp", temperature=0.5)
    torch.testing.assert_close(exp_weights[:2], torch.tensor([1.0, float(np.exp(-2.0))]))
    with pytest.raises(ValueError):
        entropy_weights(probs, kind="linear")  # type: ignore[arg-type]


@pytest.mark.parametrize(("samples", "batch", "classes"), [(1, 3, 4), (5, 6, 2), (20, 4, 11)])
def test_mc_dropout_weights_match_numpy(samples: int, batch: int, classes: int) -> None:
    rng = np.random.default_rng(samples + batch)
    prob_samples = np.stack([numpy_softmax(rng.normal(size=(batch, classes))) for _ in range(samples)])
    variance = np.array(
        [
            np.mean(
                [np.mean((prob_samples[:, b, c] - prob_samples[:, b, c].mean()) ** 2) for c in range(classes)]
            )
            for b in range(batch)
        ]
    )
    expected = 1.0 / (1.0 + variance / 0.02)
    got = mc_dropout_weights(torch.from_numpy(prob_samples), scale=0.02)
    torch.testing.assert_close(got, torch.from_numpy(expected), **TOL)
    assert ((got > 0) & (got <= 1)).all()


def test_mc_dropout_weights_agreeing_samples_weigh_one() -> None:
    agreeing = torch.softmax(torch.randn(1, 3, 4), dim=-1).repeat(8, 1, 1)
    torch.testing.assert_close(mc_dropout_weights(agreeing), torch.ones(3))
    disagreeing = torch.eye(4)[torch.tensor([0, 1, 2, 3])].unsqueeze(1)  # [4, 1, 4]: each pass a new class
    assert mc_dropout_weights(disagreeing)[0] < 0.1


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_mc_dropout_predict_uses_dropout_only_and_restores_modes() -> None:
    torch.manual_seed(2)
    model = TinyNet()
    model.train()
    model(torch.randn(32, 6))  # non-trivial BatchNorm running statistics
    batch_norm = model.body[1]
    running_mean = batch_norm.running_mean.clone()
    model.body[1].eval()  # a mixed state that must come back unchanged
    modes_before = [m.training for m in model.modules()]

    x = torch.randn(2, 6)  # with batch-statistics BatchNorm a batch of 2 would be near-degenerate
    probs = mc_dropout_predict(model, x, samples=10)
    assert probs.shape == (10, 2, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(10, 2))
    assert probs.std(dim=0).max() > 1e-3  # dropout is active
    assert not probs.requires_grad
    assert torch.equal(batch_norm.running_mean, running_mean)  # BatchNorm ran in eval mode
    assert [m.training for m in model.modules()] == modes_before

    # Without dropout, every pass equals the model's eval-mode prediction (so BatchNorm used running stats).
    model.body[3].p = 0.0
    no_dropout = mc_dropout_predict(model, x, samples=3)
    model.eval()
    with torch.no_grad():
        reference = torch.softmax(model(x), dim=-1)
    torch.testing.assert_close(no_dropout, reference.expand(3, 2, 3))
    with pytest.raises(ValueError):
        mc_dropout_predict(model, x, samples=0)


def test_uncertainty_weighted_kd_defaults_to_entropy_weights() -> None:
    torch.manual_seed(3)
    student, teacher = torch.randn(2, 5, 4, dtype=torch.float64)
    weights = entropy_weights(torch.softmax(teacher, dim=1))
    torch.testing.assert_close(
        uncertainty_weighted_kd(student, teacher, 3.0), kd_loss(student, teacher, 3.0, weights)
    )
    custom = torch.tensor([1.0, 0.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(
        uncertainty_weighted_kd(student, teacher, 3.0, custom), kd_loss(student, teacher, 3.0, custom)
    )
    # Confident-teacher samples dominate: moving only an uncertain sample's student barely changes the loss.
    teacher = torch.tensor([[10.0, 0.0, 0.0], [0.01, 0.0, 0.0]], dtype=torch.float64)
    student = torch.zeros(2, 3, dtype=torch.float64)
    moved = student.clone()
    moved[1] = torch.tensor([5.0, -5.0, 0.0])
    delta_uncertain = uncertainty_weighted_kd(moved, teacher) - uncertainty_weighted_kd(student, teacher)
    delta_plain = kd_loss(moved, teacher) - kd_loss(student, teacher)
    assert abs(delta_uncertain) < 0.01 * abs(delta_plain)
