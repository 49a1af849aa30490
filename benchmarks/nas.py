"""ERSAM-style searched counter vs CountNet's CRNN: the pipeline's own stages, the same data, the same number
of optimizer steps (one run).

The searched model is what ``recipes/run.py`` produces: this script runs the pipeline's stages ``data,
pretrain, teacher, nas`` (:func:`ersam_ssl.pipeline.run_pipeline`, so the same config, presets and
overrides) — by default mixture supervision of the largest SAM member on streamed mixtures, a
weight-sharing supernet trained with the sandwich rule and uncertainty-weighted distillation from it, NNI's
regularized evolution under the latency and energy budgets, fine-tuning of the chosen member and its ONNX
export (fp32 + int8). CountNet's CRNN is then trained with the pretrain stage's method and data (its
per-bin scaler fitted on pool clips) for as many optimizer steps as all of the searched model's training
stages together (``--crnn-steps`` to change that).

Printed, and written to ``benchmarks/results/nas.json`` (the README's table is rendered from it): MACs
ratio, 1-thread CPU latency ratio in PyTorch and ONNX Runtime (all models timed round-robin in the same run,
:func:`ersam_ssl.hw.measure_interleaved` / :func:`~ersam_ssl.hw.measure_onnx_interleaved`), test MAE of
both per test domain, the int8 variants' error, the modelled Pixel 3 average power ("mW·12 h"; ERSAM
reports 40 mW·12 h) and the wall time of each stage, with the goals they meet.

    python benchmarks/nas.py                                      # embedded default (recipes/run.py)
    python benchmarks/nas.py --config recipes/configs/tiny.yaml   # smoke run
    python benchmarks/nas.py nas.search.trials=40 --resume        # overrides as in recipes/run.py

Resumable: ``--resume`` continues the pipeline run in ``--work-dir`` and the CRNN from its last checkpoint.

References: Li et al., "ERSAM", ICASSP 2023; Stöter et al., "CountNet", IEEE/ACM TASLP 2019.
"""

from __future__ import annotations

import ersam_ssl  # noqa: F401  - first: sets OMP_WAIT_POLICY before torch loads

# isort: split
import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch

from ersam_ssl import ssl
from ersam_ssl.checkpoint import load_model, save_model
from ersam_ssl.data import SAMDataModule
from ersam_ssl.export import compare_with_torch, export_onnx, quantize_onnx
from ersam_ssl.hw import (
    count_macs,
    load_profile,
    measure_interleaved,
    measure_onnx_interleaved,
    report_energy,
)
from ersam_ssl.metrics import evaluate
from ersam_ssl.models import CountNetCRNN
from ersam_ssl.pipeline import Run, RunConfig, domain_metrics, load_config, run_pipeline

from common import RESULTS, fit_crnn_normaliser, quiet_lightning, result_record, timed, write_result

HERE = Path(__file__).resolve().parent
ERSAM_MW_12H = 40.0
GOALS = {"macs_ratio": 50.0, "latency_ratio": 20.0, "energy_mw": 4.0, "wall_min": 15.0}
STAGES = ("data", "pretrain", "teacher", "nas")


def searched_steps(cfg: RunConfig) -> dict[str, int]:
    """Optimizer steps of each training stage of the searched model (0 for a stage that does not train)."""
    return {
        "pretrain": 0 if cfg.pretrain.method == "none" else cfg.pretrain.steps,
        "teacher": 0 if cfg.teacher.method == "none" else cfg.teacher.steps,
        "supernet": cfg.nas.supernet.steps,
        "finetune": cfg.nas.finetune.steps,
    }


def train_crnn(run: Run, steps: int, resume: bool) -> tuple[CountNetCRNN, float]:
    """CountNet's CRNN trained by the pretrain stage's method on its data (same batch size), ``steps`` steps.

    Returns the model and the training wall time of this call (seconds).
    """
    from ersam_ssl.trainer import fit

    p, engine = run.cfg.pretrain, run.engine
    if p.method != "mixture":
        raise SystemExit(f"error: the CRNN reference is trained with mixture supervision; pretrain.method="
                         f"{p.method} trains an encoder only")  # fmt: skip
    out = run.dir / "crnn"
    pl.seed_everything(run.cfg.seed, verbose=False)
    model = fit_crnn_normaliser(CountNetCRNN(num_classes=engine.num_classes), engine.pool, 256, run.cfg.seed)
    module = ssl.METHODS.get(p.method).from_stage(model, p, engine.levels)
    dm = ssl.datamodule_for(module, engine, batch_size=p.batch_size, unlabeled_batch_size=p.batch_size)
    with timed() as clock:
        fit(module, dm, run.trainer_cfg(steps), out, name="crnn", resume=resume)
    save_model(model.eval(), out / "model.pt", extra={"method": p.method, "steps": steps})
    return model, clock.s


