"""Search results: budget checks, the candidate records, the choice, Pareto fronts and the files written.

Costs are the dicts of :meth:`ersam_ssl.hw.CostModel.cost`; the budgets are
:meth:`~ersam_ssl.nas.config.BudgetConfig.limits`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ersam_ssl.fileio import json_default, write_json
from ersam_ssl.nas.config import SearchConfig

COST_KEYS = ("macs", "params", "latency_ms", "device_latency_ms", "energy_mj", "avg_power_mw")
CSV_COLUMNS = (
    "index",
    "source",
    "score",
    "accuracy",
    "error_rate",
    "mae",
    "level_accuracy",
    "ece",
    *COST_KEYS,
    "within_budget",
    "chosen",
    "arch",
)


def candidate_record(index: int, source: str, arch: dict, metrics: dict, cost: dict, within: bool) -> dict:
    """One evaluated member: a row of ``candidates.csv``."""
    return {
        "index": index,
        "source": source,
        "arch": arch,
        **metrics,
        **{k: cost.get(k) for k in COST_KEYS},
        "within_budget": within,
    }


def rejected_record(arch: dict, cost: dict, violations: Sequence[str]) -> dict:
    """An over-budget candidate (listed in ``candidates.json`` under ``rejected``)."""
    return {"arch": arch, **{k: cost.get(k) for k in COST_KEYS}, "violations": list(violations)}


def budget_violations(cost: dict[str, Any], cfg: SearchConfig) -> list[str]:
    """Which budgets ``cost`` exceeds (empty: within budget)."""
    out = []
    for key, limit in cfg.budget.limits().items():
        if limit is not None and cost.get(key) is not None and cost[key] > limit:
            out.append(f"{key} {cost[key]:.4g} > {limit:.4g}")
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates minimised), by the first one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(records: Sequence[dict], path: Path, chosen: int | None, cfg: SearchConfig) -> Path:
    """Error rate vs host latency and vs modelled average power, with Pareto fronts and budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = cfg.budget.limits()
    panels = [
        ("latency_ms", "latency (ms, 1 thread, this CPU)", limits["latency_ms"]),
        (
            "avg_power_mw",
            f"modelled power (mW, {cfg.budget.profile}, 1 window / 5 s)",
            limits["avg_power_mw"],
        ),
    ]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in records)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, (key, label, limit) in zip(axes[0], panels):
        rows = [r for r in records if r.get(key) is not None]
        xs = [r[key] for r in rows]
        ys = [100 * r["error_rate"] for r in rows]
        ax.scatter(xs, ys, s=14, c="0.6", label="evaluated")
        front = pareto_front(list(zip(xs, ys)))
        ax.plot(
            [xs[i] for i in front], [ys[i] for i in front], "o-", c="tab:blue", ms=4, label="Pareto front"
        )
        for r in rows:
            if r["index"] == chosen:
                ax.scatter([r[key]], [100 * r["error_rate"]], marker="*", s=180, c="tab:red", label="chosen")
        if limit is not None and limit <= 1.5 * max(xs, default=limit):
            ax.axvline(limit, ls="--", c="tab:red", lw=1, label="budget")
        elif limit is not None:  # far right of every member: a line there would squash the plot
            label = f"{label}; budget {limit:g} (off scale)"
        ax.set_xlabel(label)
        ax.set_ylabel("validation error rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_candidates(
    records: Sequence[dict], rejected: Sequence[dict], out_dir: Path, chosen: int | None
) -> None:
    """``candidates.json`` (everything) and ``candidates.csv`` (one row per evaluated member)."""
    rows = [{**r, "chosen": r["index"] == chosen} for r in records]
    payload = {"candidates": rows, "rejected": list(rejected)}
    write_json(out_dir / "candidates.json", payload, default=json_default)
    with open(out_dir / "candidates.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "arch": json.dumps(r["arch"], separators=(",", ":"))})


def choose(records: Sequence[dict]) -> dict:
    """The best within-budget member: highest score, then lowest modelled power, then fewest MACs."""
    admissible = [r for r in records if r["within_budget"]]
    if not admissible:
        raise RuntimeError("no evaluated member is within the budget; loosen the budget or search longer")
    return max(admissible, key=lambda r: (r["score"], -(r.get("avg_power_mw") or 0.0), -r["macs"]))
