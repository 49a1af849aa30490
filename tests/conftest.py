"""Shared fixtures: a tiny synthesized corpus, a LibriSpeech-layout tree, a small data engine.

Everything writes under pytest's tmp dirs; caches (synth corpus, wandb, NNI, matplotlib) are pointed
there too so tests never touch the user's home.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

_HOME_VAR = "ERSAM_TEST_HOME"


def _session_home() -> Path:
    """This process's test home folder, removed by :func:`pytest_sessionfinish`.

    This file is imported twice in a session (by pytest as the conftest, and as the module ``conftest`` by
    tests that import its helpers): the second import reuses the first one's folder, found through
    ``$ERSAM_TEST_HOME`` (``pid:path``; a child process that inherits it makes its own).
    """
    pid, _, path = os.environ.get(_HOME_VAR, "").partition(":")
    if pid == str(os.getpid()) and path:
        return Path(path)
    home = Path(tempfile.mkdtemp(prefix="ersam-test-home-"))
    os.environ[_HOME_VAR] = f"{os.getpid()}:{home}"
    return home


_TMP_HOME = _session_home()
os.environ.setdefault("ERSAM_SSL_CACHE", str(_TMP_HOME / "cache"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_DIR", str(_TMP_HOME / "wandb"))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MPLCONFIGDIR", str(_TMP_HOME / "mpl"))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's home folder (synth cache, wandb, matplotlib) once every test has run."""
    shutil.rmtree(_TMP_HOME, ignore_errors=True)


#: Count classes of ``small_engine`` (max_speakers=3).
SMALL_NUM_CLASSES = 4


def small_sam(arch: dict | None = None, **kwargs):
    """A SAM counter (default architecture unless ``arch``) for ``small_engine``'s classes."""
    from ersam_ssl.models import build_model

    return build_model(arch, num_classes=SMALL_NUM_CLASSES, **kwargs)


def tiny_space():
    """A SAM search space small enough for supernet and search tests (2 choices per dimension)."""
    from ersam_ssl.models import SAMSpace

    return SAMSpace(
        kernels=(3, 5),
        expands=(1, 3),
        depths=(1, 2),
        width_mults=(0.5, 1.0),
        stage_widths=(8, 16),
        stage_strides=(2, 2),
        stem_width=8,
        pool_width=16,
    )


