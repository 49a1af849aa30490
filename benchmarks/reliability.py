"""Bad input, end to end: broken files, corpora, configs, models and run folders through every command line.

Every case runs the real entry point in its own process, as a user would, and records what the user sees:
the outcome, the exit code and the first line of stderr. Tools:

* ``ersam-ssl data check DIR`` and ``ersam-ssl data check DIR --decode`` (a folder holding the one input);
* ``ersam-ssl analyze FILE`` and ``ersam-ssl analyze FOLDER`` (one folder holding every bad file; a row per
  file from its ``summary.csv``);
* ``python recipes/run.py --config recipes/configs/tiny.yaml`` on a generated 20-speaker folder corpus
  (``--stages data``, so each run takes seconds).

The model for ``analyze`` is an untrained SAM counter exported with :func:`ersam_ssl.export.export_onnx`
(correctness of the counts is not the point here, the handling of the input is).

Outcomes: ``ok`` (exit 0); ``partial`` (results written and the loss reported: ``analyze`` exit 3, ``data
check`` listing bad files exit 1, a folder row ``partial``/``error``); ``clear error`` (non-zero exit and
an ``error: ...`` line); ``crash`` (a traceback, an ``error: unexpected ...`` or a signal). A *silent wrong
answer* is an exit 0 (or a folder row ``ok``) where an error or a partial result was due, a repaired input
(anti-phase channels, skipped corpus files) without a warning, or a header-only check that does not say
it read headers only. The script exits 1 unless both counts are 0.

    python benchmarks/reliability.py        # ~5 min on 2 idle cores; writes results/reliability.json
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from common import Timer, result_record, write_result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")
SR = 16000


# -------------------------------------------------------------------------------------------- inputs
def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts at a 3 Hz syllable rate: active enough that the VAD runs the model."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    gate = np.sin(np.arange(n) * 2 * np.pi * (3 + seed % 5) / SR) > 0
    return (0.1 * rng.standard_normal(n) * gate).astype(np.float32)


def _truncated_flac(path: Path) -> None:
    sf.write(path, _speechlike(15.0), SR)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 6 / 15)])  # header still says 15 s; ~9 s lost


def _corrupt_middle_flac(path: Path) -> None:
    sf.write(path, _speechlike(20.0), SR)
    data = bytearray(path.read_bytes())
    a, b = int(0.4 * len(data)), int(0.55 * len(data))
    data[a:b] = np.random.default_rng(1).bytes(b - a)
    path.write_bytes(bytes(data))


def _nonfinite_wav(path: Path) -> None:
    x = _speechlike(12.0)
    x[3 * SR : 4 * SR] = np.nan
    x[8 * SR : 8 * SR + 100] = np.inf
    sf.write(path, x, SR, subtype="FLOAT")


#: (slug, kind, writer, due per tool: data check, data check --decode, analyze FILE, analyze FOLDER row).
#: Dues: ok, warn (ok, and a warning must be printed), headers (ok, the check must say it read headers
#: only), partial, error.
AUDIO_KINDS = [
    ("intact.wav", "intact WAV (control)", lambda p: sf.write(p, _speechlike(12.0), SR),
     ("ok", "ok", "ok", "ok")),
    ("truncated.flac", "truncated FLAC (9 of 15 s lost)", _truncated_flac,
     ("headers", "partial", "partial", "partial")),
    ("corrupt_middle.flac", "FLAC with corrupt bytes mid-file", _corrupt_middle_flac,
     ("headers", "partial", "partial", "partial")),
    ("nonfinite.wav", "WAV with NaN/Inf samples", _nonfinite_wav, ("headers", "partial", "partial", "partial")),
    ("one_sample.wav", "1-sample WAV", lambda p: sf.write(p, np.full(1, 0.1, np.float32), SR),
     ("partial", "partial", "partial", "partial")),
    ("no_frames.wav", "WAV header without frames", lambda p: sf.write(p, np.zeros(0, np.float32), SR),
     ("partial", "partial", "error", "error")),
    ("empty.wav", "empty file (0 bytes)", lambda p: p.write_bytes(b""), ("partial", "partial", "error", "error")),
    ("not_audio.wav", "non-audio file named .wav", lambda p: p.write_text("meeting notes, not audio\n" * 40),
     ("partial", "partial", "error", "error")),
    ("speech.mp3", "MP3", lambda p: sf.write(p, _speechlike(12.0), SR), ("ok", "ok", "ok", "ok")),
    ("antiphase.wav", "anti-phase stereo (L = -R)",
     lambda p: sf.write(p, np.stack([_speechlike(12.0), -_speechlike(12.0)], axis=1), SR, subtype="FLOAT"),
     ("ok", "warn", "warn", "warn")),
    ("silence.wav", "digital silence", lambda p: sf.write(p, np.zeros(10 * SR, np.float32), SR),
     ("headers", "partial", "ok", "ok")),
    ("loop.wav", "symlink loop", lambda p: os.symlink(p.name, p), ("partial", "partial", "error", "error")),
    ("gone.flac", "broken symlink", lambda p: os.symlink("missing.flac", p), ("partial", "partial", "error", "error")),
]  # fmt: skip


def make_corpus(root: Path, speakers: int = 20) -> Path:
    """A folder corpus filling the tiny preset's splits: one 2 s file per speaker sub-folder."""
    for i in range(speakers):
        (root / f"spk{i:02d}").mkdir(parents=True, exist_ok=True)
        sf.write(root / f"spk{i:02d}" / "utt.wav", _speechlike(2.0, seed=i), SR)
    return root


