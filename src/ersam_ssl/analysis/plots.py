"""Timeline plot of a long-recording analysis: speaker count over time above a band of ambiance levels.

Short recordings are drawn window by window; long ones (more than ``per_minute_after`` seconds) are
aggregated per minute (time-weighted mean and maximum count, dominant level), so a day-long plot stays
readable and cheap to draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ersam_ssl.analysis.table import STATUS_UNCERTAIN, STATUS_UNREADABLE, WindowTable, summarize_windows
from ersam_ssl.data.levels import AmbianceLevels

#: Recordings longer than this (seconds) are plotted per minute.
PER_MINUTE_AFTER = 30 * 60.0
LEVEL_COLOURS = ("#d9d9d9", "#9ecae1", "#4292c6", "#08306b", "#54278f", "#980043")
UNREADABLE_COLOUR = "#fcbba1"
UNCERTAIN_COLOUR = "#fdd49e"


@dataclass
class BinnedTimeline:
    """Per-bin aggregates: ``start_s[i]`` to ``start_s[i] + bin_s``; NaN / -1 where nothing was counted.

    ``level_share[i, k]`` is the share of bin ``i``'s counted time at level ``k``; ``level`` the dominant one.
    """

    bin_s: float
    start_s: np.ndarray
    mean_count: np.ndarray
    max_count: np.ndarray
    level: np.ndarray
    level_share: np.ndarray
    covered_s: np.ndarray


def aggregate(table: WindowTable, levels: AmbianceLevels, bin_s: float = 60.0) -> BinnedTimeline:
    """Aggregate windows into ``bin_s`` bins, weighting each window by the seconds it stands for
    (:meth:`WindowTable.owned_spans`) inside each bin; windows without a count (unreadable, uncertain) are
    left out."""
    if len(table) == 0:
        z = np.zeros(0)
        return BinnedTimeline(bin_s, z, z, z, z.astype(np.int64), np.zeros((0, levels.num_levels)), z)
    lo, hi = table.owned_spans()
    keep = (table.status != STATUS_UNREADABLE) & (table.status != STATUS_UNCERTAIN)
    starts, ends = lo[keep], hi[keep]
    counts, lv = table.count[keep], table.level[keep]
    n_bins = max(1, int(np.ceil(table.end_s.max() / bin_s)))
    covered = np.zeros(n_bins)
    weighted = np.zeros(n_bins)
    level_time = np.zeros((n_bins, levels.num_levels))
    max_count = np.full(n_bins, -1.0)
    for a, b, c, lvl in zip(starts, ends, counts, lv):
        first, last = int(a // bin_s), min(int(np.ceil(b / bin_s)) - 1, n_bins - 1)
        for k in range(first, last + 1):
            overlap = min(b, (k + 1) * bin_s) - max(a, k * bin_s)
            if overlap <= 0:
                continue
            covered[k] += overlap
            weighted[k] += overlap * c
            level_time[k, lvl] += overlap
            max_count[k] = max(max_count[k], c)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(covered > 0, weighted / covered, np.nan)
    level = np.where(covered > 0, level_time.argmax(axis=1), -1)
    share = level_time / np.maximum(covered, 1e-12)[:, None]
    max_count = np.where(max_count >= 0, max_count, np.nan)
    return BinnedTimeline(bin_s, np.arange(n_bins) * bin_s, mean, max_count, level, share, covered)


def _time_unit(duration_s: float) -> tuple[float, str]:
    if duration_s <= 10 * 60:
        return 1.0, "s"
    if duration_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def plot_timeline(
    table: WindowTable,
    levels: AmbianceLevels,
    path: str | Path,
    title: str = "",
    per_minute_after: float = PER_MINUTE_AFTER,
) -> Path:
    """Draw count over time (top) and the ambiance level band (bottom) to a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    duration = float(table.end_s.max()) if len(table) else 0.0
    scale, unit = _time_unit(duration)
    colours = [LEVEL_COLOURS[i % len(LEVEL_COLOURS)] for i in range(levels.num_levels)]
    fig, (ax, band) = plt.subplots(
        2, 1, sharex=True, figsize=(11, 4.2), gridspec_kw={"height_ratios": [4, 1], "hspace": 0.08}
    )
    per_minute = duration > per_minute_after
    spans: list[tuple[float, float, int]] = []
    if per_minute:
        binned = aggregate(table, levels, 60.0)
        edges = np.append(binned.start_s, binned.start_s[-1] + 60.0) / scale
        ax.stairs(binned.max_count, edges, baseline=0, fill=True, color="#c6dbef", label="max per minute")
        ax.stairs(binned.mean_count, edges, baseline=None, color="#08519c", lw=1.0, label="mean per minute")
        # The band shows each minute's share of every level, stacked (a long day mixes levels per minute).
        bottom = np.zeros(binned.start_s.size)
        for lvl in range(levels.num_levels):
            share = binned.level_share[:, lvl]
            band.bar(binned.start_s / scale, share, width=60.0 / scale, bottom=bottom, align="edge",
                     color=colours[lvl], linewidth=0)  # fmt: skip
            bottom += share
    elif len(table):
        lo, hi = table.owned_spans()
        counted = (table.status != STATUS_UNREADABLE) & (table.status != STATUS_UNCERTAIN)
        y = np.where(counted, table.count, np.nan).astype(float)
        # A step line through contiguous windows; gaps (hop > window) and unreadable windows stay blank.
        values, edges = [], [lo[0]]
        for a, b, c in zip(lo, hi, y):
            if a > edges[-1] + 1e-9:
                values.append(np.nan)
                edges.append(a)
            values.append(c)
            edges.append(b)
        ax.stairs(values, np.asarray(edges) / scale, baseline=None, color="#08519c", lw=1.4,
                  label="count per window")  # fmt: skip
        if table.gated.any():
            g = table.gated
            ax.scatter((lo[g] + hi[g]) / 2 / scale, np.zeros(g.sum()), s=6, marker="|", color="#969696",
                       label="gated (silence)")  # fmt: skip
        spans = [(a, b - a, int(lvl)) for a, b, lvl, c in zip(lo, hi, table.level, counted) if c]
    for status, colour in ((STATUS_UNREADABLE, UNREADABLE_COLOUR), (STATUS_UNCERTAIN, UNCERTAIN_COLOUR)):
        bad = table.status == status
        for s, e in zip(table.start_s[bad], table.end_s[bad]):
            for a in (ax, band):
                a.axvspan(s / scale, e / scale, color=colour, alpha=0.6, lw=0)
    for lvl in range(levels.num_levels):
        bars = [(s / scale, d / scale) for s, d, k in spans if k == lvl]
        if bars:
            band.broken_barh(bars, (0, 1), facecolors=colours[lvl], edgecolors="none")
    ax.set_ylabel("speakers")
    top = np.nanmax(np.where(table.count >= 0, table.count, 0)) if len(table) else 1
    ax.set_ylim(-0.3, max(float(top), 1.0) + 0.7)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    shares = (
        summarize_windows(table, levels, int(table.count.max()) + 1)["level_share"]
        if len(table)
        else dict.fromkeys(levels.names, 0.0)
    )
    handles = [
        Patch(color=colours[i], label=f"{n} ({100 * shares[n]:.0f}%)") for i, n in enumerate(levels.names)
    ]
    for status, colour in ((STATUS_UNREADABLE, UNREADABLE_COLOUR), (STATUS_UNCERTAIN, UNCERTAIN_COLOUR)):
        if len(table) and (table.status == status).any():
            handles.append(Patch(color=colour, label=status))
    band.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.9), ncol=len(handles), fontsize=8,
                frameon=False)  # fmt: skip
    band.set_yticks([])
    band.set_ylim(0, 1)
    band.set_xlim(0, max(duration, 1e-3) / scale)
    band.set_xlabel(f"time ({unit})")
    band.set_ylabel("level", rotation=0, ha="right", va="center")
    suffix = " — per-minute aggregate" if per_minute else ""
    ax.set_title((title + suffix) if title else f"speaker count over time{suffix}", fontsize=10)
    fig.subplots_adjust(bottom=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
