"""Count-aware mixing losses and waveform mixing against hand-written NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import numpy_softmax
from ersam_ssl.losses import expected_count, mix_waveforms, mixing_cdf_loss, mixing_rank_loss

TOL = {"rtol": 1e-5, "atol": 1e-5}


def numpy_expected_count(logits: np.ndarray) -> np.ndarray:
    probs = numpy_softmax(logits)
    return np.array([sum(k * p for k, p in enumerate(row)) for row in probs])


def numpy_rank_loss(mix, a, b, margin):
    bound = np.maximum(numpy_expected_count(a), numpy_expected_count(b))
    return float(np.mean(np.maximum(0.0, bound - numpy_expected_count(mix) + margin)))


def numpy_cdf_loss(mix, a, b):
    num_classes = mix.shape[1]
    if num_classes == 1:
        return 0.0
    penalties = []
    for row_mix, row_a, row_b in zip(numpy_softmax(mix), numpy_softmax(a), numpy_softmax(b)):
        for k in range(num_classes - 1):
            bound = min(row_a[: k + 1].sum(), row_b[: k + 1].sum())
            penalties.append(max(0.0, row_mix[: k + 1].sum() - bound) ** 2)
    return float(np.mean(penalties))


def random_logits(rng: np.random.Generator, batch: int, classes: int) -> list[np.ndarray]:
    return list(rng.normal(scale=2.0, size=(3, batch, classes)))


@pytest.mark.parametrize(("batch", "classes"), [(1, 2), (5, 4), (16, 11)])
def test_expected_count_matches_numpy(batch: int, classes: int) -> None:
    logits = np.random.default_rng(batch).normal(size=(batch, classes))
    got = expected_count(torch.from_numpy(logits))
    torch.testing.assert_close(got, torch.from_numpy(numpy_expected_count(logits)), **TOL)
    probs = torch.softmax(torch.from_numpy(logits), dim=1)
    torch.testing.assert_close(expected_count(probs, from_logits=False), got, **TOL)


def test_expected_count_of_one_hot_is_the_count() -> None:
    probs = torch.eye(5)[torch.tensor([0, 3, 4])]
    torch.testing.assert_close(expected_count(probs, from_logits=False), torch.tensor([0.0, 3.0, 4.0]))
    torch.testing.assert_close(expected_count(torch.randn(3, 1)), torch.zeros(3))


@pytest.mark.parametrize(("batch", "classes"), [(1, 3), (6, 5), (32, 11)])
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_mixing_rank_loss_matches_numpy(batch: int, classes: int, margin: float) -> None:
    mix, a, b = random_logits(np.random.default_rng(batch + classes), batch, classes)
    got = mixing_rank_loss(*(torch.from_numpy(x) for x in (mix, a, b)), margin=margin)
    torch.testing.assert_close(
        got, torch.tensor(numpy_rank_loss(mix, a, b, margin), dtype=torch.float64), **TOL
    )


@pytest.mark.parametrize(("batch", "classes"), [(1, 1), (1, 3), (6, 5), (32, 11)])
def test_mixing_cdf_loss_matches_numpy(batch: int, classes: int) -> None:
    mix, a, b = random_logits(np.random.default_rng(10 * batch + classes), batch, classes)
    got = mixing_cdf_loss(*(torch.from_numpy(x) for x in (mix, a, b)))
    torch.testing.assert_close(got, torch.tensor(numpy_cdf_loss(mix, a, b), dtype=torch.float64), **TOL)


def test_satisfied_constraints_give_zero_and_violations_positive() -> None:
    one_hot_logits = torch.eye(6) * 40.0  # count k with near certainty
    a, b = one_hot_logits[[1, 2]], one_hot_logits[[3, 0]]
    good_mix = one_hot_logits[[4, 3]]  # counts 4 >= max(1, 3) and 3 >= max(2, 0)
    bad_mix = one_hot_logits[[0, 1]]
    assert mixing_rank_loss(good_mix, a, b).item() == 0.0
    assert mixing_cdf_loss(good_mix, a, b).item() == pytest.approx(0.0, abs=1e-12)
    # Expected counts 0 vs 3 and 1 vs 2 miss the bound by 3 and 1.
    assert mixing_rank_loss(bad_mix, a, b).item() == pytest.approx(2.0, abs=1e-5)
    assert mixing_cdf_loss(bad_mix, a, b).item() > 0.1
    # A margin turns an exactly met bound into a violation.
    equal_mix = one_hot_logits[[3, 2]]
    assert mixing_rank_loss(equal_mix, a, b).item() == pytest.approx(0.0, abs=1e-5)
    assert mixing_rank_loss(equal_mix, a, b, margin=0.5).item() == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("loss_fn", [mixing_rank_loss, mixing_cdf_loss])
def test_mixing_losses_gradcheck_and_detached_parts(loss_fn) -> None:
    torch.manual_seed(0)
    # The parts favour high counts and the mixture low ones, so the hinge is active (smooth region).
    mix = torch.randn(3, 4, dtype=torch.float64) + torch.tensor([2.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    a = torch.randn(3, 4, dtype=torch.float64) + torch.tensor([-1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    b = torch.randn(3, 4, dtype=torch.float64)
    mix.requires_grad_(True)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert loss_fn(mix, a, b) > 0
    assert torch.autograd.gradcheck(lambda m: loss_fn(m, a, b), (mix,))
    loss_fn(mix, a, b).backward()
    assert a.grad is None and b.grad is None
    assert mix.grad is not None and torch.count_nonzero(mix.grad) > 0
    # Following the gradient raises the mixture's expected count.
    with torch.no_grad():
        stepped = mix - 0.5 * mix.grad
    assert (expected_count(stepped) > expected_count(mix)).all()


def test_cdf_loss_with_single_class_is_zero_and_differentiable() -> None:
    mix = torch.randn(4, 1, requires_grad=True)
    loss = mixing_cdf_loss(mix, torch.randn(4, 1), torch.randn(4, 1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(mix.grad, torch.zeros(4, 1))


def test_mixing_losses_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        mixing_rank_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError):
        mixing_cdf_loss(torch.randn(2, 3), torch.randn(3, 3), torch.randn(2, 3))


def numpy_mix(a: np.ndarray, b: np.ndarray, gain_db: np.ndarray) -> np.ndarray:
    gain = 10.0 ** (gain_db / 20.0)
    out = np.empty_like(a)
    for index in np.ndindex(a.shape[:-1]):
        scaled_b = b[index] * gain[index]
        mixture = a[index] + scaled_b
        louder = max(np.sqrt(np.mean(a[index] ** 2)), np.sqrt(np.mean(scaled_b**2)))
        out[index] = mixture * louder / np.sqrt(np.mean(mixture**2))
    return out


@pytest.mark.parametrize("shape", [(400,), (3, 400), (2, 1, 800)])
@pytest.mark.parametrize("gain_db", [-6.0, 0.0, 4.5])
def test_mix_waveforms_fixed_gain_matches_numpy(shape: tuple[int, ...], gain_db: float) -> None:
    rng = np.random.default_rng(len(shape))
    a = rng.normal(scale=0.3, size=shape)
    b = rng.normal(scale=0.05, size=shape)
    got = mix_waveforms(torch.from_numpy(a), torch.from_numpy(b), gain_db_range=(gain_db, gain_db))
    expected = numpy_mix(a, b, np.full(shape[:-1], gain_db))
    torch.testing.assert_close(got, torch.from_numpy(expected), **TOL)


def test_mix_waveforms_random_gains_are_uniform_in_db_and_reproducible() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(64, 200))
    b = rng.normal(size=(64, 200))
    generator = torch.Generator().manual_seed(123)
    got = mix_waveforms(torch.from_numpy(a), torch.from_numpy(b), (-3.0, 3.0), generator=generator)
    # The gains are the generator's first 64 uniforms mapped onto [-3, 3] dB.
    uniform = torch.rand(64, generator=torch.Generator().manual_seed(123), dtype=torch.float64).numpy()
    torch.testing.assert_close(got, torch.from_numpy(numpy_mix(a, b, -3.0 + 6.0 * uniform)), **TOL)
    again = mix_waveforms(
        torch.from_numpy(a), torch.from_numpy(b), (-3.0, 3.0), generator=torch.Generator().manual_seed(123)
    )
    assert torch.equal(got, again)
    other = mix_waveforms(
        torch.from_numpy(a), torch.from_numpy(b), (-3.0, 3.0), generator=torch.Generator().manual_seed(124)
    )
    assert not torch.equal(got, other)


def test_mix_waveforms_is_not_louder_than_the_louder_part() -> None:
    t = torch.linspace(0, 1, 16000)
    a = torch.sin(2 * torch.pi * 220 * t).unsqueeze(0)
    b = 0.5 * torch.sin(2 * torch.pi * 330 * t).unsqueeze(0)
    mixture = mix_waveforms(a, b, (0.0, 0.0))
    naive_rms = (a + b).square().mean().sqrt()
    torch.testing.assert_close(mixture.square().mean().sqrt(), a.square().mean().sqrt())
    assert mixture.square().mean().sqrt() < naive_rms
    # Identical, in-phase parts: the mixture is the part itself.
    torch.testing.assert_close(mix_waveforms(a, a.clone(), (0.0, 0.0)), a)


def test_mix_waveforms_silence_and_cancellation_stay_silent() -> None:
    silent = torch.zeros(2, 100, requires_grad=True)
    mixture = mix_waveforms(silent, torch.zeros(2, 100), (0.0, 0.0))
    assert torch.equal(mixture, torch.zeros(2, 100))
    mixture.sum().backward()
    assert torch.isfinite(silent.grad).all()
    a = torch.randn(1, 100)
    assert torch.equal(mix_waveforms(a, -a, (0.0, 0.0)), torch.zeros(1, 100))
    with pytest.raises(ValueError):
        mix_waveforms(a, torch.randn(1, 99))
    with pytest.raises(ValueError):
        mix_waveforms(a, a, (3.0, -3.0))
