import dataclasses
import itertools
import json

import numpy as np
import pytest

from ersam_ssl.nas.config import COST_METRICS, BudgetConfig, SearchConfig
from ersam_ssl.nas.evaluate import score_of
from ersam_ssl.nas.results import (
    budget_violations,
    choose,
    pareto_front,
    plot_pareto,
    write_candidates,
)


def _brute_force_front(points):
    pts = np.asarray(points)
    keep = []
    for i, p in enumerate(pts):
        dominated = any((q <= p).all() and (q < p).any() for j, q in enumerate(pts) if j != i)
        duplicate_before = any((pts[j] == p).all() for j in range(i))
        if not dominated and not duplicate_before:
            keep.append(i)
    return sorted(keep, key=lambda i: tuple(pts[i]))


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    points = [tuple(p) for p in rng.integers(0, 8, size=(30, 2)).astype(float)]
    assert pareto_front(points) == _brute_force_front(points)
    assert pareto_front([]) == []


def test_every_budget_is_one_limit_on_a_cost_metric():
    budget = BudgetConfig(max_latency_ms=1.0, max_energy_mw=2.0, max_macs=3.0)
    assert budget.limits() == {"latency_ms": 1.0, "avg_power_mw": 2.0, "macs": 3.0}
    assert tuple(budget.limits()) == COST_METRICS
    budget_fields = [f.name for f in dataclasses.fields(BudgetConfig) if f.name.startswith("max_")]
    assert sorted(budget.limits().values()) == sorted(getattr(budget, f) for f in budget_fields)


def test_budget_violations_and_choice():
    cfg = SearchConfig(budget=BudgetConfig(max_latency_ms=5.0, max_energy_mw=0.8, max_macs=1e7))
    ok = {"latency_ms": 4.0, "avg_power_mw": 0.7, "macs": 9e6}
    assert budget_violations(ok, cfg) == []
    bad = {"latency_ms": 6.0, "avg_power_mw": 0.9, "macs": 2e7}
    assert [v.split()[0] for v in budget_violations(bad, cfg)] == ["latency_ms", "avg_power_mw", "macs"]
    assert budget_violations({**ok, "latency_ms": None}, cfg) == []  # latency not measured: no verdict
    assert score_of({"accuracy": 0.8, "mae": 0.5}, 0.1) == pytest.approx(0.75)
    records = [
        {"index": 0, "score": 0.9, "within_budget": False, "avg_power_mw": 0.5, "macs": 1},
        {"index": 1, "score": 0.7, "within_budget": True, "avg_power_mw": 0.6, "macs": 1},
        {"index": 2, "score": 0.7, "within_budget": True, "avg_power_mw": 0.5, "macs": 1},
        {"index": 3, "score": 0.6, "within_budget": True, "avg_power_mw": 0.1, "macs": 1},
    ]
    assert choose(records)["index"] == 2
    with pytest.raises(RuntimeError, match="budget"):
        choose(records[:1])


def test_outputs_are_written(tmp_path):
    cfg = SearchConfig(budget=BudgetConfig(max_energy_mw=0.7))
    arch = {"width_mult": 0.5, "head": "gru", "stages": []}
    records = [
        {
            "index": i,
            "source": "evolution",
            "arch": arch,
            "score": s,
            "accuracy": s,
            "error_rate": 1 - s,
            "mae": m,
            "macs": 10 + i,
            "params": 5,
            "latency_ms": lat,
            "avg_power_mw": p,
            "within_budget": True,
        }
        for i, (s, m, lat, p) in enumerate(itertools.product([0.5, 0.7], [0.3], [2.0, 3.0], [0.6, 0.65]))
    ]
    write_candidates(records, [{"arch": arch, "macs": 99, "violations": ["macs"]}], tmp_path, chosen=3)
    data = json.loads((tmp_path / "candidates.json").read_text())
    assert [r["chosen"] for r in data["candidates"]] == [i == 3 for i in range(len(records))]
    assert data["rejected"][0]["violations"] == ["macs"]
    lines = (tmp_path / "candidates.csv").read_text().splitlines()
    assert len(lines) == len(records) + 1 and lines[0].startswith("index,source,score")
    png = plot_pareto(records, tmp_path / "pareto.png", 3, cfg)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_search_cli_resolves_and_rejects_configs(capsys):
    from ersam_ssl.nas.cli import main

    assert main(["out_dir=/tmp/x", "--print-config", "space.kernels=[3,5]", "budget.max_latency_ms=4"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["space"] == {"kernels": [3, 5]} and resolved["budget"]["max_latency_ms"] == 4.0
    assert main(["bogus=1"]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err
    assert main(["space.kernels=[4]"]) == 2  # the space itself validates
    assert main(["search.strategy=grid"]) == 2
    assert SearchConfig(space={"kernels": (3,)}).sam_space.kernels == (3,)


def test_export_fails_loudly_when_onnx_disagrees(small_engine, tmp_path):
    import torch

    from ersam_ssl.models import SAMSpace, build_model
    from ersam_ssl.nas.config import ExportConfig
    from ersam_ssl.nas.search import ExportMismatchError, export_member

    space = SAMSpace(depths=(1,), width_mults=(0.5,), stage_widths=(8,), stage_strides=(2,), stem_width=8)
    torch.manual_seed(0)
    model = build_model(space.smallest(), num_classes=small_engine.num_classes, space=space).eval()
    cfg = SearchConfig(export=ExportConfig(quantize="none", max_abs_diff=-1.0, repeats=1))
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export_member(model, small_engine, cfg, tmp_path)
    report = json.loads((tmp_path / "export.json").read_text())  # written before failing
    assert report["test"]["onnx_fp32"]["max_abs_diff"] < 1e-4 and "onnx_int8" not in report["test"]
