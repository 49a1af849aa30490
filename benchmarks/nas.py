"""ERSAM-style searched counter vs CountNet's CRNN, same data and same optimizer-step budget (one run).

Pipeline of the searched model (:func:`ersam_ssl.nas.run_search`): the largest member of the SAM space is
trained on the few labels plus the unlabeled pool (FixMatch when ``ersam_ssl.ssl.fixmatch`` is available,
otherwise supervised on the labels), initialises a weight-sharing supernet that is trained with the
sandwich rule, in-place distillation and uncertainty-weighted distillation from that model, NNI's
regularized evolution searches members with inherited weights under a latency and an energy budget, and
the chosen member is fine-tuned briefly and exported to ONNX (fp32 + int8). CountNet's CRNN is trained
supervised on the same labeled clips for as many optimizer steps (batches of the same size) as all
training stages of the searched model together.

Printed: MACs ratio, 1-thread CPU latency ratio in PyTorch and ONNX Runtime (measured in the same run,
interleaved), test error rate and MAE of both, modelled Pixel 3 average power ("mW·12 h", ERSAM reports
40 mW·12 h for its model) and the wall time of supernet training + search, with the goals they meet.

    python benchmarks/nas.py --out runs/bench_nas                 # embedded synthesized corpus
    python benchmarks/nas.py --pretrain-steps 60 --supernet-steps 60 --finetune-steps 20 --trials 40

References: Li et al., "ERSAM", ICASSP 2023; Stöter et al., "CountNet", IEEE/ACM TASLP 2019.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from ersam_ssl.checkpoint import load_model, save_model
from ersam_ssl.data import DataConfig, DataEngine, SAMDataModule
from ersam_ssl.export import compare_with_torch, export_onnx, quantize_onnx
from ersam_ssl.hw import count_macs, measure_onnx_latency, measure_torch_latency, report_energy
from ersam_ssl.metrics import evaluate
from ersam_ssl.models import CountModel, CountNetCRNN, SAMSpace, build_model
from ersam_ssl.nas import SearchConfig, run_search
from ersam_ssl.nas.config import (
    BudgetConfig,
    ExportConfig,
    StrategyConfig,
    SubnetFinetuneConfig,
    SupernetConfig,
)
from ersam_ssl.ssl import FixMatch, OptimConfig, SupervisedCounter, datamodule_for
from ersam_ssl.trainer import TrainerConfig, fit

from common import fit_crnn_normaliser, quiet_lightning, result_record, timed, write_result

ERSAM_MW_12H = 40.0
GOALS = {"macs_ratio": 50.0, "latency_ratio": 20.0, "energy_mw": 4.0, "wall_min": 15.0}


def bench_trainer(steps: int) -> TrainerConfig:
    """Same Trainer settings for both models: no validation during training, 4 checkpoints."""
    return TrainerConfig(
        max_steps=steps,
        checkpoint_every_steps=max(1, steps // 4),
        progress_bar=False,
        limit_val_batches=0.0,
        log_every_steps=10,
    )


def train_largest(engine: DataEngine, steps: int, out: Path, batch: int, lr: float) -> Path:
    """Train the largest SAM member with FixMatch on the few labels + unlabeled clips."""
    model = build_model(SAMSpace().largest(), num_classes=engine.num_classes)
    module = FixMatch(model, OptimConfig(lr=lr), levels=engine.levels)
    datamodule = datamodule_for(FixMatch, engine, batch_size=batch, unlabeled_batch_size=2 * batch)
    fit(module, datamodule, bench_trainer(steps), out, name="largest_fixmatch")
    return save_model(model.eval(), out / "model.pt", extra={"method": "fixmatch", "steps": steps})


def train_crnn(engine: DataEngine, steps: int, out: Path, batch: int, lr: float, seed: int) -> CountNetCRNN:
    """CountNet's CRNN, supervised on the labeled budget (its per-bin scaler fitted on pool clips)."""
    pl.seed_everything(seed, workers=True, verbose=False)
    model = fit_crnn_normaliser(CountNetCRNN(num_classes=engine.num_classes), engine.pool, 256, seed)
    module = SupervisedCounter(model, OptimConfig(lr=lr), engine.levels)
    datamodule = SAMDataModule(engine, labeled_views={"x": "weak"}, batch_size=batch)
    fit(module, datamodule, bench_trainer(steps), out, name="crnn")
    save_model(model.eval(), out / "model.pt", extra={"steps": steps})
    return model


def latencies(models: dict[str, CountModel], onnx: dict[str, Path], num_samples: int, repeats: int) -> dict:
    """1-thread medians; the models are timed in alternation so load changes hit both alike."""
    times: dict[str, list[float]] = {f"{k}_torch": [] for k in models} | {f"{k}_ort": [] for k in onnx}
    rounds = 5
    for _ in range(rounds):
        for name, model in models.items():
            times[f"{name}_torch"].append(
                measure_torch_latency(model, num_samples, threads=1, warmup=2, repeats=repeats).median_ms
            )
        for name, path in onnx.items():
            times[f"{name}_ort"].append(
                measure_onnx_latency(path, num_samples, threads=1, warmup=2, repeats=repeats).median_ms
            )
    return {k: float(np.median(v)) for k, v in times.items()}


