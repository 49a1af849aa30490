"""Where the time of one mixture-supervision training step goes (data rendering and the model).

Data: per clip of the streamed training set (randomized domain, half conversational), the time of mixing
(speaker segments, speed, conversation envelopes) and of each scenario part (reverberation, noise, device
band-limit, level), measured by timing the renderer's pieces. Model: ``torch.profiler`` over optimizer steps
of the SAM member on a batch, grouped into frontend (STFT + mel), backbone, head + loss, backward and
optimizer. One intra-op thread, as training runs by default.

    python benchmarks/profile_step.py [--model default|largest] [--root DIR --source librispeech]
"""

from __future__ import annotations

import ersam_ssl  # noqa: F401  - first: sets OMP_WAIT_POLICY before torch loads

# isort: split
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig, stream_dataset
from ersam_ssl.models import SAMSpace, build_model

from common import result_record, timed, write_result

HERE = Path(__file__).resolve().parent


def profile_data(engine: DataEngine, n: int) -> dict:
    ds = stream_dataset(engine, n + 10)
    scenario = ds.scenario
    ds.scenario = None
    for i in range(5):
        ds.generate(i)
    with timed() as mixing:
        clips = [ds.generate(i) for i in range(10, 10 + n)]
    mix_s = mixing.s / n
    parts: dict[str, float] = {}
    cfg = scenario.config
    x = clips[0].audio
    from scipy import signal

    def time_part(name: str, fn, reps: int = 30) -> None:
        with timed() as clock:
            for _ in range(reps):
                fn()
        parts[name] = clock.s / reps

    time_part("reverb (one RIR convolution)", lambda: signal.oaconvolve(x, scenario._rirs[0], mode="full"))
    noise = next(iter(scenario._noise.values()))
    time_part("noise (add a bank slice)", lambda: x + noise[: x.size] * 0.01)
    time_part("device band-limit + soft clip", lambda: np.tanh(signal.sosfilt(scenario._sos[0], x)))
    expected = {
        "mixing": mix_s,
        "reverb": cfg.reverb_prob * parts["reverb (one RIR convolution)"],
        "noise": cfg.noise_prob * parts["noise (add a bank slice)"],
        "device": cfg.mic_prob * parts["device band-limit + soft clip"],
    }
    ds.scenario = scenario
    with timed() as rendering:
        for i in range(10, 10 + n):
            ds.generate(i)
    total = rendering.s / n
    return {"per_clip_ms": round(1e3 * total, 3), "clips_per_s": round(1 / total, 1),
            "parts_ms": {k: round(1e3 * v, 3) for k, v in expected.items()},
            "part_costs_when_applied_ms": {k: round(1e3 * v, 3) for k, v in parts.items()}}  # fmt: skip


def profile_model(arch_name: str, batch: int, steps: int) -> dict:
    space = SAMSpace()
    model = build_model(getattr(space, arch_name)())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = 0.05 * torch.randn(batch, 80000)
    y = torch.randint(0, 11, (batch,))
    timings: dict[str, list[float]] = {
        k: [] for k in ("frontend", "backbone", "head+loss", "backward", "optimizer")
    }
    for i in range(steps + 2):
        t = [time.perf_counter()]
        f = model.frontend(x)
        t.append(time.perf_counter())
        e = model.backbone(f)
        t.append(time.perf_counter())
        loss = model.head.loss(model.head(e), y)
        t.append(time.perf_counter())
        opt.zero_grad()
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if i >= 2:
            for k, a, b in zip(timings, t[:-1], t[1:]):
                timings[k].append(b - a)
    med = {k: float(np.median(v)) for k, v in timings.items()}
    total = sum(med.values())
    return {"arch": arch_name, "batch": batch, "step_ms": round(1e3 * total, 2),
            "parts_ms": {k: round(1e3 * v, 2) for k, v in med.items()},
            "parts_share": {k: round(v / total, 3) for k, v in med.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--source", default="synth")
    p.add_argument("--root", default=None)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=str(HERE / "results" / "profile_step.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    engine = DataEngine(DataConfig(source=a.source, root=a.root, mixture=MixtureConfig(max_speakers=10)))
    data = profile_data(engine, a.clips)
    model = profile_model(a.model, 32, a.steps)
    batch_data_ms = 32 * data["per_clip_ms"]
    result = result_record("profile_step", argv, data=data, model=model, batch_data_ms=round(batch_data_ms, 1),
                           data_to_model_ratio=round(batch_data_ms / model["step_ms"], 2), source=a.source)  # fmt: skip
    print(json.dumps(result, indent=1))
    write_result(a.out, result)


if __name__ == "__main__":
    main()
