"""Mixture generation throughput vs. what training consumes (same run, same machine).

Prints five-second mixtures generated per second per core for the clean and clinical scenarios (one
process, one thread), the same through a DataLoader with worker processes, the cost of the augmentation
views, and the training consumption of the default SAM model (forward + backward, one thread), so that the
"data is >= 10x faster than training" claim is a measured ratio. Writes ``benchmarks/results/data_throughput.json``
(the README's table is rendered from it).

    python benchmarks/data_throughput.py            # embedded synthesized corpus
    python benchmarks/data_throughput.py --source librispeech --root /data/LibriSpeech
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.utils.data import DataLoader

from common import RESULTS, result_record, timed, write_result


def rate(fn, n: int) -> float:
    fn(0)  # warm-up (lazy banks, caches)
    with timed() as clock:
        for i in range(1, n + 1):
            fn(i)
    return n / clock.s


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="synth", choices=["synth", "librispeech", "folder"])
    ap.add_argument("--root", default=None)
    ap.add_argument("--n", type=int, default=1000, help="mixtures per measurement")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "data_throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from ersam_ssl.data import DataConfig, DataEngine, ViewDataset

    with timed() as build:
        engine = DataEngine(DataConfig(source=args.source, root=args.root, seed=args.seed))
        bank = engine.bank
    print(f"corpus: {engine.source.summary()} | bank built in {build.s:.1f} s "
          f"({bank.stats().seconds / 3600:.2f} h of speech)")  # fmt: skip

    rows = []
    for scenario in ("clean", "clinical"):
        ds = engine.mixtures("train", args.n + 1, scenario)
        rows.append((f"{scenario} mixtures, 1 core", rate(lambda i, d=ds: d.generate(i), args.n)))
    clinical = engine.mixtures("train", args.n + 1, "clinical")
    for views in ({"weak": "weak", "strong": "strong"}, {"v1": "strong", "v2": "strong"}):
        vd = ViewDataset(clinical, views)
        name = "+".join(views.values())
        rows.append((f"clinical + {name} views, 1 core", rate(lambda i, d=vd: d[i], args.n // 4)))
    for scenario in ("clean", "clinical"):
        ds = engine.mixtures("train", args.n, scenario)
        loader = DataLoader(ds, batch_size=32, num_workers=args.workers)
        with timed() as clock:
            n = sum(x.shape[0] for x, _ in loader)
        total = n / clock.s
        rows.append(
            (f"{scenario} via DataLoader, {args.workers} workers (per core)", total / max(args.workers, 1))
        )

    from ersam_ssl.models import build_model

    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(32, engine.config.mixture.num_samples) * 0.05
    y = torch.randint(0, engine.num_classes, (32,))

    def step(_):
        opt.zero_grad()
        model.head.loss(model(x), y).backward()
        opt.step()

    train = rate(step, 10) * 32
    print(f"\n{'measurement':<52} {'items/s':>10} {'x training':>11}")
    for name, r in rows:
        print(f"{name:<52} {r:>10.1f} {r / train:>10.1f}x")
    print(f"{'training consumption (default SAM, fwd+bwd, 1 thread)':<52} {train:>10.1f} {1.0:>10.1f}x")
    clean = rows[0][1]
    goals = {"clean mixtures >= 500/s/core": clean >= 500, "clean generation >= 10x training": clean >= 10 * train}
    print(f"\ngoals ({clean:.0f} clean mixtures/s/core, {clean / train:.1f}x training): "
          + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))  # fmt: skip
    result = result_record(
        "data_throughput", argv, source=engine.source.summary(), bank_build_s=round(build.s, 1),
        items_per_s={name: round(r, 1) for name, r in rows}, training_items_per_s=round(train, 1), goals=goals,
    )  # fmt: skip
    print(f"wrote {write_result(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