@pytest.fixture
def one_thread():
    """Tiny shapes gain nothing from intra-op threads, and on a busy 2-core box they spin-wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SHARED_LIBRISPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "librispeech-mini"


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory: pytest.TempPathFactory):
    """30 espeak-ng voices × ~6 s: enough for speaker-disjoint splits with max_speakers=3."""
    from ersam_ssl.data.synth import SynthSpeechSource

    return SynthSpeechSource(
        n_speakers=30, seconds_per_speaker=6.0, seed=0, root=tmp_path_factory.mktemp("synth")
    )


ROOT = Path(__file__).resolve().parents[1]
TINY_PRESET = ROOT / "recipes" / "configs" / "tiny.yaml"


def small_data() -> dict:
    """The tests' data settings (a fresh dict): the tiny preset's ``data`` section (:data:`TINY_PRESET`),
    with a smaller pool, smaller evaluation splits and batches, and no epoch repeats, to keep tests fast."""
    with open(TINY_PRESET, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)["data"]
    return {**data, "pool_size": 40, "val_size": 8, "test_size": 8, "batch_size": 4, "min_epoch_items": 0}


@pytest.fixture(scope="session")
def small_data_config():
    from ersam_ssl import config
    from ersam_ssl.data import DataConfig

    return config.merge(DataConfig(), small_data())


@pytest.fixture(scope="session")
def small_engine(synth_source, small_data_config):
    from ersam_ssl.data import DataEngine

    return DataEngine(small_data_config, source=synth_source)


@pytest.fixture(scope="session")
def librispeech_tree(tmp_path_factory: pytest.TempPathFactory, synth_source) -> Path:
    """A LibriSpeech-layout corpus (two subsets + SPEAKERS.TXT) built from synthesized speech."""
    root = tmp_path_factory.mktemp("LibriSpeech")
    by_spk = synth_source.by_speaker()
    speakers = sorted(by_spk)
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for i, spk in enumerate(speakers):
        subset = "train-clean-100" if i < 24 else "test-clean"
        new_id = str(100 + i)
        chapter = "5000"
        d = root / subset / new_id / chapter
        d.mkdir(parents=True)
        for j, u in enumerate(by_spk[spk][:3]):
            shutil.copy(u.path, d / f"{new_id}-{chapter}-{j:04d}.flac")
        (d / f"{new_id}-{chapter}.trans.txt").write_text("transcript\n")
        lines.append(f"{new_id} | {'F' if i % 2 else 'M'} | {subset} | 0.1 | Reader {i}")
    (root / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def folder_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``data.source=folder`` corpus that fills the tiny preset's splits: 20 speaker sub-folders, one 2 s
    file each (a speaker-specific burst pattern of noise; no synthesis, so a pipeline reaches its checks
    in seconds)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("folder_corpus")
    rng = np.random.default_rng(0)
    for i in range(20):
        x = 0.1 * rng.standard_normal(2 * 16000) * (np.sin(np.arange(2 * 16000) * (3 + i) / 16000) > 0)
        (root / f"spk{i:02d}").mkdir()
        sf.write(root / f"spk{i:02d}" / "utt.wav", x.astype(np.float32), 16000)
    return root


def tone(seconds: float, sr: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def numpy_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, C]`` logits: the NumPy reference the loss tests compare against."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=1, keepdims=True)


#: Exact STFT bin centres for n_fft=400 at 16 kHz (40 Hz bins), far apart so they do not leak.
TONE_HZ = (320.0, 720.0, 1120.0, 1720.0, 2320.0)
TONE_MODEL = "test-tone-counter"


def build_tone_counter(beta: float = 5.0, threshold: float = 1.0, sharpness: float = 20.0):
    """A counter built, not trained, so its answers are known: it counts the tones of :data:`TONE_HZ`
    whose mean STFT magnitude over the window exceeds ``threshold`` (a full-window tone of amplitude 0.05
    gives 5.0, half a window 2.5), squashed by a sigmoid of ``sharpness``; logits ``-beta (c - j)²`` for
    counts ``j = 0..5`` (linear in ``[c, c²]``). Registered as a model, so exports and files rebuild it."""
    import torch
    from torch import nn

    from ersam_ssl.models import CountModel
    from ersam_ssl.models.frontend import StftMagnitude
    from ersam_ssl.models.heads import ClassificationHead

    class ToneFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("bins", torch.tensor([int(f / 40) for f in TONE_HZ]), persistent=False)

        def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
            level = magnitude.index_select(1, self.bins).mean(dim=-1)
            c = torch.sigmoid(sharpness * (level - threshold)).sum(dim=-1, keepdim=True)
            return torch.cat([c, c * c], dim=-1)

    num_classes = len(TONE_HZ) + 1
    head = ClassificationHead(2, num_classes)
    with torch.no_grad():
        j = torch.arange(num_classes, dtype=torch.float32)
        head.linear.weight.copy_(beta * torch.stack([2 * j, -torch.ones_like(j)], dim=1))
        head.linear.bias.copy_(-beta * j * j)
    config = {"name": TONE_MODEL, "kwargs": {"beta": beta, "threshold": threshold, "sharpness": sharpness}}
    return CountModel(StftMagnitude(), ToneFeatures(), head, 2, config).eval()


def _register_tone_counter() -> None:
    from ersam_ssl.models import MODELS

    if TONE_MODEL not in MODELS:
        MODELS.register(TONE_MODEL)(build_tone_counter)


_register_tone_counter()
