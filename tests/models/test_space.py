import copy
import itertools
import json
import random

import numpy as np
import pytest
import torch

from ersam_ssl.export import export_onnx, onnx_outputs, onnx_session, read_onnx_config
from ersam_ssl.models import (
    CountModel,
    SAMSpace,
    build_model,
    create_model,
    layer_specs,
    make_op,
    subnet_state_dict,
)

SPACE = SAMSpace()


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _structure(model: torch.nn.Module) -> tuple:
    return str(model), [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _randomise_bn_stats(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)


# -- the space ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("head"), r"missing \['head'\]"),
        (lambda a: a.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda a: a.update(width_mult=0.6), r"arch\['width_mult'\] = 0.6 is not one of"),
        (lambda a: a.update(head="lstm"), r"arch\['head'\] = 'lstm'"),
        (lambda a: a["stages"].pop(), "list of 4 stages, got 3"),
        (lambda a: a["stages"][1].update(depth=5), r"arch\['stages'\]\[1\]\['depth'\] = 5"),
        (lambda a: a["stages"][2].update(depth=True), r"arch\['stages'\]\[2\]\['depth'\] = True"),
        (lambda a: a["stages"][0]["kernel"].pop(), r"\['kernel'\] must be a list of 4 ints"),
        (lambda a: a["stages"][3]["kernel"].__setitem__(2, 4), r"\['stages'\]\[3\]\['kernel'\]\[2\] = 4"),
        (lambda a: a["stages"][0]["expand"].__setitem__(0, 2), r"\['expand'\]\[0\] = 2 is not one of"),
        (lambda a: a["stages"][0].update(se=1), r"\['se'\] = 1 is not one of"),
        (lambda a: a["stages"][0].pop("se"), r"arch\['stages'\]\[0\] is missing \['se'\]"),
    ],
)
def test_validate_rejects_bad_archs_with_clear_messages(mutate, message):
    arch = SPACE.default()
    SPACE.validate(arch)
    mutate(arch)
    with pytest.raises(ValueError, match=message):
        SPACE.validate(arch)
    with pytest.raises(ValueError):
        build_model(arch)


def test_validate_rejects_non_dicts():
    with pytest.raises(ValueError, match="must be a dict"):
        SPACE.validate([1, 2])


def test_space_rejects_bad_choices_and_normalises_lists():
    with pytest.raises(ValueError, match="odd"):
        SAMSpace(kernels=(3, 4))
    with pytest.raises(ValueError, match="same"):
        SAMSpace(stage_strides=(2, 2))
    with pytest.raises(ValueError, match="pool_heads"):
        SAMSpace(pool_heads=("lstm",))
    assert SAMSpace(kernels=[7, 3, 5]) == SAMSpace()
    assert SAMSpace.from_dict(json.loads(json.dumps(SPACE.to_dict()))) == SPACE


