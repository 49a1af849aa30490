"""Bad inputs to every loss: one shared set of checks (``ersam_ssl.losses._checks``), each failure a one-line
``ValueError`` that names the argument."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from ersam_ssl.losses import (
    FlexMatchThresholds,
    RunningDistribution,
    byol_loss,
    byol_symmetric_loss,
    confidence_mask,
    cosine_momentum,
    distribution_alignment,
    ema_update,
    entropy_weights,
    expected_count,
    fixmatch_loss,
    flexmatch_thresholds,
    kd_loss,
    mc_dropout_predict,
    mc_dropout_weights,
    mix_waveforms,
    mixing_cdf_loss,
    mixing_rank_loss,
    normalized_entropy,
    nt_xent_loss,
    uncertainty_weighted_kd,
)
from ersam_ssl.losses._checks import (
    check_count,
    check_finite,
    check_interval,
    check_positive,
    check_range,
    check_same_shape,
    check_shape,
)

B, C, D = 3, 4, 5


def logits(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def probs(*shape: int) -> torch.Tensor:
    return torch.softmax(logits(*shape), dim=-1)


LABELS = torch.tensor([0, 1, 3])
NAN, INF = math.nan, math.inf

# (call, the argument its message must name, a fragment of the message)
BAD_INPUTS: dict[str, tuple[Callable[[], object], str, str]] = {
    # contrastive
    "nt_xent-rank": (lambda: nt_xent_loss(logits(B), logits(B)), "z1", r"shape \[B, D\], got \(3,\)"),
    "nt_xent-batch": (lambda: nt_xent_loss(logits(B, D), logits(2, D)), "z2", r"\[B=3, D=5\], got \(2, 5\)"),
    "nt_xent-dtype": (lambda: nt_xent_loss(LABELS[:, None], LABELS[:, None]), "z1", "floating-point"),
    "nt_xent-temp-zero": (lambda: nt_xent_loss(logits(B, D), logits(B, D), 0.0), "temperature", "> 0"),
    "nt_xent-temp-nan": (lambda: nt_xent_loss(logits(B, D), logits(B, D), NAN), "temperature", "nan"),
    "nt_xent-temp-inf": (lambda: nt_xent_loss(logits(B, D), logits(B, D), INF), "temperature", "inf"),
    "byol-dim": (lambda: byol_loss(logits(B, D), logits(B, D + 1)), "z", r"\[B=3, D=5\]"),
    "byol-sym-batch": (
        lambda: byol_symmetric_loss(logits(B, D), logits(2, D), logits(2, D), logits(B, D)),
        "p2",
        r"\[B=3, D=5\], got \(2, 5\)",
    ),
    "ema-momentum": (lambda: ema_update(nn.Linear(2, 2), nn.Linear(2, 2), NAN), "momentum", r"\[0.0, 1.0\]"),
    "cosine-total": (lambda: cosine_momentum(0, 0), "total", "> 0"),
    "cosine-base": (lambda: cosine_momentum(0, 10, base=1.5), "base", r"\[0.0, 1.0\], got 1.5"),
    # count-aware
    "expected_count-rank": (lambda: expected_count(logits(B)), "scores", r"\[B, C\]"),
    "expected_count-dtype": (lambda: expected_count(LABELS[:, None]), "scores", "floating-point"),
    "rank-batch": (lambda: mixing_rank_loss(logits(B, C), logits(B, C), logits(2, C)), "logits_b", "B=3"),
    "rank-margin": (
        lambda: mixing_rank_loss(logits(B, C), logits(B, C), logits(B, C), NAN),
        "margin",
        "finite",
    ),
    "cdf-classes": (lambda: mixing_cdf_loss(logits(B, C), logits(B, C + 1), logits(B, C)), "logits_a", "C=4"),
    "mix-shape": (lambda: mix_waveforms(logits(1, 100), logits(1, 99)), "a and b", "same shape"),
    "mix-dtype": (lambda: mix_waveforms(LABELS, LABELS), "a", "floating-point"),
    "mix-gain-order": (
        lambda: mix_waveforms(logits(1, 9), logits(1, 9), (3.0, -3.0)),
        "gain_db_range",
        "low <=",
    ),
    "mix-gain-nan": (
        lambda: mix_waveforms(logits(1, 9), logits(1, 9), (NAN, 3.0)),
        "gain_db_range[0]",
        "finite",
    ),
    # distillation
    "kd-rank": (lambda: kd_loss(logits(B, C, 1), logits(B, C, 1)), "student_logits", r"\[B, C\]"),
    "kd-classes": (lambda: kd_loss(logits(B, C), logits(B, C + 1)), "teacher_logits", r"C=4\], got \(3, 5\)"),
    "kd-batch": (lambda: kd_loss(logits(B, C), logits(2, C)), "teacher_logits", r"B=3"),
    "kd-temp-nan": (lambda: kd_loss(logits(B, C), logits(B, C), NAN), "temperature", "finite and > 0"),
    "kd-temp-neg": (lambda: kd_loss(logits(B, C), logits(B, C), -1.0), "temperature", "got -1.0"),
    "kd-weights": (lambda: kd_loss(logits(B, C), logits(B, C), weights=torch.ones(2)), "weights", r"\[B=3\]"),
    "kd-not-tensor": (lambda: kd_loss([[0.0]], logits(1, 1)), "student_logits", "tensor"),  # type: ignore[arg-type]
    "uwkd-rank": (lambda: uncertainty_weighted_kd(logits(B), logits(B)), "student_logits", r"\[B, C\]"),
    "uwkd-temp": (lambda: uncertainty_weighted_kd(logits(B, C), logits(B, C), INF), "temperature", "inf"),
    "entropy-rank": (lambda: normalized_entropy(probs(C)), "probs", r"\[B, C\]"),
    "entropy-kind": (lambda: entropy_weights(probs(B, C), kind="linear"), "kind", "'linear'"),  # type: ignore[arg-type]
    "entropy-temp": (lambda: entropy_weights(probs(B, C), "exp", NAN), "temperature", "nan"),
    "mc-rank": (lambda: mc_dropout_weights(probs(B, C)), "prob_samples", r"\[S, B, C\]"),
    "mc-scale": (lambda: mc_dropout_weights(probs(2, B, C), scale=0.0), "scale", "> 0"),
    "mc-samples": (lambda: mc_dropout_predict(nn.Linear(2, 2), logits(1, 2), 0), "samples", ">= 1"),
    # pseudo-labels
    "mask-rank": (lambda: confidence_mask(probs(C), 0.9), "probs", r"\[B, C\]"),
    "mask-class-thresholds": (lambda: confidence_mask(probs(B, C), torch.ones(2)), "threshold", r"\[C=4\]"),
    "mask-threshold-nan": (lambda: confidence_mask(probs(B, C), NAN), "threshold", "finite"),
    "fixmatch-batch": (lambda: fixmatch_loss(logits(B, C), logits(2, C)), "logits_strong", "B=3"),
    "fixmatch-temp": (lambda: fixmatch_loss(logits(B, C), logits(B, C), temperature=0), "temperature", "> 0"),
    "fixmatch-class-thresholds": (
        lambda: fixmatch_loss(logits(B, C), logits(B, C), class_thresholds=torch.ones(C + 1)),
        "class_thresholds",
        r"\[C=4\], got \(5,\)",
    ),
    "flex-labels-high": (
        lambda: flexmatch_thresholds(torch.tensor([0, 4]), torch.ones(2), C, 0.9),
        "predictions",
        r"\[-1, 3\], got 4",
    ),
    "flex-labels-low": (
        lambda: flexmatch_thresholds(torch.tensor([-2, 0]), torch.ones(2), C, 0.9),
        "predictions",
        "got -2",
    ),
    "flex-labels-dtype": (
        lambda: flexmatch_thresholds(torch.ones(2), torch.ones(2), C, 0.9),
        "predictions",
        "integer",
    ),
    "flex-length": (
        lambda: flexmatch_thresholds(LABELS, torch.ones(2), C, 0.9),
        "confidences",
        r"\[N=3\], got \(2,\)",
    ),
    "flex-classes": (lambda: flexmatch_thresholds(LABELS, torch.ones(3), 0, 0.9), "num_classes", ">= 1"),
    "flex-tau": (lambda: flexmatch_thresholds(LABELS, torch.ones(3), C, NAN), "tau", "finite"),
    "flex-state-size": (lambda: FlexMatchThresholds(0, C), "num_unlabeled", ">= 1"),
    "flex-update-index": (
        lambda: FlexMatchThresholds(5, C).update(torch.tensor([0, 1, 5]), probs(B, C)),
        "indices",
        r"\[0, 4\], got 5",
    ),
    "flex-update-classes": (
        lambda: FlexMatchThresholds(5, C).update(LABELS, probs(B, C + 1)),
        "probs",
        r"\[B, C=4\]",
    ),
    "align-model-dist": (lambda: distribution_alignment(probs(B, C), torch.ones(C + 1)), "model_dist", "C=4"),
    "align-target-dist": (
        lambda: distribution_alignment(probs(B, C), torch.ones(C), torch.ones(2)),
        "target_dist",
        r"\[C=4\]",
    ),
    "running-momentum": (lambda: RunningDistribution(C, momentum=1.0), "momentum", r"\[0.0, 1.0\)"),
    "running-update": (lambda: RunningDistribution(C).update(probs(B, C + 1)), "probs", r"\[B, C=4\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_value_error_naming_the_argument(case: str) -> None:
    call, argument, fragment = BAD_INPUTS[case]
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(argument), message
    assert re.search(fragment, message), message


def test_check_shape_returns_sizes_and_pins_them() -> None:
    sizes = check_shape("x", torch.zeros(2, 3), "B, C")
    assert sizes == {"B": 2, "C": 3}
    check_shape("y", torch.zeros(2), "B", floating=True, B=2)
    with pytest.raises(ValueError, match=r"^y must have shape \[B=2\], got \(3,\)$"):
        check_shape("y", torch.zeros(3), "B", **sizes)
    with pytest.raises(ValueError, match=r"^y must be an integer tensor, got torch.bool$"):
        check_shape("y", torch.zeros(2, dtype=torch.bool), "B", floating=False)


def test_scalar_checks() -> None:
    assert check_positive("t", torch.tensor(2.0)) == 2.0
    assert check_finite("m", -1) == -1.0
    assert check_interval("m", 1.0, 0.0, 1.0) == 1.0
    assert check_count("n", 3) == 3
    for bad in (True, "1", None):
        with pytest.raises(ValueError, match="^t must be a number"):
            check_positive("t", bad)
    with pytest.raises(ValueError, match=r"^m must lie in \[0.0, 1.0\), got 1.0$"):
        check_interval("m", 1.0, 0.0, 1.0, high_open=True)
    with pytest.raises(ValueError, match="^n must be an integer >= 1, got 2.0$"):
        check_count("n", 2.0)
    with pytest.raises(
        ValueError, match=r"^a, b and c must have the same shape, got \(1,\), \(1,\) and \(2,\)$"
    ):
        check_same_shape(a=torch.zeros(1), b=torch.zeros(1), c=torch.zeros(2))
    check_range("labels", torch.tensor([], dtype=torch.long), 0, 0)  # nothing to check


def test_valid_edge_inputs_still_pass() -> None:
    # Thresholds above 1 disable pseudo-labels (FixMatch's 'supervised only' setting); 0-d tensors are scalars.
    mask, _ = confidence_mask(probs(B, C), 1.5)
    assert mask.sum() == 0
    confidence_mask(probs(B, C), torch.tensor(0.5))
    assert flexmatch_thresholds(torch.tensor([-1, -1]), torch.zeros(2), C, 1.2).shape == (C,)
    assert cosine_momentum(5, 10.0) > 0.99  # a float step total, as Lightning may estimate it
    kd_loss(logits(B, C), logits(B, C), weights=torch.ones(B, dtype=torch.long))  # weights are cast
