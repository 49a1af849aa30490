"""The embedded default corpus: multi-speaker speech synthesized offline with libespeak-ng.

No download is possible (or needed): ``espeakng-loader`` ships libespeak-ng and its voice data inside a
wheel, and this module drives it through ctypes. A *speaker* is an espeak-ng voice: language × variant ×
pitch × rate × pitch range. Sentences come from a small built-in text generator. The corpus is written
once, in LibriSpeech's layout, under a user cache directory and then read by
:class:`~ersam_ssl.data.sources.LibriSpeechSource`, so every later stage treats it like real speech.

espeak-ng: https://github.com/espeak-ng/espeak-ng (formant synthesis, Klatt variants).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import random
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal

from ersam_ssl import audio
from ersam_ssl.data.sources import SOURCES, LibriSpeechSource
from ersam_ssl.fileio import atomic_path, cache_dir, write_text

#: Bump when synthesis or the text generator change, so stale caches are not reused.
CORPUS_VERSION = 1

# Languages written in Latin script whose voices read the generator's English-like text plausibly
# (accented or pseudo-English speech still counts as one distinct talker).
LANGUAGES = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "de", "nl", "fr", "es",
    "it", "pt", "sv", "da", "pl", "cs", "fi", "ro", "hu", "id",
)  # fmt: skip
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "klatt2",
    "klatt3", "michel", "anika", "linda", "edward",
)  # fmt: skip
_FEMALE = {"f1", "f2", "f3", "f4", "f5", "anika", "linda"}
_MALE = {"m1", "m2", "m3", "m4", "m5", "m6", "m7", "croak", "michel", "edward"}


@dataclass(frozen=True)
class Voice:
    """One synthetic talker."""

    speaker_id: str
    language: str
    variant: str
    pitch: int  # espeak base pitch 0..99
    rate: int  # words per minute
    pitch_range: int  # 0..99 (0 = monotone)

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"

    @property
    def sex(self) -> str:
        return "F" if self.variant in _FEMALE else ("M" if self.variant in _MALE else "")


def voice_catalog(n: int, seed: int = 0) -> list[Voice]:
    """``n`` distinct voices, deterministic in ``seed``; voice ``i`` does not depend on ``n``.

    Language × variant pairs are drawn without replacement (400 pairs) before any is reused, and each voice
    gets its own pitch, rate and range, so neighbouring voices differ in timbre, pitch and tempo.
    """
    if n > len(LANGUAGES) * len(VARIANTS) * 4:
        raise ValueError(f"at most {len(LANGUAGES) * len(VARIANTS) * 4} synthetic voices, asked for {n}")
    pairs = [(lang, var) for lang in LANGUAGES for var in VARIANTS]
    rng = random.Random(f"ersam-voices-{seed}")
    rng.shuffle(pairs)
    voices: list[Voice] = []
    seen: set[tuple] = set()
    i = 0
    while len(voices) < n:
        lang, var = pairs[i % len(pairs)]
        vr = random.Random(f"ersam-voice-{seed}-{i}")
        key = (lang, var, vr.randrange(15, 85, 5), vr.randrange(120, 200, 10), vr.randrange(20, 90, 10))
        i += 1
        if key in seen:
            continue
        seen.add(key)
        voices.append(Voice(str(10000 + len(voices)), *key))
    return voices


# ----------------------------------------------------------------------------------------------- text
_DET = [
    "the",
    "a",
    "this",
    "that",
    "every",
    "some",
    "one",
    "my",
    "your",
    "our",
    "their",
    "no",
    "another",
    "each",
]
_ADJ = [
    "quiet",
    "bright",
    "old",
    "young",
    "small",
    "large",
    "green",
    "careful",
    "busy",
    "early",
    "late",
    "happy",
    "tired",
    "warm",
    "cold",
    "heavy",
    "simple",
    "strange",
    "gentle",
    "clever",
    "honest",
    "narrow",
    "distant",
    "local",
    "famous",
    "sudden",
]
_NOUN = [
    "doctor",
    "river",
    "window",
    "garden",
    "teacher",
    "market",
    "letter",
    "kitchen",
    "station",
    "problem",
    "morning",
    "evening",
    "story",
    "village",
    "engine",
    "student",
    "picture",
    "neighbour",
    "question",
    "friend",
    "bottle",
    "meeting",
    "journey",
    "street",
    "family",
    "answer",
    "season",
    "hospital",
    "library",
    "animal",
]
_VERB_BASE = [
    "find",
    "open",
    "carry",
    "watch",
    "paint",
    "follow",
    "remember",
    "visit",
    "explain",
    "notice",
    "describe",
    "finish",
    "repair",
    "discover",
    "answer",
    "borrow",
    "collect",
    "count",
    "deliver",
    "order",
]
_VERB = [
    "found",
    "opened",
    "carried",
    "watched",
    "painted",
    "followed",
    "remembered",
    "visited",
    "explained",
    "noticed",
    "described",
    "finished",
    "repaired",
    "discovered",
    "answered",
    "borrowed",
    "collected",
    "counted",
    "delivered",
    "ordered",
]
_ADV = [
    "slowly",
    "quickly",
    "quietly",
    "suddenly",
    "finally",
    "carefully",
    "again",
    "yesterday",
    "today",
    "often",
    "rarely",
]
_PREP = ["near", "behind", "under", "across", "beside", "beyond", "inside", "around", "after", "before"]
_QW = ["why", "where", "when", "how"]


def sentence(rng: random.Random) -> str:
    """A random, grammatical English-like sentence (6–30 words)."""

    def np_(r: random.Random) -> str:
        words = [r.choice(_DET)]
        if r.random() < 0.6:
            words.append(r.choice(_ADJ))
        words.append(r.choice(_NOUN))
        return " ".join(words)

    kind = rng.random()
    if kind < 0.55:
        s = f"{np_(rng)} {rng.choice(_VERB)} {np_(rng)} {rng.choice(_PREP)} {np_(rng)}"
        if rng.random() < 0.5:
            s += f" {rng.choice(_ADV)}"
        if rng.random() < 0.35:
            s += f", and {np_(rng)} {rng.choice(_VERB)} {np_(rng)}"
        s += "."
    elif kind < 0.8:
        s = f"{rng.choice(_QW)} did {np_(rng)} {rng.choice(_VERB_BASE)} {np_(rng)}?"
    else:
        s = f"{rng.choice(_ADV)}, {np_(rng)} {rng.choice(_VERB)} {np_(rng)} {rng.choice(_PREP)} {np_(rng)}!"
    return s[0].upper() + s[1:]


# ------------------------------------------------------------------------------------------- espeak
def _text_seed(text: str, voice: Voice) -> int:
    import zlib

    return zlib.crc32(f"{voice}|{text}".encode()) & 0x7FFFFFFF


class _Espeak:
    """Process-wide libespeak-ng handle (the library is not re-entrant: calls are serialised)."""

    _lock = threading.Lock()
    _instance: _Espeak | None = None

    def __init__(self, library: str | None = None) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(library or espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        # AUDIO_OUTPUT_SYNCHRONOUS = 2: samples are delivered to the callback, synth returns when done.
        self.sample_rate = int(self.lib.espeak_Initialize(2, 0, data, 0))
        if self.sample_rate <= 0:
            raise RuntimeError("libespeak-ng failed to initialise")
        self._chunks: list[np.ndarray] = []
        cb_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def _collect(wav, n, _events):  # noqa: ANN001 - ctypes callback
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = cb_type(_collect)  # keep a reference: ctypes callbacks must outlive their use
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.libc = ctypes.CDLL(None)

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def fresh(cls, workdir: Path) -> _Espeak:
        """A private copy of the library (fresh internal state) installed as this process's instance.

        A forked child would otherwise inherit the parent's library state; loading a copy under another
        file name gives new static storage (the dynamic loader keys libraries by path).
        """
        import shutil

        import espeakng_loader

        copy = workdir / f".libespeak-ng-{os.getpid()}.so"
        shutil.copy(espeakng_loader.get_library_path(), copy)
        try:
            inst = cls(str(copy))
        finally:
            copy.unlink(missing_ok=True)  # the mapping stays valid after unlinking
        with cls._lock:
            cls._instance = inst
        return inst

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        """Synthesize ``text`` with ``voice``; float32 at the library rate (22.05 kHz)."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice.name!r}")
            self.lib.espeak_SetParameter(1, voice.rate, 0)  # espeakRATE
            self.lib.espeak_SetParameter(3, voice.pitch, 0)  # espeakPITCH
            self.lib.espeak_SetParameter(4, voice.pitch_range, 0)  # espeakRANGE
            self._chunks = []
            # espeak-ng draws from PRNGs (its own and libc's) for voicing noise; fixed seeds per call are
            # necessary (not sufficient, see _build_voice) for reproducible audio.
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(_text_seed(text, voice)))
            self.libc.srand(_text_seed(text, voice))
            raw = text.encode("utf-8")
            # position 0, POS_CHARACTER=1, end 0, espeakCHARS_UTF8=1
            self.lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 1, None, None)
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