def make_models(d: Path) -> dict[str, Path]:
    import torch

    from ersam_ssl.checkpoint import save_model
    from ersam_ssl.export import export_onnx
    from ersam_ssl.models import create_model

    torch.manual_seed(0)
    model = create_model("sam", num_classes=4).eval()

    class Trap:  # unpickling runs Path.touch: what a malicious model file does
        def __reduce__(self):
            return (Path.touch, (d / "pwned",))

    torch.save({"format": "ersam_ssl.model", "config": {}, "state_dict": {"w": Trap()}}, d / "trap.pt")
    (d / "garbage.onnx").write_bytes(np.random.default_rng(2).bytes(4000))
    (d / "notes.pt").write_text("not a model\n")
    return {
        "onnx": export_onnx(model, d / "sam5.onnx", 5 * SR),
        "onnx1": export_onnx(model, d / "sam1.onnx", SR),
        "pt": save_model(model, d / "sam.pt"),
    }


# --------------------------------------------------------------------------------------------- running
@dataclass
class Row:
    kind: str
    tool: str
    due: str
    outcome: str
    exit: int
    stderr: str
    silent: bool = False
    crash: bool = False
    as_due: bool = True


def _env(work: Path, src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ERSAM_SSL_DEBUG"}
    env.update(PYTHONPATH=os.pathsep.join([str(src), env.get("PYTHONPATH", "")]), MPLBACKEND="Agg",
               WANDB_MODE="offline", ERSAM_SSL_CACHE=env.get("ERSAM_SSL_CACHE", str(work / "cache")),
               PYTHONUNBUFFERED="1")  # fmt: skip
    return env


def ersam(*args: str) -> list[str]:
    return [sys.executable, "-m", "ersam_ssl.cli", *map(str, args)]


def run_py(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "recipes" / "run.py"), "--config", TINY, *map(str, args)]


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[0][:110] if lines else ""


def classify(tool: str, rc: int, err: str) -> str:
    if rc < 0 or "Traceback (most recent call last)" in err or "error: unexpected" in err:
        return "crash"
    if rc == 0:
        return "ok"
    if (tool.startswith("analyze") and rc == 3) or (tool.startswith("data check") and rc == 1):
        return "partial"
    if any(ln.startswith("error: ") for ln in err.splitlines()):
        return "clear error"
    return "crash"  # a non-zero exit nobody explained


def judge(kind: str, tool: str, due: str, outcome: str, rc: int, out: str, err: str) -> Row:
    expected = {"ok": "ok", "warn": "ok", "headers": "ok", "partial": "partial", "error": "clear error"}[due]
    silent = outcome == "ok" and due in ("partial", "error")
    if outcome == "ok" and due == "warn":
        silent = not any(w in err.lower() for w in ("warning", "skipped", "anti-phase"))
    if outcome == "ok" and due == "headers":
        silent = "headers only" not in out
    return Row(
        kind, tool, due, outcome, rc, _first_line(err), silent, outcome == "crash", outcome == expected
    )


class Bench:
    def __init__(self, work: Path, verbose: bool, src: Path) -> None:
        self.work, self.env, self.verbose = work, _env(work, src), verbose
        self.rows: list[Row] = []
        self.debris: list[str] = []

    def run(self, kind: str, tool: str, due: str, cmd: list[str]) -> Row:
        clock = Timer()
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.work, timeout=900)
        row = judge(kind, tool, due, classify(tool, done.returncode, done.stderr), done.returncode, done.stdout,
                    done.stderr)  # fmt: skip
        self.rows.append(row)
        if self.verbose:
            print(f"  {clock.s:5.1f}s {kind} | {tool} | {row.outcome} ({row.exit}) | {row.stderr}",
                  file=sys.stderr, flush=True)  # fmt: skip
        return row

    def add(self, row: Row) -> None:
        self.rows.append(row)


