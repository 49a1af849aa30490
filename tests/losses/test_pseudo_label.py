"""FixMatch, FlexMatch and distribution alignment against hand-written NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import numpy_softmax
from ersam_ssl.losses import (
    FlexMatchThresholds,
    RunningDistribution,
    confidence_mask,
    distribution_alignment,
    fixmatch_loss,
    flexmatch_thresholds,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


def numpy_fixmatch(weak, strong, threshold, temperature, class_thresholds=None):
    probs = numpy_softmax(weak / temperature)
    labels = probs.argmax(axis=1)
    confidence = probs[np.arange(len(labels)), labels]
    per_sample_threshold = threshold if class_thresholds is None else class_thresholds[labels]
    mask = (confidence >= per_sample_threshold).astype(np.float64)
    log_probs = np.log(numpy_softmax(strong))
    ce = -log_probs[np.arange(len(labels)), labels]
    return float(np.sum(mask * ce) / len(labels)), mask, labels


def numpy_flexmatch(predictions, confidences, num_classes, tau, warmup):
    """FlexMatch's Eq. 6-7 with the warm-up of Eq. 11, counted with Python loops."""
    sigma = np.zeros(num_classes)
    for prediction, confidence in zip(predictions, confidences):
        if prediction >= 0 and confidence >= tau:
            sigma[prediction] += 1
    unused = len(predictions) - sigma.sum()
    denominator = max(sigma.max(), unused) if warmup else sigma.max()
    beta = sigma / denominator if denominator > 0 else np.zeros(num_classes)
    return beta / (2.0 - beta) * tau


@pytest.mark.parametrize(("batch", "classes"), [(1, 3), (7, 2), (32, 11)])
@pytest.mark.parametrize("threshold", [0.3, 0.6])
@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_fixmatch_matches_numpy(batch: int, classes: int, threshold: float, temperature: float) -> None:
    rng = np.random.default_rng(batch * classes)
    weak = rng.normal(scale=2.0, size=(batch, classes))
    strong = rng.normal(scale=2.0, size=(batch, classes))
    expected, mask, labels = numpy_fixmatch(weak, strong, threshold, temperature)
    loss, info = fixmatch_loss(torch.from_numpy(weak), torch.from_numpy(strong), threshold, temperature)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), **TOL)
    torch.testing.assert_close(info["mask"], torch.from_numpy(mask))
    assert torch.equal(info["pseudo_labels"], torch.from_numpy(labels))
    torch.testing.assert_close(info["mask_rate"], torch.tensor(mask.mean(), dtype=torch.float64))


def test_fixmatch_with_class_thresholds_matches_numpy() -> None:
    rng = np.random.default_rng(5)
    weak = rng.normal(scale=3.0, size=(40, 4))
    strong = rng.normal(size=(40, 4))
    class_thresholds = np.array([0.2, 0.9, 0.5, 0.99])
    expected, mask, _ = numpy_fixmatch(weak, strong, 0.95, 1.0, class_thresholds)
    assert 0 < mask.sum() < 40  # the scenario mixes kept and dropped samples
    loss, info = fixmatch_loss(
        torch.from_numpy(weak), torch.from_numpy(strong), class_thresholds=torch.from_numpy(class_thresholds)
    )
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), **TOL)
    torch.testing.assert_close(info["mask"], torch.from_numpy(mask))


def test_fixmatch_nothing_confident_gives_zero_loss_and_zero_grads() -> None:
    weak = torch.zeros(6, 5)  # uniform predictions, confidence 0.2 < 0.95
    strong = torch.randn(6, 5, requires_grad=True)
    loss, info = fixmatch_loss(weak, strong)
    assert loss.item() == 0.0
    assert info["mask_rate"].item() == 0.0
    loss.backward()
    assert strong.grad is not None
    assert torch.isfinite(strong.grad).all() and torch.count_nonzero(strong.grad) == 0


def test_fixmatch_all_confident_is_plain_cross_entropy() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([2, 0, 1, 2])
    weak = torch.nn.functional.one_hot(labels, 3).double() * 50.0
    strong = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss, info = fixmatch_loss(weak, strong, threshold=0.95)
    assert info["mask_rate"].item() == 1.0
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(strong, labels))
    assert torch.equal(info["pseudo_labels"], labels)


def test_fixmatch_single_pseudo_class_and_single_class() -> None:
    weak = torch.tensor([[5.0, 0.0], [6.0, 1.0], [9.0, -1.0]])
    strong = torch.randn(3, 2)
    loss, info = fixmatch_loss(weak, strong, threshold=0.9)
    assert torch.equal(info["pseudo_labels"], torch.zeros(3, dtype=torch.long))
    expected = (
        torch.nn.functional.cross_entropy(strong, torch.zeros(3, dtype=torch.long), reduction="sum") / 3
    )
    torch.testing.assert_close(loss, expected)
    # With C = 1 every prediction has confidence 1 and cross entropy 0.
    loss, info = fixmatch_loss(torch.randn(4, 1), torch.randn(4, 1, requires_grad=True))
    assert loss.item() == 0.0 and info["mask_rate"].item() == 1.0


