"""A day report: one self-contained HTML page per analysed recording (``ersam-ssl analyze ... --report``).

For the people who read the result, not the CSV: how much of the day was analysed, gated (no speech),
uncertain or unreadable; the share of each ambiance level hour by hour (stacked bars); the timeline; and
what model produced it (its stored config and calibration, plus the path of a ``MODEL_CARD.md`` next to
the model file when there is one). The page is built from the same :class:`WindowTable` the
``windows.csv`` rows are written from, and needs nothing else to display: CSS is inline, the hour bars
are inline SVG, the timeline is an embedded PNG, and there is no script and no external resource, so it
can be archived with the clinical record and opened offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ersam_ssl.analysis.plots import LEVEL_COLOURS, UNCERTAIN_COLOUR, UNREADABLE_COLOUR
from ersam_ssl.analysis.table import STATUS_UNCERTAIN, STATUS_UNREADABLE, Summary, WindowTable
from ersam_ssl.data.levels import AmbianceLevels

HOUR_S = 3600.0
SECTIONS = ("Overview", "Ambiance by hour", "Timeline", "Model")

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1100px;
 color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
 margin-top:2rem}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.25rem .8rem;text-align:left;border-bottom:1px solid #eee}td.n{text-align:right;
 font-variant-numeric:tabular-nums}
.legend span{display:inline-block;margin-right:1rem;font-size:.9rem}
.legend i{display:inline-block;width:.9rem;height:.9rem;margin-right:.3rem;vertical-align:-.1rem}
img{max-width:100%}pre{background:#f6f6f6;padding:.8rem;overflow:auto;font-size:.85rem}
.note{color:#666;font-size:.9rem}
"""


def hourly_shares(
    table: WindowTable, levels: AmbianceLevels, hour_s: float = HOUR_S
) -> dict[str, np.ndarray]:
    """Seconds of each hour of the recording spent at each ambiance level, uncertain and unreadable.

    Every window stands for its owned span (:meth:`WindowTable.owned_spans`), split across hour
    boundaries. Returns ``{"level": [hours, num_levels], "uncertain": [hours], "unreadable": [hours],
    "gated": [hours]}`` in seconds (``gated`` is part of the level ``none`` time, reported separately).
    """
    n_hours = max(1, int(np.ceil(float(table.end_s.max()) / hour_s))) if len(table) else 0
    out = {
        "level": np.zeros((n_hours, levels.num_levels)),
        "uncertain": np.zeros(n_hours),
        "unreadable": np.zeros(n_hours),
        "gated": np.zeros(n_hours),
    }
    if not len(table):
        return out
    lo, hi = table.owned_spans()
    for a, b, status, level, gated in zip(lo, hi, table.status, table.level, table.gated):
        for h in range(int(a // hour_s), min(int(np.ceil(b / hour_s)), n_hours)):
            overlap = min(b, (h + 1) * hour_s) - max(a, h * hour_s)
            if overlap <= 0:
                continue
            if status == STATUS_UNREADABLE:
                out["unreadable"][h] += overlap
            elif status == STATUS_UNCERTAIN:
                out["uncertain"][h] += overlap
            else:
                out["level"][h, int(level)] += overlap
                if gated:
                    out["gated"][h] += overlap
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def _hour_bars_svg(table: WindowTable, levels: AmbianceLevels) -> str:
    shares = hourly_shares(table, levels)
    n = shares["uncertain"].size
    colours = [LEVEL_COLOURS[i % len(LEVEL_COLOURS)] for i in range(levels.num_levels)]
    parts = [*zip(levels.names, colours), ("uncertain", UNCERTAIN_COLOUR), ("unreadable", UNREADABLE_COLOUR)]
    slot = max(28.0, min(80.0, 960.0 / max(n, 1)))
    height, top, bottom, left = 220.0, 10.0, 40.0, 44.0
    bar_w = slot * 0.75
    width = left + slot * n + 10
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hour-bars" width="{width:.0f}" '
           f'height="{height + top + bottom:.0f}" role="img" aria-label="ambiance level share per hour">']  # fmt: skip
    for frac in (0.0, 0.5, 1.0):
        y = top + height * (1 - frac)
        svg.append(f'<line x1="{left - 4}" x2="{width - 10:.0f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{100 * frac:.0f}%</text>')  # fmt: skip
    for h in range(n):
        seconds = [*shares["level"][h], shares["uncertain"][h], shares["unreadable"][h]]
        covered = float(sum(seconds))
        x = left + h * slot + (slot - bar_w) / 2
        title = f"hour {h}: {covered / 60:.0f} min recorded; " + ", ".join(
            f"{name} {100 * s / covered:.0f}%" for (name, _), s in zip(parts, seconds) if covered and s > 0
        )
        if shares["gated"][h] > 0 and covered:
            title += f" (no speech: {100 * shares['gated'][h] / covered:.0f}%)"
        svg.append(
            f'<g class="hour-bar" data-hour="{h}" data-covered-s="{covered:.1f}"><title>{html.escape(title)}</title>'
        )
        y = top + height
        for (name, colour), s in zip(parts, seconds):
            if covered <= 0 or s <= 0:
                continue
            hgt = height * s / covered
            y -= hgt
            svg.append(f'<rect class="seg" data-part="{html.escape(name)}" x="{x:.1f}" y="{y:.2f}" '
                       f'width="{bar_w:.1f}" height="{hgt:.2f}" fill="{colour}"/>')  # fmt: skip
        svg.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + height + 15}" font-size="11" text-anchor="middle">'
                   f"{h}h</text>"
                   f'<text x="{x + bar_w / 2:.1f}" y="{top + height + 29}" font-size="9" fill="#888" '
                   f'text-anchor="middle">{covered / 60:.0f}m</text></g>')  # fmt: skip
    svg.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{html.escape(name)}</span>' for name, c in parts)
    return "".join(svg) + f'<div class="legend">{legend}</div>'


