"""The window table of an analysis and what is made of it: ``windows.csv`` rows and the summary statistics.

:class:`WindowTable` holds one row per window (count, confidence, level, status, ...); it is written to
and read back from ``windows.csv`` (:func:`window_rows`, :func:`read_windows`) and condensed into the
time-weighted statistics of a :class:`Summary` (:func:`summarize_windows`), together with what the decoder
lost or repaired (:func:`input_problems`, :func:`input_warnings`). The plots and the HTML report are drawn
from the same table.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.fileio import json_default

if TYPE_CHECKING:
    from ersam_ssl.analysis.reader import StreamReport

STATUS_ANALYSED = "analysed"
STATUS_GATED = "gated"
STATUS_UNREADABLE = "unreadable"
#: Readable, but no count is given: too little speech for one, or the counter is not confident enough.
STATUS_UNCERTAIN = "uncertain"

WINDOW_COLUMNS = (
    "start_s", "end_s", "count", "confidence", "level", "level_name", "gated", "status",
    "active_frac", "rms_dbfs", "corrupt_s", "speech_share",
)  # fmt: skip


@dataclass
class WindowTable:
    """Per-window results as arrays (``count``/``level`` are -1 where not counted, ``confidence`` NaN where
    the model did not run, ``speech_share`` NaN where no speech VAD ran)."""

    start_s: np.ndarray
    end_s: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    level: np.ndarray
    gated: np.ndarray
    status: np.ndarray
    active_frac: np.ndarray
    rms_dbfs: np.ndarray
    corrupt_s: np.ndarray
    speech_share: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.speech_share is None:
            self.speech_share = np.full(self.start_s.shape[0], np.nan)

    def __len__(self) -> int:
        return int(self.start_s.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[WindowTable]) -> WindowTable:
        if not parts:
            empty = {
                "start_s": np.zeros(0), "end_s": np.zeros(0), "count": np.zeros(0, np.int64),
                "confidence": np.zeros(0), "level": np.zeros(0, np.int64), "gated": np.zeros(0, bool),
                "status": np.zeros(0, dtype="<U10"), "active_frac": np.zeros(0), "rms_dbfs": np.zeros(0),
                "corrupt_s": np.zeros(0),
            }  # fmt: skip
            return cls(**empty)
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__})

    def owned_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """The stretch of the recording each window stands for, ``(start_s, end_s)``.

        Consecutive windows that overlap (hop < window) split their overlap in the middle, so no time
        counts twice and each window speaks for its centre (for equal windows: the ``hop`` seconds around
        it); a window never stands for time outside itself (hop > window leaves gaps unaccounted for).
        """
        if len(self) == 0:
            return np.zeros(0), np.zeros(0)
        nxt_start, end = self.start_s[1:], self.end_s[:-1]
        overlap = nxt_start < end
        cut = (nxt_start + end) / 2
        hi = np.append(np.where(overlap, cut, end), self.end_s[-1])
        lo = np.concatenate([[self.start_s[0]], np.where(overlap, cut, nxt_start)])
        return lo, np.maximum(hi, lo)

    def owned_seconds(self) -> np.ndarray:
        """Length of :meth:`owned_spans` (seconds each window stands for)."""
        lo, hi = self.owned_spans()
        return hi - lo


@dataclass
class Summary:
    """Result of :func:`~ersam_ssl.analysis.recording.analyze_recording` (also written as ``summary.json``;
    ``table`` is not).

    Time statistics weight every window by the stretch of the recording it stands for
    (:meth:`WindowTable.owned_spans`) and leave unreadable windows out.

    Attributes:
        input: file facts and damage (rate, channels, duration, unreadable spans, NaN count, truncation).
        model: backend (``pytorch``/``onnxruntime``), source, config, classes, threads.
        settings: window, hop, VAD, levels, batch size.
        windows / analysed_windows / gated_windows / unreadable_windows: window counts (analysed = model run).
        gated_share: share of the readable time the VAD gated (count 0 without the model).
        hours_analysed: readable time in hours (gated and uncertain windows included).
        mean_count: time-weighted mean count; ``mean_count_when_speaking`` over windows with count > 0.
        mean_confidence: mean max-probability of the windows the model ran on.
        level_share / level_hours: time per ambiance level over the counted time (readable and not
            uncertain; shares sum to 1); ``count_share`` per count.
        uncertain_windows / uncertain_share: windows given no count (status ``uncertain``) and their share
            of the readable time.
        wall_time_s / real_time_factor: analysis time and decoded seconds per wall-clock second.
        outputs: paths of the files written.
        status: ``"ok"``, or ``"partial"`` when part of the recording was lost (see ``problems``): the
            statistics then describe only what could be read.
        problems: one human-readable line per loss (seconds unreadable or missing, NaN/Inf samples
            replaced by silence, a recording too short for any window); empty when ``status == "ok"``.
        warnings: input that was repaired without loss (channels in anti-phase: the loudest one used).
        table: every window (:class:`WindowTable`).
    """

    input: dict[str, Any]
    model: dict[str, Any]
    settings: dict[str, Any]
    windows: int
    analysed_windows: int
    gated_windows: int
    unreadable_windows: int
    gated_share: float
    hours_analysed: float
    mean_count: float
    mean_count_when_speaking: float
    mean_confidence: float
    level_share: dict[str, float]
    level_hours: dict[str, float]
    count_share: dict[str, float]
    wall_time_s: float
    real_time_factor: float
    outputs: dict[str, str]
    status: str = "ok"
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    uncertain_windows: int = 0
    uncertain_share: float = 0.0
    table: WindowTable | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of everything but ``table`` (NaN where a statistic is undefined)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "table"}
        return json.loads(json.dumps(d, default=json_default))


def summarize_windows(table: WindowTable, levels: AmbianceLevels, num_classes: int) -> dict[str, Any]:
    """Time-weighted statistics of a window table (see :class:`Summary`)."""
    readable = table.status != STATUS_UNREADABLE
    uncertain = table.status == STATUS_UNCERTAIN
    counted = readable & ~uncertain
    owned = table.owned_seconds()
    readable_s = float((owned * readable).sum())
    w = owned * counted
    total = float(w.sum())
    gated = table.gated & counted
    model_run = np.isfinite(table.confidence)

    def share(mask: np.ndarray) -> float:
        return float((w * mask).sum() / total) if total > 0 else 0.0

    def share_of_readable(mask: np.ndarray) -> float:
        return float((owned * mask).sum() / readable_s) if readable_s > 0 else 0.0

    speaking = counted & (table.count > 0)
    return {
        "windows": len(table),
        "analysed_windows": int((table.status == STATUS_ANALYSED).sum()),
        "gated_windows": int(gated.sum()),
        "unreadable_windows": int((~readable).sum()),
        "uncertain_windows": int(uncertain.sum()),
        "gated_share": share_of_readable(gated),
        "uncertain_share": share_of_readable(uncertain),
        "hours_analysed": readable_s / 3600.0,
        "mean_count": float((w * np.where(counted, table.count, 0)).sum() / total) if total > 0 else math.nan,
        "mean_count_when_speaking": float((owned * table.count)[speaking].sum() / owned[speaking].sum())
        if speaking.any()
        else math.nan,
        "mean_confidence": float(table.confidence[model_run].mean()) if model_run.any() else math.nan,
        "level_share": {name: share(counted & (table.level == i)) for i, name in enumerate(levels.names)},
        "level_hours": {
            name: float((w * (counted & (table.level == i))).sum() / 3600.0)
            for i, name in enumerate(levels.names)
        },
        "count_share": {str(k): share(counted & (table.count == k)) for k in range(num_classes)},
    }


def input_problems(report: StreamReport, windows: int, min_tail: float) -> list[str]:
    """What part of a recording an analysis lost, one line each (empty: nothing was lost).

    A damaged recording still gets a full analysis of what decodes; these lines are how the caller (and
    ``summary.json``) learns that the figures cover less than the file.
    """
    problems = []
    if report.truncated_at_s is not None:
        missing = report.duration_s - report.truncated_at_s
        problems.append(f"truncated: {missing:.1f} s of {report.duration_s:.1f} s unreadable after "
                        f"{report.truncated_at_s:.1f} s")  # fmt: skip
    if report.unreadable:
        spans = sum(b - a for a, b in report.unreadable)
        problems.append(f"{len(report.unreadable)} unreadable span(s), {spans:.1f} s replaced by silence")
    if report.nonfinite_samples:
        problems.append(f"{report.nonfinite_samples} NaN/Inf samples replaced by silence")
    if windows == 0:
        problems.append(f"too short: {report.decoded_s:.3f} s of audio, less than min_tail={min_tail:g} s; "
                        "no window analysed")  # fmt: skip
    return problems


def input_warnings(report: StreamReport) -> list[str]:
    """What was repaired in a recording without losing it, one line each (see :class:`StreamReport`)."""
    if report.antiphase_s > 0:
        return [f"the channels cancel each other (anti-phase) in {report.antiphase_s:.1f} s; the loudest "
                "channel was analysed there instead of their silent mean"]  # fmt: skip
    return []


def window_rows(t: WindowTable, levels: AmbianceLevels) -> Iterator[list[Any]]:
    """``windows.csv`` rows (see :data:`WINDOW_COLUMNS`); blank count/level/confidence/speech share where not
    defined."""
    assert t.speech_share is not None
    for i in range(len(t)):
        counted = t.status[i] not in (STATUS_UNREADABLE, STATUS_UNCERTAIN)
        yield [
            f"{t.start_s[i]:.3f}",
            f"{t.end_s[i]:.3f}",
            int(t.count[i]) if counted else "",
            f"{t.confidence[i]:.4f}" if np.isfinite(t.confidence[i]) else "",
            int(t.level[i]) if counted else "",
            levels.names[int(t.level[i])] if counted else "",
            int(bool(t.gated[i])),
            t.status[i],
            f"{t.active_frac[i]:.3f}",
            f"{t.rms_dbfs[i]:.1f}",
            f"{t.corrupt_s[i]:.3f}",
            f"{t.speech_share[i]:.3f}" if np.isfinite(t.speech_share[i]) else "",
        ]


def read_windows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``windows.csv`` (or of the folder holding it) with typed values (None where blank)."""
    path = Path(path)
    if path.is_dir():
        path = path / "windows.csv"
    conv: dict[str, Callable[[str], Any]] = {
        "start_s": float, "end_s": float, "count": int, "confidence": float, "level": int,
        "gated": lambda s: s == "1", "active_frac": float, "rms_dbfs": float, "corrupt_s": float,
        "speech_share": float,
    }  # fmt: skip
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({k: (None if v == "" else conv.get(k, str)(v)) for k, v in r.items()})
    return rows
