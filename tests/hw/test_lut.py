"""Latency LUT on a tiny synthetic op family: structure, caching, persistence, machine check (no timing
values asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from ersam_ssl.hw import machine
from ersam_ssl.hw.lut import LatencyLUT, lut_error, spec_key, summarize_errors
from ersam_ssl.hw.machine import MachineMismatchError, machine_info


class OpFactory:
    """``{"op": "linear", "in": a, "out": b}`` -> (Linear, input); counts how often each op is built."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, spec):
        self.calls.append(spec_key(spec))
        assert spec["op"] == "linear"
        return nn.Linear(spec["in"], spec["out"]), torch.randn(4, spec["in"])


def lin(a: int, b: int) -> dict:
    return {"op": "linear", "in": a, "out": b}


def test_spec_key_is_canonical_and_ignores_the_op_name():
    assert (
        spec_key({"out": 2, "op": "linear", "in": 1})
        == spec_key(lin(1, 2))
        == '{"in":1,"op":"linear","out":2}'
    )
    # the same op at two places in a model shares one entry
    assert spec_key({**lin(1, 2), "name": "backbone.stages.0.1"}) == spec_key({**lin(1, 2), "name": "head"})


def test_build_measures_each_distinct_op_once():
    factory = OpFactory()
    specs = [lin(8, 8), lin(8, 16), lin(8, 8), {"in": 8, "out": 8, "op": "linear"}]
    lut = LatencyLUT.build(specs, factory, warmup=1, repeats=2)
    assert len(lut) == 2 and lut.num_measured == 2
    assert sorted(factory.calls) == sorted({spec_key(lin(8, 8)), spec_key(lin(8, 16))})
    assert lin(8, 16) in lut and lin(16, 8) not in lut
    assert all(ms > 0 for ms in lut.entries.values())
    # predicting again measures nothing new
    lut.predict([lin(8, 8), lin(8, 16), lin(8, 8)])
    assert len(factory.calls) == 2


def fake_machine(monkeypatch, levels):
    """Replace the timer: ``lin(a, b)`` "takes" ``b`` ms times the machine's level during that batch (the
    ``i``-th batch timed: ``levels[i]``); returns the batches timed, as lists of the ops' ``b``."""
    from ersam_ssl.hw import lut as lut_module

    batches = []

    def fake_interleaved(models, num_samples=80000, threads=1, warmup=5, rounds=30, *, example_inputs=None):
        assert len(example_inputs) == len(models)
        level = levels[len(batches)]
        batches.append([m.out_features for m in models])
        return [level * m.out_features for m in models]

    def timed_alone(*args, **kwargs):
        raise AssertionError("an op was timed alone")

    monkeypatch.setattr(lut_module, "measure_interleaved", fake_interleaved)
    monkeypatch.setattr(lut_module, "measure_torch_latency", timed_alone)
    return batches


def test_fill_times_missing_ops_interleaved_a_chunk_at_a_time(monkeypatch):
    batches = fake_machine(monkeypatch, levels=[1.0] * 4)
    lut = LatencyLUT({spec_key(lin(1, 1)): 1.0}, make_op=OpFactory(), warmup=1, repeats=3)
    chunks_done = []
    specs = [lin(1, 1), lin(1, 2), lin(1, 3), lin(1, 2), lin(1, 4), lin(1, 5), lin(1, 6)]
    assert lut.fill(specs, chunk=2, after_chunk=lambda: chunks_done.append(len(lut)), anchors=0) == 5
    assert batches == [[2, 3], [4, 5], [6]]  # distinct and missing only, in order
    assert chunks_done == [3, 5, 6] and lut.num_measured == 5
    assert lut.latency_ms(lin(1, 4)) == 4.0 and lut.latency_ms(lin(1, 1)) == 1.0
    assert lut.fill(specs) == 0 and len(batches) == 3  # nothing missing: nothing timed
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        lut.fill([lin(2, 2)], chunk=0)
    with pytest.raises(ValueError, match="anchors must be >= 0"):
        lut.fill([lin(2, 2)], anchors=-1)
    with pytest.raises(KeyError, match="cannot measure 1 ops: this LUT has no make_op"):
        LatencyLUT().fill([lin(2, 2)])