def test_fixmatch_detaches_weak_view_and_normalises_by_full_batch() -> None:
    weak = torch.tensor([[10.0, 0.0], [0.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 0.0], [3.0, 0.0]], requires_grad=True)
    loss, info = fixmatch_loss(weak, strong, threshold=0.9)
    assert info["mask"].tolist() == [1.0, 0.0]
    torch.testing.assert_close(loss, torch.tensor(np.log(2.0) / 2, dtype=torch.float32))
    loss.backward()
    assert weak.grad is None
    assert strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0


def test_fixmatch_temperature_sharpening_admits_more_samples() -> None:
    torch.manual_seed(1)
    weak = torch.randn(64, 4)
    strong = torch.randn(64, 4)
    _, soft = fixmatch_loss(weak, strong, threshold=0.8, temperature=1.0)
    _, sharp = fixmatch_loss(weak, strong, threshold=0.8, temperature=0.1)
    assert sharp["mask_rate"] > soft["mask_rate"]
    assert torch.equal(soft["pseudo_labels"], sharp["pseudo_labels"])


def test_fixmatch_probs_transform_is_applied_before_thresholding() -> None:
    weak = torch.log(torch.tensor([[0.7, 0.3], [0.6, 0.4]]))
    strong = torch.zeros(2, 2)
    _, plain = fixmatch_loss(weak, strong, threshold=0.65)
    assert plain["pseudo_labels"].tolist() == [0, 0] and plain["mask"].tolist() == [1.0, 0.0]
    model_dist = torch.tensor([0.8, 0.2])  # the model over-predicts class 0
    _, aligned = fixmatch_loss(
        weak, strong, threshold=0.65, probs_transform=lambda p: distribution_alignment(p, model_dist)
    )
    # Aligned rows: [0.875, 1.5] / 2.375 -> 0.63 for class 1; [0.75, 2.0] / 2.75 -> 0.73 for class 1.
    assert aligned["pseudo_labels"].tolist() == [1, 1]
    assert aligned["mask"].tolist() == [0.0, 1.0]


