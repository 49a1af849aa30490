"""Accuracy where users are: mixture-supervised counters on real speech, per test domain, with curves.

Trains a counter on streamed mixtures of the *train* speakers of real corpora (``MixtureSupervision``:
never-repeating mixtures with exact counts, every clip in a random acoustic domain, half of them
conversational), then scores snapshots taken during training on mixtures of the speaker-disjoint *test*
speakers of each corpus, in each test domain:

* ``clean`` (full-band 16 kHz), ``clinical`` (phone microphone + noise + rooms + level, the few-label
  target domain), ``noisy``, ``reverberant``, ``loud`` (peaks near full scale), ``quiet`` (-30 ... -20 dB)
  — LibriCount-style overlapped mixtures;
* ``conversational`` — turn-taking with partial overlap and backchannels, label = distinct speakers active
  for at least 0.5 s (clean acoustics).

Corpora: ``libri`` (LibriSpeech, e.g. ``librispeech-mini``: 160 adult audiobook readers) and ``ocean``
(speechocean762, folder layout: 125 non-native speakers, half of them children). The speaker split
(70/10/15/5 % train/val/test/babble) is drawn once over both corpora for a seed, so every training set of
a seed is scored on the same test speakers; ``--train libri`` then also measures libri → ocean transfer.

Reported per domain: count MAE, exact-count error, SAM-level error (ambiance levels), ECE; the trivial
baseline (always answer the median count) is printed beside it. Learning curves: the same figures for
snapshots at 1/16, 1/8, 1/4, 1/2 and all of the steps, against training minutes and clips seen.

``--adapt`` compares, on top of a finished mixture-supervised run (the *source* model), what ten labeled
clips per count of the clinical target domain (train speakers) plus unlabeled clinical clips buy:
``few-only`` (the few labels, from scratch) · ``source-only`` (no target label) · ``source+finetune`` ·
``source+fixmatch`` (few labels + unlabeled target clips) · ``source+replay`` (few labels, the source
stream replayed beside them) · ``source+all-labels`` (every pool clip labeled, the reference). Same test sets, same steps for every trained method.

Every finished run writes ``results/accuracy/<run>.json``; a run killed mid-way resumes from its last
checkpoint with ``--resume`` (the stream restarts at the step it stopped, so the result is the same).

    python benchmarks/accuracy.py --libri DIR --ocean DIR --models default --seeds 0 --steps 6000
    python benchmarks/accuracy.py --libri DIR --ocean DIR --resume            # continue / add runs
    python benchmarks/accuracy.py --libri DIR --ocean DIR --adapt --seeds 0 --steps 4000 --adapt-steps 400
    python benchmarks/accuracy.py --libri DIR --ocean DIR --eval-model runs/default/nas/model.pt --name embedded
    python benchmarks/accuracy.py --report                                      # table from the JSON
"""

from __future__ import annotations

import ersam_ssl  # noqa: F401  - first: sets OMP_WAIT_POLICY before torch loads

# isort: split
import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig, MixtureDataset
from ersam_ssl.data.datamodule import TEST_DOMAINS
from ersam_ssl.data.sources import CombinedSource
from ersam_ssl.metrics import evaluate
from ersam_ssl.models import build_model, create_model
from ersam_ssl.models.space import as_space
from ersam_ssl.ssl import DistillConfig, MixtureSupervision, OptimConfig, StreamDistill, datamodule_for
from ersam_ssl.ssl.specaugment import SpecAugmentConfig
from ersam_ssl.threads import configure_threads
from ersam_ssl.trainer import TrainerConfig, averaged_module, fit