def test_fill_brings_every_chunk_to_the_level_of_the_first_with_anchors(monkeypatch):
    """The machine runs at another speed for each chunk; re-timing ops of the table with each chunk keeps
    the entries' ratios exact, where chunks timed without anchors carry their own speed."""
    levels = [1.0, 3.0, 0.5, 2.0]
    specs = [lin(1, b) for b in range(1, 11)]
    batches = fake_machine(monkeypatch, levels)
    lut = LatencyLUT(make_op=OpFactory(), warmup=0, repeats=1)
    lut.fill(specs, chunk=3, anchors=2)
    assert lut.entries == pytest.approx({spec_key(s): float(s["out"]) for s in specs})
    # the first chunk has nothing to anchor to; the others re-time the fastest and slowest op so far
    assert batches == [[1, 2, 3], [4, 5, 6, 1, 3], [7, 8, 9, 1, 6], [10, 1, 9]]

    batches.clear()
    unanchored = LatencyLUT(make_op=OpFactory(), warmup=0, repeats=1)
    unanchored.fill(specs, chunk=3, anchors=0)
    assert unanchored.latency_ms(lin(1, 4)) == 3.0 * 4 and unanchored.latency_ms(lin(1, 7)) == 0.5 * 7


def test_predict_is_the_sum_of_entries():
    lut = LatencyLUT({spec_key(lin(1, 1)): 1.5, spec_key(lin(2, 2)): 0.25})
    assert lut.predict([lin(1, 1), lin(2, 2), lin(1, 1)]) == pytest.approx(3.25)
    assert lut.predict([]) == 0.0


def test_unknown_op_without_make_op_raises_clear_keyerror():
    lut = LatencyLUT({spec_key(lin(1, 1)): 1.0})
    with pytest.raises(KeyError, match=r'"in":3.*not in the latency LUT.*no make_op'):
        lut.predict([lin(1, 1), lin(3, 3)])


def test_unknown_op_is_measured_lazily_once():
    factory = OpFactory()
    lut = LatencyLUT({spec_key(lin(1, 1)): 1.0}, make_op=factory, warmup=0, repeats=2)
    first = lut.predict([lin(1, 1), lin(4, 4)])
    second = lut.predict([lin(4, 4), lin(1, 1)])
    assert factory.calls == [spec_key(lin(4, 4))]
    assert first == pytest.approx(second) and first > 1.0


def test_save_load_round_trip(tmp_path):
    factory = OpFactory()
    lut = LatencyLUT.build([lin(2, 3), lin(3, 2)], factory, threads=1, warmup=0, repeats=2)
    path = lut.save(tmp_path / "sub" / "lut.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lut.json"]  # no temp file left behind
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["settings"]["repeats"] == 2
    assert data["meta"]["machine"] == machine_info(1)

    loaded = LatencyLUT.load(path)
    assert loaded.entries == lut.entries and loaded.repeats == 2
    arch = [lin(2, 3), lin(3, 2), lin(2, 3)]
    assert loaded.predict(arch) == pytest.approx(lut.predict(arch))
    with pytest.raises(KeyError):
        loaded.predict([lin(9, 9)])
    with_factory = LatencyLUT.load(path, make_op=factory)
    with_factory.predict([lin(9, 9)])
    assert factory.calls[-1] == spec_key(lin(9, 9)) and len(with_factory) == 3


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "lut.json"
    LatencyLUT({spec_key(lin(1, 1)): 1.0}).save(path)
    LatencyLUT({spec_key(lin(2, 2)): 2.0}).save(path)
    assert LatencyLUT.load(path).entries == {spec_key(lin(2, 2)): 2.0}