def audio_cases(b: Bench, models: dict[str, Path]) -> None:
    every = b.work / "audio_all"
    every.mkdir()
    for slug, kind, write, (due_check, due_decode, due_file, _) in AUDIO_KINDS:
        folder = b.work / "audio" / Path(slug).stem
        folder.mkdir(parents=True)
        write(folder / slug)
        write(every / slug)
        b.run(kind, "data check", due_check, ersam("data", "check", folder))
        b.run(kind, "data check --decode", due_decode, ersam("data", "check", folder, "--decode"))
        b.run(kind, "analyze FILE", due_file, ersam("analyze", folder / slug, "--model", models["onnx"], "--out",
                                                   b.work / "out" / slug, "--quiet"))  # fmt: skip
    # One folder with every kind: one process, one summary.csv row per file.
    out = b.work / "out" / "folder"
    done = subprocess.run(ersam("analyze", every, "--model", models["onnx"], "--out", out, "--no-plot"),
                          capture_output=True, text=True, env=b.env, cwd=b.work, timeout=900)  # fmt: skip
    outcome = classify("analyze FOLDER", done.returncode, done.stderr)
    b.add(judge("folder holding all of the above", "analyze FOLDER", "partial", outcome, done.returncode,
                done.stdout, done.stderr))  # fmt: skip
    status: dict[str, dict] = {}
    if (out / "summary.csv").is_file():
        with open(out / "summary.csv", newline="") as fh:
            status = {r["file"]: r for r in csv.DictReader(fh)}
    for slug, kind, _, (*_, due_row) in AUDIO_KINDS:
        r = status.get(slug)
        if r is None:  # a file the folder analysis did not list at all: the worst kind of silence
            b.add(
                Row(kind, "analyze FOLDER (row)", due_row, "missing", done.returncode, "", True, False, False)
            )
            continue
        row_outcome = {"ok": "ok", "partial": "partial", "error": "clear error"}.get(r["status"], "crash")
        row = judge(kind, "analyze FOLDER (row)", due_row, row_outcome, done.returncode, "", r["reason"])
        row.stderr = f"{r['status']}: {r['reason']}"[:110]
        b.add(row)


def model_cases(b: Bench, models: dict[str, Path]) -> None:
    rec = b.work / "audio" / "intact" / "intact.wav"
    d = models["onnx"].parent

    def analyze(*extra: str) -> list[str]:
        return ersam(
            "analyze", rec, "--out", b.work / "out" / f"m{len(b.rows)}", "--quiet", "--no-plot", *extra
        )

    b.run("garbage .onnx", "analyze FILE", "error", analyze("--model", d / "garbage.onnx"))
    b.run("non-model .pt (text)", "analyze FILE", "error", analyze("--model", d / "notes.pt"))
    trap = b.run(
        "booby-trapped .pt (pickle runs code)", "analyze FILE", "error", analyze("--model", d / "trap.pt")
    )
    b.run("missing model file", "analyze FILE", "error", analyze("--model", d / "nope.onnx"))
    b.run("1 s ONNX export, no --window", "analyze FILE", "ok", analyze("--model", models["onnx1"]))
    b.run(
        "1 s ONNX export, --window 5",
        "analyze FILE",
        "error",
        analyze("--model", models["onnx1"], "--window", "5"),
    )
    (b.work / "a_file").write_text("x")
    b.run("--out pointing at a file", "analyze FILE", "error",
          ersam("analyze", rec, "--model", models["onnx"], "--out", b.work / "a_file"))  # fmt: skip
    b.run("missing input path", "analyze FILE", "error",
          ersam("analyze", b.work / "nope.wav", "--model", models["onnx"], "--out", b.work / "out" / "x"))  # fmt: skip
    b.run("--hop 0", "analyze FILE", "error", analyze("--model", models["onnx"], "--hop", "0"))
    (b.work / "no_audio").mkdir()
    (b.work / "no_audio" / "readme.txt").write_text("nothing here")
    b.run("folder without audio", "analyze FOLDER", "error",
          ersam("analyze", b.work / "no_audio", "--model", models["onnx"], "--out", b.work / "out" / "na"))  # fmt: skip
    if (d / "pwned").exists():  # the worst silent answer: the model file ran code
        trap.silent, trap.stderr = True, "the model file ran code"


