"""CostModel: whole-member costs, their cache, and the per-op costs a one-shot search tabulates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ersam_ssl.hw import (
    CostModel,
    CostOracle,
    LatencyCorrection,
    LatencyLUT,
    LatencyPredictor,
    load_profile,
    report_energy,
    sam_latency_predictor,
    spec_key,
)


def _toy_space():
    """Architectures {"width": w, "depth": d}: a stack of Conv1d over a short waveform."""
    built: list[dict] = []

    def build_model(arch):
        built.append(arch)
        layers: list[nn.Module] = [nn.Unflatten(1, (1, -1)), nn.Conv1d(1, arch["width"], 8, stride=8)]
        for _ in range(arch["depth"]):
            layers += [nn.Conv1d(arch["width"], arch["width"], 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers)

    def layer_specs(arch):
        return [{"op": "stem", "width": arch["width"]}] + [{"op": "conv", "width": arch["width"]}] * arch[
            "depth"
        ]

    def make_op(spec):
        w = spec["width"]
        if spec["op"] == "stem":
            return nn.Sequential(nn.Unflatten(1, (1, -1)), nn.Conv1d(1, w, 8, stride=8)), torch.randn(1, 800)
        return nn.Conv1d(w, w, 3, padding=1), torch.randn(1, w, 100)

    return build_model, layer_specs, make_op, built


def test_cost_model_macs_energy_and_cache():
    build_model, layer_specs, make_op, built = _toy_space()
    model = CostModel("pixel3", latency="none", build_model=build_model, num_samples=800)
    arch = {"width": 4, "depth": 2}
    cost = model.cost(arch)
    # stem: 100 x 4 x 1 x 8 = 3200; each conv: 100 x 4 x 4 x 3 = 4800
    assert cost["macs"] == 3200 + 2 * 4800
    assert cost["latency_ms"] is None
    expected = report_energy(cost["macs"], load_profile("pixel3"))
    assert cost["energy_mj"] == pytest.approx(expected.energy_mj_per_inference)
    assert cost["avg_power_mw"] == pytest.approx(expected.avg_power_mw)
    assert set(cost) == {"macs", "params", "latency_ms", "device_latency_ms", "energy_mj", "avg_power_mw"}
    assert model.cost({"depth": 2, "width": 4}) == cost  # key order does not matter
    assert len(built) == 1
    assert model.get_efficiency(arch, "macs") == cost["macs"]
    with pytest.raises(ValueError, match="latency_ms"):
        model.get_efficiency(arch, "latency_ms")


def test_cost_model_lut_and_measure_modes():
    build_model, layer_specs, make_op, _ = _toy_space()
    lut = LatencyLUT(make_op=make_op, warmup=1, repeats=3)
    via_lut = CostModel(
        "host", latency="lut", lut=lut, build_model=build_model, layer_specs=layer_specs, num_samples=800
    )
    arch = {"width": 4, "depth": 3}
    cost = via_lut.cost(arch)
    assert len(lut) == 2 and cost["latency_ms"] == pytest.approx(lut.predict(layer_specs(arch)))
    # host profile: device latency is the (predicted) host latency, energy = 3 W x latency
    assert cost["device_latency_ms"] == pytest.approx(cost["latency_ms"])
    assert cost["energy_mj"] == pytest.approx(load_profile("host").active_power_w * cost["latency_ms"])

    measured = CostModel(
        "pixel3", latency="measure", build_model=build_model, num_samples=800, warmup=1, repeats=3
    )
    assert measured.cost(arch)["latency_ms"] > 0


def _corrected_toy_predictor(layer_specs) -> LatencyPredictor:
    """Fixed op latencies (no timing) and a correction 0.7 + 1.5 * sum + 0.2 per op."""
    entries = {}
    for w in (4, 8):
        for spec in layer_specs({"width": w, "depth": 1}):
            entries[spec_key(spec)] = 0.01 * w + (0.3 if spec["op"] == "stem" else 0.1)
    return LatencyPredictor(
        LatencyLUT(entries), LatencyCorrection(("ms", "count"), (1.5, 0.2), 0.7, "affine+ops")
    )


def test_cost_model_uses_the_corrected_prediction():
    build_model, layer_specs, make_op, _ = _toy_space()
    predictor = _corrected_toy_predictor(layer_specs)
    model = CostModel("host", latency="lut", lut=predictor, build_model=build_model, layer_specs=layer_specs,
                      make_op=make_op, num_samples=800)  # fmt: skip
    arch = {"width": 8, "depth": 3}
    op_ms = [predictor.lut.entries[spec_key(s)] for s in layer_specs(arch)]  # stem + 3 convs
    by_hand = 0.7 + 1.5 * sum(op_ms) + 0.2 * 4
    cost = model.cost(arch)
    assert cost["latency_ms"] == pytest.approx(by_hand)
    assert cost["latency_ms"] > predictor.raw(layer_specs(arch)) == pytest.approx(sum(op_ms))
    assert model.lut is predictor.lut and model.latency_predictor() is predictor
    # the host profile's energy follows the corrected latency
    assert cost["energy_mj"] == pytest.approx(load_profile("host").active_power_w * by_hand)


def test_default_cost_model_uses_this_machines_persisted_corrected_predictor(monkeypatch, tmp_path):
    from ersam_ssl.hw import latency_predictor, lut
    from ersam_ssl.models import SAMSpace, layer_specs, space_op_specs

    measured = []

    def fake_interleaved(models, num_samples=80000, threads=1, warmup=5, rounds=30, *, example_inputs=None):
        is_op = example_inputs is not None
        batch = [
            0.1 + 1e-4 * sum(p.numel() for p in m.parameters()) * (1.0 if is_op else 1.4) for m in models
        ]
        measured.extend(batch)
        return batch

    monkeypatch.setattr(lut, "measure_interleaved", fake_interleaved)
    monkeypatch.setattr(latency_predictor, "measure_interleaved", fake_interleaved)
    settings = {"num_samples": 1600, "warmup": 0, "repeats": 1}
    model = CostModel("host", latency="lut", latency_dir=tmp_path, **settings)
    assert model.lut is None and measured == []  # nothing measured before it is needed
    arch = SAMSpace().smallest()
    latency = model.cost(arch)["latency_ms"]
    assert len(model.lut) == len(space_op_specs(num_samples=1600))  # every op of the space ...
    assert len(list(tmp_path.iterdir())) == 1  # ... saved in this machine's file
    measured.clear()
    predictor = sam_latency_predictor(directory=tmp_path, **settings)  # a later search: loaded, not measured
    assert measured == []
    specs = layer_specs(arch, num_samples=1600)
    assert predictor.correction.num_archs == 40
    assert latency == pytest.approx(predictor.predict(specs)) and latency != pytest.approx(
        predictor.raw(specs)
    )


def test_cost_model_rejects_bad_settings():
    build_model, *_ = _toy_space()
    with pytest.raises(ValueError, match="latency='lut' with custom model builders needs lut="):
        CostModel("pixel3", latency="lut", build_model=build_model)
    with pytest.raises(ValueError, match="needs a host latency"):
        CostModel("host", latency="none", build_model=build_model)
    with pytest.raises(ValueError, match="latency must be one of"):
        CostModel("pixel3", latency="fast", build_model=build_model)


@pytest.mark.parametrize(
    "profile, metric",
    [("pixel3", "macs"), ("pixel3", "avg_power_mw"), ("host", "latency_ms"), ("host", "avg_power_mw")],
)
def test_op_costs_add_up_to_the_member_cost(profile, metric):
    """What a one-shot strategy tabulates per op sums to the whole member's cost (host: from the LUT)."""
    build_model, layer_specs, make_op, _ = _toy_space()
    model = CostModel(
        profile,
        latency="lut",
        lut=LatencyLUT(make_op=make_op, warmup=1, repeats=3),
        build_model=build_model,
        layer_specs=layer_specs,
        make_op=make_op,
        num_samples=800,
    )
    op_cost, constant = model.op_cost_function(metric)
    for arch in ({"width": 4, "depth": 1}, {"width": 8, "depth": 3}):
        total = constant + sum(op_cost(spec) for spec in layer_specs(arch))
        assert total == pytest.approx(model.cost(arch)[metric], rel=1e-9)
    with pytest.raises(ValueError, match="unknown cost metric"):
        model.op_cost_function("params")