def _timeline_png(summary: Summary, levels: AmbianceLevels, title: str) -> bytes:
    existing = summary.outputs.get("timeline_png")
    if existing and Path(existing).is_file():
        return Path(existing).read_bytes()
    from ersam_ssl.analysis.plots import plot_timeline

    with tempfile.TemporaryDirectory() as tmp:
        return plot_timeline(summary.table, levels, Path(tmp) / "t.png", title=title).read_bytes()


def _rows(pairs: list[tuple[str, Any]]) -> str:
    cells = []
    for k, v in pairs:
        cls = ' class="n"' if isinstance(v, (int, float)) or (isinstance(v, str) and v[:1].isdigit()) else ""
        cells.append(f"<tr><th>{html.escape(k)}</th><td{cls}>{html.escape(str(v))}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def model_card_path(model_info: dict[str, Any]) -> Path | None:
    """``MODEL_CARD.md`` next to the model file the summary names, if there is one."""
    source = model_info.get("source")
    if not source:
        return None
    card = Path(source).parent / "MODEL_CARD.md"
    return card if card.is_file() else None


def _model_section(model: dict[str, Any]) -> str:
    config = model.get("config") or {}
    pairs: list[tuple[str, Any]] = [
        ("backend", model.get("backend", "")),
        ("file", model.get("source") or "(in memory)"),
        ("architecture", config.get("name", "") if isinstance(config, dict) else ""),
        ("counts", f"0-{int(model['num_classes']) - 1}" if model.get("num_classes") else ""),
    ]
    if model.get("params"):
        pairs.append(("parameters", f"{int(model['params']):,}"))
    temperature = model.get("temperature")
    abstain = model.get("abstain_confidence")
    pairs.append(("temperature", f"{temperature:g}" if temperature is not None else "1 (not calibrated)"))
    pairs.append(("abstains below", f"{abstain:g} confidence" if abstain is not None else "never"))
    card = model_card_path(model)
    text = _rows(pairs)
    if card is not None:
        body = card.read_text(errors="replace")
        text += (f'<p>Model card: <code>{html.escape(str(card))}</code></p><details><summary>show</summary>'
                 f"<pre>{html.escape(body[:20000])}</pre></details>")  # fmt: skip
    else:
        text += '<p class="note">No MODEL_CARD.md next to the model file.</p>'
    if isinstance(config, dict) and config:
        import json

        text += f"<details><summary>stored config</summary><pre>{html.escape(json.dumps(config, indent=1))}</pre></details>"
    return text


def render_report(summary: Summary, levels: AmbianceLevels | None = None, title: str | None = None) -> str:
    """The report page as an HTML string (see the module docstring)."""
    levels = levels or AmbianceLevels()
    table = summary.table
    if table is None:
        raise ValueError("the summary has no window table (report it from analyze_recording's result)")
    name = title or Path(str(summary.input.get("path", "recording"))).name
    owned = table.owned_seconds()
    unreadable_s = float(owned[table.status == STATUS_UNREADABLE].sum())
    uncertain_s = float(owned[table.status == STATUS_UNCERTAIN].sum())
    gated_s = float(owned[table.gated & (table.status != STATUS_UNREADABLE)].sum())
    readable_s = summary.hours_analysed * 3600
    counted_s = readable_s - uncertain_s
    speech_vad = summary.settings.get("speech_vad", {}).get("used", "energy")
    overview = _rows([
        ("recording", name),
        ("duration", _hours(float(summary.input.get("duration_s", table.end_s.max() if len(table) else 0.0)))),
        ("analysed (readable)", _hours(readable_s)),
        ("counted", _hours(counted_s)),
        ("gated: no speech", f"{_hours(gated_s)} ({100 * summary.gated_share:.0f}%)"),
        ("uncertain: no count given", f"{_hours(uncertain_s)} ({100 * summary.uncertain_share:.0f}%)"),
        ("unreadable", _hours(unreadable_s)),
        ("windows", summary.windows),
        ("voice activity detection", "Silero speech VAD + energy gate" if speech_vad == "silero" else "energy gate"),
    ])  # fmt: skip
    level_rows = _rows([(f"{n}", f"{100 * summary.level_share[n]:.1f}% ({_hours(summary.level_hours[n] * 3600)})")
                        for n in levels.names])  # fmt: skip
    png = base64.b64encode(_timeline_png(summary, levels, name)).decode("ascii")
    generated = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = f"""<h1>Social ambiance report: {html.escape(name)}</h1>
<p class="sub">Generated {html.escape(generated)} by ersam_ssl. Speaker counts per {summary.settings.get("window_s", 5):g} s
window; ambiance levels: {html.escape(", ".join(levels.names))}.</p>
<section id="overview"><h2>{SECTIONS[0]}</h2>{overview}
<h3>Share of counted time per ambiance level</h3>{level_rows}
<p class="note">Level shares are over the counted time (analysed minus uncertain); gated windows count as
"{html.escape(levels.names[0])}".</p></section>
<section id="hours"><h2>{SECTIONS[1]}</h2>
<p class="note">Each bar is one hour from the start of the recording (its recorded minutes below it), stacked by
the share of that time at each level; hover for numbers.</p>{_hour_bars_svg(table, levels)}</section>
<section id="timeline"><h2>{SECTIONS[2]}</h2><img alt="speaker count and ambiance level over time"
src="data:image/png;base64,{png}"></section>
<section id="model"><h2>{SECTIONS[3]}</h2>{_model_section(summary.model)}</section>"""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Ambiance report: {html.escape(name)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")  # fmt: skip


def write_report(
    summary: Summary, path: str | Path, levels: AmbianceLevels | None = None, title: str | None = None
) -> Path:
    """Write :func:`render_report` to ``path`` (parent folders created); returns the path."""
    from ersam_ssl.fileio import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(render_report(summary, levels, title))
    return path