def test_load_refuses_a_table_from_another_machine(tmp_path, monkeypatch):
    path = LatencyLUT({spec_key(lin(1, 1)): 1.0}).save(tmp_path / "lut.json")
    monkeypatch.setattr(machine, "cpu_model", lambda: "Some Other CPU")
    with pytest.raises(
        MachineMismatchError, match=r"lut.json was measured elsewhere \(cpu .* vs 'Some Other CPU' here\)"
    ):
        LatencyLUT.load(path)
    assert LatencyLUT.load(path, check=False).entries == {spec_key(lin(1, 1)): 1.0}  # to inspect it
    monkeypatch.undo()
    with pytest.raises(MachineMismatchError, match="threads 1 vs 2 here"):
        LatencyLUT.load(path, threads=2)
    unmarked = tmp_path / "old.json"
    unmarked.write_text(json.dumps({"version": 1, "meta": {"host": {}}, "entries": {}}))
    with pytest.raises(MachineMismatchError, match="does not say which machine"):
        LatencyLUT.load(unmarked)


def test_load_rejects_other_versions(tmp_path):
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({"version": 99, "entries": {}}))
    with pytest.raises(ValueError, match="version"):
        LatencyLUT.load(path)


def test_summarize_errors_against_reference():
    predicted, measured = [1.1, 1.8, 3.3, 3.9], [1.0, 2.0, 3.0, 4.0]
    mape, mpe, rho = summarize_errors(predicted, measured)
    rel = (np.array(predicted) - np.array(measured)) / np.array(measured)
    assert mape == pytest.approx(np.mean(np.abs(rel)) * 100)  # (10 + 10 + 10 + 2.5) / 4 = 8.125 %
    assert mape == pytest.approx(8.125)
    assert mpe == pytest.approx(np.mean(rel) * 100)
    assert rho == pytest.approx(stats.spearmanr(predicted, measured).statistic) == pytest.approx(1.0)
    _, _, rho_reversed = summarize_errors([4.0, 3.0, 2.0, 1.0], measured)
    assert rho_reversed == pytest.approx(-1.0)


def test_lut_error_structure():
    factory = OpFactory()
    archs = [{"widths": [8, 8]}, {"widths": [8, 32, 8]}, {"widths": [16, 16]}]

    def layer_specs(arch):
        w = arch["widths"]
        return [lin(a, b) for a, b in zip(w[:-1], w[1:])]

    def build_model(arch):  # waveform [1, T] -> its first w[0] samples -> the linear stack
        w = arch["widths"]
        return nn.Sequential(_Crop(w[0]), *(nn.Linear(a, b) for a, b in zip(w[:-1], w[1:])))

    lut = LatencyLUT(make_op=factory, warmup=0, repeats=2)
    result = lut_error(lut, archs, build_model, layer_specs, num_samples=64, warmup=0, repeats=2)
    assert len(result.rows) == 3
    for row, arch in zip(result.rows, archs):
        assert row["arch"] == arch
        assert row["predicted_ms"] > 0 and row["measured_ms"] > 0
        assert row["predicted_ms"] == pytest.approx(sum(lut.entries[spec_key(s)] for s in layer_specs(arch)))
        assert row["rel_error"] == pytest.approx(
            (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"]
        )
    # the summary is that of the rows (not just numbers in range)
    predicted, measured = ([row[k] for row in result.rows] for k in ("predicted_ms", "measured_ms"))
    rel_errors = [row["rel_error"] for row in result.rows]
    assert result.mean_abs_pct_error == pytest.approx(100 * np.mean(np.abs(rel_errors)))
    assert result.mean_pct_error == pytest.approx(100 * np.mean(rel_errors))
    assert result.spearman == pytest.approx(stats.spearmanr(predicted, measured).statistic, nan_ok=True)
    assert len(factory.calls) == 4  # distinct ops: 8->8, 8->32, 32->8, 16->16
    # a deeper stack of the same op is predicted slower, in proportion (no new op measured)
    deeper = lut.predict(layer_specs({"widths": [8, 8, 8]}))
    assert deeper == pytest.approx(2 * result.rows[0]["predicted_ms"]) and len(factory.calls) == 4


class _Crop(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, wave):
        return wave[:, : self.n]


def test_lut_on_sam_space_ops():
    from ersam_ssl.models import SAMSpace, layer_specs, make_op

    arch = SAMSpace().smallest()
    specs = [s for s in layer_specs(arch, num_samples=8000) if s["op"] != "frontend"]
    lut = LatencyLUT.build(specs, make_op, warmup=0, repeats=2)
    assert len(lut) == len({spec_key(s) for s in specs})
    assert lut.predict(specs) > 0