def train_and_search(engine: DataEngine, args: argparse.Namespace, out: Path) -> dict:
    """Stage 1: every training run and the search; returns what the report needs (also ``stage1.json``)."""
    method = "fixmatch"
    with timed() as pretrain:
        init = train_largest(engine, args.pretrain_steps, out / "largest", args.batch, args.lr)
    print(f"largest member ({method}, {args.pretrain_steps} steps): {pretrain.s / 60:.1f} min", flush=True)
    cfg = SearchConfig(
        out_dir=str(out / "search"),
        seed=args.seed,
        init=str(init),
        teacher=str(init),
        data=engine.config,
        supernet=SupernetConfig(
            steps=args.supernet_steps, batch_size=args.batch, unlabeled_batch_size=2 * args.batch
        ),
        budget=BudgetConfig(max_latency_ms=args.max_latency_ms, max_energy_mw=args.max_energy_mw),
        search=StrategyConfig(strategy="evolution", trials=args.trials),
        finetune=SubnetFinetuneConfig(steps=args.finetune_steps),
        export=ExportConfig(repeats=args.latency_repeats),
        trainer=TrainerConfig(progress_bar=False, checkpoint_every_steps=50, log_every_steps=10),
    )
    summary = run_search(cfg, engine)
    print(f"search: {json.dumps(summary['timings_s'])}", flush=True)
    crnn_steps = args.crnn_steps or args.pretrain_steps + args.supernet_steps + args.finetune_steps
    with timed() as crnn_clock:
        crnn = train_crnn(engine, crnn_steps, out / "crnn", args.batch, args.lr, args.seed)
    test = SAMDataModule(engine, labeled_views={"x": "weak"}, batch_size=args.batch).test_dataloader()
    crnn_test = {k: v for k, v in evaluate(crnn, test).items() if k in ("mae", "error_rate", "accuracy")}
    stage1 = {
        "method": method,
        "pretrain_s": pretrain.s,
        "crnn_steps": crnn_steps,
        "crnn_s": crnn_clock.s,
        "crnn_test": crnn_test,
        "summary": summary,
    }
    write_result(out / "stage1.json", stage1)
    return stage1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_nas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="labeled clips per step (every model)")
    p.add_argument("--pretrain-steps", type=int, default=100, help="largest member on labels + unlabeled")
    p.add_argument("--supernet-steps", type=int, default=100)
    p.add_argument("--finetune-steps", type=int, default=40)
    p.add_argument("--crnn-steps", type=int, default=None, help="default: the three stages' sum")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument(
        "--max-latency-ms", type=float, default=3.0, help="LUT latency budget (this CPU, 1 thread)"
    )
    p.add_argument("--max-energy-mw", type=float, default=GOALS["energy_mw"])
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--latency-repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument(
        "--remeasure", action="store_true", help="reuse a finished run in --out; measure and report"
    )
    args = p.parse_args()
    quiet_lightning()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, workers=True, verbose=False)

    engine = DataEngine(DataConfig(seed=args.seed, batch_size=args.batch))
    print(f"data: {json.dumps(engine.summary())}", flush=True)
    if args.remeasure:
        stage1 = json.loads((out / "stage1.json").read_text())
    else:
        stage1 = train_and_search(engine, args, out)
    report(engine, stage1, args, out)