def synthesize(text: str, voice: Voice, sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
    """Speech for ``text`` in ``voice`` at ``sample_rate``, peak-normalised to 0.9, silence-trimmed."""
    eng = _Espeak.get()
    x = eng.synth(text, voice)
    if x.size == 0:
        return x
    # scipy (not torch) so forked corpus-building workers never touch an OpenMP pool inherited from the parent
    g = math.gcd(eng.sample_rate, sample_rate)
    x = signal.resample_poly(x, sample_rate // g, eng.sample_rate // g).astype(np.float32)
    active = np.flatnonzero(np.abs(x) > 1e-3)
    if active.size:
        pad = int(0.05 * sample_rate)
        x = x[max(0, active[0] - pad) : active[-1] + pad]
    peak = float(np.abs(x).max())
    return (x * (0.9 / peak)).astype(np.float32) if peak > 0 else x


# ------------------------------------------------------------------------------------------- corpus
def _atomic_write_flac(path: Path, x: np.ndarray, sample_rate: int) -> None:
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, sample_rate, format="FLAC", subtype="PCM_16")


def _build_voice(root: Path, voice: Voice, seconds_per_speaker: float, seed: int, sample_rate: int) -> None:
    """Synthesize one voice's utterances, replaying its whole sentence sequence from utterance 0.

    libespeak-ng carries internal synthesis state from one call to the next (even across re-initialisation),
    so an utterance is reproducible only as part of the same call sequence in a fresh library instance.
    This function therefore runs in a fresh process per voice (see :func:`build_corpus`) and re-synthesizes
    the already-written utterances (≈5 ms each) instead of skipping them.
    """
    chapter = str(seed)
    spk_dir = root / voice.speaker_id / chapter
    spk_dir.mkdir(parents=True, exist_ok=True)
    _Espeak.fresh(spk_dir)
    state = {"seconds": 0.0, "utterances": 0}
    k = 0
    while state["seconds"] < seconds_per_speaker:
        rng = random.Random(f"ersam-text-{seed}-{voice.speaker_id}-{k}")
        x = synthesize(sentence(rng), voice, sample_rate)
        if x.size >= int(0.3 * sample_rate):
            path = spk_dir / f"{voice.speaker_id}-{chapter}-{k:04d}.flac"
            if not path.is_file():
                _atomic_write_flac(path, x, sample_rate)
            state["seconds"] += x.size / sample_rate
        k += 1
        state["utterances"] = k
    write_text(spk_dir / "done.json", json.dumps(state))


def _voice_done(root: Path, voice: Voice, seconds_per_speaker: float, seed: int) -> bool:
    state_path = root / voice.speaker_id / str(seed) / "done.json"
    return state_path.is_file() and json.loads(state_path.read_text())["seconds"] >= seconds_per_speaker


def build_corpus(
    root: Path,
    voices: list[Voice],
    seconds_per_speaker: float,
    seed: int,
    sample_rate: int = audio.SAMPLE_RATE,
    processes: int | None = None,
) -> None:
    """Write (or extend) a LibriSpeech-layout corpus: ``root/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac``.

    Every voice is synthesized in its own fresh worker process (bit-identical audio whatever the build
    order or cache history; both cores used). Idempotent and resumable: a voice's ``done.json`` records
    how much speech it holds; files are written atomically, so a killed build leaves no partial file.
    """
    import multiprocessing as mp

    root.mkdir(parents=True, exist_ok=True)
    todo = [v for v in voices if not _voice_done(root, v, seconds_per_speaker, seed)]
    if todo:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        n = max(1, min(processes or os.cpu_count() or 1, len(todo)))
        with ctx.Pool(n, maxtasksperchild=1) as pool:
            pool.starmap(
                _build_voice, [(root, v, seconds_per_speaker, seed, sample_rate) for v in todo], chunksize=1
            )
    lines = ["; ID | SEX | SUBSET | MINUTES | NAME (espeak-ng voice)"]
    for v in voices:
        lines.append(f"{v.speaker_id} | {v.sex or '-'} | synth | {seconds_per_speaker / 60:.2f} | {v.name}")
    write_text(root / "SPEAKERS.TXT", "\n".join(lines) + "\n")
    write_text(root / "voices.json", json.dumps([asdict(v) for v in voices], indent=1))


@SOURCES.register("synth")
class SynthSpeechSource(LibriSpeechSource):
    """Offline multi-speaker speech from espeak-ng voices, cached on disk (the embedded default).

    Args:
        n_speakers: number of distinct voices (≥ 100 by default so train/val/test/babble splits are
            speaker-disjoint with room to spare).
        seconds_per_speaker: speech per voice (sentences are added until this is reached).
        seed: selects voices and sentences; the same seed gives bit-identical audio.
        root: where to cache; default ``cache_dir()/synth-v{CORPUS_VERSION}/seed{seed}``.
    """

    name = "synth"
    needs_root = False

    def __init__(
        self,
        n_speakers: int = 120,
        seconds_per_speaker: float = 30.0,
        seed: int = 0,
        root: str | Path | None = None,
    ) -> None:
        base = Path(root) if root is not None else cache_dir() / f"synth-v{CORPUS_VERSION}" / f"seed{seed}"
        self.voices = voice_catalog(n_speakers, seed)
        build_corpus(base, self.voices, seconds_per_speaker, seed)
        self.root = base
        super().__init__(base)
        # A cache built earlier for more voices or more seconds holds a superset: keep exactly the first
        # ``seconds_per_speaker`` of each requested voice so results do not depend on the cache's history.
        wanted = {v.speaker_id for v in self.voices}
        kept: list = []
        have: dict[str, float] = {}
        for u in sorted(self.utterances, key=lambda u: u.path):
            if u.speaker in wanted and have.get(u.speaker, 0.0) < seconds_per_speaker:
                kept.append(u)
                have[u.speaker] = have.get(u.speaker, 0.0) + u.duration
        self.utterances = kept

    @classmethod
    def config_options(cls, data: Any) -> dict[str, Any]:
        return {"n_speakers": data.synth_speakers, "seconds_per_speaker": data.synth_seconds,
                "seed": data.synth_seed}  # fmt: skip
