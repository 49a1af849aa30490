#!/usr/bin/env python
"""Ship a trained counter inside the package: calibrate, export, measure, write its card.

Takes a finished run of ``benchmarks/accuracy.py`` (a mixture-supervised counter and its per-domain test
figures on unseen speakers), then

1. fits a softmax temperature on validation mixtures of the run's *validation* speakers (every test
   domain; never the test speakers) and reports the expected calibration error before and after, on the
   validation mixtures and on every test domain;
2. picks the abstain threshold: windows whose calibrated confidence falls below the 5th percentile of the
   validation windows' confidence are reported ``uncertain`` instead of a count;
3. exports ONNX (fp32) with the model config, temperature and abstain threshold in its metadata, checks
   ONNX Runtime against PyTorch, and tries dynamic int8 (shipped only if its validation MAE stays within
   0.05 of fp32 and the file is at least 25 % smaller);
4. measures cost (parameters, MACs, 1-thread ONNX Runtime latency, modeled Pixel-3 energy);
5. writes ``src/ersam_ssl/bundled/{sam-default.onnx, sam-default.json, MODEL_CARD.md}``.

The whole recipe, from nothing (≈ 37 min on 2 CPU cores; the figures are the run's, not the bytes): the
default member of a SAM space with a wider stem and stages (166k parameters, 18.7 M MACs), which beat
the standard space's default member on clinical and conversational test mixtures at equal steps:

    python benchmarks/accuracy.py --libri LIBRISPEECH --ocean SPEECHOCEAN --synth \\
        --train libri+ocean+synth --models default --seeds 0 --steps 6000 --workers 2 --variant wide \\
        --space '{"stem_width": 64, "stage_widths": [32, 48, 64, 96], "pool_width": 128}'
    python recipes/bundle.py --run mixture-default-libri+ocean+synth-s0-6000-wide \\
        --libri LIBRISPEECH --ocean SPEECHOCEAN --synth
"""

from __future__ import annotations

import ersam_ssl  # noqa: F401  - first: sets OMP_WAIT_POLICY before torch loads

# isort: split
import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from ersam_ssl import __version__
from ersam_ssl.bundled import BUNDLE_DIR, CARD_FILE, INFO_FILE, MODEL_FILE, sha256

ROOT = Path(__file__).resolve().parents[1]
CAL_DOMAINS = ("clean", "clinical", "noisy", "reverberant", "loud", "quiet", "conversational")