def report(engine: DataEngine, stage1: dict, args: argparse.Namespace, out: Path) -> None:
    """Stage 2: costs and latencies of both models (same run), the table and the goals."""
    n = engine.config.mixture.num_samples
    summary, crnn_test, crnn_steps = stage1["summary"], stage1["crnn_test"], stage1["crnn_steps"]
    searched = load_model(out / "search" / "model.pt")
    crnn = load_model(out / "crnn" / "model.pt")
    # The int8 export keeps the log-mel frontend fp32 (dynamic quantization); two variants show the
    # alternatives: an int8 frontend, and static QDQ quantization calibrated on training clips.
    fp32 = out / "search" / "model.onnx"
    variants = {
        "int8_frontend": quantize_onnx(
            fp32, out / "search" / "model.int8_frontend.onnx", quantize_frontend=True
        ),
        "int8_static": quantize_onnx(
            fp32,
            out / "search" / "model.int8_static.onnx",
            "static",
            calibration=torch.stack([engine.pool[i][0] for i in range(0, len(engine.pool), 34)]).split(16),
        ),
    }
    test = SAMDataModule(engine, labeled_views={"x": "weak"}, batch_size=args.batch).test_dataloader()
    variant_test = compare_with_torch(searched, variants, test)
    onnx = {
        "sam": fp32,
        "sam_int8": out / "search" / "model.int8.onnx",
        **{f"sam_{k}": v for k, v in variants.items()},
        "crnn": export_onnx(crnn, out / "crnn" / "model.onnx", n),
    }
    lat = latencies({"sam": searched, "crnn": crnn}, onnx, n, args.latency_repeats)
    macs = {"sam": count_macs(searched, n).macs, "crnn": count_macs(crnn, n).macs}
    power = {k: report_energy(v, "pixel3", period_s=5.0, hours=12.0).avg_power_mw for k, v in macs.items()}
    sam_test = summary["test"]
    int8_test = summary["export"]["test"]["onnx_int8"]
    rows = {
        "CountNet CRNN": (crnn_test, macs["crnn"], lat["crnn_torch"], lat["crnn_ort"], power["crnn"]),
        "searched SAM": (sam_test, macs["sam"], lat["sam_torch"], lat["sam_ort"], power["sam"]),
        "  int8 (ORT)": (int8_test, macs["sam"], None, lat["sam_int8_ort"], power["sam"]),
        "  int8 frontend too": (
            variant_test["int8_frontend"],
            macs["sam"],
            None,
            lat["sam_int8_frontend_ort"],
            power["sam"],
        ),
        "  int8 static QDQ": (
            variant_test["int8_static"],
            macs["sam"],
            None,
            lat["sam_int8_static_ort"],
            power["sam"],
        ),
    }
    print(
        f"\nTest set: {len(engine.test)} clips, 0..{engine.num_classes - 1} speakers; labels: "
        f"{engine.budget[0].size} clips ({engine.config.labels_per_class}/class), unlabeled: "
        f"{engine.budget[1].size}. Latency: 1 thread, one 5 s window, median of 5 interleaved rounds."
    )
    header = (
        f"{'model':18s} {'err %':>6s} {'MAE':>5s} {'MMACs':>8s} {'MACs x':>7s} {'torch ms':>9s} {'x':>6s} "
        f"{'ORT ms':>8s} {'x':>6s} {'mW·12h':>7s}"
    )
    print(header)
    print("-" * len(header))
    for name, (metrics, m, t_ms, o_ms, mw) in rows.items():
        t_txt = f"{t_ms:9.2f} {lat['crnn_torch'] / t_ms:6.1f}" if t_ms else f"{'-':>9s} {'-':>6s}"
        print(
            f"{name:18s} {100 * metrics['error_rate']:6.1f} {metrics['mae']:5.2f} {m / 1e6:8.1f} "
            f"{macs['crnn'] / m:7.1f} {t_txt} {o_ms:8.2f} {lat['crnn_ort'] / o_ms:6.1f} {mw:7.3f}"
        )
    print(
        f"{'ERSAM (paper)':18s} {'':>6s} {'':>5s} {'':>8s} {'':>7s} {'':>9s} {'':>6s} {'':>8s} {'':>6s} "
        f"{ERSAM_MW_12H:7.1f}"
    )
    timings = summary["timings_s"]
    wall_min = (timings["supernet_s"] + timings["search_s"]) / 60
    print(f"\nsearched arch: {json.dumps(summary['arch'])}")
    print(
        f"search: {summary['evaluated']} members evaluated, {summary['rejected']} over budget rejected; "
        f"val error {100 * summary['val']['error_rate']:.1f}%, LUT latency {summary['cost']['latency_ms']:.2f} ms"
    )
    print(
        f"training steps (batch {args.batch}): searched = {args.pretrain_steps} ({stage1['method']}, largest "
        f"member) + {args.supernet_steps} (supernet) + {args.finetune_steps} (fine-tune); CRNN = {crnn_steps} "
        f"(supervised, {stage1['crnn_s'] / 60:.1f} min)"
    )
    print(
        f"wall time: largest member {stage1['pretrain_s'] / 60:.1f} min, supernet + search {wall_min:.1f} min "
        f"(supernet {timings['supernet_s'] / 60:.1f}, search {timings['search_s'] / 60:.1f}), "
        f"fine-tune {timings['finetune_s'] / 60:.1f}, export {timings.get('export_s', 0) / 60:.1f}"
    )
    goals = {
        f"MACs >= {GOALS['macs_ratio']:.0f}x fewer": macs["crnn"] / macs["sam"] >= GOALS["macs_ratio"],
        f"torch latency >= {GOALS['latency_ratio']:.0f}x lower": lat["crnn_torch"] / lat["sam_torch"]
        >= GOALS["latency_ratio"],
        f"ORT latency >= {GOALS['latency_ratio']:.0f}x lower": lat["crnn_ort"] / lat["sam_ort"]
        >= GOALS["latency_ratio"],
        "MAE no worse than the CRNN": sam_test["mae"] <= crnn_test["mae"],
        f"modelled power <= {GOALS['energy_mw']:.0f} mW·12h": power["sam"] <= GOALS["energy_mw"],
        f"supernet + search < {GOALS['wall_min']:.0f} min": wall_min < GOALS["wall_min"],
    }
    print("\ngoals: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    result = result_record(
        "nas",
        args=vars(args),
        arch=summary["arch"],
        latency_ms=lat,
        macs=macs,
        avg_power_mw=power,
        crnn_test=crnn_test,
        sam_test=sam_test,
        int8_test=int8_test,
        variant_test=variant_test,
        goals=goals,
        timings_s={**timings, "pretrain_s": stage1["pretrain_s"], "crnn_s": stage1["crnn_s"]},
    )
    write_result(out / "bench.json", result)


if __name__ == "__main__":
    main()
