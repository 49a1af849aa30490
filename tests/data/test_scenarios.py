import numpy as np
import pytest
from scipy import signal

from ersam_ssl.data import ScenarioConfig, ScenarioRenderer, get_scenario
from ersam_ssl.data.scenarios import coloured_noise, synthetic_rir


def _speechlike(n=16000, seed=0):
    rng = np.random.default_rng(seed)
    x = coloured_noise(n, "pink", rng) * 0.05
    return x.astype(np.float32)


def test_clean_is_identity():
    r = ScenarioRenderer(get_scenario("clean"), clip_samples=16000)
    x = _speechlike()
    y, applied = r(x, np.random.default_rng(0))
    assert y is x and applied == {"scenario": "clean"}


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_noise_is_added_at_the_requested_snr(colour):
    cfg = ScenarioConfig(name="n", noise_prob=1.0, snr_db=(10.0, 10.0), noise_types=(colour,))
    r = ScenarioRenderer(cfg, clip_samples=16000, target_rms=0.05)
    x = np.zeros(16000, dtype=np.float32)
    y, applied = r(x, np.random.default_rng(1))
    noise_rms = np.sqrt(np.mean(y**2))
    assert applied["noise"] == colour
    assert 20 * np.log10(0.05 / noise_rms) == pytest.approx(10.0, abs=0.5)


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    f, p_white = signal.welch(coloured_noise(2**16, "white", rng), nperseg=1024)
    _, p_pink = signal.welch(coloured_noise(2**16, "pink", rng), nperseg=1024)
    lo, hi = (f > 0.01) & (f < 0.02), (f > 0.2) & (f < 0.4)
    assert p_white[lo].mean() / p_white[hi].mean() == pytest.approx(1.0, rel=0.3)
    assert p_pink[lo].mean() / p_pink[hi].mean() > 8


def test_babble_needs_babble_audio():
    cfg = ScenarioConfig(name="b", noise_prob=1.0, noise_types=("babble",))
    with pytest.raises(ValueError, match="babble"):
        ScenarioRenderer(cfg, clip_samples=16000)
    r = ScenarioRenderer(cfg, clip_samples=16000, babble=_speechlike(48000, 3))
    y, applied = r(np.zeros(16000, np.float32), np.random.default_rng(0))
    assert applied["noise"] == "babble" and np.abs(y).max() > 0


def test_rir_decays_at_rt60():
    h = synthetic_rir(0.5, np.random.default_rng(0))
    e = h[200:] ** 2
    t = np.arange(e.size) / 16000
    early, late = e[(t > 0.05) & (t < 0.1)].mean(), e[(t > 0.3) & (t < 0.35)].mean()
    # 60 dB per 0.5 s -> 30 dB over 0.25 s between the window centres
    assert 10 * np.log10(early / late) == pytest.approx(30.0, abs=6.0)


def test_reverb_smears_an_impulse():
    cfg = ScenarioConfig(name="r", reverb_prob=1.0, rt60_s=(0.6, 0.6))
    r = ScenarioRenderer(cfg, clip_samples=16000)
    x = np.zeros(16000, np.float32)
    x[1000] = 1.0
    y, applied = r(x, np.random.default_rng(0))
    assert "rir" in applied and np.abs(y[3000:]).max() > 1e-3 and np.abs(y[:1000]).max() < 1e-6


def test_phone_band_limits():
    cfg = ScenarioConfig(name="p", mic_prob=1.0, clip_drive=(1.0, 1.0))
    r = ScenarioRenderer(cfg, clip_samples=16000)
    t = np.arange(16000) / 16000
    for freq, passes in ((60.0, False), (1000.0, True), (7000.0, False)):
        x = (0.02 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        y, _ = r(x, np.random.default_rng(0))
        ratio = np.sqrt(np.mean(y[4000:] ** 2) / np.mean(x[4000:] ** 2))
        assert (ratio > 0.7) if passes else (ratio < 0.1), (freq, ratio)


def test_clinical_rendering_is_deterministic_and_changes_the_clip():
    r = ScenarioRenderer(get_scenario("clinical"), seed=0, clip_samples=16000, babble=_speechlike(48000, 1))
    x = _speechlike()
    a, ma = r(x, np.random.default_rng(5))
    b, mb = r(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert ma == mb and ma["scenario"] == "clinical" and not np.allclose(a, x)


def test_invalid_scenarios_are_rejected():
    with pytest.raises(ValueError, match="probability"):
        ScenarioConfig(noise_prob=1.5).validate()
    with pytest.raises(ValueError, match="noise types"):
        ScenarioConfig(noise_types=("pink", "purple")).validate()
    with pytest.raises(KeyError, match="unknown scenario"):
        get_scenario("underwater")