def test_sample_is_deterministic_and_valid():
    first = [SPACE.sample(random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(3)
    archs = [SPACE.sample(rng) for _ in range(50)]
    for arch in archs:
        SPACE.validate(arch)
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 50
    assert archs[:5] == [SPACE.sample(r) for r in [random.Random(3)] for _ in range(5)]


def test_num_archs_counts_distinct_models():
    space = SAMSpace(
        kernels=(3, 5),
        expands=(1, 6),
        depths=(1, 2),
        width_mults=(1.0,),
        se_choices=(False, True),
        pool_heads=("gru", "attention"),
        stage_widths=(8, 8),
        stage_strides=(2, 1),
    )
    stage_options = [
        {"depth": d, "kernel": list(k), "expand": list(e), "se": se}
        for d in space.depths
        for k in itertools.product(space.kernels, repeat=2)
        for e in itertools.product(space.expands, repeat=2)
        for se in space.se_choices
    ]
    distinct = set()
    for head in space.pool_heads:
        for stages in itertools.product(stage_options, repeat=2):
            arch = {"width_mult": 1.0, "head": head, "stages": [dict(s) for s in stages]}
            distinct.add(json.dumps(space.canonical(arch), sort_keys=True))
    assert space.num_archs() == len(distinct) == 2 * (2 * (4 + 16)) ** 2


def test_canonical_archs_build_identical_models():
    rng = random.Random(0)
    arch = SPACE.sample(rng)
    arch["stages"][0]["depth"] = 1
    other = copy.deepcopy(arch)
    other["stages"][0]["kernel"][1:] = [7, 7, 7]
    other["stages"][0]["expand"][1:] = [6, 6, 6]
    assert SPACE.canonical(arch) == SPACE.canonical(other)
    assert _structure(build_model(arch)) == _structure(build_model(other))


def test_members_order_by_size():
    sizes = [_num_params(build_model(a)) for a in (SPACE.largest(), SPACE.default(), SPACE.smallest())]
    assert sizes[0] > sizes[1] > sizes[2]


# -- building ----------------------------------------------------------------------------------------


def test_json_round_trip_builds_the_same_structure():
    rng = random.Random(1)
    for arch in [SPACE.sample(rng) for _ in range(3)] + [SPACE.default()]:
        again = json.loads(json.dumps(arch))
        assert _structure(build_model(arch)) == _structure(build_model(again))


def test_config_round_trip_with_a_custom_space():
    space = SAMSpace(stage_widths=(8, 16, 24), stage_strides=(2, 2, 1), activation="hardswish", depths=(1, 2))
    torch.manual_seed(0)
    model = build_model(space.sample(random.Random(2)), num_classes=6, head="ordinal", n_mels=40, space=space)
    config = json.loads(json.dumps(model.config()))
    assert config == model.config()
    rebuilt = CountModel.from_config(config)
    assert _structure(rebuilt) == _structure(model)
    rebuilt.load_state_dict(model.state_dict())
    wave = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(wave), model.eval()(wave))
    assert rebuilt.num_classes == 6 and rebuilt.embed_dim == model.embed_dim


def test_create_model_by_name():
    assert _structure(create_model("sam")) == _structure(build_model(SAMSpace().default()))
    arch = SPACE.smallest()
    assert _structure(create_model("sam", arch=arch, head="poisson")) == _structure(
        build_model(arch, head="poisson")
    )
    with pytest.raises(KeyError, match="unknown model"):
        create_model("resnet")


@pytest.mark.parametrize("count_head", ["classify", "poisson", "ordinal"])
@pytest.mark.parametrize("pool_head", ["gru", "attention"])
def test_forward_backward_on_one_second(count_head, pool_head):
    torch.manual_seed(0)
    model = build_model({**SPACE.default(), "head": pool_head}, head=count_head)
    wave = 0.1 * torch.randn(2, 16000)
    out = model(wave)
    assert out.shape == (2, model.head.out_dim)
    assert model.embed(wave).shape == (2, model.embed_dim)
    log_probs = model.head.log_probs(out)
    assert log_probs.shape == (2, 11)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2))
    model.head.loss(out, torch.tensor([0, 4])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.backbone.stem.conv.conv.weight.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("pool_head", ["gru", "attention"])
def test_onnx_export_matches_pytorch(pool_head, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    arch = SPACE.sample(random.Random(5))
    arch["head"] = pool_head
    arch["stages"][1]["se"] = True
    model = build_model(arch).eval()
    _randomise_bn_stats(model)
    path = export_onnx(model, tmp_path / "sam.onnx", num_samples=16000)
    assert read_onnx_config(path) == model.config()
    wave = 0.1 * torch.randn(3, 16000)  # another batch size than at export (the time axis is fixed)
    exported = onnx_outputs(onnx_session(path), wave)
    with torch.no_grad():
        expected = model(wave).numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# -- per-op view -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_layer_specs_chain_to_the_whole_model(seed):
    torch.manual_seed(seed)
    arch = SPACE.sample(random.Random(seed))
    model = build_model(arch, head="poisson").eval()
    _randomise_bn_stats(model)
    specs = layer_specs(arch, num_samples=16000, head="poisson")
    assert json.loads(json.dumps(specs)) == specs
    assert [s["op"] for s in specs][:2] == ["frontend", "stem"]
    assert [s["op"] for s in specs][-2:] == ["pool_head", "classifier"]
    assert sum(s["op"] == "mbconv" for s in specs) == sum(st["depth"] for st in arch["stages"])

    wave = 0.1 * torch.randn(1, 16000)
    x = wave
    total_params = 0
    with torch.no_grad():
        for spec in specs:
            module, example = make_op(spec)
            original = model.get_submodule(spec["name"])
            assert str(module) == str(original)
            module.load_state_dict(original.state_dict())
            assert example.shape == x.shape, spec
            if "out_length" in spec:
                assert module(example).shape[-1] == spec["out_length"]
            x = module(x)
            total_params += _num_params(module)
        torch.testing.assert_close(x, model(wave))
    assert total_params == _num_params(model)


# -- weight sharing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def largest_weights() -> dict[str, torch.Tensor]:
    """Largest model's weights for both pooling heads (what a supernet holds), with random BN stats."""
    torch.manual_seed(0)
    weights = {}
    for head in ("attention", "gru"):
        model = build_model({**SPACE.largest(), "head": head})
        _randomise_bn_stats(model)
        weights.update(model.state_dict())
    return weights


def test_subnet_state_dict_loads_for_random_archs(largest_weights):
    rng = random.Random(0)
    for _ in range(10):
        arch = SPACE.sample(rng)
        model = build_model(arch)
        sliced = subnet_state_dict(largest_weights, arch)
        model.load_state_dict(sliced)  # strict
        assert torch.isfinite(model.eval()(0.1 * torch.randn(1, 16000))).all()


def test_subnet_of_the_largest_is_the_largest(largest_weights):
    sliced = subnet_state_dict(largest_weights, SPACE.largest())
    assert sliced.keys() == build_model(SPACE.largest()).state_dict().keys()
    for key, value in sliced.items():
        assert torch.equal(value, largest_weights[key]), key


def test_subnet_slices_kernels_channels_and_running_stats(largest_weights):
    arch = SPACE.largest()
    arch["width_mult"] = 0.5
    arch["stages"][1].update(depth=2, kernel=[3, 5, 3, 3], expand=[3, 1, 6, 6])
    sliced = subnet_state_dict(largest_weights, arch)
    # Stage 1 block 0 at width 0.5: in 8 (stage 0's 16 halved), hidden 8 * 3, out 12 (24 halved);
    # in the largest model: in 16, hidden 16 * 6.
    dw = sliced["backbone.stages.1.0.dw.conv.weight"]
    big = largest_weights["backbone.stages.1.0.dw.conv.weight"]
    assert dw.shape == (24, 1, 3) and big.shape == (96, 1, 7)
    assert torch.equal(dw, big[:24, :, 2:5])
    dw5 = sliced["backbone.stages.1.1.dw.conv.weight"]  # expand 1: no expand conv, hidden = in = 12
    assert torch.equal(dw5, largest_weights["backbone.stages.1.1.dw.conv.weight"][:12, :, 1:6])
    assert "backbone.stages.1.1.expand.conv.weight" not in sliced
    assert "backbone.stages.1.2.project.conv.weight" not in sliced
    key = "backbone.stages.1.0.expand.bn.running_mean"
    assert torch.equal(sliced[key], largest_weights[key][:24])
    key = "backbone.stages.1.0.expand.conv.weight"
    assert torch.equal(sliced[key], largest_weights[key][:24, :8])
    key = "backbone.stages.1.0.se.reduce.weight"  # 24 // 4 = 6 squeeze channels
    assert torch.equal(sliced[key], largest_weights[key][:6, :24])
    key = "backbone.stages.1.0.project.bn.running_var"
    assert torch.equal(sliced[key], largest_weights[key][:12])
    key = "head.linear.weight"
    assert torch.equal(sliced[key], largest_weights[key][:, :32])


def _block_pair(largest_weights, stage, index, kernel, expand, se, width):
    arch = SPACE.largest()
    arch["width_mult"] = width
    arch["stages"][stage]["kernel"][index] = kernel
    arch["stages"][stage]["expand"][index] = expand
    arch["stages"][stage]["se"] = se
    small = build_model(arch).eval()
    small.load_state_dict(subnet_state_dict(largest_weights, arch))
    big = build_model({**SPACE.largest(), "head": arch["head"]}).eval()
    big.load_state_dict({k: v for k, v in largest_weights.items() if k in big.state_dict()})
    name = f"backbone.stages.{stage}.{index}"
    return big.get_submodule(name), small.get_submodule(name)


@pytest.mark.parametrize(
    ("stage", "index", "kernel", "expand", "se", "width"),
    [(0, 0, 3, 3, True, 0.5), (1, 1, 5, 3, True, 0.75), (2, 2, 3, 6, False, 0.75), (3, 3, 7, 3, True, 1.0)],
)
def test_sliced_block_equals_the_masked_largest_block(
    largest_weights, stage, index, kernel, expand, se, width
):
    """A weight-sharing supernet runs the largest block with everything outside the slice switched off."""
    big, small = _block_pair(largest_weights, stage, index, kernel, expand, se, width)
    in_ch, hidden, out_ch = small.expand.conv.in_channels, small.hidden, small.project.conv.out_channels
    masked = copy.deepcopy(big)
    with torch.no_grad():
        crop = (big.dw.conv.kernel_size[0] - kernel) // 2
        keep = {
            masked.expand.conv.weight: (slice(0, hidden), slice(0, in_ch)),
            masked.dw.conv.weight: (slice(0, hidden), slice(None), slice(crop, crop + kernel)),
            masked.project.conv.weight: (slice(0, out_ch), slice(0, hidden)),
        }
        if se:
            squeeze = small.se.reduce.out_channels
            keep[masked.se.reduce.weight] = (slice(0, squeeze), slice(0, hidden))
            keep[masked.se.expand.weight] = (slice(0, hidden), slice(0, squeeze))
        else:
            masked.se = None
        for weight, region in keep.items():
            mask = torch.zeros_like(weight)
            mask[region] = 1
            weight.mul_(mask)
    torch.manual_seed(0)
    x_small = torch.randn(2, in_ch, 40)
    x_big = torch.zeros(2, big.expand.conv.in_channels, 40)
    x_big[:, :in_ch] = x_small
    with torch.no_grad():
        torch.testing.assert_close(masked(x_big)[:, :out_ch], small(x_small), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool_head", ["gru", "attention"])
def test_sliced_pool_equals_the_masked_largest_pool(largest_weights, pool_head):
    arch = {**SPACE.largest(), "head": pool_head, "width_mult": 0.75}
    small = build_model(arch).eval()
    small.load_state_dict(subnet_state_dict(largest_weights, arch))
    big = build_model({**SPACE.largest(), "head": pool_head}).eval()
    big.load_state_dict({k: v for k, v in largest_weights.items() if k in big.state_dict()})
    in_ch, dim = 36, small.embed_dim
    with torch.no_grad():
        if pool_head == "gru":
            gru = big.backbone.pool.gru
            gru.weight_ih_l0[:, in_ch:] = 0  # inputs outside the slice
            gru.weight_hh_l0[:, dim:] = 0  # hidden units outside the slice feed no gate of the kept ones
        else:
            big.backbone.pool.proj.conv.weight[:, in_ch:] = 0
            big.backbone.pool.score.weight[:, dim:] = 0
        x_small = torch.randn(2, in_ch, 12)
        x_big = torch.cat([x_small, torch.randn(2, 48 - in_ch, 12)], dim=1)
        torch.testing.assert_close(big.backbone.pool(x_big)[:, :dim], small.backbone.pool(x_small))


def test_subnet_state_dict_reports_mismatches(largest_weights):
    arch = SPACE.default()
    with pytest.raises(ValueError, match="n_mels / num_classes / head"):
        subnet_state_dict(largest_weights, arch, n_mels=40)
    with pytest.raises(ValueError, match="n_mels / num_classes / head"):
        subnet_state_dict(largest_weights, arch, num_classes=5)
    only_gru = {k: v for k, v in largest_weights.items() if not k.startswith("backbone.pool.proj")}
    with pytest.raises(ValueError, match="merge in the largest model with that pooling head"):
        subnet_state_dict(only_gru, {**arch, "head": "attention"})
    small = build_model(SPACE.smallest()).state_dict()
    with pytest.raises(ValueError, match="exceeds the source"):
        subnet_state_dict(small, SPACE.largest())
