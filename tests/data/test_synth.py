import numpy as np
import pytest

from ersam_ssl.data import synth
from ersam_ssl.data.synth import SynthSpeechSource, sentence, synthesize, voice_catalog


def test_catalog_has_at_least_100_distinct_deterministic_voices():
    v = voice_catalog(150, seed=0)
    keys = {(x.language, x.variant, x.pitch, x.rate, x.pitch_range) for x in v}
    assert len(keys) == 150 and len({x.speaker_id for x in v}) == 150
    assert voice_catalog(150, seed=0) == v
    assert voice_catalog(20, seed=0) == v[:20]  # voice i does not depend on n
    assert voice_catalog(20, seed=1) != v[:20]
    assert len({x.language for x in v}) >= 10 and len({x.variant for x in v}) >= 10
    assert {x.sex for x in v} >= {"M", "F"}


def test_synthesis_is_real_speech():
    import random

    voice = voice_catalog(3)[2]
    a = synthesize(sentence(random.Random(0)), voice)
    assert 1.0 < a.size / 16000 < 12.0
    assert np.abs(a).max() == pytest.approx(0.9, abs=1e-3)
    # speech has a syllabic energy envelope (not a constant tone): frame energies vary strongly
    frames = a[: a.size // 320 * 320].reshape(-1, 320)
    e = np.log10((frames**2).mean(1) + 1e-9)
    assert e.std() > 0.5


def test_corpus_is_bit_identical_whatever_the_build_order(tmp_path):
    import hashlib

    a = SynthSpeechSource(n_speakers=6, seconds_per_speaker=4.0, root=tmp_path / "a")
    # build b differently: other voices first, a shorter first pass, one process
    synth.build_corpus(tmp_path / "b", voice_catalog(6)[::-1][:3], 2.0, seed=0, processes=1)
    b = SynthSpeechSource(n_speakers=6, seconds_per_speaker=4.0, root=tmp_path / "b")

    def digest(src):
        return [(u.speaker, hashlib.sha1(open(u.path, "rb").read()).hexdigest()) for u in src.utterances]

    assert len(a.utterances) >= 6 and digest(a) == digest(b)


def test_different_voices_sound_different():
    import random

    v = voice_catalog(40)
    text = sentence(random.Random(1))
    pitches = []
    for voice in (v[0], v[1], v[2]):
        x = synthesize(text, voice)
        spec = np.abs(np.fft.rfft(x[: 16000 * 1]))
        pitches.append((x.size, float(np.argmax(spec[20:2000]) + 20)))
    assert len(set(pitches)) == 3


def test_cache_is_reused_and_superset_cache_gives_same_corpus(tmp_path, monkeypatch):
    small = SynthSpeechSource(n_speakers=3, seconds_per_speaker=3.0, root=tmp_path)
    paths = [u.path for u in small.utterances]
    monkeypatch.setattr(synth, "synthesize", lambda *a, **k: (_ for _ in ()).throw(AssertionError("resynth")))
    again = SynthSpeechSource(n_speakers=3, seconds_per_speaker=3.0, root=tmp_path)
    assert [u.path for u in again.utterances] == paths
    monkeypatch.undo()
    SynthSpeechSource(n_speakers=5, seconds_per_speaker=6.0, root=tmp_path)  # grow the cache
    after = SynthSpeechSource(n_speakers=3, seconds_per_speaker=3.0, root=tmp_path)
    assert [u.path for u in after.utterances] == paths
    assert (tmp_path / "SPEAKERS.TXT").is_file()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ERSAM_SSL_CACHE", str(tmp_path))
    assert synth.cache_dir() == tmp_path


def test_text_generator_varies():
    import random

    r = random.Random(0)
    s = {sentence(r) for _ in range(50)}
    assert len(s) == 50 and all(6 <= len(x.split()) <= 30 for x in s)
