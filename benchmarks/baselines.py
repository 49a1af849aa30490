"""Supervised baselines: CountNet's CRNN vs the default SAM model, same data and same compute budget.

Both counters are trained with :class:`~ersam_ssl.ssl.base.SupervisedCounter` on every labeled clip of the
data engine's pool (``labels_per_class=-1``), with the same optimizer, learning-rate schedule, number of
optimizer steps, batch size and augmentation view, then evaluated on the speaker-disjoint test split
(:func:`ersam_ssl.metrics.evaluate`). The CRNN's per-bin input standardisation is fitted on training clips
first (CountNet's ``StandardScaler``; :meth:`~ersam_ssl.models.CountNetCRNN.fit_normalizer`).

One table: error rate, MAE, parameters, MACs per 5 s window (:func:`ersam_ssl.hw.count_macs`),
single-thread latency in PyTorch and ONNX Runtime (ratios to the CRNN measured in the same run),
modelled Pixel 3 energy per inference and average power for one inference every 5 s over 12 h
(:func:`ersam_ssl.hw.report_energy`), and training wall time. Confusion matrices go to ``--out``.

References: Stöter et al., "CountNet", IEEE/ACM TASLP 2019 (CRNN); Li et al., "ERSAM", ICASSP 2023.

    python benchmarks/baselines.py                                   # embedded synthesized corpus
    python benchmarks/baselines.py --root /work/shared/data/librispeech-mini --steps 60
    python benchmarks/baselines.py --measure-only                    # time one training step of each model

The CRNN costs ~3 G MACs per 5 s clip (250x the SAM default): on a 2-core CPU one batch of 16 takes
5-12 s, so the default budget (120 steps of 16 clips, under 1 epoch of the pool) keeps the whole run
within ~30-40 min. Raise ``--steps`` on a bigger machine; compare models only within one run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from ersam_ssl.data import DataConfig, DataEngine
from ersam_ssl.hw import count_macs, load_profile, measure_onnx_latency, measure_torch_latency, report_energy
from ersam_ssl.metrics import evaluate, plot_confusion
from ersam_ssl.models import CountNetCRNN, create_model
from ersam_ssl.ssl.base import OptimConfig, SupervisedCounter
from ersam_ssl.ssl.methods import datamodule_for
from ersam_ssl.trainer import TrainerConfig, fit

from common import (
    LIBRI_TEST_SUBSETS,
    Timer,
    fit_crnn_normaliser,
    librispeech_config,
    quiet_lightning,
    result_record,
    timed,
    write_result,
)

MODELS = ("crnn", "sam")
LABELS = {"crnn": "CountNet CRNN", "sam": "SAM default"}


def data_config(args: argparse.Namespace) -> DataConfig:
    fields = dict(labels_per_class=-1, seed=args.seed, batch_size=args.batch, num_workers=args.workers)
    if args.test_size:
        fields["test_size"] = args.test_size
    if args.root:
        return librispeech_config(args.root, args.subset_split, **fields)
    return DataConfig(**fields)


def build_model(name: str, engine: DataEngine, normalizer_clips: int, seed: int):
    pl.seed_everything(seed, workers=True, verbose=False)
    if name == "crnn":
        return fit_crnn_normaliser(
            CountNetCRNN(num_classes=engine.num_classes), engine.pool, normalizer_clips, seed
        )
    return create_model(name, num_classes=engine.num_classes)


def lr_of(name: str, args: argparse.Namespace) -> float:
    return {"crnn": args.lr_crnn, "sam": args.lr_sam}[name]


def measure_steps(engine: DataEngine, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per training step (forward, backward, AdamW) of each model on one real batch."""
    pool = engine.pool
    x = torch.stack([pool[i][0] for i in range(args.batch)])
    y = torch.stack([pool[i][1] for i in range(args.batch)])
    out = {}
    for name in MODELS:
        model = build_model(name, engine, 64, args.seed).train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr_of(name, args))
        times = []
        for _ in range(3):
            with timed() as t:
                loss = model.head.loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times.append(t.s)
        out[name] = float(np.median(times[1:]))
    return out


def run_model(name: str, engine: DataEngine, args: argparse.Namespace, out: Path) -> dict:
    model = build_model(name, engine, args.normalizer_clips, args.seed)
    module = SupervisedCounter(model, OptimConfig(lr=lr_of(name, args)))
    labeled = engine.budget[0]
    dm = datamodule_for(SupervisedCounter, engine, labeled_indices=labeled, batch_size=args.batch,
                        num_workers=args.workers)  # fmt: skip
    cfg = TrainerConfig(max_steps=args.steps, checkpoint_every_steps=args.steps, log_every_steps=10,
                        progress_bar=False, limit_val_batches=0.0)  # fmt: skip
    with timed() as train:
        fit(module, dm, cfg, out / name, name=name, resume=False)
    with timed() as evaluation:
        metrics = evaluate(model, dm.test_dataloader())
    plot_confusion(metrics["confusion"], out / f"confusion_{name}.png",
                   title=f"{LABELS[name]}: error {100 * metrics['error_rate']:.1f}%, MAE {metrics['mae']:.2f}")  # fmt: skip
    n = engine.config.mixture.num_samples
    report = count_macs(model, n)
    torch_ms = measure_torch_latency(model, n, threads=1, warmup=2, repeats=args.latency_repeats).median_ms
    onnx_ms = None
    if not args.no_onnx:
        onnx_ms = measure_onnx_latency(model, n, threads=1, warmup=2, repeats=args.latency_repeats).median_ms
    energy = report_energy(report.macs, args.profile, period_s=5.0, hours=12.0)
    return {
        "model": name,
        "labeled_clips": int(labeled.size),
        "test_clips": len(engine.test),
        "steps": args.steps,
        "train_s": train.s,
        "s_per_step": train.s / max(args.steps, 1),
        "eval_s": evaluation.s,
        "error_rate": metrics["error_rate"],
        "mae": metrics["mae"],
        "accuracy": metrics["accuracy"],
        "level_accuracy": metrics["level_accuracy"],
        "per_count_mae": metrics["per_count_mae"],
        "confusion": metrics["confusion"],
        "params": report.params,
        "macs": report.macs,
        "torch_ms": torch_ms,
        "onnx_ms": onnx_ms,
        "energy_mj": energy.energy_mj_per_inference,
        "avg_power_mw": energy.avg_power_mw,
        "device_latency_ms": energy.device_latency_ms,
    }


