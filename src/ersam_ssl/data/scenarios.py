"""Clinical-style acoustic scenarios: background noise, reverberation, phone microphone, level changes.

The few labeled clips of a clinical study are recorded on a phone in real rooms, not in LibriSpeech's
read-speech conditions. A scenario turns a clean mixture into such a shifted-domain recording:

* additive noise at an SNR drawn from a range: white/pink/brown (coloured) noise, or babble built from
  held-out speakers (never used for train/val/test mixtures);
* reverberation with synthetic room impulse responses (exponentially decaying noise tails with a direct
  path; Polack's statistical model as used e.g. in Lehmann & Johansson, JASA 2008 for diffuse tails);
* a device-microphone band limit (Butterworth band-pass; one of several devices: narrowband phone,
  phone, laptop, wideband) with mild soft clipping (cheap-mic non-linearity);
* a random colouration (equaliser): a low shelf, a peak and a high shelf with random corner frequencies
  and gains — the spectral tilt of a room, a distance or a microphone that no fixed band-pass covers;
* level changes (distance to the phone, automatic gain control); clips that would exceed full scale are
  scaled down by the mixture generator, never clipped.

``clinical`` is the shifted target domain of the few labels (phone microphone on every clip); the test
domains ``clean``, ``noisy``, ``reverberant``, ``loud`` and ``quiet`` each shift one factor; ``randomized``
draws every factor per clip (domain randomization: Tobin et al., IROS 2017) and is what a counter that
must hold on any recording trains on.

All randomness comes from the per-item generator, so a mixture's rendering depends only on (seed, index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from ersam_ssl.audio import SAMPLE_RATE
from ersam_ssl.registry import Registry

SCENARIOS: Registry[ScenarioConfig] = Registry("scenario")


@dataclass(frozen=True)
class ScenarioConfig:
    """Parameters of one acoustic scenario (probabilities are per clip)."""

    name: str = "clean"
    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (5.0, 25.0)
    noise_types: tuple[str, ...] = ("white", "pink", "brown", "babble")
    reverb_prob: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.8)
    mic_prob: float = 0.0
    mic_bands_hz: tuple[tuple[float, float], ...] = ((200.0, 3800.0),)
    clip_drive: tuple[float, float] = (1.0, 3.0)
    mic_jitter: float = 0.0
    eq_prob: float = 0.0
    eq_db: float = 10.0
    level_db: tuple[float, float] = (0.0, 0.0)

    def validate(self) -> None:
        for name in ("noise_prob", "reverb_prob", "mic_prob", "eq_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"scenario {self.name}: {name}={p} is not a probability")
        bad = set(self.noise_types) - {"white", "pink", "brown", "babble"}
        if bad:
            raise ValueError(f"scenario {self.name}: unknown noise types {sorted(bad)}")
        if not self.mic_bands_hz:
            raise ValueError(f"scenario {self.name}: mic_bands_hz needs at least one band")
        for lo, hi in self.mic_bands_hz:
            if not 0 < lo < hi < SAMPLE_RATE / 2:
                raise ValueError(f"scenario {self.name}: mic band ({lo}, {hi}) outside (0, 8000) Hz")
        if not 0.0 <= self.mic_jitter < 0.5:
            raise ValueError(f"scenario {self.name}: mic_jitter={self.mic_jitter} must be in [0, 0.5)")
        if not 0.0 <= self.eq_db <= 24.0:
            raise ValueError(f"scenario {self.name}: eq_db={self.eq_db} must be in [0, 24]")

    @property
    def is_clean(self) -> bool:
        return (
            self.noise_prob == 0
            and self.reverb_prob == 0
            and self.mic_prob == 0
            and self.eq_prob == 0
            and self.level_db == (0.0, 0.0)
        )


SCENARIOS.register("clean")(ScenarioConfig())
SCENARIOS.register("clinical")(
    ScenarioConfig(
        name="clinical",
        noise_prob=0.8,
        snr_db=(5.0, 25.0),
        reverb_prob=0.7,
        rt60_s=(0.2, 0.7),
        mic_prob=1.0,
        level_db=(-10.0, 6.0),
    )
)
SCENARIOS.register("noisy")(ScenarioConfig(name="noisy", noise_prob=1.0, snr_db=(0.0, 15.0)))
SCENARIOS.register("reverberant")(ScenarioConfig(name="reverberant", reverb_prob=1.0, rt60_s=(0.4, 1.0)))
# Recording level only: speech at -26 dBFS RMS (the mixture level) moved to about -12 ... -6 dBFS
# (limited below full scale) or -56 ... -46 dBFS.
SCENARIOS.register("loud")(ScenarioConfig(name="loud", level_db=(14.0, 20.0)))
SCENARIOS.register("quiet")(ScenarioConfig(name="quiet", level_db=(-30.0, -20.0)))
#: Devices of the randomized domain: narrowband phone call, phone microphone, laptop, wideband recorder.
DEVICE_BANDS_HZ = ((300.0, 3400.0), (200.0, 3800.0), (100.0, 6000.0), (50.0, 7600.0))
SCENARIOS.register("randomized")(
    ScenarioConfig(
        name="randomized",
        noise_prob=0.5,
        snr_db=(0.0, 30.0),
        reverb_prob=0.35,
        rt60_s=(0.2, 1.0),
        mic_prob=0.5,
        mic_bands_hz=DEVICE_BANDS_HZ,
        mic_jitter=0.25,
        eq_prob=0.5,
        eq_db=10.0,
        level_db=(-30.0, 20.0),
    )
)


def get_scenario(name_or_cfg: str | ScenarioConfig) -> ScenarioConfig:
    cfg = SCENARIOS.get(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    cfg.validate()
    return cfg


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f^alpha power spectrum (white 0, pink 1, brown 2)."""
    alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    spec *= f ** (-alpha / 2)
    x = np.fft.irfft(spec, n)
    x -= x.mean()
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _biquad(kind: str, f0: float, gain_db: float, q: float, fs: float) -> np.ndarray:
    """One RBJ-cookbook biquad (``"low_shelf"``, ``"peak"``, ``"high_shelf"``) as an sos row ``[6]``."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / fs
    cw, alpha = np.cos(w), np.sin(w) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    else:
        sq = 2 * np.sqrt(a) * alpha
        sign = 1 if kind == "low_shelf" else -1
        b = [a * ((a + 1) - sign * (a - 1) * cw + sq), sign * 2 * a * ((a - 1) - sign * (a + 1) * cw),
             a * ((a + 1) - sign * (a - 1) * cw - sq)]  # fmt: skip
        den = [(a + 1) + sign * (a - 1) * cw + sq, -sign * 2 * ((a - 1) + sign * (a + 1) * cw),
               (a + 1) + sign * (a - 1) * cw - sq]  # fmt: skip
    return np.concatenate([np.asarray(b) / den[0], np.asarray(den) / den[0]])


def random_colour(
    rng: np.random.Generator, max_db: float, fs: float = SAMPLE_RATE
) -> tuple[np.ndarray, dict]:
    """A random equaliser: low shelf (80-600 Hz), peak (300-4000 Hz, Q 0.5-2), high shelf (1.5-6 kHz),
    each with a gain uniform in ``±max_db``; returns its sos ``[3, 6]`` and the draw."""
    f_low = float(np.exp(rng.uniform(np.log(80), np.log(600))))
    f_peak = float(np.exp(rng.uniform(np.log(300), np.log(4000))))
    f_high = float(np.exp(rng.uniform(np.log(1500), np.log(6000))))
    q = float(rng.uniform(0.5, 2.0))
    g = rng.uniform(-max_db, max_db, size=3)
    sos = np.stack([
        _biquad("low_shelf", f_low, g[0], 0.707, fs),
        _biquad("peak", f_peak, g[1], q, fs),
        _biquad("high_shelf", f_high, g[2], 0.707, fs),
    ])  # fmt: skip
    draw = {"eq_hz": [round(f_low), round(f_peak), round(f_high)], "eq_db": [round(float(v), 2) for v in g]}
    return sos, draw


def synthetic_rir(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A room impulse response: direct path, a few early reflections and an exponential diffuse tail.

    The tail decays by 60 dB in ``rt60`` seconds; its energy relative to the direct path grows with
    ``rt60`` (larger rooms are farther away and more diffuse). Normalised to a unit direct path.
    """
    n = int(min(rt60 * 1.2, 1.0) * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    onset = int(rng.uniform(0.002, 0.01) * sample_rate)
    tail[:onset] = 0.0
    h = tail * (rng.uniform(0.25, 0.6) * np.sqrt(rt60 / 0.3) / np.sqrt(np.sum(tail**2) + 1e-12))
    h[0] = 1.0
    for _ in range(4):
        i = int(rng.uniform(0.002, 0.03) * sample_rate)
        h[i] += rng.uniform(-0.5, 0.5)
    return h.astype(np.float32)


@dataclass
class ScenarioRenderer:
    """Renders a :class:`ScenarioConfig` onto clips; noise and RIR banks are precomputed once.

    Args:
        config: the scenario.
        seed: seeds the noise/RIR banks (per-clip choices use the caller's generator).
        babble: held-out-speaker babble (float32, any length ≥ one clip) or None.
        clip_samples: clip length; banks hold several clips' worth so offsets vary.
        target_rms: the speech level that SNRs refer to (the mixture's speech normalisation level), so a
            clip with no speaker gets the same noise level as one with speakers.
    """

    config: ScenarioConfig
    seed: int = 0
    babble: np.ndarray | None = None
    clip_samples: int = 5 * SAMPLE_RATE
    target_rms: float = 0.05
    sample_rate: int = SAMPLE_RATE
    n_rirs: int = 32
    _noise: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _rirs: list[np.ndarray] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        cfg = self.config
        cfg.validate()
        rng = np.random.default_rng([self.seed, 0x5CE])
        bank_len = self.clip_samples * 8
        if cfg.noise_prob > 0:
            for colour in cfg.noise_types:
                if colour == "babble":
                    if self.babble is None or self.babble.size < self.clip_samples:
                        continue
                    b = self.babble.astype(np.float32)
                    self._noise["babble"] = b / (np.sqrt(np.mean(b**2)) + 1e-12)
                else:
                    self._noise[colour] = coloured_noise(bank_len, colour, rng)
            if not self._noise:
                raise ValueError(f"scenario {cfg.name}: no usable noise type (babble needs babble speakers)")
        if cfg.reverb_prob > 0:
            self._rirs = [
                synthetic_rir(rng.uniform(*cfg.rt60_s), rng, self.sample_rate) for _ in range(self.n_rirs)
            ]
        self._sos = [
            signal.butter(4, [lo, hi], btype="bandpass", fs=self.sample_rate, output="sos")
            for lo, hi in cfg.mic_bands_hz
        ]

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Render the scenario on clip ``x``; returns the new clip and what was applied."""
        cfg = self.config
        applied: dict = {"scenario": cfg.name}
        if cfg.is_clean:
            return x, applied
        n = x.size
        if self._rirs and rng.random() < cfg.reverb_prob:
            k = int(rng.integers(len(self._rirs)))
            x = signal.oaconvolve(x, self._rirs[k], mode="full")[:n].astype(np.float32)
            applied["rir"] = k
        if self._noise and rng.random() < cfg.noise_prob:
            kinds = sorted(self._noise)
            kind = kinds[int(rng.integers(len(kinds)))]
            bank = self._noise[kind]
            off = int(rng.integers(0, bank.size - n + 1))
            snr = float(rng.uniform(*cfg.snr_db))
            x = x + bank[off : off + n] * (self.target_rms * 10 ** (-snr / 20))
            applied.update(noise=kind, snr_db=round(snr, 2))
        if cfg.eq_prob > 0 and rng.random() < cfg.eq_prob:
            sos, draw = random_colour(rng, cfg.eq_db, self.sample_rate)
            x = signal.sosfilt(sos, x).astype(np.float32)
            applied.update(draw)
        if rng.random() < cfg.mic_prob:
            # one band: no draw, so single-band scenarios render exactly as before several bands existed
            band = int(rng.integers(len(self._sos))) if len(self._sos) > 1 else 0
            sos, edges = self._sos[band], list(cfg.mic_bands_hz[band])
            if cfg.mic_jitter > 0:  # band edges moved by up to ±mic_jitter (a continuum of devices)
                lo, hi = (e * float(rng.uniform(1 - cfg.mic_jitter, 1 + cfg.mic_jitter)) for e in edges)
                hi = min(hi, 0.49 * self.sample_rate)
                lo = min(lo, 0.5 * hi)
                edges = [round(lo, 1), round(hi, 1)]
                sos = signal.butter(4, edges, btype="bandpass", fs=self.sample_rate, output="sos")
            x = signal.sosfilt(sos, x).astype(np.float32)
            drive = float(rng.uniform(*cfg.clip_drive))
            # tanh soft clipping around the speech level models a cheap microphone's non-linearity
            ref = 4 * self.target_rms
            x = (np.tanh(x * drive / ref) * ref / drive).astype(np.float32)
            applied["mic_band_hz"] = edges
            applied["mic_drive"] = round(drive, 3)
        lo, hi = cfg.level_db
        if hi > lo or lo != 0:
            g = float(rng.uniform(lo, hi))
            x = x * np.float32(10 ** (g / 20))
            applied["level_db"] = round(g, 2)
        return x.astype(np.float32, copy=False), applied