from common import fit_crnn_normaliser, method_label, quiet_lightning, result_record, write_result

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "accuracy"
DOMAINS = TEST_DOMAINS
CORPORA = {"libri": "librispeech", "ocean": "folder", "synth": "synth"}
SNAPSHOTS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def engine_for(args: argparse.Namespace, seed: int, labels_per_class: int = 10) -> DataEngine:
    """The corpora in one speaker pool (split once per seed), 0-10 speakers in 5 s.

    ``--synth`` adds the embedded synthesized corpus (120 espeak-ng voices) to the pool: the split then
    differs from a run without it, so compare such runs only with each other.
    """
    roots = {"libri": args.libri, "ocean": args.ocean, "synth": args.synth}
    present = [c for c in CORPORA if roots[c]]
    first, rest = present[0], present[1:]
    conv = {} if args.conversation_prob is None else {"train_conversation_prob": args.conversation_prob}
    cfg = DataConfig(
        source=CORPORA[first],
        root=roots[first] if first != "synth" else None,
        extra_sources=tuple(f"{CORPORA[c]}:{roots[c]}" if c != "synth" else "synth" for c in rest),
        mixture=MixtureConfig(max_speakers=10, **({} if args.max_group is None else {"max_group": args.max_group})),  # fmt: skip
        batch_size=args.batch_size,
        num_workers=args.workers,
        labels_per_class=labels_per_class,
        seed=seed,
        **conv,
    )
    return DataEngine(cfg)


def run_args(result: dict, libri: str | None, ocean: str | None, synth: bool, **extra: Any) -> argparse.Namespace:
    """The data settings of a finished run (its result JSON) for :func:`engine_for`: the same conversational
    share and conversation size as it trained and was tested with (runs that predate ``mixture.max_group``
    held every speaker in one conversation: 0)."""
    return argparse.Namespace(
        libri=libri, ocean=ocean, synth=synth, batch_size=result.get("batch_size", 32), workers=0,
        conversation_prob=result.get("train_conversation_prob"),
        max_group=result.get("mixture", {}).get("max_group", 0), **extra,
    )  # fmt: skip


def corpus_names(engine: DataEngine) -> dict[str, str]:
    """Corpus tag in speaker names → benchmark corpus name (``librispeech`` → ``libri``, ...)."""
    src = engine.source
    tags = src.corpora if isinstance(src, CombinedSource) else [src.name]
    by_kind = {v: k for k, v in CORPORA.items()}
    return {t: by_kind[t.rstrip("0123456789")] for t in tags}


def speakers_of(engine: DataEngine, split: str, corpus: str) -> list[str]:
    names = corpus_names(engine)
    spk = engine.splits[split]
    if not isinstance(engine.source, CombinedSource):
        return list(spk)
    return [s for s in spk if names[CombinedSource.corpus_of(s)] == corpus]


def test_sets(engine: DataEngine, corpus: str, per_count: int) -> dict[str, MixtureDataset]:
    """One rendered set per test domain, on the corpus's test speakers (30 clips per count by default)."""
    spk = speakers_of(engine, "test", corpus)
    n = per_count * engine.num_classes
    return {d: engine.domain_set("test", d, n, speakers=spk).precompute() for d in DOMAINS}


def new_model(name: str, num_classes: int, engine: DataEngine, seed: int, space: dict | None = None,
              n_mels: int = 64):
    torch.manual_seed(seed)
    if name == "crnn":
        model = create_model("crnn", num_classes=num_classes)
        fit_clips = MixtureDataset(engine.bank, engine.splits["train"], 256, engine.config.mixture,
                                   seed=seed, split="normaliser", scenario=engine.renderer("randomized"))  # fmt: skip
        return fit_crnn_normaliser(model, fit_clips)
    member, _, head = name.partition("@")  # e.g. "default@ordinal": another count head
    sam = as_space(space)  # SAMSpace defaults with the run's --space overrides (e.g. a wider stem)
    arch = {"default": sam.default, "largest": sam.largest, "smallest": sam.smallest}[member]()
    return build_model(arch, num_classes=num_classes, head=head or "classify", n_mels=n_mels, space=sam)


