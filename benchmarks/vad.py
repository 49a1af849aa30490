"""Speech VAD vs energy VAD in ``analyze``: non-speech windows gated, speech windows kept, speed.

Builds one recording of shuffled 5 s segments with known content and analyses it twice with the same
ONNX counter (SAM default member, untrained — gating and speed do not depend on its weights):
``--vad energy`` (the energy gate alone) and ``--vad silero`` (energy gate + Silero speech share).

Segments (``--per-kind`` of each non-speech kind, ``--speech`` speech mixtures):

- ``music``: chords and arpeggios of harmonic notes (3-6 partials, random pitches, plucked decay),
  -40 to -20 dBFS;
- ``noise``: white, pink or brown noise, -45 to -20 dBFS;
- ``clatter``: 4-20 short decaying noise bursts (dishes, keys, footsteps) on a -70 dBFS floor;
- ``speech``: test-speaker mixtures of the embedded espeak-ng corpus (``DataEngine(DataConfig())
  .mixtures("test", n, "clean")``), 1-10 speakers; ``count0``: the engine's 0-speaker mixtures (background
  only), reported separately.

Reported per kind: share gated (``no speech``), share uncertain (too little speech for a count) and
share counted; speed as seconds of audio per wall-clock second (best of ``--repeats`` interleaved runs,
1 thread). Writes ``benchmarks/results/vad.json``.

    python benchmarks/vad.py [--per-kind 40] [--speech 120] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from common import result_record, timed, write_result

HERE = Path(__file__).resolve().parent
SR = 16000
SEG = 5.0


def _at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** (dbfs / 20) / (np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-20)).astype(np.float32)


def music(rng: np.random.Generator) -> np.ndarray:
    n = int(SEG * SR)
    x = np.zeros(n)
    t = np.arange(n) / SR
    note_s = rng.uniform(0.15, 1.2)  # arpeggio / melody note length; chords hold several at once
    chord = rng.random() < 0.5
    for start in np.arange(0.0, SEG, note_s):
        pitches = rng.integers(40, 84, 3 if chord else 1)  # MIDI notes
        for m in pitches:
            f0 = 440.0 * 2 ** ((m - 69) / 12)
            a, b = int(start * SR), min(n, int((start + note_s * (2.0 if chord else 1.0)) * SR))
            tt = t[: b - a]
            env = np.exp(-tt * rng.uniform(1.0, 6.0)) * np.minimum(1.0, tt / 0.005)
            for h in range(1, int(rng.integers(3, 7)) + 1):
                if h * f0 < SR / 2:
                    x[a:b] += env * np.sin(2 * np.pi * h * f0 * tt + rng.uniform(0, 2 * np.pi)) / h**1.5
    return _at_dbfs(x, rng.uniform(-40, -20))


def coloured_noise(rng: np.random.Generator) -> np.ndarray:
    n = int(SEG * SR)
    white = rng.standard_normal(n)
    colour = rng.choice(["white", "pink", "brown"])
    if colour == "white":
        x = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
        spectrum /= np.sqrt(f) if colour == "pink" else f
        x = np.fft.irfft(spectrum, n)
    return _at_dbfs(x, rng.uniform(-45, -20))


def clatter(rng: np.random.Generator) -> np.ndarray:
    n = int(SEG * SR)
    x = 10 ** (-70 / 20) * rng.standard_normal(n)
    for _ in range(int(rng.integers(4, 21))):
        a = int(rng.integers(0, n - SR // 10))
        m = int(rng.uniform(0.01, 0.12) * SR)
        m = min(m, n - a)
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (m / rng.uniform(3, 8)))
        if rng.random() < 0.5:  # a ringing object: a damped resonance instead of a plain click
            burst *= np.sin(2 * np.pi * rng.uniform(800, 5000) * np.arange(m) / SR)
        x[a : a + m] += 10 ** (rng.uniform(-30, -10) / 20) * burst
    return x.astype(np.float32)


def make_recording(path: Path, per_kind: int, n_speech: int, seed: int = 0) -> list[dict]:
    from ersam_ssl.data import DataConfig, DataEngine

    rng = np.random.default_rng(seed)
    segments: list[tuple[str, int, np.ndarray]] = []
    for kind, make in (("music", music), ("noise", coloured_noise), ("clatter", clatter)):
        segments += [(kind, 0, make(rng)) for _ in range(per_kind)]
    mixtures = DataEngine(DataConfig(num_workers=0)).mixtures("test", n_speech, "clean")
    for i in range(n_speech):
        m = mixtures.generate(i)
        segments.append(
            ("speech" if m.count > 0 else "count0", int(m.count), np.asarray(m.audio, np.float32))
        )
    order = rng.permutation(len(segments))
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for i in order:
            f.write(np.clip(segments[i][2], -1, 1))
    return [{"kind": segments[i][0], "count": segments[i][1]} for i in order]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-kind", type=int, default=40, help="segments of each non-speech kind")
    p.add_argument("--speech", type=int, default=120, help="speech mixtures (0-10 speakers)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "vad.json"))
    a = p.parse_args(argv)

    import torch

    from ersam_ssl.analysis import analyze_recording
    from ersam_ssl.analysis.vad import SpeechVadConfig
    from ersam_ssl.export import export_onnx
    from ersam_ssl.models import create_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with timed() as clock:
            truth = make_recording(tmp / "day.flac", a.per_kind, a.speech)
        print(f"recording: {len(truth)} segments ({len(truth) * SEG / 60:.1f} min) in {clock.s:.0f} s")
        torch.manual_seed(0)
        model = export_onnx(create_model("sam", num_classes=11), tmp / "sam.onnx")
        kinds = np.array([t["kind"] for t in truth])
        runs: dict[str, list] = {"energy": [], "silero": []}
        tables = {}
        for r in range(a.repeats):
            for vad in ("energy", "silero"):
                s = analyze_recording(tmp / "day.flac", model, tmp / f"{vad}{r}", speech_vad=SpeechVadConfig(vad),
                                      plot=False)  # fmt: skip
                runs[vad].append(s.real_time_factor)
                tables[vad] = s.table
                print(f"  {vad}: {s.real_time_factor:.0f}x real time")
        result = result_record(
            "vad",
            argv,
            benchmark="vad",
            machine={"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
            segments={k: int((kinds == k).sum()) for k in ("music", "noise", "clatter", "speech", "count0")},
            speed_x_real_time={vad: max(v) for vad, v in runs.items()},
            speed_runs=runs,
        )
        for vad, t in tables.items():
            assert len(t) == len(truth)
            per_kind = {}
            for k in ("music", "noise", "clatter", "speech", "count0"):
                sel = kinds == k
                if sel.any():
                    per_kind[k] = {
                        "gated": float(t.gated[sel].mean()),
                        "uncertain": float((t.status[sel] == "uncertain").mean()),
                        "counted": float((t.status[sel] == "analysed").mean()),
                        "median_speech_share": float(np.nanmedian(t.speech_share[sel]))
                        if np.isfinite(t.speech_share[sel]).any()
                        else None,
                    }
            non_speech = np.isin(kinds, ["music", "noise", "clatter"])
            per_kind["all_non_speech"] = {"gated": float(t.gated[non_speech].mean())}
            result[vad] = per_kind
        speech = kinds == "speech"
        counts = np.array([t["count"] for t in truth])
        one = speech & (counts == 1)
        result["speech_kept"] = {vad: float(1 - t.gated[speech].mean()) for vad, t in tables.items()}
        result["speech_counted"] = {
            vad: float((t.status[speech] == "analysed").mean()) for vad, t in tables.items()
        }
        result["one_speaker_counted"] = {
            vad: float((t.status[one] == "analysed").mean()) for vad, t in tables.items()
        }
        # Which speech windows the speech VAD gates: dense babble is less "speech-like" to Silero than one voice.
        result["speech_gated_by_count"] = {
            vad: {
                str(k): float(t.gated[speech & (counts == k)].mean())
                for k in sorted(set(counts[speech].tolist()))
            }
            for vad, t in tables.items()
        }
    out = write_result(a.out, result)
    print(
        json.dumps({k: result[k] for k in ("speech_kept", "speech_counted", "speed_x_real_time")}, indent=1)
    )
    for vad in ("energy", "silero"):
        print(vad, {k: round(v["gated"], 3) for k, v in result[vad].items()})
    print(f"→ {out}")


if __name__ == "__main__":
    main()
