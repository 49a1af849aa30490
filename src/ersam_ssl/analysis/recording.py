"""Long-recording analysis: stream a recording, cut it into windows, gate silence, count, summarise.

The clinical read-out of social ambiance measurement (ERSAM: Li, Chen, Yuan, Lin, Sabharwal, ICASSP 2023):
a wearable records for hours; every 5 s window gets a speaker count (CountNet protocol, Stöter et al.,
TASLP 2019), a confidence and a social ambiance level, and the recording gets the share of time spent at
each level. This module drives the pipeline (:func:`analyze_recording`, :func:`analyze_folder`); its
steps live in :mod:`~ersam_ssl.analysis.reader`, :mod:`~ersam_ssl.analysis.counters` and
:mod:`~ersam_ssl.analysis.table`.

Pipeline (bounded memory, whatever the recording's length):

1. :func:`~ersam_ssl.analysis.reader.stream_audio` decodes blocks with soundfile, downmixes to mono and
   resamples to 16 kHz with no artefacts at block boundaries. Decode errors are survived: only the pieces
   that cannot be decoded are replaced by silence and marked as corrupt (as are NaN/Inf samples).
2. :func:`~ersam_ssl.analysis.reader.iter_windows` cuts ``window``-second windows every ``hop`` seconds; a
   tail shorter than a window (or a recording shorter than one window) is zero-padded when it holds at
   least ``min_tail`` seconds.
3. :func:`~ersam_ssl.analysis.reader.vad_activity` gates windows with no speech-like energy (see
   :class:`~ersam_ssl.analysis.reader.VadConfig`): they get count 0 without running the model. Windows
   that are mostly corrupt are reported as ``unreadable``. With a speech VAD (``speech_vad``,
   :mod:`ersam_ssl.analysis.vad`; the command line's default) every window also gets its *speech share*:
   windows with (almost) no speech are gated too, and windows with too little speech for a count are
   reported ``uncertain``.
4. A :class:`~ersam_ssl.analysis.counters.Counter` (an exported ONNX file through onnxruntime, or a
   PyTorch :class:`~ersam_ssl.models.CountModel`) returns count and confidence (max of
   ``head.log_probs``, divided by the model's calibrated temperature, see :mod:`ersam_ssl.calibration`); a
   window whose confidence is below the model's ``abstain_confidence`` is reported ``uncertain`` instead of
   counted.
5. ``windows.csv``, ``summary.json`` and ``timeline.png`` are written to the output folder (and, on
   request, a self-contained ``report.html``, :mod:`ersam_ssl.analysis.report`).
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ersam_ssl import audio
from ersam_ssl.analysis.counters import Counter, load_counter, model_window
from ersam_ssl.analysis.reader import (
    DEFAULT_BLOCK_SECONDS,
    StreamReport,
    VadConfig,
    WindowBatch,
    _short,
    iter_windows,
    stream_audio,
    vad_activity,
)
from ersam_ssl.analysis.table import (
    STATUS_ANALYSED,
    STATUS_GATED,
    STATUS_UNCERTAIN,
    STATUS_UNREADABLE,
    WINDOW_COLUMNS,
    Summary,
    WindowTable,
    input_problems,
    input_warnings,
    summarize_windows,
    window_rows,
)
from ersam_ssl.analysis.vad import SpeechTracker, SpeechVadConfig, load_speech_vad
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.fileio import atomic_open, write_json

#: Tails (and whole recordings) shorter than a window are analysed zero-padded if at least this long.
DEFAULT_MIN_TAIL = 0.5
#: Windows whose corrupt/unreadable share exceeds this are not counted (status ``unreadable``).
MAX_CORRUPT_SHARE = 0.5


def analyze_recording(
    path: str | Path,
    model: str | Path | torch.nn.Module | Counter,
    out_dir: str | Path,
    window: float | None = None,
    hop: float | None = None,
    vad: VadConfig | None = None,
    vad_threshold_db: float | None = None,
    speech_vad: SpeechVadConfig | None = None,
    batch_size: int = 16,
    threads: int = 1,
    levels: AmbianceLevels | None = None,
    min_tail: float = DEFAULT_MIN_TAIL,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    plot: bool = True,
    progress: Callable[[float, float], None] | None = None,
    html_report: bool = False,
) -> Summary:
    """Count speakers in every window of a long recording; write ``windows.csv``, ``summary.json`` and
    ``timeline.png`` to ``out_dir``.

    Example:
        >>> s = analyze_recording("day.flac", "model.onnx", "out/day")
        >>> s.level_share            # {"none": 0.71, "one-to-one": 0.18, "small group": 0.09, "crowd": 0.02}

    Args:
        path: the recording (WAV/FLAC/OGG/MP3..., any rate and channel count; streamed, never fully loaded).
        model: an ``.onnx`` export, a model file or Lightning checkpoint, a ``CountModel``, or a
            :class:`Counter` (see :func:`load_counter`).
        out_dir: output folder (created).
        window, hop: window length and hop in seconds. ``window=None``: the model's own window when it
            takes a fixed input length (an ONNX export records it), else :data:`DEFAULT_WINDOW`;
            ``hop=None``: the window (no overlap).
        vad: the voice-activity gate (default :class:`VadConfig`); ``vad_threshold_db`` overrides its
            threshold.
        speech_vad: a speech VAD as well (:class:`~ersam_ssl.analysis.vad.SpeechVadConfig`; the command
            line's default is Silero): adds each window's speech share, gates windows without speech and
            reports those with too little for a count as ``uncertain``. None (the default here, so existing
            callers keep their results): the energy gate only. If the Silero model cannot be loaded, one
            warning is logged and the energy gate works alone (``summary.settings["speech_vad"]`` says so).
        batch_size: windows per model call.
        threads: intra-op threads of the model.
        levels: count → ambiance level mapping.
        min_tail: a final partial window is analysed (zero-padded) if it holds at least this many seconds.
        block_seconds: decode block size (memory ≈ a few blocks + one batch of windows).
        plot: write ``timeline.png``.
        progress: called as ``progress(seconds_done, total_seconds)`` after every batch.
        html_report: also write ``report.html`` (:func:`ersam_ssl.analysis.report.write_report`).

    Raises:
        ersam_ssl.audio.AudioError: the file cannot be read as audio at all (partial damage is reported in
            ``summary.input`` instead).
    """
    t0 = time.perf_counter()
    counter = load_counter(model, threads)
    window = model_window(counter, window)
    hop = window if hop is None else hop
    if window <= 0 or hop <= 0 or batch_size < 1:
        raise ValueError(f"need window > 0, hop > 0 and batch_size >= 1, got {window}, {hop}, {batch_size}")
    levels = levels or AmbianceLevels()
    vad = vad or VadConfig()
    if vad_threshold_db is not None:
        vad = VadConfig(vad_threshold_db, vad.min_active, vad.frame_s, vad.enabled)
    speech_vad = speech_vad or SpeechVadConfig(backend="energy")
    silero, vad_problem = load_speech_vad(speech_vad)
    tracker = SpeechTracker(silero, speech_vad.threshold) if silero is not None else None
    sr = audio.SAMPLE_RATE
    win, hop_n = int(round(window * sr)), int(round(hop * sr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hdr = audio.info(path)
    report = StreamReport(str(path), hdr.sample_rate, hdr.channels, hdr.frames)
    csv_path = out_dir / "windows.csv"
    csv_part = csv_path.with_name(csv_path.name + ".part")
    level_of = np.asarray(levels.level(np.arange(counter.num_classes)), dtype=np.int64)
    parts: list[WindowTable] = []
    # Resampling runs in PyTorch too: give it the same thread budget as the model (extra threads only
    # contend with other work on a small machine; 1 thread is the fastest on a busy 2-core CPU).
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        # Rows are written batch by batch (a crash leaves the .part file with everything counted so far);
        # the complete file is renamed into place at the end.
        with open(csv_part, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(WINDOW_COLUMNS)
            blocks = stream_audio(path, sr, block_seconds, report)
            if tracker is not None:
                blocks = tracker.track(blocks)
            for wb in iter_windows(blocks, win, hop_n, int(round(min_tail * sr)), batch_size):
                share = tracker.speech_share(wb.starts, wb.lengths) if tracker is not None else None
                t = _count_batch(wb, counter, vad, level_of, sr, share, speech_vad)
                writer.writerows(window_rows(t, levels))
                fh.flush()
                parts.append(t)
                if progress is not None:
                    progress(float(t.end_s[-1]), report.duration_s)
        os.replace(csv_part, csv_path)
    finally:
        torch.set_num_threads(previous_threads)
    table = WindowTable.concat(parts)
    stats = summarize_windows(table, levels, counter.num_classes)
    wall = time.perf_counter() - t0
    outputs = {"windows_csv": str(csv_path), "summary_json": str(out_dir / "summary.json")}
    input_info = report.to_dict()
    input_info["size_bytes"] = Path(path).stat().st_size
    settings = {
        "window_s": window,
        "hop_s": hop,
        "sample_rate": sr,
        "batch_size": batch_size,
        "threads": threads,
        "min_tail_s": min_tail,
        "vad": asdict(vad),
        "speech_vad": {
            **asdict(speech_vad),
            "used": "silero" if silero is not None else "energy",
            **(silero.info() if silero is not None else {}),
            **({"fallback_reason": vad_problem} if vad_problem else {}),
        },
        "levels": {"names": list(levels.names), "lower_bounds": list(levels.lower_bounds)},
        "max_corrupt_share": MAX_CORRUPT_SHARE,
    }
    if plot:
        from ersam_ssl.analysis.plots import plot_timeline

        png = plot_timeline(table, levels, out_dir / "timeline.png", title=Path(path).name)
        outputs["timeline_png"] = str(png)
    problems = input_problems(report, len(table), min_tail)
    summary = Summary(
        input=input_info,
        model=counter.info(),
        settings=settings,
        wall_time_s=wall,
        real_time_factor=(report.decoded_s / wall) if wall > 0 else math.inf,
        outputs=outputs,
        status="partial" if problems else "ok",
        problems=problems,
        warnings=input_warnings(report),
        table=table,
        **stats,
    )
    if html_report:
        from ersam_ssl.analysis.report import write_report

        outputs["report_html"] = str(write_report(summary, out_dir / "report.html", levels, Path(path).name))
    _write_json(out_dir / "summary.json", _finite(summary.to_dict()))
    return summary


def _finite(o: Any) -> Any:
    """Replace NaN/inf floats by None so ``summary.json`` is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, allow_nan=False)


