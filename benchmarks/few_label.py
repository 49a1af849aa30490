"""Few-label benchmark: how much of the gap to full supervision do the semi-supervised methods close?

For every seed (which varies speaker splits, mixtures, the choice of labeled clips and the initialisation)
and every label budget (labeled clips per count class) it trains, with the same backbone, the same number
of optimizer steps and the same labeled batch size:

* ``supervised``       — the labeled clips only;
* ``simclr+finetune``  — SimCLR pretraining on the whole (unlabeled) pool, then supervised fine-tuning;
* ``fixmatch``         — FixMatch on labeled + unlabeled pool clips;
* ``simclr+fixmatch``  — FixMatch starting from the pretrained encoder;
* ``fixmatch+mixing``  — (largest budget only) FixMatch plus the count-aware mixing loss;

plus the fully supervised reference (every pool clip labeled). Pretraining runs once per seed and is shared
by all budgets of that seed (it never sees a label); its steps are counted and reported separately. The
test set is the engine's speaker-disjoint test split in the clinical scenario; validation (other speakers)
is used only by ``--tune``. The table reports error rate and MAE (mean ± std over seeds) and, for every
semi-supervised method, the share of the supervised-few → fully-supervised gap it closes:
``(err_sup_few − err_method) / (err_sup_few − err_full)``.

    python benchmarks/few_label.py                               # embedded synthesized corpus, defaults
    python benchmarks/few_label.py --quick                       # smoke test (~1 min on an idle box)
    python benchmarks/few_label.py --tune                        # validation grid for every method
    python benchmarks/few_label.py --source librispeech --root /data/LibriSpeech --max-speakers 10
    # one process per seed (more throughput on a shared box), then one table:
    python benchmarks/few_label.py --seeds 0 --out s0.json --work-dir w   # ... and --seeds 1, 2
    python benchmarks/few_label.py --merge s0.json s1.json s2.json

Cost (2-core CPU box): one training step of the largest SAM model on 32 two-second clips takes ~0.12 s
with one thread; a FixMatch step sees 3x the clips, a pretraining step 2x. The defaults (200 steps,
3 seeds, 3 budgets) add up to ~16 000 step-equivalents, ~45 min on an idle box (estimate). Torch runs
with one intra-op thread (``--threads``): on a shared, busy box two OpenMP threads spin-wait and a step
became 15x slower in a measurement (7.3 s vs 0.49 s). ``--resume`` continues an interrupted run from
its ``--out`` JSON and ``--work-dir`` (pretraining included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from ersam_ssl.checkpoint import load_weights
from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig, SAMDataModule, ViewDataset, label_budget
from ersam_ssl.models import SAMSpace, build_model
from ersam_ssl.ssl import (
    ContrastivePretrain,
    Finetune,
    FinetuneConfig,
    FixMatch,
    FixMatchConfig,
    OptimConfig,
    SimCLRConfig,
    SupervisedCounter,
    views_of,
)
from ersam_ssl.trainer import TrainerConfig, make_trainer

from common import Timer, librispeech_config, quiet_lightning, result_record, timed, write_result

SSL_METHODS = ("simclr+finetune", "fixmatch", "simclr+fixmatch")
EXTRA_METHOD = "fixmatch+mixing"


class PoolDataModule(SAMDataModule):
    """Labeled = the budget's clips; unlabeled = every pool clip (their labels are hidden), as FixMatch does.

    Using the whole pool as the unlabeled set keeps it identical across budgets, so the pretrained encoder
    of a seed can be shared by all budgets. (A few-label set is repeated to one pool's length per epoch by
    ``DataConfig.min_epoch_items``, see :func:`data_config`.)
    """

    def unlabeled_dataset(self) -> ViewDataset:
        pool = self.engine.pool
        return ViewDataset(pool, self.unlabeled_views or {}, indices=np.arange(len(pool)), hide_label=True)


@dataclass(frozen=True)
class Settings:
    """Everything that defines one benchmark run (printed and stored in the JSON)."""

    source: str = "synth"
    root: str | None = None
    arch: str = "largest"
    seeds: tuple[int, ...] = (0, 1, 2)
    budgets: tuple[int, ...] = (1, 5, 10)
    steps: int = 200
    pretrain_steps: int = 200
    batch_size: int = 32
    unlabeled_batch_size: int = 32
    pretrain_batch_size: int = 32
    max_speakers: int = 5
    duration: float = 2.0
    pool_size: int = 1200
    val_size: int = 240
    test_size: int = 480
    lr: float = 3e-3
    # Chosen on validation (``--tune``: seed 100, 10 labels/class): fixed threshold 0.95 beat FlexMatch
    # (whose warm-up keeps every threshold near 0 in a short schedule) and threshold 0.8.
    fixmatch: FixMatchConfig = field(default_factory=lambda: FixMatchConfig(threshold=0.95, flexmatch=False))
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    mixing: bool = True
    workers: int = 0
    threads: int = 1


def data_config(s: Settings, seed: int) -> DataConfig:
    mixture = MixtureConfig(max_speakers=s.max_speakers, duration=s.duration)
    fields = dict(
        seed=seed, mixture=mixture, pool_size=s.pool_size, val_size=s.val_size, test_size=s.test_size,
        labels_per_class=max(s.budgets), batch_size=s.batch_size, unlabeled_batch_size=s.unlabeled_batch_size,
        num_workers=s.workers,
        # With 6-60 labeled clips an epoch would be a single batch, and Lightning's per-epoch overhead
        # (seconds on this machine) would dominate the run time: an epoch repeats them to a pool's length
        # (at least the library's default epoch).
        min_epoch_items=max(s.pool_size, DataConfig.min_epoch_items),
    )  # fmt: skip
    if s.source == "librispeech":
        return librispeech_config(s.root, **fields)
    return DataConfig(source=s.source, root=s.root, **fields)


def new_model(s: Settings, num_classes: int, seed: int):
    pl.seed_everything(seed, workers=True, verbose=False)
    return build_model(getattr(SAMSpace(), s.arch)(), num_classes=num_classes)


def train(module, datamodule, steps: int, out_dir: Path, validate: bool = False) -> pl.Trainer:
    cfg = TrainerConfig(max_steps=steps, checkpoint_every_steps=max(steps, 1), log_every_steps=10,
                        progress_bar=False, limit_val_batches=1.0 if validate else 0.0)  # fmt: skip
    trainer = make_trainer(cfg, out_dir)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def evaluate(module, datamodule, split: str) -> dict:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)  # fmt: skip
    if split == "test":
        trainer.test(module, datamodule=datamodule, verbose=False)
        return module.test_results
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return module.val_results


class Runner:
    """Trains and evaluates the methods of one seed (engine and pretrained encoder shared)."""

    def __init__(self, s: Settings, seed: int, work: Path, split: str = "test") -> None:
        self.s, self.seed, self.split = s, seed, split
        self.work = work / f"seed{seed}"
        self.engine = DataEngine(data_config(s, seed))
        self.num_classes = self.engine.num_classes
        self.optim = OptimConfig(lr=s.lr)
        self._pretrained: Path | None = None
        self.pretrain_seconds = 0.0
        self.runs = 0

    def datamodule(self, method, labeled: np.ndarray | None, batch_size: int | None = None) -> PoolDataModule:
        lab_views, unl_views = views_of(method)
        return PoolDataModule(self.engine, labeled_views=lab_views, unlabeled_views=unl_views,
                              labeled_indices=labeled, batch_size=batch_size or self.s.batch_size,
                              unlabeled_batch_size=self.s.unlabeled_batch_size)  # fmt: skip

    def labeled(self, budget: int) -> np.ndarray:
        return label_budget(self.engine.pool.counts(), budget, seed=self.seed, num_classes=self.num_classes)[
            0
        ]

    def pretrained(self) -> Path:
        if self._pretrained is None:
            with timed() as clock:
                module = ContrastivePretrain.simclr(self.model(), self.s.simclr, self.optim, probe=None)
                dm = PoolDataModule(self.engine, labeled_views=None, unlabeled_views=module.UNLABELED_VIEWS,
                                    unlabeled_batch_size=self.s.pretrain_batch_size)  # fmt: skip
                path = self.work / "pretrain" / "checkpoints" / "last.ckpt"
                # a restarted benchmark reuses the finished pretraining of its work dir
                if not path.is_file():
                    train(module, dm, self.s.pretrain_steps, self.work / "pretrain")
            self._pretrained = path
            self.pretrain_seconds = clock.s
        return self._pretrained

    def model(self):
        return new_model(self.s, self.num_classes, self.seed)

    def run(self, method: str, budget: int, overrides: dict | None = None) -> dict:
        """Train ``method`` on ``budget`` labels per class (-1: all) and evaluate it on the chosen split."""
        s = replace(self.s, **(overrides or {}))
        if method not in VARIANTS:
            raise ValueError(f"unknown method {method!r}: choose one of {sorted(VARIANTS)}")
        labeled = self.labeled(budget)
        module = VARIANTS[method](self, s, OptimConfig(lr=s.lr))
        with timed() as clock:
            dm = self.datamodule(module, labeled)
            self.runs += 1
            train(module, dm, s.steps, self.work / f"{self.runs:02d}-{method}-b{budget}")
        result = evaluate(module, dm, self.split)
        return {"method": method, "budget": budget, "seed": self.seed, "error_rate": result["error_rate"],
                "mae": result["mae"], "train_seconds": clock.s, "overrides": overrides or {},
                "labeled": int(labeled.size)}  # fmt: skip


def _fixmatch(runner: Runner, s: Settings, optim: OptimConfig, pretrained: bool = False, **changes):
    model = runner.model()
    if pretrained:
        load_weights(model, runner.pretrained())
    config = replace(s.fixmatch, **changes)
    return FixMatch(model, optim, config, num_unlabeled=len(runner.engine.pool))


#: The compared variants: a training method of ``ersam_ssl.ssl`` with its starting point and settings.
VARIANTS = {
    "supervised": lambda r, s, optim: SupervisedCounter(r.model(), optim),
    "simclr+finetune": lambda r, s, optim: Finetune.from_pretrained(r.model(), r.pretrained(), optim, s.finetune),
    "fixmatch": lambda r, s, optim: _fixmatch(r, s, optim),
    "simclr+fixmatch": lambda r, s, optim: _fixmatch(r, s, optim, pretrained=True),
    EXTRA_METHOD: lambda r, s, optim: _fixmatch(r, s, optim, lambda_mix=1.0),
}


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(results: list[dict], s: Settings) -> list[dict]:
    rows = []
    by = {}
    for r in results:
        by.setdefault((r["budget"], r["method"]), []).append(r)
    full = by.get((-1, "supervised"), [])
    err_full = mean_std([r["error_rate"] for r in full])[0] if full else float("nan")
    order = ["supervised", *SSL_METHODS, EXTRA_METHOD]

    def position(key: tuple[int, str]) -> tuple[float, int, str]:
        budget, method = key
        return (budget if budget >= 0 else float("inf"), order.index(method) if method in order else len(order),
                method)  # fmt: skip

    for (budget, method), rs in sorted(by.items(), key=lambda kv: position(kv[0])):
        err = mean_std([r["error_rate"] for r in rs])
        mae = mean_std([r["mae"] for r in rs])
        gap = None
        sup = by.get((budget, "supervised"))
        if method != "supervised" and sup and budget >= 0:
            err_sup = mean_std([r["error_rate"] for r in sup])[0]
            denom = err_sup - err_full
            gap = (err_sup - err[0]) / denom if abs(denom) > 1e-9 else float("nan")
        rows.append({"budget": budget, "method": method, "error_rate": err, "mae": mae, "gap_closed": gap,
                     "seeds": len(rs), "train_seconds": float(np.mean([r["train_seconds"] for r in rs]))})  # fmt: skip
    return rows


def print_table(rows: list[dict], file=sys.stdout) -> None:
    print(f"{'labels/class':>12}  {'method':<18} {'error rate':>15} {'MAE':>15} {'gap closed':>11} {'s/run':>7}",
          file=file)  # fmt: skip
    for r in rows:
        budget = "all" if r["budget"] < 0 else str(r["budget"])
        gap = "" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f} %"
        print(f"{budget:>12}  {r['method']:<18} {r['error_rate'][0]:>7.3f} ± {r['error_rate'][1]:.3f}"
              f" {r['mae'][0]:>7.3f} ± {r['mae'][1]:.3f} {gap:>11} {r['train_seconds']:>7.0f}", file=file)  # fmt: skip


def tune(s: Settings, work: Path, seed: int, budget: int, methods: list[str]) -> list[dict]:
    """Three validation runs per method at one budget and a tuning seed not used for testing."""
    grid = {
        "supervised": [{"lr": lr} for lr in (1e-3, 3e-3, 1e-2)],
        "simclr+finetune": [{"finetune": FinetuneConfig(*fc)} for fc in ((0, 1.0), (0, 0.3), (s.steps // 8, 1.0))],
        "fixmatch": [{"fixmatch": FixMatchConfig(threshold=t, flexmatch=f)} for t, f in
                     ((0.95, False), (0.95, True), (0.8, False))],
    }  # fmt: skip
    runner = Runner(s, seed, work, split="val")
    out = []
    for method, configs in grid.items():
        if method not in methods:
            continue
        for overrides in configs:
            r = runner.run(method, budget, overrides)
            shown = {
                k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in overrides.items()
            }
            print(
                f"[tune] {method:<16} {shown}  val err {r['error_rate']:.3f}  mae {r['mae']:.3f}  "
                f"({r['train_seconds']:.0f} s)",
                flush=True,
            )
            out.append({**r, "overrides": shown})
    return out


def parse(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    ap.add_argument("--source", default=d.source, choices=["synth", "librispeech", "folder"])
    ap.add_argument("--root", default=None)
    ap.add_argument("--arch", default=d.arch, choices=["default", "largest", "smallest"])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    ap.add_argument("--budgets", type=int, nargs="+", default=list(d.budgets))
    ap.add_argument("--steps", type=int, default=d.steps, help="optimizer steps of every method")
    ap.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    ap.add_argument("--max-speakers", type=int, default=d.max_speakers)
    ap.add_argument("--duration", type=float, default=d.duration)
    ap.add_argument("--pool-size", type=int, default=d.pool_size)
    ap.add_argument("--val-size", type=int, default=d.val_size)
    ap.add_argument("--test-size", type=int, default=d.test_size)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--unlabeled-batch-size", type=int, default=d.unlabeled_batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--threshold", type=float, default=d.fixmatch.threshold)
    ap.add_argument("--flexmatch", action="store_true", help="FlexMatch class-wise thresholds")
    ap.add_argument("--no-mixing", action="store_true", help="skip the count-aware mixing row")
    ap.add_argument("--methods", nargs="+", default=["supervised", *SSL_METHODS], choices=sorted(VARIANTS),
                    help="subset to run")
    ap.add_argument("--workers", type=int, default=d.workers)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    ap.add_argument("--tune", action="store_true", help="validation grid (seed 100, largest budget) instead")
    ap.add_argument("--out", default="few_label_results.json")
    ap.add_argument("--work-dir", default=None, help="checkpoints/logs (default: a temporary folder)")
    ap.add_argument("--resume", action="store_true", help="skip runs already in --out (same --work-dir)")
    ap.add_argument(
        "--merge", nargs="+", default=None, help="print the table of result JSONs (e.g. one per seed)"
    )
    a = ap.parse_args(argv)
    s = Settings(source=a.source, root=a.root, arch=a.arch, seeds=tuple(a.seeds), budgets=tuple(a.budgets),
                 steps=a.steps, pretrain_steps=a.pretrain_steps, max_speakers=a.max_speakers,
                 duration=a.duration, pool_size=a.pool_size, val_size=a.val_size, test_size=a.test_size,
                 batch_size=a.batch_size, unlabeled_batch_size=a.unlabeled_batch_size,
                 pretrain_batch_size=a.unlabeled_batch_size, lr=a.lr,
                 fixmatch=FixMatchConfig(threshold=a.threshold, flexmatch=a.flexmatch),
                 mixing=not a.no_mixing, workers=a.workers, threads=a.threads)  # fmt: skip
    if a.quick:
        s = replace(s, arch="default", seeds=(0,), budgets=(10,), steps=20, pretrain_steps=20, max_speakers=3,
                    duration=2.0, pool_size=160, val_size=40, test_size=40, batch_size=16,
                    unlabeled_batch_size=16, pretrain_batch_size=16)  # fmt: skip
    return s, a


#: Settings that must agree between merged result files (and that the merged table's header reports).
MERGE_KEYS = ("source", "root", "arch", "budgets", "steps", "pretrain_steps", "batch_size", "unlabeled_batch_size",
              "pretrain_batch_size", "max_speakers", "duration", "pool_size", "val_size", "test_size", "lr")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    s, a = parse(argv)
    torch.set_num_threads(s.threads)
    quiet_lightning()
    clock = Timer()
    if a.merge:
        blobs = [json.loads(Path(p).read_text()) for p in a.merge]
        # The table describes the runs being merged, not this command's defaults; refuse to mix settings.
        scalar = {k: v for k, v in blobs[0]["settings"].items() if k in MERGE_KEYS}
        for path, b in zip(a.merge, blobs):
            other = {k: v for k, v in b["settings"].items() if k in MERGE_KEYS}
            if other != scalar:
                raise SystemExit(
                    f"{path}: settings differ from {a.merge[0]}; merge runs of one configuration"
                )
        results = [r for b in blobs for r in b["results"]]
        pretrain = {k: v for b in blobs for k, v in b["pretrain_seconds"].items()}
        seeds = sorted({r["seed"] for r in results})
        s = replace(
            s, seeds=tuple(seeds), **{k: tuple(v) if isinstance(v, list) else v for k, v in scalar.items()}
        )
        report(s, summarise(results, s), pretrain, max(b["wall_seconds"] or 0.0 for b in blobs))
        return

    work = Path(a.work_dir or tempfile.mkdtemp(prefix="few_label_"))
    print(f"settings: {json.dumps(asdict(s), default=str)}\nwork dir: {work}", flush=True)
    if a.tune:
        results = tune(s, work, seed=100, budget=max(s.budgets), methods=a.methods)
        write_result(a.out, result_record("few_label", argv, settings=asdict(s), tune=results))
        print(f"wall time {clock.s:.0f} s")
        return

    out = Path(a.out)
    results, pretrain = [], {}
    if a.resume and out.is_file():
        previous = json.loads(out.read_text())
        results, pretrain = previous["results"], {int(k): v for k, v in previous["pretrain_seconds"].items()}
    done = {(r["seed"], r["method"], r["budget"]) for r in results}

    def save(wall: float | None = None, rows: list | None = None) -> None:
        write_result(out, result_record("few_label", argv, settings=asdict(s), results=results, summary=rows,
                                        pretrain_seconds=pretrain, wall_seconds=wall))  # fmt: skip

    for seed in s.seeds:
        runner = Runner(s, seed, work)
        runner.engine.pool  # noqa: B018  - render once, before timing the methods
        print(f"seed {seed}: {json.dumps(runner.engine.summary())}", flush=True)
        # Largest budget first (the headline comparison), so an interrupted run has reported it already.
        jobs = [("supervised", -1)]
        for budget in sorted(s.budgets, reverse=True):
            jobs += [(m, budget) for m in a.methods]
            if budget == max(s.budgets) and s.mixing and "fixmatch" in a.methods:
                jobs.append((EXTRA_METHOD, budget))
        for method, budget in jobs:
            if (seed, method, budget) in done:
                continue
            r = runner.run(method, budget)
            results.append(r)
            pretrain[seed] = max(pretrain.get(seed, 0.0), runner.pretrain_seconds)
            save()
            print(f"  seed {seed} budget {budget:>3} {method:<16} err {r['error_rate']:.3f} mae {r['mae']:.3f} "
                  f"({r['train_seconds']:.0f} s, {r['labeled']} labeled)", flush=True)  # fmt: skip
    wall = clock.s
    rows = summarise(results, s)
    report(s, rows, pretrain, wall)
    save(wall, rows)


def report(s: Settings, rows: list[dict], pretrain: dict, wall: float) -> None:
    print(
        f"\nFew-label speaker counting ({s.source}, arch={s.arch}, {s.max_speakers + 1} classes, "
        f"{s.duration:g} s clips, test = speaker-disjoint clinical split, {len(s.seeds)} seeds)"
    )
    print(f"every method: {s.steps} optimizer steps, labeled batch {s.batch_size}; SSL unlabeled batch "
          f"{s.unlabeled_batch_size}; SimCLR pretraining: {s.pretrain_steps} extra steps (batch "
          f"{s.pretrain_batch_size} x 2 views) per seed, shared by all budgets "
          f"(mean {np.mean(list(pretrain.values())):.0f} s)")  # fmt: skip
    print_table(rows)
    target = [
        r for r in rows if r["budget"] == 10 and r["gap_closed"] is not None and np.isfinite(r["gap_closed"])
    ]
    if target:
        best = max(target, key=lambda r: r["gap_closed"])
        verdict = "met" if best["gap_closed"] >= 0.7 else "NOT met"
        print(
            f"goal (>= 70 % of the gap closed at 10 labels/class): {verdict} "
            f"(best: {best['method']}, {100 * best['gap_closed']:.0f} %)"
        )
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
