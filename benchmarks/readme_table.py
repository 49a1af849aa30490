"""Render the README's measured-results tables from the benchmarks' committed JSON (never by hand).

    python benchmarks/readme_table.py            # rewrite the block between the README's markers
    python benchmarks/readme_table.py --check    # exit 1 if the README is out of date (run by the tests)

Sources: ``benchmarks/results/accuracy/*.json`` (``benchmarks/accuracy.py``), ``results/pipeline/*.json``
(``recipes/run.py``), ``results/nas.json`` (``benchmarks/nas.py``), ``results/profile_step.json``,
``results/reliability.json`` and ``results/cpu_sharing.json`` (the scripts of those names); each table names the command
that reproduces it and the date of the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import method_label, portable_command, today, write_result

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- results:begin (benchmarks/readme_table.py) -->", "<!-- results:end -->"
DOMAINS = ("clean", "clinical", "noisy", "reverberant", "loud", "quiet", "conversational")
SHORT = {"reverberant": "reverb", "conversational": "conv."}


def _parallel_conversations(r: dict) -> bool:
    """Whether a run's conversational mixtures put more than ``max_group`` speakers in parallel conversations
    (runs that predate the option recorded no mixture config: one conversation of everybody)."""
    return bool(r.get("mixture", {}).get("max_group"))


def _mean_std(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f}" if v.size == 1 else f"{v.mean():.2f}±{v.std():.2f}"


def accuracy_tables(folder: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    if not runs:
        return ""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(method_label(r), r["model"], r["train"], r["steps"])].append(r)
    head = (
        "| method | model | trained on | steps | test speakers | seeds | train min | "
        + " | ".join(f"MAE {SHORT.get(d, d)}" for d in DOMAINS)
        + " | level err. clean / clinical / conv. | median-guess MAE |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = {"mixture": 0, "few-only": 1, "source-only": 2, "source+finetune": 3, "source+fixmatch": 4}
    for key in sorted(groups, key=lambda k: (k[1], k[2], order.get(k[0], 9), k[0], k[3])):
        rs = groups[key]
        method, model, train, steps = key
        for corpus in rs[0]["final"]:
            maes = [_mean_std([r["final"][corpus][d]["mae"] for r in rs]) if d in rs[0]["final"][corpus] else "–"
                    for d in DOMAINS]  # fmt: skip
            if any(_parallel_conversations(r) for r in rs):
                maes[DOMAINS.index("conversational")] += " ‡"
            lev = " / ".join(
                f"{100 * np.mean([r['final'][corpus][d]['level_error'] for r in rs]):.0f} %"
                for d in ("clean", "clinical", "conversational")
            )
            median = np.mean([r["median_baseline_mae"][corpus]["clean"] for r in rs])
            mins = np.mean([r.get("train_min", 0.0) for r in rs])
            lines.append(f"| {method} | {model} | {train} | {steps} | {corpus} | {len(rs)} | {mins:.1f} | "
                         + " | ".join(maes) + f" | {lev} | {median:.2f} |")  # fmt: skip
    dates = sorted({r["date"] for r in runs})
    cmds = sorted({portable_command(r["command"]) for r in runs})
    curve = (
        "Learning curves (test MAE vs training minutes, snapshots at 1/16 … 1 of the steps; grey line: the "
        "0.5 goal): ![learning curves](benchmarks/results/accuracy_curves.png)"
    )
    dagger = (
        "‡ conversational test mixtures in which more than `mixture.max_group` speakers talk in parallel "
        "conversations (in training too): a different test set from the unmarked runs, whose conversational "
        "mixtures hold every speaker in one conversation."
    )
    return "\n".join(
        [
            "**Accuracy on speakers never heard in training** (`benchmarks/accuracy.py`; per test domain, "
            "mixtures of 0–10 speakers in 5 s, count MAE, mean±std over seeds; runs of "
            f"{dates[0]}{'…' + dates[-1] if len(dates) > 1 else ''}). Reproduce with:",
            "",
            *[f"    {c}" for c in cmds],
            "",
            *lines,
            "",
            dagger,
            "",
            curve,
        ]
    )


CURVES_PNG = HERE / "results" / "accuracy_curves.png"


def plot_curves(folder: Path, out: Path = CURVES_PNG) -> Path | None:
    """Learning curves of the mixture-supervised runs: test MAE per domain vs training minutes."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    runs = [r for r in runs if r.get("curve")]  # trained runs (mixture supervision, distillation)
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted({c for r in runs for c in r["final"]})
    fig, axes = plt.subplots(1, len(corpora), figsize=(5.5 * len(corpora), 4.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, corpus in zip(axes[0], corpora):
        # one colour per run (the same in every panel), one line style per test domain
        for i, r in enumerate(runs):
            if corpus not in r["final"]:
                continue
            name = r["method"].replace("mixture", "").replace("stream-distill", "KD ") + r["model"]
            name += f"+{r['variant']}" if r.get("variant") else ""
            for d, style in (("clean", "-"), ("clinical", "--"), ("conversational", ":")):
                xs = [p["train_min"] for p in r["curve"]]
                ys = [p["scores"][corpus][d]["mae"] for p in r["curve"]]
                label = f"{name} ({r['train']}, s{r['seed']})" if d == "clean" else None
                ax.plot(xs, ys, style, color=colours[i % len(colours)], marker="o", ms=3, label=label)
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set(
            title=f"test speakers: {corpus}",
            xlabel="training minutes (2 CPU cores)",
            ylabel="count MAE",
            ylim=(0, 3),
        )
        ax.legend(fontsize=6, title="— clean  -- clinical  ·· conversational", title_fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


def cpu_sharing_table(path: Path) -> str:
    if not path.is_file():
        return ""
    data = json.loads(path.read_text())
    lines = [
        "| OpenMP wait | threads | step | alone s | beside a busy process s | slow-down |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(f"| {r['policy']} | {r['threads']} | {r['method']} | {r['alone_s']:.3f} | {r['shared_s']:.3f} | "
                     f"{r['slowdown']:.2f}× |")  # fmt: skip
    return "\n".join(
        [
            f"**Training step alone vs beside a busy process** (`{portable_command(data['command'])}`, {data['date']}):",
            "",
            *lines,
        ]
    )


def pipeline_table(folder: Path) -> str:
    """Whole-pipeline runs: ``summary.json`` of ``recipes/run.py`` plus the command, recorded with
    ``python benchmarks/readme_table.py --record-run runs/NAME 'COMMAND'``."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    if not runs:
        return ""
    lines = ["| run | wall time, min (stages) | searched model: MAE clinical / clean / conversational | teacher: same | "
             "params, MACs, Pixel-3 mW·12 h | 1-thread ms: torch / ORT fp32 / ORT int8 | ONNX vs torch: max abs. "
             "logit diff; int8 agreement, MAE | search: members (over budget) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in runs:
        wall = r["wall_s"]
        stages = ", ".join(f"{k} {v / 60:.1f}" for k, v in wall.items() if k != "total")
        lat, onnx = r.get("onnx_latency_1_thread", {}), r.get("onnx_test", {})
        ms = " / ".join(f"{lat[k]:.1f}" for k in ("torch_ms", "onnx_fp32_ms", "onnx_int8_ms") if k in lat) or "–"
        check = (f"{onnx['onnx_fp32']['max_abs_diff']:.0e}; {100 * onnx['onnx_int8']['agreement']:.1f} %, "
                 f"{onnx['onnx_int8']['mae']:.2f}" if "onnx_int8" in onnx else "–")  # fmt: skip
        search = r.get("search", {})
        lines.append(f"| `{portable_command(r['command'])}` ({r['date']}) | {wall['total'] / 60:.1f} ({stages}) | {_domain_maes(r['domains'])} | "
                     f"{_domain_maes(r['teacher']['domains'])} | {r['params']:,}, {r['macs'] / 1e6:.1f} M, "
                     f"{r['energy_mw_12h']:.2f} | {ms} | {check} | {search.get('evaluated', '–')} "
                     f"({search.get('rejected', '–')}) |")  # fmt: skip
    return "\n".join(
        ["**Whole pipeline** (`recipes/run.py`; test speakers of its own corpus, per domain; record a run with "
         "`python benchmarks/readme_table.py --record-run runs/NAME 'COMMAND'`):", "", *lines]
    )


def _domain_maes(domains: dict) -> str:
    return " / ".join(
        f"{domains[k]['mae']:.2f}" for k in ("clinical", "clean", "conversational") if k in domains
    )


def record_run(run_dir: Path, command: str) -> Path:
    """Copy a pipeline run's summary (+ command and date) into ``results/pipeline/<run>.json``."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(command=portable_command(command), date=today())
    return write_result(HERE / "results" / "pipeline" / f"{run_dir.name}.json", summary)


def nas_table(path: Path) -> str:
    """The searched model vs CountNet's CRNN, same pipeline data and steps (``benchmarks/nas.py``)."""
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    lat, macs, power, tests = d["latency_ms"], d["macs"], d["avg_power_mw"], d["test"]
    domains = [k for k in ("clinical", "clean", "conversational") if k in tests["searched"]["domains"]]
    lines = ["| model | test MAE (" + " / ".join(domains) + ") | MMACs per window | 1-thread latency torch / ORT, ms | "
             "Pixel-3 mW·12 h |", "|---|---|---|---|---|"]  # fmt: skip
    for name, key, t in (("CountNet CRNN", "crnn", tests["crnn"]), ("searched SAM", "sam", tests["searched"])):
        maes = " / ".join(f"{t['domains'][k]['mae']:.2f}" for k in domains)
        lines.append(f"| {name} | {t['mae']:.2f} ({maes}) | {macs[key] / 1e6:.1f} | {lat[f'{key}_torch']:.2f} / "
                     f"{lat[f'{key}_ort']:.2f} | {power[key]:.2f} |")  # fmt: skip
    for name, t in d["int8_test"].items():
        ort = lat["sam_int8_ort"] if name == "dynamic" else lat[f"sam_{name}_ort"]
        lines.append(f"| … int8 ONNX, {name} | {t['mae']:.2f} | | – / {ort:.2f} | |")
    r, tm = d["ratios"], d["timings_s"]
    goals = "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in d["goals"].items())
    return "\n".join(
        [
            f"**Searched model vs CountNet's CRNN** (`{portable_command(d['command'])}`, {d['date']}): the pipeline's own stages "
            f"({sum(d['steps'].values())} training steps: {', '.join(f'{k} {v}' for k, v in d['steps'].items())}), "
            f"the CRNN trained by {d['crnn_method']} supervision on the same data for {d['crnn_steps']} steps "
            f"({tm['crnn_s'] / 60:.1f} min); latency timed round-robin in one run. CRNN / searched: MACs "
            f"{r['macs']:.0f}x, latency torch {r['torch_latency']:.1f}x, ORT {r['ort_latency']:.1f}x. Supernet "
            f"+ search {tm['supernet_s'] / 60:.1f} + {tm['search_s'] / 60:.1f} min ({d['search']['evaluated']} "
            f"members, {d['search']['rejected']} over budget). Goals: {goals}.",
            "",
            *lines,
        ]
    )


def cost_table(path: Path) -> str:
    """Cost per 5 s window and the latency predictor's accuracy (``benchmarks/cost_models.py``)."""
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    rows = {r["model"]: r for r in d["cost_table"]}
    crnn = rows["CountNet CRNN"]
    lines = ["| model | params | MMACs (CRNN / model) | 1-thread latency torch / ORT, ms (CRNN / model) | "
             "Pixel-3 mW·12 h |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params']:,} | {r['macs'] / 1e6:.1f} ({crnn['macs'] / r['macs']:.0f}x) | "
                     f"{r['torch_ms']:.2f} / {r['onnx_ms']:.2f} ({crnn['torch_ms'] / r['torch_ms']:.0f}x / "
                     f"{crnn['onnx_ms'] / r['onnx_ms']:.0f}x) | {r['avg_power_mw']:.2f} |")  # fmt: skip
    how = "timed round-robin in one run" if d.get("cost_timing") == "interleaved" else "timed one model after another"
    text = [f"**Cost per 5 s window** (`{portable_command(d['command'])}`, {d['date']}; latencies {how} on this 2-core VM, whose "
            "absolute speed drifts by up to a third: keep the ratios):", "", *lines]  # fmt: skip
    lp = d.get("latency_predictor")
    if lp:
        raw, cor, noise = lp["raw_sum"], lp["corrected"], lp["measurement_noise"]["held_out"]
        text += ["", f"Latency predictor used by the search, on {lp['held_out']['archs']} held-out members "
                 f"({lp['held_out']['measured_ms_min']:.1f}–{lp['held_out']['measured_ms_max']:.1f} ms): per-op sum "
                 f"{raw['mean_abs_pct_error']:.1f} % mean abs. error, Spearman {raw['spearman']:.3f}; corrected "
                 f"{cor['mean_abs_pct_error']:.1f} %, {cor['spearman']:.3f}; the measurement's own test-retest "
                 f"{noise['mean_abs_pct_diff']:.1f} %, {noise['spearman']:.3f} (targets ≤ "
                 f"{lp['targets']['mean_abs_pct_error_max']:.0f} %, ≥ {lp['targets']['spearman_min']})."]  # fmt: skip
    return "\n".join(text)


def vad_table(path: Path) -> str:
    """Silero vs energy VAD on a recording with non-speech sounds (``benchmarks/vad.py``)."""
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    seg = d["segments"]
    kinds = [k for k in ("music", "noise", "clatter", "count0", "speech") if k in seg]
    lines = ["| VAD | " + " | ".join(f"{k} ({seg[k]})" for k in kinds) + " | speed, x real time |",
             "|" + "---|" * (len(kinds) + 2)]  # fmt: skip
    for vad in ("energy", "silero"):
        cells = [f"{100 * d[vad][k]['gated']:.0f} % gated, {100 * d[vad][k]['counted']:.0f} % counted" for k in kinds]
        lines.append(f"| {vad} | " + " | ".join(cells) + f" | {d['speed_x_real_time'][vad]:.0f} |")
    return "\n".join([
        f"**Speech VAD in `analyze`** (`{portable_command(d['command'])}`{', ' + d['date'] if 'date' in d else ''}): 5 s segments of synthesized non-speech "
        "(music-like tones, coloured noise, clatter), silence with background (count0) and speech of 1–10 "
        "speakers; the rest of each row is `uncertain`. Speed: SAM ONNX, 1 thread, best of "
        f"{len(d['speed_runs']['silero'])} runs.", "", *lines])  # fmt: skip


def throughput_table(data_path: Path, analyze_path: Path) -> str:
    """Data generation vs training (``benchmarks/data_throughput.py``) and long-recording analysis speed
    (``benchmarks/analyze_throughput.py``)."""
    parts = []
    if data_path.is_file():
        d = json.loads(data_path.read_text())
        train = d["training_items_per_s"]
        lines = ["| measurement | items/s | × training consumption |", "|---|---|---|"]
        lines += [f"| {k} | {v:.0f} | {v / train:.1f} |" for k, v in d["items_per_s"].items()]
        lines.append(f"| training consumption (default SAM, forward + backward, 1 thread) | {train:.0f} | 1.0 |")
        goals = "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in d["goals"].items())
        src = d["source"]
        parts.append("\n".join([f"**Mixture generation vs training** (`{portable_command(d['command'])}`, {d['date']}; 5 s mixtures "
                                f"of the {src['source']} corpus, {src['speakers']} speakers, {src['hours']:.1f} h). "
                                f"Goals: {goals}.", "", *lines]))  # fmt: skip
    if analyze_path.is_file():
        d = json.loads(analyze_path.read_text())
        lines = ["| model | backend | gating | model runs | wall s | × real time |", "|---|---|---|---|---|---|"]
        for r in d["rows"]:
            lines.append(f"| {r['model']} | {r['backend']} | {r['gating']} | {r['model_runs']} | {r['wall_s']:.1f} | "
                         f"{r['x_real_time']:.0f} |")  # fmt: skip
        parts.append("\n".join([
            f"**Long-recording analysis speed** (`{portable_command(d['command'])}`, {d['date']}): a {d['recording_s'] / 60:.1f}-min "
            f"recording ({d['silent_segments']} of {d['segments']} 5 s segments silent), {d['threads']} thread, "
            f"batch {d['batch']}, {d['vad']}; untrained weights (speed does not depend on them).", "", *lines]))  # fmt: skip
    return "\n\n".join(parts)


def profile_table(path: Path) -> str:
    """Where a mixture-supervision training step's time goes (``benchmarks/profile_step.py``)."""
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    data, model = d["data"], d["model"]
    parts = ", ".join(f"{k} {v:.1f}" for k, v in data["parts_ms"].items())
    shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in model["parts_share"].items())
    return (
        f"**Where a training step's time goes** (`{portable_command(d['command'])}`, {d['date']}, 1 thread): rendering one "
        f"5 s training mixture takes {data['per_clip_ms']:.1f} ms ({parts} ms per clip on average), a batch of "
        f"{model['batch']} therefore {d['batch_data_ms']:.0f} ms; the {model['arch']} SAM step on it "
        f"{model['step_ms']:.0f} ms ({shares}). Data rendering is {d['data_to_model_ratio']:.2f}x the model: "
        "one DataLoader worker per training thread keeps the two cores about equally busy."
    )


def reliability_table(path: Path) -> str:
    """Bad input through every tool (``benchmarks/reliability.py``): outcome and exit code per kind."""
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    tools = list(dict.fromkeys(r["tool"] for r in d["rows"]))
    by_kind: dict[str, dict[str, str]] = defaultdict(dict)
    for r in d["rows"]:
        by_kind[r["kind"]][r["tool"]] = f"{r['outcome']} ({r['exit']})"
    lines = ["| input | " + " | ".join(tools) + " |", "|" + "---|" * (len(tools) + 1)]
    for kind, cells in by_kind.items():
        lines.append(f"| {kind} | " + " | ".join(cells.get(t, "") for t in tools) + " |")
    return "\n".join(
        [
            f"**Bad input** (`{portable_command(d['command'])}`, {d['date']}): {d['kinds']} kinds of input, {d['cases']} cases; "
            f"crashes {d['crashes']}, silent wrong answers {d['silent_wrong_answers']}, other outcomes not as due "
            f"{d['not_as_due']}. Outcome (exit code): ok / clear error / partial.",
            "",
            "<details><summary>every case</summary>",
            "",
            *lines,
            "",
            "</details>",
        ]
    )


def render() -> str:
    parts = [
        accuracy_tables(HERE / "results" / "accuracy"),
        pipeline_table(HERE / "results" / "pipeline"),
        nas_table(HERE / "results" / "nas.json"),
        cost_table(HERE / "results" / "cost_models.json"),
        vad_table(HERE / "results" / "vad.json"),
        throughput_table(HERE / "results" / "data_throughput.json", HERE / "results" / "analyze_throughput.json"),
        profile_table(HERE / "results" / "profile_step.json"),
        reliability_table(HERE / "results" / "reliability.json"),
        cpu_sharing_table(HERE / "results" / "cpu_sharing.json"),
    ]
    return "\n\n".join(p for p in parts if p)


def updated_readme(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    p.add_argument("--record-run", nargs=2, metavar=("RUN_DIR", "COMMAND"),
                   help="copy a pipeline run's summary.json (+ the command that made it) into results/pipeline")  # fmt: skip
    a = p.parse_args(argv)
    if a.record_run:
        print(record_run(Path(a.record_run[0]), a.record_run[1]))
        return 0
    text = README.read_text()
    new = updated_readme(text)
    if a.check:
        if new != text:
            print("README.md results are out of date: run python benchmarks/readme_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    plot_curves(HERE / "results" / "accuracy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