def _count_batch(
    wb: WindowBatch,
    counter: Counter,
    vad: VadConfig,
    level_of: np.ndarray,
    sr: int,
    speech_share: np.ndarray | None = None,
    speech_vad: SpeechVadConfig | None = None,
) -> WindowTable:
    b = wb.starts.shape[0]
    active_frac, rms_dbfs = vad_activity(wb.audio, wb.lengths, vad, sr)
    unreadable = wb.corrupt > MAX_CORRUPT_SHARE * wb.lengths
    gated = (~unreadable) & (active_frac < vad.min_active) if vad.enabled else np.zeros(b, dtype=bool)
    share = np.full(b, np.nan) if speech_share is None else np.asarray(speech_share, dtype=np.float64)
    little_speech = np.zeros(b, dtype=bool)
    if vad.enabled and speech_vad is not None:
        # NaN (no speech VAD, or a window without a whole VAD frame) compares False: never gated by it.
        gated |= (~unreadable) & (share < speech_vad.min_speech_share)
        little_speech = (~unreadable) & (~gated) & (share < speech_vad.min_count_share)
    run = ~(unreadable | gated | little_speech)
    count = np.zeros(b, dtype=np.int64)
    confidence = np.full(b, np.nan)
    if run.any():
        c, p = counter(wb.audio[run])
        count[run] = c
        confidence[run] = p
    abstain = getattr(counter, "abstain_confidence", None)
    uncertain = little_speech | (run & (confidence < abstain)) if abstain is not None else little_speech
    count[unreadable | uncertain] = -1
    level = np.where(count < 0, -1, level_of[np.clip(count, 0, level_of.size - 1)])
    status = np.where(
        unreadable,
        STATUS_UNREADABLE,
        np.where(gated, STATUS_GATED, np.where(uncertain, STATUS_UNCERTAIN, STATUS_ANALYSED)),
    )
    return WindowTable(
        start_s=wb.starts / sr,
        end_s=(wb.starts + wb.lengths) / sr,
        count=count,
        confidence=confidence,
        level=level.astype(np.int64),
        gated=gated,
        status=status.astype("<U10"),
        active_frac=active_frac,
        rms_dbfs=rms_dbfs,
        corrupt_s=wb.corrupt / sr,
        speech_share=share,
    )


