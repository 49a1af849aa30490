"""The persisted, corrected latency predictor, with the clock replaced: what is measured, saved, reused, refused.

Timing is not the point here, so ``measure_interleaved`` is monkeypatched: an op "takes" the latency its
module carries, and a whole model the latency its builder computed from a known formula. Timing one module
alone (``measure_torch_latency``) fails: tables and calibrations are timed interleaved.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from ersam_ssl.hw import latency_predictor as lp
from ersam_ssl.hw import lut as lut_module
from ersam_ssl.hw import machine
from ersam_ssl.hw.latency_fit import IDENTITY, LatencyCorrection
from ersam_ssl.hw.latency_predictor import (
    Calibration,
    LatencyPredictor,
    calibration_members,
    distinct_members,
    load_or_build,
    predictor_path,
    read_store,
    sam_latency_predictor,
    write_store,
)
from ersam_ssl.hw.lut import LatencyLUT, spec_key
from ersam_ssl.hw.machine import MachineMismatchError

# The toy space: an arch {"sizes": [...]} is a stem and one block per size; a model takes
# INTERCEPT + SCALE * (sum of its op latencies) + PER_OP * (number of ops).
INTERCEPT, SCALE, PER_OP = 0.5, 1.2, 0.1
SIZES = (1, 2, 3, 4, 5)


class Timed(nn.Module):
    """A module that "takes" ``ms`` milliseconds (read by the fake clock)."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms

    def forward(self, x):
        return x


def op_ms(spec: dict) -> float:
    return 0.3 if spec["op"] == "stem" else 0.1 * spec["size"] + 0.05


def layer_specs(arch: dict) -> list[dict]:
    return [{"op": "stem"}] + [
        {"op": "block", "size": s, "name": f"b{i}"} for i, s in enumerate(arch["sizes"])
    ]


def make_op(spec: dict):
    return Timed(op_ms(spec)), torch.zeros(1)


def build_model(arch: dict) -> nn.Module:
    specs = layer_specs(arch)
    return Timed(INTERCEPT + SCALE * sum(op_ms(s) for s in specs) + PER_OP * len(specs))


ALL_OPS = [{"op": "stem"}] + [{"op": "block", "size": s} for s in SIZES]
CALIBRATION = [{"sizes": list(random.Random(i).choices(SIZES, k=1 + i % 6))} for i in range(12)]
CONTEXT = {"space": "toy"}


def timed_alone(*args, **kwargs):
    raise AssertionError("a module was timed alone, not interleaved with the others")


class Timings(list):
    """The latencies of the modules timed (in order), and ``batches``: the modules timed together."""

    batches: list[list[float]]


def use_fake_timer(monkeypatch, ms_of) -> Timings:
    """Replace the timer: a module "takes" ``ms_of(module, example_input)`` (None: a whole model)."""
    timings = Timings()
    timings.batches = []

    def fake_interleaved(models, num_samples=80000, threads=1, warmup=5, rounds=30, *, example_inputs=None):
        inputs = [None] * len(models) if example_inputs is None else example_inputs
        batch = [ms_of(m, x) for m, x in zip(models, inputs)]
        timings.extend(batch)
        timings.batches.append(batch)
        return batch

    monkeypatch.setattr(lut_module, "measure_interleaved", fake_interleaved)
    monkeypatch.setattr(lp, "measure_interleaved", fake_interleaved)
    monkeypatch.setattr(lut_module, "measure_torch_latency", timed_alone)
    return timings


@pytest.fixture
def clock(monkeypatch):
    """Replace the timer: returns the latencies of the modules "measured" (ops and whole models)."""
    monkeypatch.setattr(machine, "cpu_model", lambda: "Fake CPU")
    return use_fake_timer(monkeypatch, lambda module, _: module.ms)


def build(tmp_path, **kwargs) -> LatencyPredictor:
    settings = {"num_samples": 8, "warmup": 1, "repeats": 2, "directory": tmp_path, **kwargs}
    return load_or_build(ALL_OPS, CALIBRATION, layer_specs, build_model, make_op, CONTEXT, **settings)


def test_builds_fits_saves_then_reuses(clock, tmp_path):
    predictor = build(tmp_path)
    assert len(clock) == len(ALL_OPS) + len(CALIBRATION)  # every op once, every calibration member once
    assert len(predictor.lut) == len(ALL_OPS)
    c = predictor.correction  # chosen by leave-one-out error: the simplest form that fits these timings
    assert c.form == "affine+ops" and c.num_archs == len(CALIBRATION)
    assert c.loo_errors["affine"] > 1 and c.loo_errors["affine+ops"] == pytest.approx(0, abs=1e-6)
    assert c.intercept == pytest.approx(INTERCEPT) and c.coef == pytest.approx([SCALE, PER_OP])
    unseen = {"sizes": [5, 5, 1, 2, 3, 4, 4]}
    specs = layer_specs(unseen)
    assert predictor.raw(specs) == pytest.approx(sum(op_ms(s) for s in specs))
    assert predictor.predict(specs) == pytest.approx(build_model(unseen).ms)
    assert predictor.constant + sum(predictor.op_cost(s) for s in specs) == pytest.approx(
        predictor.predict(specs)
    )

    path = predictor_path(1, tmp_path)
    assert path.exists() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp files
    data = json.loads(path.read_text())
    assert data["meta"]["machine"]["cpu"] == "Fake CPU" and len(data["entries"]) == len(ALL_OPS)
    assert len(data["calibrations"]) == 1

    clock.clear()
    again = build(tmp_path)  # a later search on this machine: nothing measured
    assert clock == []
    assert again.correction == predictor.correction and again.lut.entries == predictor.lut.entries
    assert again.calibration == predictor.calibration


