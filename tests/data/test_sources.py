import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED_LIBRISPEECH, tone
from ersam_ssl import audio
from ersam_ssl.cli import build_parser
from ersam_ssl.data import (
    SOURCES,
    DataConfig,
    DataEngine,
    FolderSource,
    LibriCountSource,
    LibriSpeechSource,
    SpeakerBank,
    SynthSpeechSource,
    detect_source,
    open_source,
)


def test_librispeech_layout_speakers_subsets_and_sex(librispeech_tree: Path):
    src = LibriSpeechSource(librispeech_tree)
    assert len(src.speakers()) == 30
    assert {u.subset for u in src.utterances} == {"train-clean-100", "test-clean"}
    sex = {u.speaker: u.sex for u in src.utterances}
    assert sex["100"] == "M" and sex["101"] == "F"
    assert all(u.duration > 0.3 for u in src.utterances)
    assert not src.report.bad  # .trans.txt files are not audio and not reported


def test_librispeech_root_may_be_a_subset_folder_or_filtered(librispeech_tree: Path):
    sub = LibriSpeechSource(librispeech_tree / "test-clean")
    assert len(sub.speakers()) == 6 and {u.subset for u in sub.utterances} == {"test-clean"}
    # SPEAKERS.TXT is found in the parent folder
    assert all(u.sex in ("M", "F") for u in sub.utterances)
    only = LibriSpeechSource(librispeech_tree, subsets=["train-clean-100"])
    assert len(only.speakers()) == 24


def test_librispeech_indexing_does_not_decode(librispeech_tree: Path, monkeypatch):
    def no_decode(*a, **k):
        raise AssertionError("indexing decoded audio")

    monkeypatch.setattr(sf, "read", no_decode)
    monkeypatch.setattr(sf, "blocks", no_decode)
    assert len(LibriSpeechSource(librispeech_tree)) > 0


def test_librispeech_reports_files_outside_the_layout(tmp_path: Path, librispeech_tree: Path):
    root = tmp_path / "ls"
    shutil.copytree(librispeech_tree / "test-clean", root / "test-clean")
    stray = root / "test-clean" / "stray.flac"
    sf.write(stray, tone(1.0), 16000)
    src = LibriSpeechSource(root)
    assert [Path(b.path).name for b in src.report.bad] == ["stray.flac"]
    assert "layout" in src.report.bad[0].reason


def _write_bad_inputs(d: Path) -> dict[str, str]:
    """Every bad-input kind of the data-engine issue. Returns name -> expected outcome."""
    d.mkdir(parents=True, exist_ok=True)
    sf.write(d / "good.wav", tone(1.0), 16000)
    (d / "empty.wav").write_bytes(b"")
    (d / "corrupt.flac").write_bytes(
        b"fLaC" + bytes(np.random.default_rng(0).integers(0, 255, 2000, dtype=np.uint8))
    )
    (d / "text.wav").write_text("this is not audio at all\n" * 20)
    full = d / "_full.wav"
    sf.write(full, tone(2.0), 16000, subtype="PCM_16")
    data = full.read_bytes()
    (d / "truncated.wav").write_bytes(data[: 44 + 2000])  # header claims 2 s, file holds 1000 frames
    full.unlink()
    nan = tone(1.0)
    nan[100:200] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = tone(1.0)
    inf[5] = np.inf
    sf.write(d / "inf.wav", inf, 16000, subtype="FLOAT")
    sf.write(d / "one_sample.wav", np.zeros(1, dtype=np.float32), 16000)
    sf.write(d / "stereo.wav", tone(1.0, channels=2), 16000)
    sf.write(d / "rate8k.wav", tone(1.0, sr=8000), 8000)
    sf.write(d / "rate44k.wav", tone(1.0, sr=44100), 44100)
    sf.write(d / "rate96k.flac", tone(1.0, sr=96000), 96000)
    sf.write(d / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    (d / "notes.bin").write_bytes(b"\x00\x01")
    return {
        "good.wav": "ok", "stereo.wav": "ok", "rate8k.wav": "ok", "rate44k.wav": "ok", "rate96k.flac": "ok",
        "empty.wav": "bad", "corrupt.flac": "bad", "text.wav": "bad", "truncated.wav": "either",
        "nan.wav": "bad", "inf.wav": "bad", "one_sample.wav": "bad", "silent.wav": "bad", "notes.bin": "bad",
    }  # fmt: skip


def test_every_bad_input_kind_is_reported_or_converted(tmp_path: Path):
    expected = _write_bad_inputs(tmp_path / "spk")
    src = FolderSource(tmp_path)
    bank = SpeakerBank(src.utterances, min_seconds_per_speaker=0.0)
    reported = {
        Path(b.path).name: b.reason
        for b in src.report.bad + bank.report.bad
        if not b.path.startswith("speaker")
    }
    for name, outcome in expected.items():
        if outcome == "bad":
            assert name in reported, f"{name} was not reported"
            assert reported[name], f"{name} has no reason"
        elif outcome == "ok":
            assert name not in reported, f"{name} should have been converted, got {reported.get(name)}"
    assert "NaN" in reported["nan.wav"] or "Inf" in reported["nan.wav"]
    assert "empty" in reported["empty.wav"]
    assert "short" in reported["one_sample.wav"]
    # converted files are 16 kHz mono of the right length
    for name, sr in (
        ("stereo.wav", 16000),
        ("rate8k.wav", 8000),
        ("rate44k.wav", 44100),
        ("rate96k.flac", 96000),
    ):
        assert audio.info(tmp_path / "spk" / name).sample_rate == sr
        x = audio.load(tmp_path / "spk" / name)
        assert x.ndim == 1 and abs(x.size - 16000) <= 2, (name, x.shape)
        assert np.isfinite(x).all() and 0.15 < np.abs(x).max() < 0.45


def test_audio_load_error_names_file_and_reason(tmp_path: Path):
    p = tmp_path / "x.wav"
    p.write_bytes(b"")
    with pytest.raises(audio.AudioError) as e:
        audio.load(p)
    assert str(p) in str(e.value) and "empty" in e.value.reason


def test_resampling_preserves_frequency():
    x = tone(1.0, sr=44100, freq=1000.0)
    y = audio.resample(x, 44100, 16000)
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / y.size - 1000.0) < 2.0


