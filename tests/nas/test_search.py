import csv
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("nni")

from conftest import small_data, tiny_space  # noqa: E402
from ersam_ssl.checkpoint import load_model  # noqa: E402
from ersam_ssl.hw import count_macs  # noqa: E402
from ersam_ssl.models import build_model  # noqa: E402
from ersam_ssl.nas.config import (  # noqa: E402
    BudgetConfig,
    ExportConfig,
    ProxylessConfig,
    SearchConfig,
    StrategyConfig,
    SubnetFinetuneConfig,
    SupernetConfig,
)
from ersam_ssl.nas.nni_space import label_choices  # noqa: E402
from ersam_ssl.nas.search import run_search  # noqa: E402
from ersam_ssl.trainer import TrainerConfig  # noqa: E402

pytestmark = pytest.mark.nas

TINY = tiny_space()
NUM_SAMPLES = 8000


def _macs(arch: dict) -> int:
    return count_macs(build_model(arch, num_classes=4, space=TINY), NUM_SAMPLES).macs


def test_evolution_search_end_to_end_from_the_cli(tmp_path, librispeech_tree):
    from ersam_ssl.cli import main

    budget = (_macs(TINY.smallest()) + _macs(TINY.largest())) / 2
    preset = {
        "data": {"source": "librispeech", "root": str(librispeech_tree), **small_data()},
        "space": TINY.to_dict(),
        "supernet": {"steps": 2, "batch_size": 4, "unlabeled_batch_size": 8},
        "budget": {
            "latency": "lut",
            "num_samples": NUM_SAMPLES,
            "warmup": 0,
            "repeats": 1,
            "max_energy_mw": None,
            "max_macs": budget,
        },
        "search": {
            "trials": 3,
            "population_size": 2,
            "sample_size": 1,
            "calib_batches": 1,
            "calib_batch_size": 8,
        },
        "finetune": {"steps": 1},
        "export": {"repeats": 1},
        "trainer": {"progress_bar": False, "checkpoint_every_steps": 2, "log_every_steps": 1},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(preset))
    out = tmp_path / "run"
    # key=value first: the top-level parser's REMAINDER does not take a leading "--config" (reported).
    assert (
        main(
            [
                "search",
                f"out_dir={out}",
                "--config",
                str(tmp_path / "search.yaml"),
                "search.strategy=evolution",
            ]
        )
        == 0
    )

    result = json.loads((out / "candidates.json").read_text())
    records = result["candidates"]
    assert len(records) == 3 and all(r["source"] == "evolution" for r in records)
    for r in records:
        assert {"accuracy", "error_rate", "mae", "macs", "params", "latency_ms", "avg_power_mw"} <= set(r)
        assert r["within_budget"] and r["macs"] <= budget and r["latency_ms"] > 0
        assert r["error_rate"] == pytest.approx(1 - r["accuracy"])
    assert all(r["macs"] > budget for r in result["rejected"])  # filtered before evaluation
    with open(out / "candidates.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [json.loads(row["arch"]) for row in rows] == [r["arch"] for r in records]
    chosen = [r for r in records if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["score"] == max(r["score"] for r in records)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    arch = json.loads((out / "arch.json").read_text())
    assert arch == chosen[0]["arch"]
    model = load_model(out / "model.pt")
    rebuilt = build_model(arch, num_classes=4, space=TINY)
    rebuilt.load_state_dict(model.state_dict())  # strict: the searched dict rebuilds the same model
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost"]["macs"] <= budget and set(summary["timings_s"]) >= {"supernet_s", "search_s"}

    export = json.loads((out / "export.json").read_text())
    torch_m, fp32, int8 = (export["test"][k] for k in ("torch", "onnx_fp32", "onnx_int8"))
    assert fp32["max_abs_diff"] < 1e-3 and fp32["error_rate"] == torch_m["error_rate"]
    assert torch_m["mae"] == pytest.approx(summary["test"]["mae"])
    assert int8["agreement"] >= 0.5 and export["latency_1_thread"]["onnx_int8_ms"] > 0
    assert (out / "nni" / ".experiment").is_file()  # NNI's manifest stays inside the run folder


def test_proxyless_search_end_to_end(tmp_path, small_engine):
    cfg = SearchConfig(
        out_dir=str(tmp_path / "run"),
        space=TINY.to_dict(),
        data=small_engine.config,
        supernet=SupernetConfig(steps=2, batch_size=4, unlabeled_batch_size=8),
        budget=BudgetConfig(latency="none", num_samples=NUM_SAMPLES, max_energy_mw=None),
        search=StrategyConfig(strategy="proxyless", calib_batches=1, calib_batch_size=8),
        proxyless=ProxylessConfig(
            steps=2,
            batch_size=4,
            samples=3,
            penalty_metric="macs",
            penalty_baseline=float(_macs(TINY.smallest())),
        ),
        finetune=SubnetFinetuneConfig(steps=0),
        export=ExportConfig(enabled=False),
        trainer=TrainerConfig(progress_bar=False, checkpoint_every_steps=2, log_every_steps=1),
    )
    summary = run_search(cfg, small_engine)
    out = Path(cfg.out_dir)
    records = json.loads((out / "candidates.json").read_text())["candidates"]
    assert records[0]["source"] == "proxyless_argmax" and 1 <= len(records) <= 4
    assert all(r["latency_ms"] is None and r["macs"] > 0 for r in records)
    probabilities = json.loads((out / "proxyless" / "probabilities.json").read_text())
    assert {k: list(v) for k, v in probabilities.items()} == label_choices(TINY)
    for dist in probabilities.values():
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-5)
    TINY.validate(summary["arch"])
    assert not (out / "model.onnx").exists() and (out / "model.pt").is_file()