def test_table_and_calibration_are_timed_interleaved(clock, monkeypatch, tmp_path):
    """Ops are timed together a chunk at a time (saved after each), the calibration members all together."""
    monkeypatch.setattr(lp, "_SAVE_EVERY", 4)
    saved_sizes = []
    real_write_store = lp.write_store

    def spy_write_store(path, lut, calibrations):
        saved_sizes.append(len(lut))
        return real_write_store(path, lut, calibrations)

    monkeypatch.setattr(lp, "write_store", spy_write_store)
    build(tmp_path)
    first, second, calibration = clock.batches
    assert first == [op_ms(s) for s in ALL_OPS[:4]]
    assert second[:2] == [op_ms(s) for s in ALL_OPS[4:]]  # then the first chunk's ops again, as anchors
    assert sorted(second[2:]) == sorted(first)
    assert calibration == [build_model(a).ms for a in CALIBRATION]
    assert saved_sizes[:2] == [4, 6]  # after each chunk; then with the calibration


def test_calibration_timed_by_the_caller_is_fitted_and_stored(clock, tmp_path):
    """A caller that timed the calibration members (with other members, in the same rounds) passes their
    latencies: only the table is timed, and the correction fits them."""
    given = [2 * build_model(a).ms for a in CALIBRATION]  # e.g. timed on a slower afternoon
    predictor = build(tmp_path, calibration_ms=given)
    assert len(clock) == len(ALL_OPS) and len(clock.batches) == 1  # no whole model timed here
    assert predictor.calibration.measured_ms == pytest.approx(given)
    assert predictor.correction.coef == pytest.approx([2 * SCALE, 2 * PER_OP])
    clock.clear()
    assert build(tmp_path).calibration == predictor.calibration and clock == []  # stored and reused
    with pytest.raises(ValueError, match="got 2 calibration latencies for 12 members"):
        build(tmp_path, calibration_ms=[1.0, 2.0])


def test_store_round_trip(clock, tmp_path):
    lut = LatencyLUT({spec_key(s): op_ms(s) for s in ALL_OPS}, threads=1, warmup=1, repeats=2)
    correction = LatencyCorrection(("ms", "count"), (1.2, 0.1), 0.5, "affine+ops", 2)
    calibration = Calibration(
        {"space": "toy"},
        ({"sizes": [1]}, {"sizes": [2, 3]}),
        (1.0, 2.0),
        correction,
        {"warmup": 1, "repeats": 2},
    )
    path = write_store(tmp_path / "sub" / "m.json", lut, {"abc": calibration})
    loaded_lut, loaded = read_store(path)
    assert loaded_lut.entries == lut.entries and loaded_lut.repeats == 2
    assert loaded == {"abc": calibration}


def test_another_machines_file_is_refused_and_the_default_path_remeasures(clock, monkeypatch, tmp_path):
    path = tmp_path / "copied.json"
    build(tmp_path, path=path)
    first_key_file = predictor_path(1, tmp_path)
    monkeypatch.setattr(machine, "cpu_model", lambda: "Other CPU")
    with pytest.raises(
        MachineMismatchError, match=r"copied.json was measured elsewhere \(cpu 'Fake CPU' vs 'Other CPU'"
    ):
        build(tmp_path, path=path)
    monkeypatch.setattr(machine, "cpu_model", lambda: "Fake CPU")
    with pytest.raises(MachineMismatchError, match=r"threads 1 vs 2 here"):
        build(tmp_path, path=path, threads=2)
    monkeypatch.setattr(machine, "cpu_model", lambda: "Other CPU")
    # the default path is named by the machine key: another machine gets its own file, measured afresh
    clock.clear()
    build(tmp_path)
    assert len(clock) == len(ALL_OPS) + len(CALIBRATION)
    assert predictor_path(1, tmp_path) != first_key_file and predictor_path(1, tmp_path).exists()


def test_fewer_repeats_or_remeasure_measure_again(clock, tmp_path):
    build(tmp_path, repeats=1)
    clock.clear()
    build(tmp_path, repeats=1)
    assert clock == []
    build(tmp_path, repeats=3)  # the file holds 1-run timings: not good enough
    assert len(clock) == len(ALL_OPS) + len(CALIBRATION)
    clock.clear()
    build(tmp_path, repeats=2)  # 3 >= 2: reused
    assert clock == []
    build(tmp_path, remeasure=True)
    assert len(clock) == len(ALL_OPS) + len(CALIBRATION)