class Snapshots(pl.Callback):
    """Save the model at given steps, with the training time spent so far (kept across resumes)."""

    def __init__(self, steps: list[int], out: Path) -> None:
        self.steps = sorted(set(steps))
        self.out = out
        self.train_s = 0.0
        self.records: list[dict] = []
        self._t0: float | None = None

    def state_dict(self) -> dict:
        return {"train_s": self.train_s, "records": self.records}

    def load_state_dict(self, state: dict) -> None:
        self.train_s = state["train_s"]
        self.records = state["records"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self.train_s += time.perf_counter() - self._t0
        step = trainer.global_step
        if step in self.steps and all(r["step"] != step for r in self.records):
            path = self.out / f"step{step:06d}.pt"
            averaged = averaged_module(trainer)  # with --ema the snapshots are the averaged weights ...
            torch.save((averaged or pl_module).model.state_dict(), path)
            record = {"step": step, "train_min": round(self.train_s / 60, 3), "path": str(path)}
            if averaged is not None and step == self.steps[-1]:  # ... and the last one also keeps the raw
                record["raw_path"] = str(path.with_name(f"{path.stem}-raw.pt"))  # ones (a paired A/B)
                torch.save(pl_module.model.state_dict(), record["raw_path"])
            self.records.append(record)


def run_id(method: str, model: str, train: str, seed: int, steps: int, variant: str = "") -> str:
    return f"{method}-{model}-{train}-s{seed}-{steps}" + (f"-{variant}" if variant else "")


def train_method(args: argparse.Namespace) -> str:
    """What a training run of these arguments is: distillation from ``--distill-from`` or mixture supervision."""
    return "stream-distill" if args.distill_from else "mixture"


def teacher_of(args: argparse.Namespace, engine: DataEngine, seed: int):
    """The finished run ``--distill-from`` names (its final snapshot), or None."""
    if not args.distill_from:
        return None, None
    info = json.loads((Path(args.out_dir) / f"{args.distill_from}.json").read_text())
    if info["seed"] != seed:
        raise ValueError(
            f"--distill-from {args.distill_from} is seed {info['seed']}, not {seed}: same split only"
        )
    teacher = new_model(info["model"], engine.num_classes, engine, seed, info.get("space"), info.get("n_mels", 64))
    path = Path(args.work_dir) / args.distill_from / f"step{info['steps']:06d}.pt"
    teacher.load_state_dict(torch.load(path, weights_only=True))
    return teacher.eval(), info


def train_and_score(args: argparse.Namespace, model_name: str, train: str, seed: int) -> dict:
    method = train_method(args)
    rid = run_id(method, model_name, train, seed, args.steps, args.variant)
    work = Path(args.work_dir) / rid
    work.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(seed, workers=True)
    engine = engine_for(args, seed)
    corpora = [c for c in CORPORA if getattr(args, c)]
    train_spk = sorted(s for c in train.split("+") for s in speakers_of(engine, "train", c))
    model = new_model(model_name, engine.num_classes, engine, seed, args.space, args.n_mels)
    spec = SpecAugmentConfig() if args.spec_augment else None
    optim = OptimConfig(lr=args.lr, weight_decay=args.weight_decay)
    teacher, teacher_info = teacher_of(args, engine, seed)
    if teacher is not None:  # ERSAM's uncertainty-weighted KD, on the same stream with exact counts
        module: Any = StreamDistill(model, teacher, optim, DistillConfig(), teacher_path=args.distill_from)
    else:
        module = MixtureSupervision(model, optim, spec_augment=spec)
    dm = datamodule_for(module, engine, batch_size=args.batch_size, num_workers=args.workers)
    dm.speakers = train_spk
    marks = [max(1, int(round(f * args.steps))) for f in SNAPSHOTS]
    snaps = Snapshots(marks, work)
    tcfg = TrainerConfig(max_steps=args.steps, limit_val_batches=0.0, checkpoint_every_steps=args.checkpoint_every,
                         progress_bar=args.progress, log_every_steps=50, ema_decay=args.ema)  # fmt: skip
    t0 = time.perf_counter()
    fit(module, dm, tcfg, work, name=rid, callbacks=[snaps])
    wall = time.perf_counter() - t0
    sets = {c: test_sets(engine, c, args.eval_per_count) for c in corpora}
    curve = []
    for rec in sorted(snaps.records, key=lambda r: r["step"]):
        model.load_state_dict(torch.load(rec["path"], weights_only=True))
        scores = {c: {d: _score(model, ds) for d, ds in sets[c].items()} for c in corpora}
        curve.append({**{k: rec[k] for k in ("step", "train_min")}, "clips_seen": rec["step"] * args.batch_size,
                      "scores": scores})  # fmt: skip
        log(
            f"{rid} step {rec['step']:>6} ({rec['train_min']:.1f} min): "
            + "  ".join(
                f"{c}/{d} {s['mae']:.2f}"
                for c in corpora
                for d, s in scores[c].items()
                if d in ("clean", "clinical", "conversational")
            )
        )
    final_raw, last = None, max(snaps.records, key=lambda r: r["step"])
    if "raw_path" in last:  # the same run's last weights without averaging
        model.load_state_dict(torch.load(last["raw_path"], weights_only=True))
        final_raw = {c: {d: _score(model, ds) for d, ds in sets[c].items()} for c in corpora}
        model.load_state_dict(torch.load(last["path"], weights_only=True))
    median = {c: {d: _median_mae(ds) for d, ds in sets[c].items()} for c in corpora}
    return {
        "run": rid, "method": method, "model": model_name, "train": train, "seed": seed,
        "teacher": None if teacher_info is None else {k: teacher_info[k] for k in ("run", "model", "final")},
        "variant": args.variant, "space": args.space, "n_mels": args.n_mels, "spec_augment": None if spec is None else asdict(spec),
        "train_scenario": asdict(engine.renderer(engine.config.train_scenario).config),
        "train_conversation_prob": engine.config.train_conversation_prob, "mixture": asdict(engine.config.mixture),
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema,
        "workers": args.workers, "threads": torch.get_num_threads(), "train_speakers": len(train_spk),
        "test_speakers": {c: len(speakers_of(engine, "test", c)) for c in corpora},
        "eval_clips_per_domain": args.eval_per_count * engine.num_classes,
        "params": sum(p.numel() for p in model.parameters()), "wall_s_this_call": round(wall, 1),
        "train_min": curve[-1]["train_min"], "final": curve[-1]["scores"], "final_without_ema": final_raw, "curve": curve,
        "median_baseline_mae": median, **result_record("accuracy"),
    }  # fmt: skip


ADAPT_METHODS = (
    "few-only",
    "source-only",
    "source+finetune",
    "source+fixmatch",
    "source+replay",
    "source+all-labels",
)


def adapt(args: argparse.Namespace, model_name: str, train: str, seed: int, method: str) -> dict:
    """Few target labels on top of the source run ``mixture-<model>-<train>-s<seed>-<steps>``."""
    from ersam_ssl.ssl import METHODS, FixMatch, FixMatchConfig

    source_id = run_id("mixture", model_name, train, seed, args.steps, args.variant)
    source = Path(args.work_dir) / source_id / f"step{args.steps:06d}.pt"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: run the source model first (same --steps, --models, --train)")
    rid = run_id(f"adapt-{method}", model_name, train, seed, args.adapt_steps, args.variant)
    work = Path(args.work_dir) / rid
    work.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(seed, workers=True)
    engine = engine_for(args, seed, labels_per_class=args.labels_per_class)
    corpora = [c for c in CORPORA if getattr(args, c)]
    model = new_model(model_name, engine.num_classes, engine, seed, args.space, args.n_mels)
    if method != "few-only":
        model.load_state_dict(torch.load(source, weights_only=True))
    wall = 0.0
    if method != "source-only":
        lr = args.lr if method == "few-only" else args.adapt_lr
        optim = OptimConfig(lr=lr, weight_decay=args.weight_decay)
        labeled = np.arange(len(engine.pool)) if method == "source+all-labels" else None
        if method == "source+fixmatch":
            module: Any = FixMatch(model, optim, FixMatchConfig(threshold=args.threshold))
            dm = datamodule_for(module, engine, batch_size=16, unlabeled_batch_size=32)
        elif method == "source+replay":
            module = METHODS.get("replay")(model, optim)
            dm = datamodule_for(module, engine, batch_size=args.batch_size, target_batch_size=16)
        else:
            module = METHODS.get("supervised" if method == "few-only" else "finetune")(model, optim)
            dm = datamodule_for(module, engine, labeled_indices=labeled, batch_size=args.batch_size)
        tcfg = TrainerConfig(max_steps=args.adapt_steps, limit_val_batches=0.0, progress_bar=args.progress,
                             log_every_steps=50)  # fmt: skip
        t0 = time.perf_counter()
        fit(module, dm, tcfg, work, name=rid)
        wall = time.perf_counter() - t0
    sets = {c: test_sets(engine, c, args.eval_per_count) for c in corpora}
    scores = {c: {d: _score(model, ds) for d, ds in sets[c].items()} for c in corpora}
    log(f"{rid}: " + "  ".join(f"{c}/{d} {s['mae']:.2f}" for c in corpora for d, s in scores[c].items()))
    lab, _ = engine.budget
    return {
        "run": rid, "method": method, "model": model_name, "train": train, "seed": seed,
        "source": source_id, "steps": args.adapt_steps, "labels": int(len(engine.pool)) if method ==
        "source+all-labels" else (0 if method == "source-only" else int(lab.size)),
        "target_domain": engine.config.labeled_scenario, "wall_s_this_call": round(wall, 1),
        "train_min": round(wall / 60, 3), "final": scores, "mixture": asdict(engine.config.mixture),
        "median_baseline_mae": {c: {d: _median_mae(ds) for d, ds in sets[c].items()} for c in corpora},
        **result_record("accuracy"),
    }  # fmt: skip


class OnnxModel(torch.nn.Module):
    """An exported counter (e.g. the bundled one) as a module :func:`ersam_ssl.metrics.evaluate` can score: the
    raw outputs from ONNX Runtime, the head rebuilt from the file's config (no temperature: calibration
    changes confidences, not counts)."""

    def __init__(self, path: str | Path) -> None:
        from ersam_ssl.analysis.counters import OnnxCounter

        super().__init__()
        self.counter = OnnxCounter(path)
        self.head = self.counter.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.counter.outputs(x.numpy()))