def test_metrics(model, run: Run, test) -> dict:
    """The pipeline's test set (``test``, all metrics but the confusion matrix) and every evaluation domain."""
    m = {k: v for k, v in evaluate(model, test).items() if k != "confusion"}
    return {**m, "domains": domain_metrics(model, run.engine)}


def int8_variants(run: Run, fp32: Path) -> dict[str, Path]:
    """The int8 export keeps the log-mel frontend fp32 (dynamic quantization); two more variants show the
    alternatives: an int8 frontend, and static QDQ quantization calibrated on pool clips."""
    pool = run.engine.pool
    calib = torch.stack([pool[i][0] for i in range(0, len(pool), max(1, len(pool) // 64))]).split(16)
    return {
        "int8_frontend": quantize_onnx(fp32, fp32.with_name("model.int8_frontend.onnx"), quantize_frontend=True),
        "int8_static": quantize_onnx(fp32, fp32.with_name("model.int8_static.onnx"), "static", calibration=calib),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value config overrides, as for recipes/run.py")
    p.add_argument("--config", default=None, help="a recipes/configs preset (default: the embedded default)")
    p.add_argument("--work-dir", default=str(HERE / "work" / "nas"), help="the pipeline run and the CRNN")
    p.add_argument("--out", default=str(RESULTS / "nas.json"))
    p.add_argument("--crnn-steps", type=int, default=None, help="default: the searched model's training steps")
    p.add_argument("--rounds", type=int, default=30, help="interleaved latency rounds (1 thread)")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --work-dir")
    p.add_argument("--overwrite", action="store_true", help="start over in --work-dir")
    args = p.parse_args(argv)
    quiet_lightning()
    cfg = load_config(args.config, args.overrides)
    cfg = replace(cfg, name="pipeline", out_root=args.work_dir, stages=STAGES)
    run = Run(cfg)

    with timed() as pipeline_clock:
        run_pipeline(cfg, resume=args.resume, overwrite=args.overwrite, run=run)
    stage = {s: run.done(s) for s in STAGES}
    steps = searched_steps(cfg)
    crnn_steps = args.crnn_steps or sum(steps.values())
    crnn, crnn_s = train_crnn(run, crnn_steps, resume=args.resume)
    searched = load_model(run.dir / "nas" / "model.pt")
    print(f"pipeline {pipeline_clock.s / 60:.1f} min this call; CRNN {crnn_steps} steps {crnn_s / 60:.1f} min",
          flush=True)  # fmt: skip

    test = SAMDataModule(run.engine, labeled_views={"x": "identity"}).test_dataloader()
    tests = {"searched": test_metrics(searched, run, test), "crnn": test_metrics(crnn, run, test)}
    fp32 = run.dir / "nas" / "model.onnx"
    variants = int8_variants(run, fp32)
    variant_test = compare_with_torch(searched, variants, test, levels=run.engine.levels)
    n = run.engine.config.mixture.num_samples
    onnx = {"sam": fp32, "sam_int8": run.dir / "nas" / "model.int8.onnx",
            **{f"sam_{k}": v for k, v in variants.items()}, "crnn": export_onnx(crnn, run.dir / "crnn" / "model.onnx", n)}  # fmt: skip
    torch_ms = measure_interleaved([searched, crnn], n, threads=1, rounds=args.rounds)
    ort_ms = measure_onnx_interleaved(list(onnx.values()), n, threads=1, rounds=args.rounds)
    latency = {"sam_torch": torch_ms[0], "crnn_torch": torch_ms[1], **{f"{k}_ort": v for k, v in zip(onnx, ort_ms)}}
    macs = {"sam": count_macs(searched, n).macs, "crnn": count_macs(crnn, n).macs}
    profile = load_profile(cfg.nas.budget.profile)
    power = {k: report_energy(v, profile, period_s=5.0, hours=12.0).avg_power_mw for k, v in macs.items()}
    nas = stage["nas"]
    timings = {**nas["timings_s"], "pretrain_s": stage["pretrain"].get("wall_s", 0.0),
               "teacher_s": stage["teacher"].get("wall_s", 0.0), "crnn_s": round(crnn_s, 1)}  # fmt: skip
    search_min = (timings["supernet_s"] + timings["search_s"]) / 60
    ratios = {
        "macs": macs["crnn"] / macs["sam"],
        "torch_latency": latency["crnn_torch"] / latency["sam_torch"],
        "ort_latency": latency["crnn_ort"] / latency["sam_ort"],
    }
    int8_test = {"dynamic": nas["export"]["test"]["onnx_int8"], **{k: variant_test[k] for k in variants}}
    goals = {
        f"MACs >= {GOALS['macs_ratio']:.0f}x fewer": ratios["macs"] >= GOALS["macs_ratio"],
        f"torch latency >= {GOALS['latency_ratio']:.0f}x lower": ratios["torch_latency"] >= GOALS["latency_ratio"],
        f"ORT latency >= {GOALS['latency_ratio']:.0f}x lower": ratios["ort_latency"] >= GOALS["latency_ratio"],
        "MAE no worse than the CRNN": tests["searched"]["mae"] <= tests["crnn"]["mae"],
        f"modelled power <= {GOALS['energy_mw']:.0f} mW·12h": power["sam"] <= GOALS["energy_mw"],
        f"supernet + search < {GOALS['wall_min']:.0f} min": search_min < GOALS["wall_min"],
    }
    result = result_record(
        "nas", argv, config=args.config, overrides=args.overrides, arch=nas["arch"], steps=steps,
        crnn_steps=crnn_steps, crnn_method=cfg.pretrain.method, batch_size=cfg.pretrain.batch_size,
        latency_ms=latency, latency_rounds=args.rounds, macs=macs, ratios=ratios, avg_power_mw=power,
        profile=profile.name, test=tests, int8_test=int8_test, search={k: nas[k] for k in ("evaluated", "rejected")},
        timings_s=timings, goals=goals,
    )  # fmt: skip
    print_report(result)
    write_result(args.out, result)
    print(f"wrote {args.out}")
    return result


def print_report(r: dict) -> None:
    lat, macs, power, tests = r["latency_ms"], r["macs"], r["avg_power_mw"], r["test"]
    domains = list(tests["searched"]["domains"])
    head = (f"{'model':20s} {'MAE':>5s} {'err %':>6s} {'MMACs':>8s} {'torch ms':>9s} {'ORT ms':>8s} {'mW·12h':>7s}  "
            + " ".join(f"{d[:8]:>8s}" for d in domains))  # fmt: skip
    print("\ntest MAE (and per evaluation domain); latency: 1 thread, one window, interleaved rounds")
    print(head)
    print("-" * len(head))
    for name, key in (("CountNet CRNN", "crnn"), ("searched SAM", "sam")):
        t = tests["crnn" if key == "crnn" else "searched"]
        print(f"{name:20s} {t['mae']:5.2f} {100 * t['error_rate']:6.1f} {macs[key] / 1e6:8.1f} "
              f"{lat[f'{key}_torch']:9.2f} {lat[f'{key}_ort']:8.2f} {power[key]:7.3f}  "
              + " ".join(f"{t['domains'][d]['mae']:8.2f}" for d in domains))  # fmt: skip
    for name, t in r["int8_test"].items():
        ort_key = {"dynamic": "sam_int8_ort"}.get(name, f"sam_{name}_ort")
        print(f"  int8 {name:14s} {t['mae']:5.2f} {100 * t['error_rate']:6.1f} {'':>8s} {'':>9s} {lat[ort_key]:8.2f}")
    print(f"{'ERSAM (paper)':20s} {'':>5s} {'':>6s} {'':>8s} {'':>9s} {'':>8s} {ERSAM_MW_12H:7.1f}")
    ratios = r["ratios"]
    print(f"\nCRNN / searched: MACs {ratios['macs']:.0f}x, torch latency {ratios['torch_latency']:.1f}x, "
          f"ORT latency {ratios['ort_latency']:.1f}x")  # fmt: skip
    print(f"searched arch: {json.dumps(r['arch'])}")
    t = r["timings_s"]
    print(f"training steps: searched {r['steps']} (sum {sum(r['steps'].values())}); CRNN {r['crnn_steps']} "
          f"({r['crnn_method']}, {t['crnn_s'] / 60:.1f} min)")  # fmt: skip
    print(f"wall time: pretrain {t['pretrain_s'] / 60:.1f} min, teacher {t['teacher_s'] / 60:.1f}, supernet "
          f"{t['supernet_s'] / 60:.1f}, search {t['search_s'] / 60:.1f}, fine-tune {t['finetune_s'] / 60:.1f}")  # fmt: skip
    print("goals: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["goals"].items()))


if __name__ == "__main__":
    main()
