"""``ersam-ssl analyze RECORDING|FOLDER [--model MODEL] --out DIR``: count speakers over long recordings.

Writes ``windows.csv``, ``summary.json``, ``timeline.png`` and, with ``--report``, ``report.html`` to ``DIR``
(for a folder: one sub-folder per recording plus a combined ``summary.csv``). MODEL is an exported ``.onnx``
file (ONNX Runtime) or a model file / Lightning checkpoint (PyTorch); without it, the counter shipped with
the package is used (``--model-info`` prints its model card).

Damaged input is analysed as far as it decodes and reported: what was lost (seconds unreadable or
missing, NaN/Inf samples, a file too short for a window) is printed to stderr and recorded in
summary.json ("status": "partial", "problems": [...]); a folder lists every file it could not analyse.

Exit codes:
  0  complete: every recording analysed in full
  1  nothing analysed: the recording (or every recording of the folder) is unreadable
  2  error in the arguments, the model file or the output folder (nothing analysed)
  3  partial: results written, but part of the input was lost (see stderr and summary.json / summary.csv)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ersam_ssl.analysis.counters import DEFAULT_WINDOW, load_counter, model_window
from ersam_ssl.analysis.reader import VadConfig
from ersam_ssl.analysis.recording import DEFAULT_MIN_TAIL, analyze_folder, analyze_recording
from ersam_ssl.analysis.vad import SpeechVadConfig
from ersam_ssl.audio import SAMPLE_RATE
from ersam_ssl.cli import add_debug_flag, run_command

#: Exit codes (see the module docstring, which is also ``--help``).
EXIT_COMPLETE, EXIT_UNREADABLE, EXIT_ERROR, EXIT_PARTIAL = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    vad, speech = VadConfig(), SpeechVadConfig()
    p = argparse.ArgumentParser(
        prog="ersam-ssl analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", nargs="?", help="a recording (WAV/FLAC/OGG/MP3, any rate/channels) or a folder")
    p.add_argument("--model", default=None,
                   help=".onnx export, model file (.pt) or Lightning checkpoint (default: the counter shipped "
                        "with the package, see --model-info)")  # fmt: skip
    p.add_argument("--model-info", action="store_true", help="print the model card of the shipped counter")
    p.add_argument("--out", default=None, help="output folder (required unless --model-info)")
    p.add_argument("--window", type=float, default=None,
                   help=f"window length in s (default: the window an ONNX export was made for, else "
                        f"{DEFAULT_WINDOW:g})")  # fmt: skip
    p.add_argument("--hop", type=float, default=None, help="hop between windows in s (default: the window)")
    p.add_argument("--vad-threshold-db", type=float, default=vad.threshold_db,
                   help=f"frame level (dBFS, 20 ms frames) counting as activity (default {vad.threshold_db})")  # fmt: skip
    p.add_argument("--vad-min-active", type=float, default=vad.min_active,
                   help=f"windows with a smaller share of active frames are gated: count 0, model not run "
                        f"(default {vad.min_active})")  # fmt: skip
    p.add_argument("--no-vad", action="store_true", help="run the model on every window")
    p.add_argument("--vad", choices=("silero", "energy"), default="silero",
                   help="silero (default): also gate windows without speech (music, noise) with the Silero "
                        "speech VAD and report each window's speech share; energy: gate silence only")  # fmt: skip
    p.add_argument("--speech-threshold", type=float, default=speech.threshold,
                   help=f"Silero frame probability counted as speech (default {speech.threshold})")  # fmt: skip
    p.add_argument("--min-speech-share", type=float, default=speech.min_speech_share,
                   help=f"windows with a smaller share of speech frames are gated (default "
                        f"{speech.min_speech_share})")  # fmt: skip
    p.add_argument("--min-count-share", type=float, default=speech.min_count_share,
                   help=f"windows with less speech than this share are 'uncertain', not counted (default "
                        f"{speech.min_count_share})")  # fmt: skip
    p.add_argument("--batch", type=int, default=16, help="windows per model call (default 16)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--min-tail", type=float, default=DEFAULT_MIN_TAIL,
                   help="analyse a final partial window (zero-padded) holding at least this many s")  # fmt: skip
    p.add_argument("--no-plot", action="store_true", help="skip timeline.png")
    p.add_argument("--report", action="store_true",
                   help="also write report.html: a self-contained day report (hours, levels per hour, timeline, "
                        "model)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_debug_flag(p)
    return p


class _Progress:
    """``progress(done_s, total_s)`` callback drawing one self-overwriting stderr line every 2 s."""

    def __init__(self, name: str, quiet: bool) -> None:
        self.name, self.quiet = name, quiet
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: float, total: float) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last < 2.0:
            return
        self.last = now
        pct = 100.0 * done / total if total > 0 else 100.0
        print(f"\r{self.name}: {done / 60:.1f}/{total / 60:.1f} min ({pct:.0f}%)", end="", file=sys.stderr,
              flush=True)  # fmt: skip
        self.drawn = True

    def end_line(self) -> None:
        """Finish the progress line so the next message starts on its own line."""
        if self.drawn:
            print(file=sys.stderr)
            self.drawn = False


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ersam_ssl import audio, bundled

    if args.model_info:
        print(bundled.model_card())
        return EXIT_COMPLETE
    if args.input is None or args.out is None:
        parser.error("give a RECORDING or FOLDER and --out DIR")

    src = Path(args.input)
    if not src.exists():
        what = "is a symlink loop or a broken symlink" if src.is_symlink() else "does not exist"
        print(f"error: {src} {what}", file=sys.stderr)
        return EXIT_ERROR
    if Path(args.out).exists() and not Path(args.out).is_dir():
        print(f"error: --out {args.out} is a file; give a folder (it is created if missing)", file=sys.stderr)
        return EXIT_ERROR
    try:
        vad = VadConfig(args.vad_threshold_db, args.vad_min_active, enabled=not args.no_vad)
        speech = SpeechVadConfig(args.vad, args.speech_threshold, args.min_speech_share, args.min_count_share)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        counter = load_counter(args.model, args.threads) if args.model else bundled.pretrained(args.threads)
    except (FileNotFoundError, ValueError) as e:  # both name the file
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        window = model_window(counter, args.window)
    except ValueError:
        own = counter.fixed_samples / SAMPLE_RATE
        print(f"error: {args.model or 'the shipped counter'} takes {own:g} s windows ({counter.fixed_samples} "
              f"samples): leave --window out or pass --window {own:g}", file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    common = dict(window=window, hop=args.hop, vad=vad, speech_vad=speech, batch_size=args.batch,
                  threads=args.threads,
                  min_tail=args.min_tail, plot=not args.no_plot, html_report=args.report)  # fmt: skip
    if src.is_dir():
        try:
            rows = analyze_folder(src, counter, args.out, **common)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR
        ok = [r for r in rows if r["status"] != "error"]
        print(f"analysed {len(ok)}/{len(rows)} recording(s) → {Path(args.out) / 'summary.csv'}")
        for r in rows:
            if r["reason"]:
                print(f"  {r['status']}: {r['file']}: {r['reason']}")
        if not ok:
            print(
                f"error: none of the {len(rows)} recording(s) under {src} could be analysed", file=sys.stderr
            )
            return EXIT_UNREADABLE
        return EXIT_COMPLETE if all(r["status"] == "ok" for r in rows) else EXIT_PARTIAL
    progress = _Progress(src.name, args.quiet)
    try:
        s = analyze_recording(src, counter, args.out, progress=progress, **common)
    except audio.AudioError as e:
        progress.end_line()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    except ValueError as e:
        progress.end_line()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    progress.end_line()
    for problem in s.problems:
        print(f"partial: {src.name}: {problem}", file=sys.stderr)
    for warning in s.warnings:
        print(f"warning: {src.name}: {warning}", file=sys.stderr)
    shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in s.level_share.items())
    print(f"{src.name}: {s.status}, {s.hours_analysed:.3f} h in {s.windows} windows "
          f"({100 * s.gated_share:.0f}% gated, {s.unreadable_windows} unreadable, "
          f"{s.input['unreadable_s']:.1f} s of {s.input['duration_s']:.1f} s lost), mean count {s.mean_count:.2f}; "
          f"{shares}; {s.real_time_factor:.0f}x real time → {args.out}")  # fmt: skip
    return EXIT_PARTIAL if s.problems else EXIT_COMPLETE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
