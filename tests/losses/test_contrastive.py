"""NT-Xent, BYOL and the EMA target update against hand-written NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ersam_ssl.losses import byol_loss, byol_symmetric_loss, cosine_momentum, ema_update, nt_xent_loss

TOL = {"rtol": 1e-5, "atol": 1e-5}


def numpy_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """SimCLR's loss written anchor by anchor, as in the paper's Algorithm 1."""
    z = np.concatenate([z1, z2], axis=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = z.shape[0]
    batch = n // 2
    losses = []
    for i in range(n):
        positive = (i + batch) % n
        sims = np.array([z[i] @ z[j] / temperature for j in range(n)])
        others = [j for j in range(n) if j != i]
        top = sims[others].max()
        log_denominator = top + np.log(np.sum(np.exp(sims[others] - top)))
        losses.append(log_denominator - sims[positive])
    return float(np.mean(losses))


def numpy_byol(p: np.ndarray, z: np.ndarray) -> float:
    p_unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    z_unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    return float(np.mean(np.sum((p_unit - z_unit) ** 2, axis=1)))


@pytest.mark.parametrize(("batch", "dim"), [(1, 3), (2, 4), (5, 8), (16, 2)])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(batch: int, dim: int, temperature: float) -> None:
    rng = np.random.default_rng(batch * 100 + dim)
    z1, z2 = rng.normal(size=(2, batch, dim))
    expected = numpy_nt_xent(z1, z2, temperature)
    got = nt_xent_loss(torch.from_numpy(z1), torch.from_numpy(z2), temperature)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), **TOL)


@pytest.mark.parametrize("temperature", [1e-3, 100.0])
def test_nt_xent_temperature_extremes_are_finite_and_match(temperature: float) -> None:
    rng = np.random.default_rng(7)
    z1, z2 = rng.normal(size=(2, 6, 5))
    got = nt_xent_loss(torch.from_numpy(z1), torch.from_numpy(z2), temperature)
    assert torch.isfinite(got)
    torch.testing.assert_close(
        got, torch.tensor(numpy_nt_xent(z1, z2, temperature), dtype=torch.float64), **TOL
    )


def test_nt_xent_high_temperature_tends_to_log_of_candidates() -> None:
    # At T -> inf every candidate scores the same, so the loss is log(2B - 1).
    torch.manual_seed(0)
    z1, z2 = torch.randn(2, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(nt_xent_loss(z1, z2, 1e8), torch.tensor(math.log(7.0), dtype=torch.float64))


def test_nt_xent_batch_of_one_has_only_the_positive() -> None:
    z1, z2 = torch.randn(2, 1, 4)
    torch.testing.assert_close(nt_xent_loss(z1, z2), torch.tensor(0.0))


def test_nt_xent_perfect_alignment_is_low_and_random_is_high() -> None:
    torch.manual_seed(1)
    z = torch.randn(8, 16)
    aligned = nt_xent_loss(z, z.clone(), 0.1)
    shuffled = nt_xent_loss(z, z[torch.randperm(8)], 0.1)
    assert aligned < shuffled


def test_nt_xent_invariances() -> None:
    torch.manual_seed(2)
    z1, z2 = torch.randn(2, 6, 5, dtype=torch.float64)
    base = nt_xent_loss(z1, z2, 0.2)
    scales = torch.rand(6, 1, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(nt_xent_loss(z1 * scales, z2 * 3.0, 0.2), base)
    torch.testing.assert_close(nt_xent_loss(z2, z1, 0.2), base)
    permutation = torch.randperm(6)
    torch.testing.assert_close(nt_xent_loss(z1[permutation], z2[permutation], 0.2), base)


def test_nt_xent_gradcheck() -> None:
    torch.manual_seed(3)
    z1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.3), (z1, z2))


def test_nt_xent_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        nt_xent_loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        nt_xent_loss(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


@pytest.mark.parametrize(("batch", "dim"), [(1, 2), (4, 3), (9, 16)])
def test_byol_matches_numpy(batch: int, dim: int) -> None:
    rng = np.random.default_rng(batch + dim)
    p1, p2, z1, z2 = rng.normal(size=(4, batch, dim))
    got = byol_loss(torch.from_numpy(p1), torch.from_numpy(z2))
    torch.testing.assert_close(got, torch.tensor(numpy_byol(p1, z2), dtype=torch.float64), **TOL)
    symmetric = byol_symmetric_loss(*(torch.from_numpy(x) for x in (p1, p2, z1, z2)))
    expected = numpy_byol(p1, z2) + numpy_byol(p2, z1)
    torch.testing.assert_close(symmetric, torch.tensor(expected, dtype=torch.float64), **TOL)


def test_byol_bounds_and_stop_gradient() -> None:
    z = torch.randn(5, 4, requires_grad=True)
    p = torch.randn(5, 4, requires_grad=True)
    torch.testing.assert_close(byol_loss(z, z), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(byol_loss(-z, z), torch.tensor(4.0))
    byol_loss(p, z).backward()
    assert z.grad is None
    assert p.grad is not None and torch.count_nonzero(p.grad) > 0


def test_ema_update_parameters_and_buffers() -> None:
    torch.manual_seed(4)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    online.train()
    online(torch.randn(8, 3))  # gives the online BatchNorm non-trivial running statistics
    before = {name: value.detach().numpy().copy() for name, value in target.named_parameters()}
    online_values = {name: value.detach().numpy().copy() for name, value in online.named_parameters()}
    ema_update(target, online, momentum=0.9)
    for name, value in target.named_parameters():
        expected = 0.9 * before[name] + 0.1 * online_values[name]
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-6, atol=1e-7)
    for (name, value), (_, online_buffer) in zip(target.named_buffers(), online.named_buffers()):
        assert torch.equal(value, online_buffer), name
    assert all(not p.grad_fn for p in target.parameters())


def test_ema_update_extremes_and_mismatch() -> None:
    online, target = nn.Linear(2, 2), nn.Linear(2, 2)
    frozen = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, momentum=1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), frozen))
    ema_update(target, online, momentum=0.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.5)
    with pytest.raises(ValueError):
        ema_update(target, online, 1.5)


def test_cosine_momentum_schedule() -> None:
    total, base = 100, 0.996
    for step in [0, 1, 25, 50, 99, 100]:
        expected = 1 - (1 - base) * (np.cos(np.pi * step / total) + 1) / 2
        assert cosine_momentum(step, total, base) == pytest.approx(expected, abs=1e-12)
    assert cosine_momentum(0, total, base) == pytest.approx(base)
    assert cosine_momentum(total, total, base) == pytest.approx(1.0)
    assert cosine_momentum(2 * total, total, base) == pytest.approx(1.0)
    values = [cosine_momentum(s, total, base) for s in range(total + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        cosine_momentum(0, 0)