# ---------------------------------------------------------------------------------------------------
# Folders of recordings

SUMMARY_CSV_COLUMNS = (
    "file", "status", "reason", "out_dir", "duration_s", "hours_analysed", "windows", "gated_share",
    "unreadable_windows", "mean_count", "mean_confidence",
)  # fmt: skip


def find_recordings(folder: str | Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted, following symlinked folders), by extension."""
    return [p for p in audio.list_files(folder)[0] if audio.is_audio_file(p)]


def _out_name(rel: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^\w.-]+", "_", str(rel.with_suffix("")).replace(os.sep, "__"))
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    taken.add(name)
    return name


def analyze_folder(
    folder: str | Path,
    model: str | Path | torch.nn.Module | Counter,
    out_dir: str | Path,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Analyse every recording under ``folder`` into ``out_dir/<stem>/`` and write ``out_dir/summary.csv``.

    Files that cannot be read (and symlink loops or broken links) are reported (status ``error`` with the
    reason) and skipped; damaged recordings are analysed as far as they decode (status ``partial``). The
    model is loaded once. ``kwargs`` go to :func:`analyze_recording`.

    Returns:
        One row per file (the rows of ``summary.csv``; ``summary`` holds the :class:`Summary` if analysed).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    folder, out_dir = Path(folder), Path(out_dir)
    found, unfollowed = audio.list_files(folder)
    files = [p for p in found if audio.is_audio_file(p)]
    if not files:
        hint = f"; not readable: {unfollowed[0][0]}: {unfollowed[0][1]}" if unfollowed else ""
        raise FileNotFoundError(f"no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) under {folder}{hint}")
    counter = load_counter(model, kwargs.get("threads", 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows: list[dict[str, Any]] = []
    # Symlink loops and broken links are listed (status "error") with the files, in path order.
    entries: list[tuple[Path, str | None]] = sorted([(f, None) for f in files] + list(unfollowed))
    for f, unreadable in entries:
        rel = f.relative_to(folder)
        if unreadable is not None:
            rows.append({"file": str(rel), "out_dir": "", "status": "error", "reason": unreadable})
            log(f"skipped {rel}: {unreadable}")
            continue
        sub = out_dir / _out_name(rel, taken)
        row: dict[str, Any] = {"file": str(rel), "out_dir": str(sub), "status": "ok", "reason": ""}
        try:
            s = analyze_recording(f, counter, sub, **kwargs)
        except audio.AudioError as e:
            row.update(status="error", reason=e.reason)
            log(f"skipped {rel}: {e.reason}")
        except (ValueError, RuntimeError, OSError) as e:
            row.update(status="error", reason=_short(e))
            log(f"skipped {rel}: {_short(e)}")
        else:
            if s.problems or s.warnings:
                row.update(status=s.status, reason="; ".join(s.problems + s.warnings))
                log(f"{rel}: {row['reason']}")
            row.update(
                duration_s=round(s.input["duration_s"], 3),
                hours_analysed=round(s.hours_analysed, 6),
                windows=s.windows,
                gated_share=round(s.gated_share, 4),
                unreadable_windows=s.unreadable_windows,
                mean_count=_round_or_blank(s.mean_count),
                mean_confidence=_round_or_blank(s.mean_confidence),
            )
            for name, v in s.level_share.items():
                row[f"share_{name}"] = round(v, 4)
            row["summary"] = s
        rows.append(row)
    levels = kwargs.get("levels") or AmbianceLevels()
    cols = list(SUMMARY_CSV_COLUMNS) + [f"share_{name}" for name in levels.names]
    with atomic_open(out_dir / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return rows


def _round_or_blank(x: float) -> float | str:
    return round(x, 4) if np.isfinite(x) else ""
