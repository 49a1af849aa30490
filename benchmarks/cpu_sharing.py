"""Training-step time alone vs beside a competing CPU-bound process, per OpenMP wait policy and thread count.

Each configuration runs in its own process (OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads):

* ``spin``    — the old behaviour: ``OMP_WAIT_POLICY`` unset, torch imported before ersam_ssl;
* ``passive`` — what ``import ersam_ssl`` now sets (``OMP_WAIT_POLICY=PASSIVE``).

For each, 1 and 2 intra-op threads, and three steps: supervised (SAM default, 32 clips of 5 s), SimCLR
(largest member, 2 x 32 clips), FixMatch (largest, 16 labeled + 2 x 32 unlabeled). The competitor is one
busy Python loop (what another user's job looks like to the scheduler). Reported: median seconds per step
and the slow-down ratio beside the competitor, measured in the same run.

    python benchmarks/cpu_sharing.py                 # ~5 min on 2 idle cores; writes results/cpu_sharing.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import result_record, timed, write_result

HERE = Path(__file__).resolve().parent
METHODS = ("supervised", "simclr", "fixmatch")


def child(policy: str, threads: int, steps: int) -> dict:
    """Runs inside the measuring process: time ``steps`` optimizer steps of each method."""
    if policy == "spin":
        os.environ.pop("OMP_WAIT_POLICY", None)
        import torch  # noqa: F401  - before ersam_ssl, so its PASSIVE default cannot apply
    import torch

    import ersam_ssl  # noqa: F401
    from ersam_ssl.models import SAMSpace, build_model
    from ersam_ssl.ssl import ContrastivePretrain, FixMatch, SupervisedCounter

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    space = SAMSpace()
    n = 80000

    def clips(b: int) -> torch.Tensor:
        return 0.05 * torch.randn(b, n)

    setups = {
        "supervised": (SupervisedCounter(build_model(space.default())), {"x": clips(32), "y": torch.randint(0, 11, (32,))}),
        "simclr": (ContrastivePretrain.simclr(build_model(space.largest())), {"v1": clips(32), "v2": clips(32)}),
        "fixmatch": (
            FixMatch(build_model(space.largest())),
            {"labeled": {"x": clips(16), "y": torch.randint(0, 11, (16,))},
             "unlabeled": {"weak": clips(32), "strong": clips(32), "idx": torch.arange(32)}},
        ),
    }  # fmt: skip
    out = {}
    for name, (module, batch) in setups.items():
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        module.train()
        times = []
        for i in range(steps + 2):
            with timed() as step:
                loss = module.training_step(batch, i)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if i >= 2:
                times.append(step.s)
        times.sort()
        out[name] = times[len(times) // 2]
    return out


def measure(policy: str, threads: int, steps: int, compete: bool) -> dict:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if compete else None
    try:
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        r = subprocess.run(
            [sys.executable, __file__, "--child", policy, str(threads), str(steps)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=str(HERE / "results" / "cpu_sharing.json"))
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), int(a.child[2]))))
        return
    rows = []
    print(f"{'policy':8} {'threads':>7} {'method':11} {'alone s':>8} {'shared s':>8} {'slow-down':>9}")
    for policy in ("spin", "passive"):
        for threads in (1, 2):
            alone = measure(policy, threads, a.steps, compete=False)
            shared = measure(policy, threads, a.steps, compete=True)
            for m in METHODS:
                row = {"policy": policy, "threads": threads, "method": m, "alone_s": round(alone[m], 4),
                       "shared_s": round(shared[m], 4), "slowdown": round(shared[m] / alone[m], 2)}  # fmt: skip
                rows.append(row)
                print(f"{policy:8} {threads:>7} {m:11} {row['alone_s']:8.3f} {row['shared_s']:8.3f} "
                      f"{row['slowdown']:8.2f}x")  # fmt: skip
    write_result(a.out, result_record("cpu_sharing", argv, benchmark="cpu_sharing", cpus=os.cpu_count(),
                                      steps=a.steps, rows=rows))  # fmt: skip
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
