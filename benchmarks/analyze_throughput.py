"""Real-time factor of long-recording analysis (seconds of audio analysed per second of wall time).

Generates a recording of ``--minutes`` minutes (default 10) from the embedded data engine: test-speaker
mixtures (0-10 speakers, clinical scenario) interleaved with silent stretches (``--silence`` share, with a
-80 dBFS noise floor), written as FLAC at ``--rate`` Hz. Then runs ``analyze_recording`` with the PyTorch
model and its ONNX export, with and without the voice-activity gate, for each model (default SAM and
CountNet CRNN; weights untrained — throughput does not depend on them), and prints one table. The
``decode only`` row (stream, resample, window, VAD; no model) is the ceiling set by the I/O path. Writes
``benchmarks/results/analyze_throughput.json`` (``--result``; the README's table is rendered from it).

    python benchmarks/analyze_throughput.py [--minutes 10] [--models sam,crnn] [--threads 1] [--batch 16]
        [--rate 16000] [--silence 0.4] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ersam_ssl import audio
from ersam_ssl.analysis import VadConfig, analyze_recording, iter_windows, stream_audio, vad_activity
from ersam_ssl.models import create_model

from common import RESULTS, result_record, timed, write_result

SEGMENT_S = 5.0


def make_recording(path: Path, minutes: float, silence: float, rate: int, seed: int = 0) -> dict:
    from ersam_ssl.data import DataConfig, DataEngine

    with timed() as clock:
        engine = DataEngine(DataConfig(num_workers=0))
        n_segments = int(round(minutes * 60 / SEGMENT_S))
        rng = np.random.default_rng(seed)
        silent = rng.random(n_segments) < silence
        mixtures = engine.mixtures("test", int((~silent).sum()), "clinical", stream="throughput")
        k = 0
        with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
            for is_silent in silent:
                if is_silent:
                    x = (1e-4 * rng.standard_normal(int(SEGMENT_S * audio.SAMPLE_RATE))).astype(np.float32)
                else:
                    x = mixtures.generate(k).audio
                    k += 1
                f.write(audio.resample(x, audio.SAMPLE_RATE, rate) if rate != audio.SAMPLE_RATE else x)
    return {"segments": n_segments, "silent": int(silent.sum()), "seconds": clock.s}


def decode_only(path: Path, batch: int) -> float:
    with timed() as clock:
        for wb in iter_windows(stream_audio(path), 80000, 80000, 8000, batch):
            vad_activity(wb.audio, wb.lengths, VadConfig())
    return clock.s


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--models", default="sam,crnn", help="comma-separated: sam, crnn")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the generated file")
    p.add_argument("--silence", type=float, default=0.4, help="share of silent 5 s segments")
    p.add_argument("--out", default=None, help="keep the recording and outputs here (default: temp dir)")
    p.add_argument("--result", default=str(RESULTS / "analyze_throughput.json"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out) if args.out else Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    rec = out / "recording.flac"
    made = make_recording(rec, args.minutes, args.silence, args.rate)
    duration = audio.info(rec).duration
    print(f"recording: {duration / 60:.1f} min at {args.rate} Hz, {made['silent']}/{made['segments']} silent "
          f"5 s segments (generated in {made['seconds']:.0f} s); {args.threads} thread(s), batch {args.batch}\n")  # fmt: skip

    torch.set_num_threads(args.threads)
    rows = [("decode only", "-", "-", "-", "-", decode_only(rec, args.batch))]
    from ersam_ssl.export import export_onnx

    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = create_model(name).eval()
        onnx_path = export_onnx(model, out / f"{name}.onnx")  # carries the model config
        for backend, source in (("pytorch", model), ("onnxruntime", onnx_path)):
            for gating in (True, False):
                vad = VadConfig(enabled=gating)
                with timed() as clock:
                    s = analyze_recording(rec, source, out / f"{name}-{backend}-{gating}", vad=vad,
                                          batch_size=args.batch, threads=args.threads, plot=False)  # fmt: skip
                wall = clock.s
                rows.append(
                    (name, backend, "on" if gating else "off", s.analysed_windows, s.gated_share, wall)
                )
                print(
                    f"  {name:5s} {backend:12s} gating {'on ' if gating else 'off'}: {wall:6.1f} s",
                    flush=True,
                )

    print(f"\n{'model':12s} {'backend':12s} {'gating':>6s} {'model runs':>10s} {'gated':>6s} {'wall s':>8s} "
          f"{'RTF (x real time)':>18s}")  # fmt: skip
    for name, backend, gating, runs, gated, wall in rows:
        gated_txt = f"{100 * gated:5.0f}%" if isinstance(gated, float) else f"{gated:>6s}"
        print(
            f"{name:12s} {backend:12s} {gating:>6s} {runs!s:>10s} {gated_txt} {wall:8.2f} {duration / wall:18.0f}"
        )
    tmp.cleanup()
    result = result_record(
        "analyze_throughput", argv, recording_s=round(duration, 1), rate=args.rate, threads=args.threads,
        batch=args.batch, silent_segments=made["silent"], segments=made["segments"],
        vad="energy gate (analyze_recording's default; benchmarks/vad.py times Silero)",
        rows=[{"model": name, "backend": backend, "gating": gating, "model_runs": runs,
               "gated_share": gated if isinstance(gated, float) else None, "wall_s": round(wall, 3),
               "x_real_time": round(duration / wall, 1)} for name, backend, gating, runs, gated, wall in rows],
    )  # fmt: skip
    print(f"wrote {write_result(args.result, result)}")
    return result


if __name__ == "__main__":
    main()
