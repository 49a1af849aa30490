"""What the benchmark scripts share: quiet Lightning, a timer, result JSON, the CRNN normaliser, the
LibriSpeech speaker split and the run labels of the accuracy tables.

The scripts import it as ``from common import ...``: ``python benchmarks/x.py`` puts ``benchmarks/`` first
on ``sys.path`` (a loader of a script by file path, e.g. ``recipes/bundle.py``, adds it itself). Importing
this module loads neither torch nor ersam_ssl, so light scripts (``readme_table.py``) stay light.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: Lightning's loggers under both package names (``pytorch_lightning`` and the unified ``lightning``).
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning")
#: Warnings that say nothing about a benchmark's figures (a few DataLoader workers on purpose, resuming
#: mid-epoch by design, the ONNX exporter's choice of path, a torch/Lightning deprecation).
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*resuming from a checkpoint that ended before the epoch ended.*",
    ".*legacy TorchScript-based ONNX export.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
)


def quiet_lightning() -> None:
    """Lightning logs warnings only, and the warnings of :data:`QUIET_WARNINGS` are not shown."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", pattern)


# --------------------------------------------------------------------------------------------- timing
class Timer:
    """Wall-clock seconds since the start of a :func:`timed` block (fixed once the block ends)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.end: float | None = None

    @property
    def s(self) -> float:
        return (self.end if self.end is not None else time.perf_counter()) - self.start


@contextlib.contextmanager
def timed() -> Iterator[Timer]:
    """``with timed() as t: ...`` then ``t.s``: the block's wall-clock seconds (``time.perf_counter``)."""
    t = Timer()
    try:
        yield t
    finally:
        t.end = time.perf_counter()


# -------------------------------------------------------------------------------------------- results
def today() -> str:
    return time.strftime("%Y-%m-%d")


#: Corpus folders are this machine's: a published command names them by placeholder.
CORPUS_PLACEHOLDERS = {"--libri": "LIBRISPEECH", "--ocean": "SPEECHOCEAN", "--root": "CORPUS",
                       "data.root": "CORPUS"}  # fmt: skip


def portable_command(command: str) -> str:
    """``command`` as others can run it: corpus folders (``--libri``, ``--ocean``, ``--root``, ``data.root=``)
    become placeholders, an absolute path into a ``runs`` folder becomes relative to it, ``--resume`` (how a
    run was continued, not what it computes) is dropped."""

    def local(value: str) -> str:
        parts = Path(value).parts
        return str(Path(*parts[parts.index("runs") :])) if value.startswith("/") and "runs" in parts else value

    words, out = shlex.split(command), []
    i = 0
    while i < len(words):
        word = words[i]
        key, eq, value = word.partition("=")
        if word == "--resume":
            pass
        elif word in CORPUS_PLACEHOLDERS and i + 1 < len(words):
            out += [word, CORPUS_PLACEHOLDERS[word]]
            i += 1
        elif eq and key in CORPUS_PLACEHOLDERS:
            out.append(f"{key}={CORPUS_PLACEHOLDERS[key]}")
        else:
            out.append(f"{key}={local(value)}" if eq else local(word))
        i += 1
    return shlex.join(out)


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """How to reproduce this run: ``python benchmarks/<script>.py ARGS`` (``argv``: default ``sys.argv[1:]``),
    shell-quoted so that an argument such as a JSON ``--space`` survives copy-paste, and portable
    (:func:`portable_command`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return portable_command(shlex.join(["python", f"benchmarks/{script}.py", *args]))


def result_record(script: str, argv: Sequence[str] | None = None, **fields: Any) -> dict:
    """``fields`` plus the ``date`` of the run and the ``command`` that reproduces it (see :func:`command_line`)."""
    return {**fields, "date": today(), "command": command_line(script, argv)}


def _json_default(value: Any) -> Any:
    from ersam_ssl.fileio import json_default

    try:
        return json_default(value)
    except TypeError:  # a result of hours of training is not lost to an odd field: store its text
        return str(value)


def write_result(path: str | Path, record: Any) -> Path:
    """Write ``record`` as JSON (indent 1) atomically: a killed run leaves the old file or the new one.

    NumPy values and paths become JSON values; anything else not serialisable is stored as its ``str``.
    """
    from ersam_ssl.fileio import write_json

    return write_json(path, record, default=_json_default)


def method_label(r: dict) -> str:
    """A run's method with its recipe variant (``mixture+eqsa``): variants are never averaged together."""
    return r["method"] + (f"+{r['variant']}" if r.get("variant") else "")


# ---------------------------------------------------------------------------------------- data, models
#: The LibriSpeech subsets whose speakers are the test speakers (``subset:split``).
LIBRI_TEST_SUBSETS = ("test-other:test",)


def librispeech_config(root: str, subset_splits: Sequence[str] = LIBRI_TEST_SUBSETS, **fields: Any):
    """The :class:`~ersam_ssl.data.DataConfig` of a LibriSpeech-layout corpus in these benchmarks: train and
    validation speakers from the training subsets, test speakers from ``subset_splits`` (speaker-disjoint)."""
    from ersam_ssl.data import DataConfig

    return DataConfig(source="librispeech", root=root, subset_splits=tuple(subset_splits),
                      split_fractions=(0.8, 0.15, 0.0, 0.05), **fields)  # fmt: skip


def fit_crnn_normaliser(model, clips, n: int | None = None, seed: int | None = None, batch: int = 32):
    """Fit the CRNN's per-bin input standardisation (CountNet's ``StandardScaler``) on training clips.

    ``clips`` is a dataset of ``(audio, label)`` items: its first ``n`` items (default all) in order, or,
    with ``seed``, ``n`` items drawn at random without replacement. Returns ``model``.
    """
    import numpy as np
    import torch

    order = np.arange(len(clips)) if seed is None else np.random.default_rng(seed).permutation(len(clips))
    waves = torch.stack([clips[int(i)][0] for i in order[:n]])
    model.fit_normalizer(waves.split(batch))
    return model
