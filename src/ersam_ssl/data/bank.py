"""Speaker bank: each speaker's speech decoded once, trimmed, level-normalised and concatenated.

Mixtures are cut from these per-speaker streams (LibriCount protocol: a random segment of a speaker's
concatenated utterances). Audio is held as int16 (half the memory of float32; the mixtures are quantised to
16 bit anyway) and shared copy-on-write with forked DataLoader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ersam_ssl import audio
from ersam_ssl.data.sources import ScanReport, Source, Utterance

log = logging.getLogger(__name__)

#: Active-speech RMS every utterance is normalised to (-20 dBFS).
REFERENCE_RMS = 0.1
#: Frame length (samples at 16 kHz) of the energy voice-activity detector: 20 ms.
VAD_FRAME = 320
#: A frame is active when its RMS exceeds the reference by this many dB (i.e. -35 dB below speech level).
VAD_THRESHOLD_DB = -35.0


def frame_rms(x: np.ndarray, frame: int = VAD_FRAME) -> np.ndarray:
    """RMS of consecutive non-overlapping frames (the tail shorter than a frame is dropped)."""
    n = (x.shape[-1] // frame) * frame
    f = x[..., :n].reshape(*x.shape[:-1], -1, frame).astype(np.float32)
    return np.sqrt(np.einsum("...ij,...ij->...i", f, f) / frame)


def trim_and_normalise(x: np.ndarray, threshold_db: float = VAD_THRESHOLD_DB) -> np.ndarray | None:
    """Drop leading/trailing silence and scale active speech to :data:`REFERENCE_RMS`.

    Returns None when the utterance has no frame above the activity threshold (silent/corrupt file).
    """
    rms = frame_rms(x)
    if rms.size == 0:
        return None
    thr = rms.max() * 10 ** (threshold_db / 20)
    active = np.flatnonzero(rms > max(thr, 1e-5))
    if active.size == 0:
        return None
    y = x[active[0] * VAD_FRAME : (active[-1] + 1) * VAD_FRAME]
    level = float(np.sqrt(np.mean(rms[active] ** 2)))
    y = y * (REFERENCE_RMS / level)
    peak = float(np.abs(y).max())
    if peak > 0.999:  # keep the int16 storage free of clipping
        y = y * (0.999 / peak)
    return y


@dataclass
class BankStats:
    speakers: int
    seconds: float


class SpeakerBank:
    """Per-speaker concatenated speech at 16 kHz (int16), built from a :class:`Source`.

    Args:
        utterances: utterances to decode (typically ``source.utterances``).
        max_seconds_per_speaker: stop adding a speaker's utterances after this much speech (bounds
            memory for large corpora such as LibriSpeech train-clean-100).
        min_seconds_per_speaker: speakers with less usable speech are dropped (and reported); with 0, a
            speaker is still dropped when none of its files decodes.
        allow_empty: return an empty bank instead of raising ``ValueError`` when no speaker is left (for
            a corpus check that only lists what is wrong).

    Files that fail to decode are skipped and listed in ``report.bad`` with their reason.
    """

    def __init__(
        self,
        utterances: Iterable[Utterance],
        max_seconds_per_speaker: float = 60.0,
        min_seconds_per_speaker: float = 1.0,
        sample_rate: int = audio.SAMPLE_RATE,
        allow_empty: bool = False,
    ) -> None:
        self.sample_rate = sample_rate
        self.report = ScanReport()
        #: Files never decoded (their speaker already had ``max_seconds_per_speaker``): only their header
        #: was checked, so they may still be bad.
        self.not_decoded: list[str] = []
        by_spk: dict[str, list[Utterance]] = {}
        for u in utterances:
            by_spk.setdefault(u.speaker, []).append(u)
        self._audio: dict[str, np.ndarray] = {}
        self.sex: dict[str, str] = {}
        limit = int(min(max_seconds_per_speaker, 1e7) * sample_rate)
        for spk in sorted(by_spk):
            parts: list[np.ndarray] = []
            total = 0
            for u in sorted(by_spk[spk], key=lambda u: u.path):
                if total >= limit:
                    self.not_decoded.append(u.path)
                    continue
                self.report.n_files += 1
                try:
                    x = audio.load(u.path, sample_rate)
                except audio.AudioError as e:
                    self.report.add_bad(u.path, e.reason)
                    log.warning("skipping %s", e)
                    continue
                y = trim_and_normalise(x)
                if y is None:
                    self.report.add_bad(u.path, "no speech above the activity threshold (silent)")
                    continue
                parts.append(y[: limit - total])
                total += parts[-1].size
            if not parts or total < min_seconds_per_speaker * sample_rate:
                self.report.add_bad(
                    f"speaker {spk}", f"only {total / sample_rate:.2f} s of usable speech; speaker dropped"
                )
                continue
            cat = np.concatenate(parts)
            self._audio[spk] = np.round(cat * 32767.0).astype(np.int16)
            self.sex[spk] = by_spk[spk][0].sex
        if not self._audio and not allow_empty:
            raise ValueError(f"no speaker has usable speech ({len(self.report.bad)} bad files)")

    @classmethod
    def from_source(cls, source: Source, **kwargs) -> SpeakerBank:
        bank = cls(source.utterances, **kwargs)
        bank.report.bad = list(source.report.bad) + bank.report.bad
        return bank

    @property
    def speakers(self) -> list[str]:
        return sorted(self._audio)

    def audio(self, speaker: str) -> np.ndarray:
        """The speaker's concatenated speech, int16 (scale by 1/32767 for float)."""
        return self._audio[speaker]

    def seconds(self, speaker: str) -> float:
        return self._audio[speaker].size / self.sample_rate

    def stats(self, speakers: Sequence[str] | None = None) -> BankStats:
        spk = self.speakers if speakers is None else list(speakers)
        return BankStats(len(spk), sum(self.seconds(s) for s in spk))