def test_another_context_calibrates_and_another_form_refits_without_timing(clock, tmp_path):
    first = build(tmp_path)
    clock.clear()
    other = load_or_build(ALL_OPS, CALIBRATION[:8], layer_specs, build_model, make_op, {"space": "other"},
                          num_samples=8, warmup=1, repeats=2, directory=tmp_path)  # fmt: skip
    assert len(clock) == 8 and other.correction.num_archs == 8  # the ops are in the table already
    clock.clear()
    affine = build(tmp_path, form="affine")  # another form: refitted on the stored timings
    assert clock == [] and affine.correction.form == "affine"
    assert affine.calibration.measured_ms == first.calibration.measured_ms
    assert affine.calibration.settings == {"warmup": 1, "repeats": 2, "form": "affine"}
    assert len(json.loads(predictor_path(1, tmp_path).read_text())["calibrations"]) == 2


def test_a_killed_table_build_resumes(clock, monkeypatch, tmp_path):
    monkeypatch.setattr(lp, "_SAVE_EVERY", 2)
    calls = {"n": 0}

    def dying_make_op(spec):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return make_op(spec)

    with pytest.raises(KeyboardInterrupt):
        load_or_build(ALL_OPS, CALIBRATION, layer_specs, build_model, dying_make_op, CONTEXT,
                      num_samples=8, warmup=1, repeats=2, directory=tmp_path)  # fmt: skip
    assert len(read_store(predictor_path(1, tmp_path))[0]) == 2  # saved after every 2 ops
    clock.clear()
    assert build(tmp_path).lut.num_measured == len(ALL_OPS) - 2
    assert clock.batches[-1] == [build_model(a).ms for a in CALIBRATION]


def test_identity_predictor_is_the_raw_sum():
    lut = LatencyLUT({spec_key(s): op_ms(s) for s in ALL_OPS})
    predictor = LatencyPredictor(lut)
    specs = layer_specs({"sizes": [1, 2]})
    assert predictor.correction is IDENTITY and predictor.constant == 0.0
    assert (
        predictor.predict(specs) == pytest.approx(predictor.raw(specs)) == pytest.approx(lut.predict(specs))
    )


def test_calibration_members_are_distinct_and_span_the_space():
    from conftest import tiny_space

    space = tiny_space()
    members = calibration_members(space, 12, seed=0)
    assert len({json.dumps(m, sort_keys=True) for m in members}) == 12
    assert members[:2] == [space.canonical(space.smallest()), space.canonical(space.largest())]
    assert all(space.canonical(m) == m for m in members)
    assert members == calibration_members(space, 12, seed=0)  # seeded
    from ersam_ssl.models import SAMSpace

    single = SAMSpace(
        kernels=(3,), expands=(1,), depths=(1,), width_mults=(1.0,), se_choices=(False,), pool_heads=("gru",)
    )
    with pytest.raises(ValueError, match="fewer than 2 distinct members"):
        calibration_members(single, 2)
    held_out = distinct_members(space, 20, seed=1, exclude=members)
    keys = {json.dumps(m, sort_keys=True) for m in members}
    assert len({json.dumps(m, sort_keys=True) for m in held_out} | keys) == 32  # distinct, and new


def test_sam_predictor_covers_every_member_of_the_space(monkeypatch, tmp_path):
    """On a tiny SAM space (fake clock: latency from parameter counts), the table holds every op of random
    members, so predicting them measures nothing."""
    from conftest import tiny_space
    from ersam_ssl.models import MBConv1d
    from ersam_ssl.models import layer_specs as sam_layer_specs

    def ms_of(module) -> float:  # per op: 0.1 ms plus 1 ms per 10k parameters
        return 1e-4 * (1000 + sum(p.numel() for p in module.parameters()))

    def fake_ms(model, example_input) -> float:
        ms = ms_of(model)
        if example_input is None:  # a whole model: 4 ops besides its blocks, and 30 % more than their sum
            num_ops = 4 + sum(isinstance(m, MBConv1d) for m in model.modules())
            ms = 1.3 * (ms + 0.1 * (num_ops - 1))
        return ms

    use_fake_timer(monkeypatch, fake_ms)
    space = tiny_space()
    predictor = sam_latency_predictor(space, num_samples=1600, num_classes=4, warmup=0, repeats=1,
                                      calibration_archs=10, directory=tmp_path)  # fmt: skip
    assert predictor.calibration is not None and predictor.calibration.context["num_classes"] == 4
    predictor.lut.make_op = None  # an op missing from the table would now raise KeyError
    rng = random.Random(0)
    for _ in range(50):
        arch = space.sample(rng)
        specs = sam_layer_specs(arch, space, num_samples=1600, num_classes=4)
        assert predictor.predict(specs) == pytest.approx(1.3 * predictor.raw(specs), rel=1e-6)
