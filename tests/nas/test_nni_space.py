import random

import pytest
import torch

pytest.importorskip("nni")

from conftest import tiny_space  # noqa: E402
from ersam_ssl.hw import CostModel, LatencyLUT  # noqa: E402
from ersam_ssl.models import SAMSpace, build_model, layer_specs, make_op  # noqa: E402
from ersam_ssl.nas.nni_space import (  # noqa: E402
    ArchCostProfiler,
    ExpectedCostPenalty,
    SAMMember,
    arch_to_sample,
    architecture_probabilities,
    build_model_space,
    cost_tables,
    label_choices,
    most_likely_sample,
    sample_to_arch,
)
from ersam_ssl.nas.supernet import ElasticSAM  # noqa: E402

pytestmark = pytest.mark.nas

TINY = tiny_space()
NUM_SAMPLES = 8000


def _random_sample(model_space, rng: random.Random) -> dict:
    return {label: rng.choice(m.values) for label, m in model_space.simplify().items()}


@pytest.fixture(scope="module")
def supernet() -> ElasticSAM:
    torch.manual_seed(0)
    net = ElasticSAM(TINY, num_classes=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_labels_are_the_space_and_samples_round_trip(supernet):
    model_space = build_model_space(supernet)
    mutables = model_space.simplify()
    assert {k: list(v.values) for k, v in mutables.items()} == label_choices(TINY)
    rng = random.Random(0)
    for _ in range(20):
        sample = _random_sample(model_space, rng)
        arch = sample_to_arch(sample, TINY)
        TINY.validate(arch)
        assert arch_to_sample(arch, TINY) == sample
    default = SAMSpace()
    for arch in (default.largest(), default.smallest(), default.sample(rng)):
        assert sample_to_arch(arch_to_sample(arch, default), default) == arch
    with pytest.raises(ValueError):
        sample_to_arch({**arch_to_sample(default.largest(), default), "s0_depth": "7"}, default)


def test_frozen_members_are_build_model_of_their_arch(supernet):
    model_space = build_model_space(supernet)
    wave = 0.1 * torch.randn(3, NUM_SAMPLES, generator=torch.Generator().manual_seed(1))
    rng = random.Random(2)
    for _ in range(5):
        sample = _random_sample(model_space, rng)
        member = model_space.freeze(sample)
        assert isinstance(member, SAMMember) and member.arch == sample_to_arch(sample, TINY)
        assert member.ref.supernet is supernet and not list(member.parameters())  # views, no copies
        standalone = build_model(member.arch, num_classes=4, space=TINY)
        standalone.load_state_dict(supernet.extract(member.arch).state_dict())
        with torch.no_grad():
            torch.testing.assert_close(member(wave), standalone.eval()(wave), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception):  # noqa: B017 - NNI raises its own SampleValidationError
        model_space.freeze({**sample, "width_mult": "w0p3"})


def test_the_space_dry_run_runs_a_member(supernet):
    with torch.no_grad():
        out = build_model_space(supernet)(0.1 * torch.randn(2, NUM_SAMPLES))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def cost_model() -> CostModel:
    from functools import partial

    lut = LatencyLUT(make_op=make_op, warmup=0, repeats=1)
    return CostModel(
        "pixel3",
        latency="lut",
        lut=lut,
        build_model=partial(build_model, num_classes=4, space=TINY),
        layer_specs=partial(layer_specs, space=TINY, num_samples=NUM_SAMPLES, num_classes=4),
        canonicalize=TINY.canonical,
        num_samples=NUM_SAMPLES,
        num_classes=4,
    )


@pytest.fixture(scope="module")
def tables(cost_model) -> dict:
    """Cost tables of every metric (tabulating counts the MACs of every distinct op once)."""
    out = {}
    for metric in ("macs", "avg_power_mw", "latency_ms"):
        op_cost, constant = cost_model.op_cost_function(metric)
        out[metric] = cost_tables(
            TINY, op_cost, constant_offset=constant, num_samples=NUM_SAMPLES, num_classes=4
        )
    return out


@pytest.mark.parametrize("metric", ["macs", "avg_power_mw", "latency_ms"])
def test_cost_tables_reproduce_the_cost_model(supernet, cost_model, tables, metric):
    tables = tables[metric]
    model_space = build_model_space(supernet)
    profiler = ArchCostProfiler(model_space, tables)
    rng = random.Random(3)
    for _ in range(6):
        sample = _random_sample(model_space, rng)
        expected = cost_model.cost(sample_to_arch(sample, TINY))[metric]
        assert tables.value(sample) == pytest.approx(expected, rel=1e-9)
        assert profiler.profile(sample) == pytest.approx(expected, rel=1e-9)
        one_hot = {
            label: torch.tensor([float(name == sample[label]) for name in names], dtype=torch.float64)
            for label, names in tables.choices.items()
        }
        assert float(tables.expectation(one_hot)) == pytest.approx(expected, rel=1e-9)


def test_expected_cost_matches_nni_and_is_differentiable(supernet, tables):
    from nni.nas.oneshot.pytorch.supermodule._expression_utils import expression_expectation

    tables = tables["macs"]
    profiler = ArchCostProfiler(build_model_space(supernet), tables)
    gen = torch.Generator().manual_seed(4)
    logits = {
        k: torch.randn(len(v), generator=gen, dtype=torch.float64, requires_grad=True)
        for k, v in tables.choices.items()
    }
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    ours = tables.expectation(probs)
    reference = expression_expectation(
        profiler.expression, {k: v.detach().tolist() for k, v in probs.items()}
    )
    assert ours.item() == pytest.approx(float(reference), rel=1e-9)
    ours.backward()
    assert logits["width_mult"].grad[1] > 0 > logits["width_mult"].grad[0]  # wider costs more


def test_penalty_pushes_the_one_shot_distribution_to_cheaper_members(supernet, tables):
    import copy

    from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
    from nni.nas.strategy import Proxyless

    net = copy.deepcopy(supernet)
    model_space = build_model_space(net)
    tables = tables["avg_power_mw"]
    profiler = ArchCostProfiler(model_space, tables)
    Proxyless().mutate_model(model_space)
    probs = architecture_probabilities(model_space)
    assert set(probs) == set(label_choices(TINY))

    # NNI 3.0's own penalty sees the distribution as floats: its value carries no gradient.
    floats: dict = {}
    for module in model_space.modules():
        if isinstance(module, BaseSuperNetModule):
            floats.update(module.export_probs(floats))
    _, details = ExpectationProfilerPenalty(profiler, baseline=0.1)(torch.tensor(0.0), floats)
    assert not isinstance(details["penalty"], torch.Tensor)

    penalty = ExpectedCostPenalty(profiler, model_space, baseline=0.1, scale=1.0)
    loss, details = penalty(torch.tensor(0.0), floats)
    expected = float(tables.expectation({k: v.double() for k, v in probs.items()}))
    assert float(details["penalty"]) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    alphas = {m.label: m._arch_alpha for m in model_space.modules() if hasattr(m, "_arch_alpha")}
    assert alphas["width_mult"].grad[1] > 0 > alphas["width_mult"].grad[0]
    for _ in range(50):  # a few descent steps make the cheapest width the most likely
        for a in alphas.values():
            a.grad = None
        penalty(torch.tensor(0.0), {})[0].backward()
        with torch.no_grad():
            for a in alphas.values():
                a -= 5.0 * a.grad
    assert most_likely_sample(model_space)["width_mult"] == "w0p5"


def test_the_proxyless_supernet_runs_the_sampled_member(supernet):
    import copy

    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
    from nni.nas.strategy import Proxyless

    net = copy.deepcopy(supernet).eval()
    model_space = build_model_space(net)
    Proxyless().mutate_model(model_space)
    wave = 0.1 * torch.randn(2, NUM_SAMPLES, generator=torch.Generator().manual_seed(5))
    rng = random.Random(6)
    for _ in range(3):
        sample = {label: rng.choice(names) for label, names in label_choices(TINY).items()}
        memo = dict(sample)
        for module in model_space.modules():
            if isinstance(module, BaseSuperNetModule):
                module.resample(memo)  # labels in memo are fixed to the sample
        with torch.no_grad():
            expected = net.extract(sample_to_arch(sample, TINY))(wave)
            torch.testing.assert_close(model_space(wave), expected, rtol=1e-5, atol=1e-6)