def _accuracy_module():
    """benchmarks/accuracy.py: the same engine, model and test sets as the run being shipped."""
    if str(ROOT / "benchmarks") not in sys.path:  # accuracy.py imports benchmarks/common.py
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("accuracy", ROOT / "benchmarks" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def logits_and_labels(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    outs, ys = [], []
    with torch.inference_mode():
        for x, y in DataLoader(dataset, batch_size=64):
            outs.append(model.head.log_probs(model(x)).numpy())
            ys.append(y.numpy())
    return np.concatenate(outs), np.concatenate(ys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run id of benchmarks/results/accuracy/<run>.json")
    p.add_argument("--libri")
    p.add_argument("--ocean")
    p.add_argument("--synth", action="store_true")
    p.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work" / "accuracy"))
    p.add_argument("--out-dir", default=str(BUNDLE_DIR))
    p.add_argument("--val-per-count", type=int, default=20)
    p.add_argument("--abstain-quantile", type=float, default=0.05)
    p.add_argument("--card-only", action="store_true", help="only re-render MODEL_CARD.md from the JSON")
    a = p.parse_args(argv)
    if a.card_only:
        info = json.loads((Path(a.out_dir) / INFO_FILE).read_text())
        (Path(a.out_dir) / CARD_FILE).write_text(render_card(info))
        return 0
    from ersam_ssl.calibration import ece_noise_floor, expected_calibration_error, fit_temperature
    from ersam_ssl.export import (
        attach_onnx_calibration,
        compare_with_torch,
        export_onnx,
        quantize_onnx,
        write_onnx_metadata,
    )
    from ersam_ssl.hw import count_macs, load_profile, measure_onnx_latency, report_energy

    acc = _accuracy_module()
    from common import portable_command  # benchmarks/common.py, on sys.path once accuracy.py is loaded
    torch.set_num_threads(1)
    result = json.loads((ROOT / "benchmarks" / "results" / "accuracy" / f"{a.run}.json").read_text())
    weights = Path(a.work_dir) / a.run / f"step{result['steps']:06d}.pt"
    engine = acc.engine_for(acc.run_args(result, a.libri, a.ocean, a.synth), result["seed"])
    model = acc.new_model(result["model"], engine.num_classes, engine, result["seed"], result.get("space"),
                          result.get("n_mels", 64))
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()

    # 1-2. calibration and abstain threshold on validation speakers
    n = a.val_per_count * engine.num_classes
    val = ConcatDataset([engine.domain_set("val", d, n).precompute() for d in CAL_DOMAINS])
    val_logp, val_y = logits_and_labels(model, val)
    temperature = fit_temperature(val_logp, val_y)
    probs = lambda logp, t: np.exp(logp / t - np.logaddexp.reduce(logp / t, axis=1, keepdims=True))  # noqa: E731
    ece_val = {"before": expected_calibration_error(probs(val_logp, 1.0), val_y),
               "after": expected_calibration_error(probs(val_logp, temperature), val_y)}  # fmt: skip
    abstain = float(np.quantile(probs(val_logp, temperature).max(axis=1), a.abstain_quantile))
    corpora = list(result["final"])
    ece_test: dict[str, dict] = {}
    for c in corpora:
        spk = acc.speakers_of(engine, "test", c)
        for d in CAL_DOMAINS:
            ds = engine.domain_set("test", d, result["eval_clips_per_domain"], speakers=spk).precompute()
            lp, y = logits_and_labels(model, ds)
            floor = ece_noise_floor(probs(lp, temperature))  # what a calibrated counter shows on len(y) clips
            ece_test.setdefault(c, {})[d] = {
                "before": round(expected_calibration_error(probs(lp, 1.0), y), 4),
                "after": round(expected_calibration_error(probs(lp, temperature), y), 4),
                "floor_q95": round(floor["q"], 4),
            }

    # 3. export and check
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, out / MODEL_FILE)
    attach_onnx_calibration(onnx_path, temperature, abstain)
    meta = {"window_s": "5.0", "classes": str(engine.num_classes), "ersam_ssl_version": __version__,
            "recipe": "recipes/bundle.py --run " + a.run}  # fmt: skip
    write_onnx_metadata(onnx_path, meta)
    picks = range(0, len(val), max(1, len(val) // 256))
    check_batch = [(torch.stack([val[i][0] for i in picks]), torch.stack([val[i][1] for i in picks]))]
    check = compare_with_torch(model, {"fp32": onnx_path}, check_batch)
    int8_path = out / "sam-default.int8.onnx"
    quantize_onnx(onnx_path, int8_path, "dynamic")
    int8 = compare_with_torch(model, {"int8": int8_path}, check_batch)
    # shipped only if its accuracy holds and it is worth a second file (the float STFT/mel frontend, which
    # dynamic quantization leaves alone, is most of the bytes of a small counter)
    int8_holds = int8["int8"]["mae"] <= check["fp32"]["mae"] + 0.05
    int8_smaller = int8_path.stat().st_size < 0.75 * onnx_path.stat().st_size
    int8["int8"]["bytes"] = int8_path.stat().st_size
    if not (int8_holds and int8_smaller):
        int8_path.unlink()

    # 4. cost
    cost = count_macs(model, num_samples=80000)
    lat = measure_onnx_latency(onnx_path, threads=1, repeats=50)
    energy = report_energy(cost.macs, load_profile("pixel3"))

    info = {
        "file": MODEL_FILE, "sha256": sha256(onnx_path), "bytes": onnx_path.stat().st_size,
        "window_s": 5.0, "sample_rate": 16000, "classes": engine.num_classes, "version": __version__,
        "arch": model.config()["kwargs"]["arch"], "level_norm": model.config()["kwargs"].get("level_norm"),
        "training": {"run": a.run, "method": "mixture supervision (streamed mixtures, randomized domains, "
                     f"{engine.config.train_conversation_prob:.0%} conversational)", "corpora": result["train"].split("+"),
                     "train_speakers": result["train_speakers"], "steps": result["steps"],
                     "batch_size": result["batch_size"], "train_min": result["train_min"],
                     "seed": result["seed"], "command": result["command"]},
        "test": {"speakers": result["test_speakers"], "clips_per_domain": result["eval_clips_per_domain"],
                 "speaker_ids": {c: acc.speakers_of(engine, "test", c) for c in corpora},
                 "metrics": result["final"], "median_guess_mae": result["median_baseline_mae"],
                 "conversation_max_group": engine.config.mixture.max_group},
        "calibration": {"temperature": round(temperature, 4), "ece_validation": {k: round(v, 4) for k, v in
                        ece_val.items()}, "ece_test": ece_test, "abstain_confidence": round(abstain, 4),
                        "abstain_rule": f"calibrated max-probability below the {a.abstain_quantile:.0%} quantile "
                        "of validation windows"},
        "onnx_check": check, "int8_check": int8, "int8_shipped": bool(int8_holds and int8_smaller),
        "cost": {"params": cost.params, "macs": cost.macs, "ort_latency_ms_1_thread": round(lat.median_ms, 3),
                 "pixel3_mw_12h": round(energy.avg_power_mw, 3)},
        "date": time.strftime("%Y-%m-%d"),
        "command": portable_command(shlex.join(["python", "recipes/bundle.py", *(sys.argv[1:] if argv is None else argv)])),
    }  # fmt: skip
    info["training"]["command"] = portable_command(info["training"]["command"])
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    (out / CARD_FILE).write_text(render_card(info))
    print(json.dumps({k: info[k] for k in ("sha256", "bytes", "calibration", "cost")}, indent=1))
    return 0


def render_card(info: dict) -> str:
    """MODEL_CARD.md from the info JSON (figures are never typed by hand)."""
    t, c, cal = info["test"], info["cost"], info["calibration"]
    size = t.get("conversation_max_group", 0)
    groups = (f"more than {size} speakers talk in parallel conversations" if size else
              "all speakers in one conversation, turns compressed into the window")  # fmt: skip
    doms = ("clean", "clinical", "noisy", "reverberant", "loud", "quiet", "conversational")
    rows = []
    for corpus, m in t["metrics"].items():
        rows.append(f"| {corpus} ({t['speakers'][corpus]} speakers) | "
                    + " | ".join(f"{m[d]['mae']:.2f} / {100 * m[d]['level_error']:.0f} %" for d in doms)
                    + f" | {t['median_guess_mae'][corpus]['clean']:.2f} |")  # fmt: skip
    ece_rows = [f"| {corpus} | " + " | ".join(f"{e[d]['before']:.3f} → {e[d]['after']:.3f}"
                                              + (f" ({e[d]['floor_q95']:.3f})" if "floor_q95" in e[d] else "")
                                              for d in doms) + " |"
                for corpus, e in cal["ece_test"].items()]  # fmt: skip
    within = [e[d]["after"] <= e[d]["floor_q95"] for e in cal["ece_test"].values() for d in doms if "floor_q95" in e[d]]
    tr = info["training"]
    return f"""# Model card: ersam_ssl bundled speaker counter (`{info["file"]}`)

Generated by `{info["command"]}` on {info["date"]} from `benchmarks/results/accuracy/{tr["run"]}.json`
(do not edit by hand). SHA-256 `{info["sha256"]}`, {info["bytes"] / 1e6:.2f} MB, ersam_ssl {info["version"]}.

## Intended use
Research measurement of **social ambiance**: how many people speak in each 5-second window of a recording
(0–10), summarised over hours into ambiance levels. It is **not a diagnostic device** and must not be used to
make decisions about an individual's care. It counts voices, not people present; it does not identify anyone.

## Input and output
Any sample rate and channel count, converted to 16 kHz mono; 5 s windows (`ersam-ssl analyze` streams
recordings of any length). Output per window: a count 0–10, a calibrated confidence, the ambiance level, or
`uncertain` (abstain rule below), or no count where the speech VAD finds no speech.

## Training data
Mixture supervision ({tr["method"].removeprefix("mixture supervision (").rstrip(")")}): {tr["steps"]} steps × {tr["batch_size"]} never-repeating 5 s mixtures
({tr["train_min"]:.1f} min of training on 2 CPU cores, seed {tr["seed"]}) of the *train* speakers
({tr["train_speakers"]}) of: {", ".join(tr["corpora"])}.
- `libri`: LibriSpeech (Panayotov et al., ICASSP 2015), CC BY 4.0 — adult audiobook readers.
- `ocean`: speechocean762 (Zhang et al., Interspeech 2021), free for commercial and non-commercial use —
  non-native (Mandarin L1) English readers, half of them children.
- `synth`: 120 espeak-ng voices synthesized offline by this package (GPL-3.0 espeak-ng data via
  espeakng-loader; synthetic speech).

Training command: `{tr["command"]}`

## Metrics (speakers never heard in training)
Count MAE / SAM ambiance-level error per test domain, {t["clips_per_domain"]} mixtures per domain and
corpus (balanced 0–10 speakers). Always answering the median count scores MAE ≈ 2.73.

| test speakers | clean | clinical | noisy | reverberant | loud | quiet | conversational | median-guess MAE |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Domains: `clean` full-band 16 kHz; `clinical` phone microphone band, noise, rooms, level changes;
`noisy` 0–15 dB SNR; `reverberant` RT60 0.4–1.0 s; `loud` peaks near full scale; `quiet` −30…−20 dB;
`conversational` turn-taking with overlaps and backchannels (label: speakers active ≥ 0.5 s; {groups}).
Reproduce: the two commands in `recipes/bundle.py`'s docstring.

## Calibration and abstention
Temperature scaling on validation speakers' mixtures of every domain: T = {cal["temperature"]:.3f};
ECE on validation {cal["ece_validation"]["before"]:.3f} → {cal["ece_validation"]["after"]:.3f}. On the test
domains (before → after, and in brackets the 95 % noise floor: the ECE that a perfectly calibrated counter
would exceed only 5 % of the time on the same {t["clips_per_domain"]} clips, by drawing labels from its own probabilities —
Bröcker & Smith 2007; after calibration {sum(within)} of {len(within)} domains are within it):

| test speakers | clean | clinical | noisy | reverberant | loud | quiet | conversational |
|---|---|---|---|---|---|---|---|
{chr(10).join(ece_rows)}

Abstain rule: a window is `uncertain` (no count) when its {cal["abstain_rule"].replace(" below", " is below")} (threshold
{cal["abstain_confidence"]:.3f}), or when its speech share is too low for a count.

## Cost
{c["params"]:,} parameters, {c["macs"] / 1e6:.1f} M MACs per 5 s window, {c["ort_latency_ms_1_thread"]:.2f} ms
per window with ONNX Runtime on 1 core of this machine class, {c["pixel3_mw_12h"]:.2f} mW modeled average power
on a Pixel 3 (one window every 5 s; `ersam_ssl.hw` profile, a model, not a measurement on a phone).

## Known limits
- English read speech only in training (audiobooks, non-native readers, synthetic voices); other languages,
  spontaneous speech, shouting and whispering are untested.
- Mixtures are simulated: real far-field rooms, crowds and distances beyond the synthetic room model are
  untested; counts above ~5 are the least reliable, and conversational windows are harder than overlapped ones.
- Children's voices: represented by speechocean762's children; other ages untested.
- TV, radio and phone-speaker speech count as speech (as voices in the room).
- Accuracy figures come from one training seed; see the repository's README for seed-to-seed spread.
"""


if __name__ == "__main__":
    sys.exit(main())
