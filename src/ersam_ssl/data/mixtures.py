"""On-the-fly speaker-count mixtures (LibriCount / AmbianceCount protocol).

Each item is a 5 s, 16 kHz mixture of K distinct speakers, K in [0, max_speakers] (balanced: item i has
K = i mod (max_speakers + 1)). Per speaker: a random segment of that speaker's concatenated utterances,
a random gain (± ``gain_db``) and speed factor (``speed_range``, linear-interpolation resampling), summed.
The speech sum is normalised to a fixed RMS (so loudness does not reveal K) and a low background floor is
added; K = 0 is background only. Optionally a :class:`~ersam_ssl.data.scenarios.ScenarioRenderer` turns
the clean mixture into a clinical-style recording. Output is quantised to 16 bit, so writing it as 16-bit
FLAC and reading it back is lossless.

References:
    Stöter, Chakrabarty, Edler, Habets. CountNet: Estimating the Number of Concurrent Speakers Using
    Supervised Learning. IEEE/ACM TASLP 27(2), 2019 (LibriCount: 0–10 speakers, 5 s, 16 kHz).

Conversational items (``conversation_prob``): real social ambiance is turn-taking with partial overlap, not
K people reading at once. Each of the K speakers then talks only in its turns (one or more stretches, with
gaps and overlaps between consecutive turns; with ``max_group`` set, more than that many speakers talk in
parallel conversations of at most that size), and with ``backchannel_prob`` one extra speaker says
something short ("mm-hm") that stays below the count threshold. The label is the number of distinct
speakers whose voice activity inside their turns lasts at least ``min_speech_s`` (turns are lengthened
until it does, so the label of item ``i`` is still known without rendering it); ``Mixture.activity``
holds the per-speaker activity the label was derived from.

Determinism: item ``i`` depends only on (``seed``, ``split``, ``i``) — the same in any DataLoader worker,
in any order, on any machine with the same source audio.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from ersam_ssl import audio
from ersam_ssl.data.bank import REFERENCE_RMS, VAD_FRAME, VAD_THRESHOLD_DB, SpeakerBank, frame_rms
from ersam_ssl.data.scenarios import ScenarioRenderer, coloured_noise
from ersam_ssl.data.sources import LibriCountSource
from ersam_ssl.fileio import atomic_open, atomic_path, write_json


@dataclass(frozen=True)
class MixtureConfig:
    """How mixtures are drawn (LibriCount defaults)."""

    duration: float = 5.0
    sample_rate: int = audio.SAMPLE_RATE
    max_speakers: int = 10
    gain_db: float = 6.0
    speed_range: tuple[float, float] = (0.9, 1.1)
    speed_steps: int = 21
    target_rms: float = 0.05
    background_db: tuple[float, float] = (-65.0, -50.0)
    conversation_prob: float = 0.0
    min_speech_s: float = 0.5
    turn_s: tuple[float, float] = (0.8, 3.0)
    turn_gap_s: tuple[float, float] = (-0.5, 0.4)
    backchannel_prob: float = 0.3
    max_group: int = 0

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    @property
    def num_classes(self) -> int:
        return self.max_speakers + 1

    def validate(self) -> None:
        if self.max_speakers < 1:
            raise ValueError("max_speakers must be >= 1")
        lo, hi = self.speed_range
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"speed_range {self.speed_range} must satisfy 0.5 <= lo <= hi <= 2")
        if self.speed_steps < 1:
            raise ValueError("speed_steps must be >= 1")
        for name in ("conversation_prob", "backchannel_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is not a probability")
        if not 0.0 < self.min_speech_s <= 0.5 * self.duration:
            raise ValueError(f"min_speech_s={self.min_speech_s} must be in (0, duration / 2]")
        if not 0.0 < self.turn_s[0] <= self.turn_s[1]:
            raise ValueError(f"turn_s={self.turn_s} must satisfy 0 < lo <= hi")
        if self.max_group < 0:
            raise ValueError(f"max_group={self.max_group} must be >= 0 (0: one conversation of all speakers)")


@dataclass
class Mixture:
    """One generated mixture with everything known about it."""

    audio: np.ndarray
    count: int
    meta: dict = field(default_factory=dict)
    activity: np.ndarray | None = None  # [K, frames] bool, 20 ms frames


def quantise16(x: np.ndarray) -> np.ndarray:
    """Round to the 16-bit PCM grid (k / 32768) so a 16-bit file stores the clip exactly."""
    return (np.clip(np.round(x * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())


class MixtureDataset(Dataset):
    """Speaker-count mixtures generated on the fly from a :class:`SpeakerBank`.

    Args:
        bank: decoded speech per speaker.
        speakers: the speakers this dataset may use (one split of :func:`speaker_splits`).
        size: number of items (the generator is deterministic, so this is a window onto an endless stream).
        config: mixture parameters.
        seed: with ``split``, fixes every item.
        split: name mixed into the seed so train/val/test streams differ even with one seed.
        scenario: optional renderer applied after mixing.
        counts: optional explicit count per item (default balanced ``i mod (max_speakers+1)``).

    ``dataset[i]`` returns ``(waveform float32 tensor [num_samples], count int64 tensor)``;
    :meth:`generate` returns the full :class:`Mixture` with metadata and per-speaker activity.
    """

    def __init__(
        self,
        bank: SpeakerBank,
        speakers: Sequence[str],
        size: int,
        config: MixtureConfig | None = None,
        seed: int = 0,
        split: str = "train",
        scenario: ScenarioRenderer | None = None,
        counts: Sequence[int] | None = None,
    ) -> None:
        self.config = config or MixtureConfig()
        self.config.validate()
        self.bank = bank
        self.speakers = sorted(speakers)
        missing = [s for s in self.speakers if s not in bank.speakers]
        if missing:
            raise ValueError(f"speakers not in the bank: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if len(self.speakers) < self.config.max_speakers:
            raise ValueError(
                f"split {split!r} has {len(self.speakers)} speakers, fewer than max_speakers="
                f"{self.config.max_speakers}: mixtures need distinct speakers"
            )
        self.size = int(size)
        self.seed = int(seed)
        self.split = split
        self.scenario = scenario
        self._counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        if self._counts is not None and (
            self._counts.min() < 0 or self._counts.max() > self.config.max_speakers
        ):
            raise ValueError("counts outside [0, max_speakers]")
        cfg = self.config
        n = cfg.num_samples
        self._speeds = np.linspace(*cfg.speed_range, cfg.speed_steps) if cfg.speed_steps > 1 else np.ones(1)
        # Linear-interpolation read positions per speed level, shared by every item (the hot path then
        # only gathers and blends; see benchmarks/data_throughput.py).
        self._interp = []
        for s in self._speeds:
            t = np.arange(n, dtype=np.float64) * s
            i0 = t.astype(np.int32)
            self._interp.append((i0, i0 + 1, (t - i0).astype(np.float32), int(i0[-1]) + 2))
        self._background = coloured_noise(n * 4, "pink", np.random.default_rng([seed, 0xB6]))
        self._vad_thr = REFERENCE_RMS * 10 ** (VAD_THRESHOLD_DB / 20) * 32767.0
        self._cache: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    def count(self, index: int) -> int:
        """The label of item ``index`` without generating it."""
        if self._counts is not None:
            return int(self._counts[index])
        return index % (self.config.max_speakers + 1)

    def counts(self) -> np.ndarray:
        return np.array([self.count(i) for i in range(self.size)], dtype=np.int64)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _split_code(self.split), int(index)])

    def generate(self, index: int) -> Mixture:
        """Render item ``index`` (deterministic)."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        cfg = self.config
        n = cfg.num_samples
        rng = self.rng(index)
        k = self.count(index)
        # The conversation draws come from their own stream, so items without conversation (and every
        # dataset with conversation_prob=0) render exactly as before the option existed.
        crng = np.random.default_rng([self.seed, _split_code(self.split), int(index), 0xC0]) \
            if cfg.conversation_prob > 0 else None  # fmt: skip
        talk = crng is not None and k > 0 and crng.random() < cfg.conversation_prob
        extra = int(talk and len(self.speakers) > k and crng.random() < cfg.backchannel_prob)
        chosen = rng.choice(len(self.speakers), size=k, replace=False) if k else np.zeros(0, dtype=np.int64)
        if extra:  # the backchannel speaker: any speaker not already talking
            rest = np.setdiff1d(np.arange(len(self.speakers)), chosen)
            chosen = np.append(chosen, rest[int(crng.integers(rest.size))])
        speech = np.zeros(n, dtype=np.float32)
        activity = np.zeros((k + extra, n // VAD_FRAME), dtype=bool)
        turns = _turn_plan(k, activity.shape[1], cfg, crng) if talk else None
        spk_ids, gains, speeds, starts = [], [], [], []
        for j, c in enumerate(chosen):
            spk = self.speakers[int(c)]
            src = self.bank.audio(spk)
            level = int(rng.integers(len(self._speeds)))
            i0, i1, frac, need = self._interp[level]
            if src.size < need:  # short speaker: loop the stream
                src = np.tile(src, need // src.size + 1)
            start = int(rng.integers(0, src.size - need + 1))
            seg = src[start : start + need].astype(np.float32)
            x0 = seg.take(i0)
            x = seg.take(i1)
            x -= x0
            x *= frac
            x += x0
            voiced = frame_rms(x) > self._vad_thr
            if talk:
                min_frames = int(np.ceil(cfg.min_speech_s * cfg.sample_rate / VAD_FRAME))
                if j < k:
                    env = _ensure_speech(turns[j], voiced, min_frames)
                else:
                    env = _backchannel(voiced, min_frames, crng)
                x *= _frame_envelope(env, n)
                voiced &= env
            activity[j] = voiced
            g = float(rng.uniform(-cfg.gain_db, cfg.gain_db))
            x *= np.float32(10 ** (g / 20) / 32767.0)
            speech += x
            spk_ids.append(spk)
            gains.append(round(g, 3))
            speeds.append(round(float(self._speeds[level]), 4))
            starts.append(start)
        if k:
            rms = float(np.sqrt(np.mean(speech**2)))
            speech *= np.float32(cfg.target_rms / max(rms, 1e-8))
        bg_db = float(rng.uniform(*cfg.background_db))
        off = int(rng.integers(0, self._background.size - n + 1))
        mix = speech + self._background[off : off + n] * np.float32(10 ** (bg_db / 20))
        meta: dict = {
            "index": int(index),
            "split": self.split,
            "seed": self.seed,
            "count": k,
            "conversation": bool(talk),
            "conversation_groups": _group_count(k, cfg.max_group) if talk else 0,
            "speakers": spk_ids[:k],
            "gains_db": gains,
            "speeds": speeds,
            "starts": starts,
            "background_db": round(bg_db, 2),
        }
        if self.scenario is not None:
            mix, applied = self.scenario(mix, rng)
            meta.update(applied)
        peak = float(np.abs(mix).max())
        if peak > 0.99:
            mix = mix * np.float32(0.99 / peak)
            meta["limited_db"] = round(20 * np.log10(0.99 / peak), 2)
        if extra:
            meta["backchannel_speaker"] = spk_ids[k]
            meta["backchannel_s"] = round(float(activity[k].sum()) * VAD_FRAME / cfg.sample_rate, 3)
        concurrent = activity.sum(axis=0) if k else np.zeros(n // VAD_FRAME, dtype=np.int64)
        meta["activity"] = [round(float(a.mean()), 4) for a in activity[:k]]
        meta["max_concurrent"] = int(concurrent.max()) if concurrent.size else 0
        meta["mean_concurrent"] = round(float(concurrent.mean()), 4) if concurrent.size else 0.0
        return Mixture(quantise16(mix), k, meta, activity)

    def precompute(self, num_workers: int = 0, batch_size: int = 64) -> MixtureDataset:
        """Render every item once into an in-memory int16 array (exact: items are 16-bit quantised).

        Worth it for a finite pool read for many epochs: reading becomes a copy, and forked DataLoader
        workers share the array copy-on-write. Uses ``num_workers`` processes to render.
        """
        if self._cache is not None:
            return self
        loader = DataLoader(_Renderer(self), batch_size=batch_size, num_workers=num_workers)
        cache = np.empty((self.size, self.config.num_samples), dtype=np.int16)
        pos = 0
        for block in loader:
            cache[pos : pos + block.shape[0]] = block.numpy()
            pos += block.shape[0]
        self._cache = cache
        return self

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if self._cache is not None:
            x = torch.from_numpy(self._cache[index].astype(np.float32) / np.float32(32768.0))
            return x, torch.tensor(self.count(index), dtype=torch.int64)
        m = self.generate(index)
        return torch.from_numpy(m.audio), torch.tensor(m.count, dtype=torch.int64)


def _turn_plan(k: int, frames: int, cfg: MixtureConfig, rng: np.random.Generator) -> np.ndarray:
    """Turn envelopes ``[k, frames]`` (bool, 20 ms frames) of k people talking in one window.

    By default (``cfg.max_group=0``) all k hold one conversation (:func:`_conversation`). With
    ``max_group > 0``, more than that many talk in ``ceil(k / max_group)`` parallel conversations of
    near-equal size (speakers dealt round-robin in random order), as at a party: one conversation cannot give
    ten people a turn within 5 s without compressing every turn to a fraction of a second. Measured
    (``benchmarks/accuracy.py``, results ``*-wide-g4`` vs ``*-wide``, one seed): training on parallel
    conversations of at most 4 taught the counter that two or three concurrent voices may mean ten people,
    and clean overlapped mixtures of 2-4 speakers were then over-counted by 2-3 (clean MAE 1.50 / 1.36 /
    0.74 vs 0.95 / 0.92 / 0.65 on LibriSpeech / speechocean762 / synthetic test speakers), so it is off by
    default. Plans with ``k <= max_group`` draw exactly as one conversation does.
    """
    groups = _group_count(k, cfg.max_group)
    if groups == 1:
        return _conversation(k, frames, cfg, rng)
    order = rng.permutation(k)
    env = np.zeros((k, frames), dtype=bool)
    for g in range(groups):
        members = order[g::groups]
        env[members] = _conversation(members.size, frames, cfg, rng)
    return env


def _group_count(k: int, max_group: int) -> int:
    """How many parallel conversations ``k`` speakers hold (``max_group=0``: one)."""
    return -(-k // max_group) if max_group and k > max_group else 1


def _conversation(k: int, frames: int, cfg: MixtureConfig, rng: np.random.Generator) -> np.ndarray:
    """Turn envelopes ``[k, frames]`` of one k-person conversation in the window.

    Every speaker gets a turn, in random order; a third of the speakers (at random) get a second one.
    Turns last ``turn_s`` and follow each other with a gap from ``turn_gap_s`` (negative: the next speaker
    starts before the current one stops — overlap); the whole plan starts at a random offset (the window
    cuts into an ongoing conversation) and is compressed to fit the window when it is too long.
    """
    fps = cfg.sample_rate / VAD_FRAME
    order = list(rng.permutation(k))
    order += [int(s) for s in rng.choice(k, size=k // 3, replace=False)] if k >= 3 else []
    dur = rng.uniform(*cfg.turn_s, size=len(order)) * fps
    gap = rng.uniform(*cfg.turn_gap_s, size=len(order)) * fps
    start = np.zeros(len(order))
    for t in range(1, len(order)):
        start[t] = max(0.0, start[t - 1] + dur[t - 1] + gap[t])
    span = start[-1] + dur[-1]
    scale = min(1.0, frames / span)
    offset = rng.uniform(0, max(0.0, frames - span * scale))
    env = np.zeros((k, frames), dtype=bool)
    for spk, s, d in zip(order, start * scale + offset, dur * scale):
        env[spk, int(s) : int(np.ceil(s + d))] = True
    return env


def _ensure_speech(env: np.ndarray, voiced: np.ndarray, min_frames: int) -> np.ndarray:
    """Grow a speaker's turns (both ways, a frame at a time) until they hold ``min_frames`` voiced frames.

    Guarantees the label: every counted speaker really talks for ``min_speech_s`` within the window (falls
    back to the whole window, whose speech is always long enough for the speakers a bank holds).
    """
    env = env.copy()
    while int((env & voiced).sum()) < min_frames and not env.all():
        env[1:] |= env[:-1].copy()
        env[:-1] |= env[1:].copy()
        if not env.any():
            env[:] = True
    return env


def _backchannel(voiced: np.ndarray, min_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A short utterance of an extra speaker: a stretch holding fewer than ``min_frames`` voiced frames."""
    frames = voiced.size
    length = int(rng.integers(max(2, min_frames // 4), max(3, min_frames // 2 + 1)))
    start = int(rng.integers(0, frames - length + 1))
    env = np.zeros(frames, dtype=bool)
    env[start : start + length] = True
    return env


def _frame_envelope(env: np.ndarray, n: int, ramp: int = 160) -> np.ndarray:
    """Sample-level gain ``[n]`` from a frame envelope, with ``ramp``-sample (10 ms) linear fades."""
    e = np.zeros(n, dtype=np.float32)
    m = env.size * VAD_FRAME
    e[:m] = np.repeat(env.astype(np.float32), VAD_FRAME)
    up = np.linspace(0.0, 1.0, ramp, dtype=np.float32)
    for t in np.flatnonzero(np.diff(env.astype(np.int8))) + 1:  # frame where the envelope switches
        c = int(t) * VAD_FRAME
        lo, hi = max(0, c - ramp // 2), min(n, c + ramp // 2)
        e[lo:hi] = (up if env[t] else up[::-1])[lo - (c - ramp // 2) : ramp - ((c + ramp // 2) - hi)]
    return e


class _Renderer(Dataset):
    """Items of a :class:`MixtureDataset` as int16 PCM (for :meth:`MixtureDataset.precompute`)."""

    def __init__(self, ds: MixtureDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        pcm = np.round(self.ds.generate(i).audio * 32768.0).clip(-32768, 32767).astype(np.int16)
        return torch.from_numpy(pcm)


class FileCountDataset(Dataset):
    """Labeled clips read from disk (LibriCount, or a materialised :class:`MixtureDataset`).

    Clips are cut or zero-padded to ``num_samples``. Unreadable files were already reported and skipped by
    :class:`LibriCountSource`; a file that breaks after indexing is reported once and replaced by the next
    readable item, so an epoch never crashes (see ``self.bad``).
    """

    def __init__(self, source: LibriCountSource, num_samples: int = 5 * audio.SAMPLE_RATE) -> None:
        self.items = source.utterances
        self.num_samples = num_samples
        self.bad: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> np.ndarray:
        return np.array([u.count for u in self.items], dtype=np.int64)

    def load(self, index: int) -> np.ndarray:
        x = audio.load(self.items[index].path)
        if x.size >= self.num_samples:
            return x[: self.num_samples]
        return np.pad(x, (0, self.num_samples - x.size))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        for step in range(len(self.items)):
            i = (index + step) % len(self.items)
            try:
                x = self.load(i)
            except audio.AudioError as e:
                if e.path not in self.bad:
                    self.bad[e.path] = e.reason
                continue
            return torch.from_numpy(x), torch.tensor(self.items[i].count, dtype=torch.int64)
        raise RuntimeError(f"no readable file left in the dataset ({len(self.bad)} bad)")


def materialize(dataset: MixtureDataset, out_dir: str | Path, indices: Sequence[int] | None = None) -> Path:
    """Write mixtures LibriCount-style: ``{k}_{split}{index:06d}.flac`` + JSON sidecar + ``manifest.csv``.

    Files are 16-bit FLAC (lossless for :class:`MixtureDataset` output) written atomically; the manifest
    lists path, count, split, index and speakers. Returns the manifest path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(len(dataset)) if indices is None else indices
    rows = []
    sr = dataset.config.sample_rate
    for i in indices:
        m = dataset.generate(int(i))
        stem = f"{m.count}_{dataset.split}{int(i):06d}"
        pcm = np.clip(np.round(m.audio * 32768.0), -32768, 32767).astype(np.int16)
        with atomic_path(out / f"{stem}.flac") as tmp:
            sf.write(str(tmp), pcm, sr, format="FLAC", subtype="PCM_16")
        write_json(out / f"{stem}.json", m.meta)
        rows.append(
            {
                "path": f"{stem}.flac",
                "count": m.count,
                "split": dataset.split,
                "index": int(i),
                "speakers": " ".join(m.meta["speakers"]),
            }  # fmt: skip
        )
    manifest = out / "manifest.csv"
    with atomic_open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "count", "split", "index", "speakers"])
        w.writeheader()
        w.writerows(rows)
    (out / "mixture_config.json").write_text(json.dumps(asdict(dataset.config), indent=1))
    return manifest


def babble_track(
    bank: SpeakerBank, speakers: Sequence[str], seconds: float = 40.0, talkers: int = 6, seed: int = 0
) -> np.ndarray:
    """Babble noise: ``talkers`` overlapping streams of held-out speakers, unit RMS, float32.

    Each stream concatenates random segments of randomly chosen held-out speakers, so the babble has no
    stable talker identity (a crowd in the background, not countable foreground speakers).
    """
    if not speakers:
        raise ValueError("babble needs at least one held-out speaker")
    rng = np.random.default_rng([seed, 0xBAB])
    n = int(seconds * bank.sample_rate)
    seg = bank.sample_rate * 2
    out = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        pos = int(rng.integers(0, seg))
        while pos < n:
            src = bank.audio(speakers[int(rng.integers(len(speakers)))])
            m = min(seg, src.size, n - pos)
            start = int(rng.integers(0, src.size - m + 1))
            out[pos : pos + m] += src[start : start + m].astype(np.float32) / 32767.0
            pos += m
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)