def score_model_file(args: argparse.Namespace, seed: int) -> dict:
    """Score a trained counter file (a pipeline's ``nas/model.pt``, an exported ``.onnx``) on the same test
    sets."""
    from ersam_ssl.checkpoint import load_model

    engine = engine_for(args, seed)
    corpora = [c for c in CORPORA if getattr(args, c)]
    model = OnnxModel(args.eval_model) if Path(args.eval_model).suffix == ".onnx" else load_model(args.eval_model).eval()
    sets = {c: test_sets(engine, c, args.eval_per_count) for c in corpora}
    scores = {c: {d: _score(model, ds) for d, ds in sets[c].items()} for c in corpora}
    rid = f"eval-{args.name}-s{seed}"
    log(f"{rid}: " + "  ".join(f"{c}/{d} {s['mae']:.2f}" for c in corpora for d, s in scores[c].items()))
    return {
        "run": rid, "method": f"eval:{args.name}", "model": Path(args.eval_model).name, "train": "-",
        "seed": seed, "steps": 0, "model_file": str(args.eval_model), "train_min": 0.0, "final": scores,
        "mixture": asdict(engine.config.mixture),
        "median_baseline_mae": {c: {d: _median_mae(ds) for d, ds in sets[c].items()} for c in corpora},
        **result_record("accuracy"),
    }  # fmt: skip