def test_manifest_folder_source(tmp_path: Path):
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    sf.write(tmp_path / "b.flac", tone(1.5), 16000)
    (tmp_path / "manifest.csv").write_text(
        "path,speaker,sex\na.wav,alice,f\nb.flac,bob,M\nmissing.wav,carol,F\n"
    )
    src = FolderSource(tmp_path / "manifest.csv")
    assert src.speakers() == ["alice", "bob"]
    assert {u.speaker: u.sex for u in src.utterances} == {"alice": "F", "bob": "M"}
    assert [Path(b.path).name for b in src.report.bad] == ["missing.wav"]


def test_folder_speaker_is_subfolder(tmp_path: Path):
    for spk in ("s1", "s2"):
        (tmp_path / spk / "deep").mkdir(parents=True)
        sf.write(tmp_path / spk / "deep" / "x.ogg", tone(1.0), 16000, format="OGG", subtype="VORBIS")
    src = FolderSource(tmp_path)
    assert src.speakers() == ["s1", "s2"]
    assert src.summary()["files"] == 2


def test_libricount_source_counts_and_sidecars(tmp_path: Path):
    sf.write(tmp_path / "0_abc.wav", tone(5.0), 16000)
    sf.write(tmp_path / "3_def.wav", tone(5.0), 16000)
    (tmp_path / "3_def.json").write_text(json.dumps({"speakers": ["1", "2", "3"]}))
    sf.write(tmp_path / "2_bad.wav", tone(5.0), 16000)
    (tmp_path / "2_bad.json").write_text(json.dumps({"speakers": ["1"]}))
    sf.write(tmp_path / "nolabel.wav", tone(5.0), 16000)
    src = LibriCountSource(tmp_path)
    assert sorted(src.counts()) == [0, 3]
    reasons = {Path(b.path).name: b.reason for b in src.report.bad}
    assert "count" in reasons["nolabel.wav"] and "sidecar" in reasons["2_bad.wav"]
    assert isinstance(detect_source(tmp_path), FolderSource)  # mixed names: not pure LibriCount


def test_a_source_registered_where_it_is_defined_is_valid_in_configs_and_the_cli(
    folder_corpus: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(SOURCES, "_items", dict(SOURCES._items))  # the registration ends with the test

    @SOURCES.register("toy")
    class ToySource(FolderSource):
        name = "toy"

    DataConfig(source="toy", root=str(folder_corpus)).validate()
    DataConfig(extra_sources=(f"toy:{folder_corpus}",)).validate()
    with pytest.raises(ValueError, match="data.source=toy needs data.root"):
        DataConfig(source="toy").validate()
    with pytest.raises(ValueError, match=r"entry 'toy': use synth or folder\|librispeech\|toy:/root$"):
        DataConfig(extra_sources=("toy",)).validate()
    assert isinstance(DataEngine(DataConfig(source="toy", root=str(folder_corpus))).source, ToySource)
    args = build_parser().parse_args(["data", "make", "--source", "toy", "--out", str(tmp_path), "--n", "1"])
    assert args.source == "toy"


def test_sources_are_chosen_from_the_registry(tmp_path: Path, capsys):
    pool = "folder, librispeech, synth"  # libricount holds labeled mixtures, no speakers to pool
    with pytest.raises(ValueError, match=f"data.source='libricount': choose one of {pool}$"):
        DataConfig(source="libricount", root=str(tmp_path)).validate()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "make", "--source", "libricount", "--out", "x", "--n", "1"])
    assert "choose from 'folder', 'librispeech', 'synth'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="source 'folder' needs a root path"):
        open_source("folder")
    with pytest.raises(KeyError, match="unknown source 'nope'"):
        open_source("nope", tmp_path)
    options = SynthSpeechSource.config_options(DataConfig(synth_speakers=7, synth_seconds=2.0, synth_seed=3))
    assert options == {"n_speakers": 7, "seconds_per_speaker": 2.0, "seed": 3}
    subsets = ("test-clean",)
    assert LibriSpeechSource.config_options(DataConfig(subsets=subsets)) == {"subsets": subsets}


@pytest.mark.skipif(not SHARED_LIBRISPEECH.is_dir(), reason="../shared/data/librispeech-mini not present")
def test_real_librispeech_mini():
    src = LibriSpeechSource(SHARED_LIBRISPEECH)
    assert len(src.speakers()) == 160
    assert {u.subset for u in src.utterances} == {"train-clean-100", "test-other"}
    assert not src.report.bad
    test = [u for u in src.utterances if u.subset == "test-other"][:3]
    bank = SpeakerBank(test)
    assert bank.report.bad == [] and bank.seconds(bank.speakers[0]) > 1.0