def print_table(rows: list[dict], profile: str) -> None:
    ref = next(r for r in rows if r["model"] == "crnn")

    def ratio(r: dict, key: str) -> str:
        if r[key] is None or not ref[key]:
            return "-"
        return f"{r[key]:.1f} ({r[key] / ref[key]:.3f}x)"

    header = (f"{'model':14s} {'err %':>6s} {'MAE':>5s} {'params':>8s} {'MMACs':>15s} {'torch ms (xCRNN)':>18s} "
              f"{'ORT ms (xCRNN)':>17s} {profile + ' mJ':>10s} {'mW@12h':>7s} {'train min':>9s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        macs = f"{r['macs'] / 1e6:.1f} ({r['macs'] / ref['macs']:.4f}x)"
        print(f"{LABELS[r['model']]:14s} {100 * r['error_rate']:6.1f} {r['mae']:5.2f} {r['params']:8d} {macs:>15s} "
              f"{ratio(r, 'torch_ms'):>18s} {ratio(r, 'onnx_ms'):>17s} {r['energy_mj']:10.3f} "
              f"{r['avg_power_mw']:7.3f} {r['train_s'] / 60:9.1f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="LibriSpeech-layout corpus (default: embedded synthesized)")
    p.add_argument("--subset-split", action="append", default=None,
                   help="'subset:split' pinning a subset to a split (default with --root: test-other:test)")  # fmt: skip
    p.add_argument("--steps", type=int, default=120, help="optimizer steps per model (same for both)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr-crnn", type=float, default=1e-3,
                   help="CRNN learning rate (1e-3, Adam's default as in CountNet; 3e-3 collapses it to a constant)")  # fmt: skip
    p.add_argument("--lr-sam", type=float, default=3e-3, help="SAM learning rate (the project default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (augmentation)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--normalizer-clips", type=int, default=256, help="training clips for the CRNN scaler")
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime latency")
    p.add_argument("--test-size", type=int, default=None, help="test clips (default: DataConfig's 660)")
    p.add_argument("--profile", default="pixel3")
    p.add_argument("--out", default="runs/baselines")
    p.add_argument("--measure-only", action="store_true", help="time a training step of each model and exit")
    args = p.parse_args()
    if args.root and args.subset_split is None:
        args.subset_split = list(LIBRI_TEST_SUBSETS)
    quiet_lightning()
    torch.set_num_threads(args.threads)
    load_profile(args.profile)  # fail early on a bad profile name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    clock = Timer()
    engine = DataEngine(data_config(args))
    with timed() as data:
        summary = engine.summary()
    print(f"data: {json.dumps(summary)} (built in {data.s:.0f} s)")
    if args.measure_only:
        steps = measure_steps(engine, args)
        for name, s in steps.items():
            print(f"{LABELS[name]}: {s:.2f} s per step of {args.batch} clips → {args.steps} steps ≈ "
                  f"{s * args.steps / 60:.1f} min")  # fmt: skip
        return
    print(f"budget: {args.steps} steps × {args.batch} clips ({args.steps * args.batch / len(engine.budget[0]):.2f} "
          f"epochs of {len(engine.budget[0])} labeled clips), AdamW (lr CRNN {args.lr_crnn}, SAM {args.lr_sam}), "
          f"warm-up + cosine, weak view, seed "
          f"{args.seed}, {args.threads} training threads\n")  # fmt: skip
    rows = []
    for name in MODELS:
        r = run_model(name, engine, args, out)
        print(f"{LABELS[name]}: trained in {r['train_s'] / 60:.1f} min ({r['s_per_step']:.2f} s/step), "
              f"test error {100 * r['error_rate']:.1f}%, MAE {r['mae']:.2f} (eval {r['eval_s']:.0f} s)", flush=True)  # fmt: skip
        rows.append(r)
    total = clock.s
    print(f"\nSame data ({rows[0]['labeled_clips']} labeled clips, {rows[0]['test_clips']} test clips), same budget; "
          f"latency: 1 thread, median of {args.latency_repeats}, 5 s window; energy: {args.profile} model, "
          f"one inference per 5 s, 12 h.\n")  # fmt: skip
    print_table(rows, args.profile)
    print(f"\ntotal wall time {total / 60:.1f} min; confusion matrices and results.json in {out}")
    write_result(out / "results.json",
                 result_record("baselines", settings=vars(args), data=summary, rows=rows, total_s=total))  # fmt: skip


if __name__ == "__main__":
    main()