def _score(model, ds: MixtureDataset) -> dict:
    loader = torch.utils.data.DataLoader(ds, batch_size=64)
    with torch.inference_mode():
        m = evaluate(model, loader)
    cm = np.asarray(m["confusion"], dtype=np.float64)  # true count x predicted count
    counts = np.arange(cm.shape[0])
    bias = float((cm * (counts[None, :] - counts[:, None])).sum() / max(cm.sum(), 1))
    return {"mae": round(m["mae"], 4), "error_rate": round(m["error_rate"], 4),
            "level_error": round(1 - m["level_accuracy"], 4), "ece": round(m["ece"], 4),
            "bias": round(bias, 4),  # mean predicted - true count (< 0: under-counting)
            "per_count_mae": [round(x, 3) for x in m["per_count_mae"]]}  # fmt: skip


def _median_mae(ds: MixtureDataset) -> float:
    y = ds.counts()
    return round(float(np.abs(y - np.median(y)).mean()), 4)


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------ report
def load_results(folder: Path = RESULTS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def summarise(results: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (model, train, steps, test corpus, domain)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        for corpus, doms in r["final"].items():
            for d, s in doms.items():
                key = (method_label(r), r["model"], r["train"], r["steps"], corpus, d)
                groups.setdefault(key, []).append({**s, "median": r["median_baseline_mae"][corpus][d],
                                                   "train_min": r["train_min"]})  # fmt: skip
    rows = []
    for key, vals in groups.items():
        row = dict(zip(("method", "model", "train", "steps", "corpus", "domain"), key))
        row["seeds"] = len(vals)
        for m in ("mae", "error_rate", "level_error", "ece", "median", "train_min"):
            v = np.array([x[m] for x in vals], dtype=float)
            row[m] = (round(float(v.mean()), 4), round(float(v.std()), 4))
        rows.append(row)
    return rows


def _pm(value: tuple[float, float], pct: bool = False) -> str:
    """``mean±std`` (as a percentage when ``pct``)."""
    return f"{100 * value[0]:.1f}±{100 * value[1]:.1f}%" if pct else f"{value[0]:.2f}±{value[1]:.2f}"


def print_table(rows: list[dict], file=sys.stdout) -> None:
    head = f"{'method':17} {'model':8} {'train':11} {'steps':>6} {'min':>5} {'test':6} {'domain':15} " \
           f"{'seeds':>5} {'MAE':>12} {'error':>13} {'level err':>13} {'median MAE':>10}"  # fmt: skip
    print(head, file=file)
    order = lambda r: (r["model"], r["train"], r["method"] != "mixture", r["method"], r["steps"], r["corpus"],  # noqa: E731
                       DOMAINS.index(r["domain"]))  # fmt: skip
    for r in sorted(rows, key=order):
        print(f"{r['method']:17} {r['model']:8} {r['train']:11} {r['steps']:>6} {r['train_min'][0]:5.1f} {r['corpus']:6} "
              f"{r['domain']:15} {r['seeds']:>5} {_pm(r['mae']):>12} {_pm(r['error_rate'], True):>13} "
              f"{_pm(r['level_error'], True):>13} {r['median'][0]:10.2f}", file=file)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--libri", default=None, help="LibriSpeech-layout folder (e.g. librispeech-mini)")
    p.add_argument("--ocean", default=None, help="speechocean762 folder (speaker = sub-folder)")
    p.add_argument("--synth", action="store_true", help="add the embedded synthesized corpus to the pool")
    p.add_argument("--models", default="default",
                   help="comma list of default, largest, smallest, crnn; MEMBER@HEAD for another count head "
                        "(default@ordinal, default@poisson)")  # fmt: skip
    p.add_argument(
        "--train", default="libri+ocean", help="comma list of training corpora sets, e.g. libri,libri+ocean"
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--spec-augment", action="store_true", help="mask mel bands and time spans while training")
    p.add_argument("--variant", default="", help="suffix of the run names (a recipe variant)")
    p.add_argument("--space", type=json.loads, default=None,
                   help='SAMSpace overrides as JSON, e.g. \'{"stem_width": 64}\' (name the run with --variant)')  # fmt: skip
    p.add_argument(
        "--distill-from",
        default=None,
        help="a finished run id (same seed): train by uncertainty-weighted KD from it on the stream",
    )
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--n-mels", type=int, default=64, help="mel bands of the SAM frontend (name the run with --variant)")
    p.add_argument("--conversation-prob", type=float, default=None,
                   help="share of conversational training mixtures (default: DataConfig's; name the run with --variant)")
    p.add_argument("--max-group", type=int, default=None,
                   help="largest conversation of the conversational mixtures, training and test (0: all speakers "
                        "in one; default: MixtureConfig's; name the run with --variant)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="EMA decay of the weights (e.g. 0.999; 0 = off): snapshots and the final model are the average")  # fmt: skip
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-per-count", type=int, default=30)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--work-dir", default=str(HERE / "work" / "accuracy"))
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--resume", action="store_true", help="skip finished runs, continue a killed one")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--report", action="store_true", help="only print the table of the results folder")
    p.add_argument("--adapt", action="store_true", help="few target labels on top of finished source runs")
    p.add_argument("--adapt-methods", default=",".join(ADAPT_METHODS))
    p.add_argument("--adapt-steps", type=int, default=400)
    p.add_argument("--adapt-lr", type=float, default=1e-3)
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.95, help="FixMatch confidence threshold")
    p.add_argument("--eval-model", default=None, help="only score this model file (with --name)")
    p.add_argument("--name", default=None, help="name of the --eval-model row")
    a = p.parse_args(argv)
    out_dir = Path(a.out_dir)
    if a.report:
        print_table(summarise(load_results(out_dir)))
        return
    if not (a.libri or a.ocean or a.synth):
        p.error("give --libri, --ocean and/or --synth")
    if (a.ema or a.n_mels != 64 or a.conversation_prob is not None or a.max_group is not None) and not a.variant:
        p.error("--ema / --n-mels / --conversation-prob / --max-group need --variant (the run names must differ from the default runs)")
    if a.space and not a.variant:
        p.error("--space needs --variant (the run names must differ from runs in the default space)")
    if a.eval_model and not a.name:
        p.error("--eval-model needs --name")
    if a.eval_model:
        a.models, a.train = "-", "-"  # one scoring job per seed
    quiet_lightning()
    configure_threads(a.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in a.seeds.split(",")):
        for model in a.models.split(","):
            for train in a.train.split(","):
                jobs = [(run_id(train_method(a), model, train, seed, a.steps, a.variant), None)]
                if a.eval_model:
                    jobs = [(f"eval-{a.name}-s{seed}", "eval")]
                elif a.adapt:
                    jobs = [
                        (run_id(f"adapt-{m}", model, train, seed, a.adapt_steps, a.variant), m)
                        for m in a.adapt_methods.split(",")
                    ]
                for rid, method in jobs:
                    dest = out_dir / f"{rid}.json"
                    if dest.exists():
                        if a.resume:
                            log(f"{rid}: done, skipping")
                            continue
                        p.error(f"{dest} exists (use --resume to skip finished runs)")
                    if not a.resume and (Path(a.work_dir) / rid).exists():
                        p.error(f"{Path(a.work_dir) / rid} holds an unfinished run: --resume continues it")
                    if method is None:
                        result = train_and_score(a, model, train, seed)
                    elif method == "eval":
                        result = score_model_file(a, seed)
                    else:
                        result = adapt(a, model, train, seed, method)
                    write_result(dest, result)
                    log(f"wrote {dest}")
    print_table(summarise(load_results(out_dir)))


if __name__ == "__main__":
    main()