def corpus_and_run_cases(b: Bench) -> None:
    runs = b.work / "runs"
    corpus = make_corpus(b.work / "corpus")
    missing, empty, single = b.work / "no_such_corpus", b.work / "empty_corpus", b.work / "single_speaker"
    empty.mkdir()
    (single / "only_speaker").mkdir(parents=True)
    for i in range(3):
        sf.write(single / "only_speaker" / f"{i}.wav", _speechlike(2.0, seed=i), SR)
    damaged = b.work / "damaged_corpus"
    for spk in corpus.iterdir():
        (damaged / spk.name).mkdir(parents=True)
        (damaged / spk.name / "utt.wav").write_bytes((spk / "utt.wav").read_bytes())
    _truncated_flac(damaged / "spk00" / "truncated.flac")
    _nonfinite_wav(damaged / "spk01" / "nonfinite.wav")
    (damaged / "spk02" / "empty.wav").write_bytes(b"")

    def run(name: str, root: Path, *extra: str) -> list[str]:
        return run_py(f"out_root={runs}", f"name={name}", "data.source=folder", f"data.root={root}", "--stages",
                      "data", *extra)  # fmt: skip

    for kind, root, checks, due_run in (
        ("valid 20-speaker corpus (control)", corpus, ("ok", "ok"), "ok"),
        ("corpus with 3 bad files among 20 speakers", damaged, ("partial", "partial"), "warn"),
        ("missing data.root", missing, ("error", "error"), "error"),
        ("empty data.root", empty, ("error", "error"), "error"),
        ("single-speaker corpus", single, ("ok", "ok"), "error"),
    ):
        b.run(kind, "data check", checks[0], ersam("data", "check", root))
        b.run(kind, "data check --decode", checks[1], ersam("data", "check", root, "--decode"))
        b.run(kind, "recipes/run.py", due_run, run(kind.split()[0] + str(len(b.rows)), root))

    good = ("data.source=folder", f"data.root={corpus}", "--stages", "data")
    for kind, extra in (
        ("negative labels_per_class (-5)", ["data.labels_per_class=-5"]),
        ("label budget larger than the pool", ["data.labels_per_class=1000"]),
        ("negative steps (teacher.steps=-3)", ["teacher.steps=-3"]),
        ("unknown config key (teachr.steps)", ["teachr.steps=3"]),
        ("wrong value type (teacher.steps=abc)", ["teacher.steps=abc"]),
        ("unknown stage (--stages data,train)", ["--stages", "data,train"]),
    ):
        b.run(
            kind,
            "recipes/run.py",
            "error",
            run_py(f"out_root={runs}", f"name=cfg{len(b.rows)}", *good, *extra),
        )
    bad_yaml = b.work / "bad.yaml"
    bad_yaml.write_text("teacher:\n  steps: [3\n")
    b.run("malformed YAML preset", "recipes/run.py", "error",
          [sys.executable, str(ROOT / "recipes" / "run.py"), "--config", str(bad_yaml), f"out_root={runs}"])  # fmt: skip
    b.run("missing --config file", "recipes/run.py", "error",
          [sys.executable, str(ROOT / "recipes" / "run.py"), "--config", str(b.work / "nope.yaml")])  # fmt: skip
    b.debris = sorted(p.name for p in runs.glob("cfg*"))  # refused commands must not create run folders

    # Run folders: an existing run, a changed config, a file in the way, and a second writer.
    base = (f"out_root={runs}", "name=existing", *good)
    subprocess.run(run_py(*base), capture_output=True, env=b.env, cwd=b.work, check=True, timeout=900)
    b.run("existing run without --resume/--overwrite", "recipes/run.py", "error", run_py(*base))
    b.run(
        "--resume with a changed config",
        "recipes/run.py",
        "error",
        run_py(*base, "--resume", "teacher.optim.lr=0.5"),
    )
    (runs / "a_file").write_text("x")
    b.run(
        "run folder path is a file",
        "recipes/run.py",
        "error",
        run_py(f"out_root={runs}", "name=a_file", *good),
    )
    busy = run_py(f"out_root={runs}", "name=busy", "data.source=folder", f"data.root={corpus}", "--stages",
                  "data,pretrain", "pretrain.steps=100000", "pretrain.batch_size=2")  # fmt: skip
    first = subprocess.Popen(busy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=b.env, cwd=b.work,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 600
        while not (runs / "busy" / "pretrain").is_dir() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if first.poll() is not None:
            raise RuntimeError("the first writer ended before the second one could try")
        b.run("concurrent second writer (--resume)", "recipes/run.py", "error", busy + ["--resume"])
        row = b.run(
            "concurrent second writer (--overwrite)", "recipes/run.py", "error", busy + ["--overwrite"]
        )
        if not (runs / "busy" / "data" / "result.json").is_file():
            row.silent, row.stderr = True, "deleted the files of the running run"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    b.run("resume after the first writer was killed", "recipes/run.py", "ok",
          run_py(f"out_root={runs}", "name=busy", "data.source=folder", f"data.root={corpus}", "--stages", "data",
                 "pretrain.steps=100000", "pretrain.batch_size=2", "--resume"))  # fmt: skip


# --------------------------------------------------------------------------------------------- report
def table(rows: list[Row]) -> str:
    lines = ["| input | tool | due | outcome | exit | first line of stderr |", "|---|---|---|---|---|---|"]
    for r in rows:
        flag = (
            " **SILENT**"
            if r.silent
            else (" **CRASH**" if r.crash else ("" if r.as_due else " (not as due)"))
        )
        err = r.stderr.replace("|", "\\|")
        lines.append(f"| {r.kind} | {r.tool} | {r.due} | {r.outcome}{flag} | {r.exit} | {err} |")
    return "\n".join(lines)


TOOLS = ("data check", "data check --decode", "analyze FILE", "analyze FOLDER (row)", "analyze FOLDER",
         "recipes/run.py")  # fmt: skip
SHORT = {"ok": "ok", "partial": "partial", "clear error": "error", "crash": "CRASH", "missing": "MISSING"}


def matrix(rows: list[Row]) -> str:
    """One line per input kind, one column per tool: the outcome (and exit code)."""
    kinds: dict[str, dict[str, Row]] = {}
    for r in rows:
        kinds.setdefault(r.kind, {})[r.tool] = r
    head = ["input", "data check", "data check --decode", "analyze FILE", "analyze FOLDER", "recipes/run.py"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, by_tool in kinds.items():
        cells = []
        for tool in ("data check", "data check --decode", "analyze FILE", "analyze FOLDER", "recipes/run.py"):
            r = by_tool.get(tool) or (
                by_tool.get("analyze FOLDER (row)") if tool == "analyze FOLDER" else None
            )
            if r is None:
                cells.append("")
                continue
            text = SHORT.get(r.outcome, r.outcome) + (
                " (row)" if r.tool.endswith("(row)") else f" ({r.exit})"
            )
            if r.due == "warn" and r.outcome == "ok":
                text += ", warns"
            if r.due == "headers" and r.outcome == "ok":
                text += ", headers only"
            cells.append(text + (" SILENT" if r.silent else ""))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "results" / "reliability.json"))
    p.add_argument("--keep", action="store_true", help="keep the temporary folder of inputs and outputs")
    p.add_argument("--quiet", action="store_true", help="no per-case progress on stderr")
    p.add_argument("--src", default=str(ROOT / "src"),
                   help="the ersam_ssl source tree the commands run (e.g. an older checkout, to compare)")  # fmt: skip
    a = p.parse_args(argv)
    clock = Timer()
    work = Path(tempfile.mkdtemp(prefix="ersam-reliability-"))
    b = Bench(work, verbose=not a.quiet, src=Path(a.src).resolve())
    models = make_models(work)
    audio_cases(b, models)
    model_cases(b, models)
    corpus_and_run_cases(b)
    rows = b.rows
    crashes, silent = sum(r.crash for r in rows), sum(r.silent for r in rows)
    kinds = len({r.kind for r in rows})
    print(matrix(rows))
    print()
    print(table(rows))
    print(f"\n{kinds} input kinds, {len(rows)} cases: {crashes} crashes, {silent} silent wrong answers, "
          f"{sum(not r.as_due for r in rows)} outcomes other than due, {len(b.debris)} refused commands that "
          f"left a run folder; {clock.s:.0f} s")  # fmt: skip
    write_result(a.out, result_record(
        "reliability", argv, benchmark="reliability",
        kinds=kinds, cases=len(rows), crashes=crashes, silent_wrong_answers=silent,
        not_as_due=sum(not r.as_due for r in rows), debris=b.debris, src=os.path.relpath(a.src, ROOT),
        wall_s=round(clock.s), rows=[asdict(r) for r in rows],
    ))  # fmt: skip
    print(f"wrote {a.out}")
    if not a.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"inputs and outputs kept in {work}")
    return 0 if crashes == 0 and silent == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