@pytest.mark.parametrize("profile, metric", [("host", "latency_ms"), ("host", "avg_power_mw")])
def test_corrected_op_costs_add_up_to_the_member_cost(profile, metric):
    """With a correction, per-op latency is its share and the intercept goes into the constant."""
    build_model, layer_specs, make_op, _ = _toy_space()
    model = CostModel(profile, latency="lut", lut=_corrected_toy_predictor(layer_specs), build_model=build_model,
                      layer_specs=layer_specs, make_op=make_op, num_samples=800)  # fmt: skip
    op_cost, constant = model.op_cost_function(metric)
    for arch in ({"width": 4, "depth": 1}, {"width": 8, "depth": 3}):
        total = constant + sum(op_cost(spec) for spec in layer_specs(arch))
        assert total == pytest.approx(model.cost(arch)[metric], rel=1e-9)
    if metric == "latency_ms":
        assert constant == pytest.approx(0.7)


def test_cost_model_is_a_cost_oracle():
    build_model, *_ = _toy_space()
    assert isinstance(CostModel("pixel3", latency="none", build_model=build_model), CostOracle)


def test_cost_model_defaults_to_the_sam_space():
    from ersam_ssl.models.space import SAMSpace

    space = SAMSpace()
    model = CostModel("cortex_a55", latency="none")
    arch = space.smallest()
    cost = model.cost(arch)
    assert cost["macs"] > 0 and cost["params"] > 0 and cost["energy_mj"] > 0
    # entries past a stage's depth are ignored: the canonical form shares the cache entry
    noisy = json_copy(arch)
    noisy["stages"][0]["kernel"][-1] = space.kernels[-1]
    assert model.cost(noisy) == cost and len(model._cache) == 1


def json_copy(obj):
    import json

    return json.loads(json.dumps(obj))
