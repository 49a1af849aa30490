import numpy as np
import pytest
import torch
from scipy import stats

from ersam_ssl.models.heads import (
    HEADS,
    ClassificationHead,
    OrdinalHead,
    PoissonHead,
    build_head,
    truncated_poisson_log_pmf,
)


def _sums_to_one(log_probs: torch.Tensor) -> None:
    torch.testing.assert_close(log_probs.exp().sum(dim=-1), torch.ones(log_probs.shape[0]))


def test_registry_holds_every_head_and_builds_for_num_classes():
    assert {"classify", "poisson", "ordinal"} <= set(HEADS.names())
    for name in HEADS:
        head = build_head(name, 8, 11)
        assert head.num_classes == 11
        assert head.in_dim == 8
        assert head(torch.randn(3, 8)).shape == (3, head.out_dim)
        assert head.log_probs(head(torch.randn(3, 8))).shape == (3, 11)
    assert build_head("poisson", 8, 11).max_count == 10
    with pytest.raises(KeyError, match="unknown head"):
        build_head("nope", 8, 11)


def test_classification_head_matches_numpy():
    torch.manual_seed(0)
    head = ClassificationHead(6, 5, dropout=0.3).eval()
    logits = head(torch.randn(4, 6))
    target = torch.tensor([0, 4, 2, 2])
    x = logits.detach().double().numpy()
    log_softmax = (
        x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    np.testing.assert_allclose(head.log_probs(logits).detach().numpy(), log_softmax, rtol=1e-5, atol=1e-6)
    expected_loss = -log_softmax[np.arange(4), target.numpy()].mean()
    assert head.loss(logits, target).item() == pytest.approx(expected_loss, rel=1e-5)
    assert head.predict(logits).tolist() == x.argmax(1).tolist()
    _sums_to_one(head.log_probs(logits))


def test_truncated_poisson_matches_scipy():
    rates = np.array([0.05, 1.0, 3.5, 9.7, 40.0])
    ours = truncated_poisson_log_pmf(torch.tensor(np.log(rates)), max_count=10).exp().numpy()
    pmf = stats.poisson.pmf(np.arange(11)[None, :], rates[:, None])
    np.testing.assert_allclose(ours, pmf / pmf.sum(1, keepdims=True), rtol=1e-6, atol=1e-12)


def test_poisson_head_loss_log_probs_predict():
    head = PoissonHead(4, max_count=10)
    rates = torch.tensor([0.2, 3.5, 5.9, 50.0], dtype=torch.float64)
    out = rates.log().unsqueeze(-1)
    target = torch.tensor([0, 3, 7, 10])
    expected = -stats.poisson.logpmf(target.numpy(), rates.numpy()).mean()
    assert head.loss(out, target).item() == pytest.approx(expected, rel=1e-9)
    _sums_to_one(head.log_probs(out).float())
    # The rate rounded to the nearest count, clamped to K; the pmf's mode is floor(rate).
    assert head.predict(out).tolist() == [0, 4, 6, 10]
    assert head.log_probs(out).argmax(-1).tolist() == [0, 3, 5, 10]
    assert head(torch.randn(2, 4)).shape == (2, 1)


def _coral_reference(logits: np.ndarray, target: np.ndarray) -> float:
    levels = (target[:, None] > np.arange(logits.shape[1])[None, :]).astype(float)
    log_sig = -np.log1p(np.exp(-logits))
    log_one_minus = -np.log1p(np.exp(logits))
    return float(-(levels * log_sig + (1 - levels) * log_one_minus).sum(1).mean())


def test_ordinal_head_matches_coral():
    torch.manual_seed(0)
    head = OrdinalHead(5, num_classes=6)
    out = head(torch.randn(7, 5))
    assert out.shape == (7, 5)
    target = torch.tensor([0, 1, 5, 3, 2, 4, 5])
    expected = _coral_reference(out.detach().double().numpy(), target.numpy())
    assert head.loss(out, target).item() == pytest.approx(expected, rel=1e-5)


def test_ordinal_log_probs_and_predict():
    head = OrdinalHead(2, num_classes=5)
    exceed = torch.tensor([[0.9, 0.7, 0.4, 0.1], [0.99, 0.98, 0.97, 0.6], [0.2, 0.1, 0.05, 0.01]])
    out = torch.logit(exceed)
    probs = head.log_probs(out).exp()
    expected = torch.cat([1 - exceed[:, :1], exceed[:, :-1] - exceed[:, 1:], exceed[:, -1:]], dim=1)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    assert head.predict(out).tolist() == [2, 4, 0]
    # Unordered exceedance probabilities still give a valid distribution.
    messy = torch.logit(torch.tensor([[0.3, 0.8, 0.1, 0.6]]))
    probs = head.log_probs(messy).exp()
    assert (probs >= 0).all()
    _sums_to_one(head.log_probs(messy))
    assert head.predict(messy).tolist() == [0]


@pytest.mark.parametrize("name", ["classify", "poisson", "ordinal"])
def test_every_head_learns_a_separable_count_task(name):
    torch.manual_seed(0)
    counts = torch.arange(6).repeat(8)
    emb = torch.nn.functional.one_hot(counts, 6).float()
    head = build_head(name, 6, 6)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(150):
        optimiser.zero_grad()
        head.loss(head(emb), counts).backward()
        optimiser.step()
    accuracy = (head.predict(head(emb)) == counts).float().mean().item()
    assert accuracy > 0.9
