"""``ersam-ssl analyze RECORDING|FOLDER --model MODEL --out DIR``: count speakers over long recordings.

Writes ``windows.csv``, ``summary.json``, ``timeline.png`` and, with ``--report``, ``report.html`` to ``DIR``
(for a folder: one sub-folder per recording plus a combined ``summary.csv``). MODEL is an exported ``.onnx`` file (ONNX Runtime) or a model
file / Lightning checkpoint (PyTorch).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ersam_ssl.analysis.recording import (
    DEFAULT_MIN_TAIL,
    DEFAULT_WINDOW,
    SpeechVadConfig,
    VadConfig,
    analyze_folder,
    analyze_recording,
    load_counter,
)


def build_parser() -> argparse.ArgumentParser:
    vad, speech = VadConfig(), SpeechVadConfig()
    p = argparse.ArgumentParser(
        prog="ersam-ssl analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", help="a recording (WAV/FLAC/OGG, any rate/channels) or a folder of recordings")
    p.add_argument("--model", required=True, help=".onnx export, model file (.pt) or Lightning checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW, help="window length in s (default 5)")
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
    return p


def _progress(name: str, quiet: bool):
    last = [0.0]

    def report(done: float, total: float) -> None:
        now = time.monotonic()
        if quiet or now - last[0] < 2.0:
            return
        last[0] = now
        pct = 100.0 * done / total if total > 0 else 100.0
        print(
            f"\r{name}: {done / 60:.1f}/{total / 60:.1f} min ({pct:.0f}%)",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from ersam_ssl import audio

    src = Path(args.input)
    if not src.exists():
        print(f"error: {src} does not exist", file=sys.stderr)
        return 2
    try:
        vad = VadConfig(args.vad_threshold_db, args.vad_min_active, enabled=not args.no_vad)
        speech = SpeechVadConfig(args.vad, args.speech_threshold, args.min_speech_share, args.min_count_share)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        counter = load_counter(args.model, args.threads)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: cannot load model {args.model}: {e}", file=sys.stderr)
        return 2
    common = dict(window=args.window, hop=args.hop, vad=vad, speech_vad=speech, batch_size=args.batch, threads=args.threads,
                  min_tail=args.min_tail, plot=not args.no_plot, html_report=args.report)  # fmt: skip
    if src.is_dir():
        try:
            rows = analyze_folder(src, counter, args.out, **common)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        ok = [r for r in rows if r["status"] != "error"]
        print(f"analysed {len(ok)}/{len(rows)} recording(s) → {Path(args.out) / 'summary.csv'}")
        for r in rows:
            if r["status"] != "ok":
                print(f"  {r['status']}: {r['file']}: {r['reason']}")
        return 0 if ok else 1
    try:
        s = analyze_recording(src, counter, args.out, progress=_progress(src.name, args.quiet), **common)
    except audio.AudioError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(file=sys.stderr)
    shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in s.level_share.items())
    print(f"{src.name}: {s.hours_analysed:.3f} h in {s.windows} windows ({100 * s.gated_share:.0f}% gated, "
          f"{s.unreadable_windows} unreadable), mean count {s.mean_count:.2f}; {shares}; "
          f"{s.real_time_factor:.0f}x real time → {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
