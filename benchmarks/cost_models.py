"""Cost of CountNet's CRNN vs members of the SAM search space, and the accuracy of the latency LUT.

Prints (1) params, MACs, single-thread PyTorch and ONNX Runtime latency per 5 s window (ratios to the CRNN
measured in the same run) and modelled device energy / average power over 12 h; (2) how well a per-op
latency LUT built on the ops of random architectures predicts the measured latency of other random
architectures (mean absolute % error and Spearman rank correlation, which is what search relies on).

    python benchmarks/cost_models.py [--repeats 30] [--lut-archs 20] [--test-archs 10] [--profile pixel3]
"""

from __future__ import annotations

import argparse
import random
from functools import partial

import torch

from ersam_ssl.hw import (
    LatencyLUT,
    count_macs,
    load_profile,
    lut_error,
    measure_onnx_latency,
    measure_torch_latency,
    report_energy,
    spec_key,
)
from ersam_ssl.models import SAMSpace, build_model, layer_specs, make_op
from ersam_ssl.models.crnn import CountNetCRNN

from common import timed


def cost_table(args: argparse.Namespace) -> None:
    space = SAMSpace()
    profile = load_profile(args.profile)
    models = {
        "CountNet CRNN": CountNetCRNN(),
        "SAM smallest": build_model(space.smallest()),
        "SAM default": build_model(space.default()),
        "SAM largest": build_model(space.largest()),
    }
    rows = []
    for name, model in models.items():
        report = count_macs(model, args.num_samples)
        torch_ms = measure_torch_latency(
            model, args.num_samples, threads=args.threads, warmup=args.warmup, repeats=args.repeats
        ).median_ms
        onnx_ms = measure_onnx_latency(
            model, args.num_samples, threads=args.threads, warmup=args.warmup, repeats=args.repeats
        ).median_ms
        energy = report_energy(report.macs, profile, period_s=5.0, hours=12.0)
        rows.append((name, report, torch_ms, onnx_ms, energy))

    crnn_macs, crnn_torch, crnn_onnx = rows[0][1].macs, rows[0][2], rows[0][3]
    print(
        f"\nPer 5 s window ({args.num_samples} samples), {args.threads} thread(s), median of {args.repeats} runs;"
    )
    print(f"energy modelled for profile {profile.name!r} ({profile.description}).\n")
    header = (
        f"{'model':<15} {'params':>9} {'MMACs':>9} {'xCRNN':>7} {'torch ms':>9} {'xCRNN':>7} "
        f"{'ORT ms':>8} {'xCRNN':>7} {'mJ/inf':>8} {'mW (12h)':>9} {'mWh/12h':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, report, torch_ms, onnx_ms, energy in rows:
        print(
            f"{name:<15} {report.params:>9,d} {report.macs / 1e6:>9.1f} {report.macs / crnn_macs:>7.4f} "
            f"{torch_ms:>9.2f} {torch_ms / crnn_torch:>7.4f} {onnx_ms:>8.2f} {onnx_ms / crnn_onnx:>7.4f} "
            f"{energy.energy_mj_per_inference:>8.2f} {energy.avg_power_mw:>9.3f} {energy.energy_mwh:>8.2f}"
        )
    frontend = count_macs(models["SAM default"].frontend, args.num_samples).macs
    print(
        f"\nHost throughput on the CRNN: {crnn_macs / crnn_torch / 1e6:.2f} GMAC/s (torch), "
        f"{crnn_macs / crnn_onnx / 1e6:.2f} GMAC/s (ORT). SAM log-mel frontend (eager, FFT estimate): "
        f"{frontend / 1e6:.2f} MMACs."
    )


def lut_accuracy(args: argparse.Namespace) -> None:
    space = SAMSpace()
    rng = random.Random(args.seed)
    specs_of = partial(layer_specs, num_samples=args.num_samples)
    train_archs = [space.sample(rng) for _ in range(args.lut_archs)]
    test_archs = [space.sample(rng) for _ in range(args.test_archs)]

    with timed() as build:
        specs = [spec for arch in train_archs for spec in specs_of(arch)]
        lut = LatencyLUT.build(specs, make_op, threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    # Ops of the test archs that no training arch contains are measured lazily; count them.
    test_ops = {spec_key(s) for arch in test_archs for s in specs_of(arch)}
    unseen = len(test_ops - set(lut.entries))
    if args.lut_out:
        lut.save(args.lut_out)

    result = lut_error(
        lut,
        test_archs,
        build_model,
        specs_of,
        num_samples=args.num_samples,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
    )
    print(
        f"\nLatency LUT: {len(lut)} distinct ops from {args.lut_archs} random archs, built in {build.s:.1f} s; "
        f"{unseen} of the {len(test_ops)} distinct ops of the {args.test_archs} test archs were not in it."
    )
    print(f"{'arch':<5} {'predicted ms':>13} {'measured ms':>12} {'rel. error':>11}")
    for i, row in enumerate(result.rows):
        print(
            f"{i:<5} {row['predicted_ms']:>13.2f} {row['measured_ms']:>12.2f} {row['rel_error'] * 100:>10.1f}%"
        )
    print(
        f"mean |error| {result.mean_abs_pct_error:.1f} %, mean signed error {result.mean_pct_error:+.1f} %, "
        f"Spearman rho {result.spearman:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-samples", type=int, default=80000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--profile", default="pixel3")
    parser.add_argument("--lut-archs", type=int, default=20)
    parser.add_argument("--test-archs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lut-out", default=None, help="save the LUT as JSON here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cost_table(args)
    lut_accuracy(args)


if __name__ == "__main__":
    main()