def test_confidence_mask_with_float_and_class_thresholds() -> None:
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.34, 0.33, 0.33]])
    mask, labels = confidence_mask(probs, 0.6)
    assert mask.dtype == probs.dtype and labels.dtype == torch.long
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert labels.tolist() == [0, 1, 2, 0]
    mask, _ = confidence_mask(probs, torch.tensor([0.95, 0.5, 0.8]))
    assert mask.tolist() == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        confidence_mask(probs, torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize(("size", "classes", "used_fraction"), [(50, 3, 0.3), (200, 10, 0.9), (8, 1, 0.5)])
def test_flexmatch_thresholds_match_numpy(
    warmup: bool, size: int, classes: int, used_fraction: float
) -> None:
    rng = np.random.default_rng(size + classes)
    predictions = rng.integers(0, classes, size=size)
    predictions[rng.random(size) > used_fraction] = -1
    confidences = rng.uniform(0.5, 1.0, size=size)
    tau = 0.8
    expected = numpy_flexmatch(predictions, confidences, classes, tau, warmup)
    got = flexmatch_thresholds(
        torch.from_numpy(predictions), torch.from_numpy(confidences), classes, tau, warmup
    )
    torch.testing.assert_close(got, torch.from_numpy(expected), **TOL)


def test_flexmatch_thresholds_nothing_learned_and_all_learned() -> None:
    predictions = torch.full((10,), -1)
    thresholds = flexmatch_thresholds(predictions, torch.zeros(10), 3, 0.95)
    torch.testing.assert_close(thresholds, torch.zeros(3))
    thresholds = flexmatch_thresholds(predictions, torch.zeros(10), 3, 0.95, warmup=False)
    torch.testing.assert_close(thresholds, torch.zeros(3))
    # Every sample confidently predicted, evenly over classes: each class reaches the full threshold tau.
    predictions = torch.arange(9) % 3
    thresholds = flexmatch_thresholds(predictions, torch.ones(9), 3, 0.95)
    torch.testing.assert_close(thresholds, torch.full((3,), 0.95))


def test_flexmatch_warmup_keeps_thresholds_low_early() -> None:
    # 2 of 100 samples learned, both class 0: without warm-up class 0 already gets tau.
    predictions = torch.full((100,), -1)
    predictions[:2] = 0
    confidences = torch.ones(100)
    with_warmup = flexmatch_thresholds(predictions, confidences, 2, 0.9, warmup=True)
    without = flexmatch_thresholds(predictions, confidences, 2, 0.9, warmup=False)
    torch.testing.assert_close(without, torch.tensor([0.9, 0.0]))
    beta = 2 / 98
    torch.testing.assert_close(with_warmup, torch.tensor([beta / (2 - beta) * 0.9, 0.0]))


def test_flexmatch_learned_class_gets_higher_threshold_and_state_round_trips() -> None:
    tau = 0.9
    tracker = FlexMatchThresholds(num_unlabeled=12, num_classes=3, tau=tau)
    torch.testing.assert_close(tracker.thresholds(), torch.zeros(3))
    # Class 0 is learned (8 confident samples), class 1 barely (1), class 2 never predicted confidently.
    confident_0 = torch.tensor([[0.97, 0.02, 0.01]]).repeat(8, 1)
    confident_1 = torch.tensor([[0.02, 0.95, 0.03]])
    unsure = torch.tensor([[0.3, 0.3, 0.4]]).repeat(3, 1)
    tracker.update(torch.arange(8), confident_0)
    tracker.update(torch.tensor([8]), confident_1)
    tracker.update(torch.tensor([9, 10, 11]), unsure)
    assert tracker.predictions.tolist() == [0] * 8 + [1, -1, -1, -1]
    thresholds = tracker.thresholds()
    assert thresholds[0] > thresholds[1] > thresholds[2]
    expected = numpy_flexmatch(tracker.predictions.numpy(), tracker.confidences.numpy(), 3, tau, True)
    torch.testing.assert_close(thresholds, torch.from_numpy(expected).float(), **TOL)
    # A later unsure prediction does not erase a confident one (FlexMatch, Algorithm 1).
    tracker.update(torch.tensor([0]), unsure[:1])
    assert tracker.predictions[0].item() == 0

    restored = FlexMatchThresholds(num_unlabeled=12, num_classes=3, tau=tau)
    restored.load_state_dict(tracker.state_dict())
    assert torch.equal(restored.predictions, tracker.predictions)
    torch.testing.assert_close(restored.thresholds(), thresholds)
    with pytest.raises(RuntimeError):
        FlexMatchThresholds(num_unlabeled=5, num_classes=3).load_state_dict(tracker.state_dict())


def test_flexmatch_state_survives_torch_save(tmp_path) -> None:
    tracker = FlexMatchThresholds(num_unlabeled=4, num_classes=2, tau=0.5)
    tracker.update(torch.tensor([1, 3]), torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    torch.save(tracker.state_dict(), tmp_path / "state.pt")
    restored = FlexMatchThresholds(num_unlabeled=4, num_classes=2, tau=0.5)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.predictions.tolist() == [-1, 0, -1, 1]
    torch.testing.assert_close(restored.thresholds(), tracker.thresholds())


@pytest.mark.parametrize("with_target", [False, True])
def test_distribution_alignment_matches_numpy(with_target: bool) -> None:
    rng = np.random.default_rng(11)
    probs = numpy_softmax(rng.normal(size=(9, 5)))
    model_dist = rng.dirichlet(np.ones(5))
    target = rng.dirichlet(np.ones(5)) if with_target else np.full(5, 0.2)
    expected = probs * target / model_dist
    expected = expected / expected.sum(axis=1, keepdims=True)
    got = distribution_alignment(
        torch.from_numpy(probs),
        torch.from_numpy(model_dist),
        torch.from_numpy(target) if with_target else None,
    )
    torch.testing.assert_close(got, torch.from_numpy(expected), **TOL)


def test_distribution_alignment_identity_when_model_matches_target() -> None:
    probs = torch.softmax(torch.randn(4, 3), dim=1)
    torch.testing.assert_close(distribution_alignment(probs, torch.full((3,), 1 / 3)), probs)
    # A model distribution with a zero entry must not produce NaN.
    aligned = distribution_alignment(probs, torch.tensor([0.0, 0.5, 0.5]))
    assert torch.isfinite(aligned).all()


def test_running_distribution_ema_and_state() -> None:
    running = RunningDistribution(num_classes=3, momentum=0.9)
    torch.testing.assert_close(running.distribution, torch.full((3,), 1 / 3))
    batches = [torch.softmax(torch.randn(5, 3), dim=1) for _ in range(4)]
    expected = np.full(3, 1 / 3)
    for batch in batches:
        expected = 0.9 * expected + 0.1 * batch.numpy().mean(axis=0)
        returned = running.update(batch)
    torch.testing.assert_close(running.distribution, torch.from_numpy(expected).float(), **TOL)
    torch.testing.assert_close(returned, running.distribution)
    copy = RunningDistribution(num_classes=3, momentum=0.9)
    copy.load_state_dict(running.state_dict())
    torch.testing.assert_close(copy.distribution, running.distribution)
