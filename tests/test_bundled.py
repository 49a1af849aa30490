"""The counter shipped in the package: integrity, metadata, and counts on voices it never heard."""

from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import pytest
import soundfile as sf

import ersam_ssl
from ersam_ssl import bundled


def test_shipped_file_matches_its_checksum_and_metadata():
    info = bundled.info()
    path = bundled.verify()
    assert info["sha256"] == bundled.sha256(path) and info["bytes"] == path.stat().st_size < 2_000_000
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["ersam_model_config"])["kwargs"]["num_classes"] == info["classes"] == 11
    assert float(meta["window_s"]) == info["window_s"] == 5.0
    assert (
        meta["recipe"].startswith("recipes/bundle.py") and meta["ersam_ssl_version"] == ersam_ssl.__version__
    )
    from ersam_ssl.export import read_onnx_calibration

    cal = read_onnx_calibration(path)
    assert cal["temperature"] == pytest.approx(info["calibration"]["temperature"], abs=1e-3)
    assert 0 <= cal["abstain_confidence"] < 1
    card = bundled.model_card()
    assert card.startswith("# Model card") and info["sha256"] in card and "not a diagnostic" in card


def test_a_corrupted_install_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "bundled"
    shutil.copytree(bundled.BUNDLE_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    blob = bytearray((copy / bundled.MODEL_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / bundled.MODEL_FILE).write_bytes(bytes(blob))
    monkeypatch.setattr(bundled, "BUNDLE_DIR", copy)
    with pytest.raises(ValueError, match="SHA-256"):
        bundled.pretrained()


def _unseen_voice_recording(tmp_path, windows: int = 24):
    """A recording of 5 s windows of 0-3 synthetic voices from the bundle's *test* split (never trained on)."""
    from ersam_ssl.data import FolderSource, MixtureConfig, MixtureDataset, SpeakerBank
    from ersam_ssl.data.synth import sentence, synthesize, voice_catalog

    test_ids = {s.split("/", 1)[1] for s in bundled.info()["test"]["speaker_ids"].get("synth", [])}
    voices = [v for v in voice_catalog(120, 0) if v.speaker_id in test_ids][:6]
    if len(voices) < 4:
        pytest.skip("the bundled model was not trained with a synthetic test split")
    rng = random.Random(0)
    for v in voices:
        d = tmp_path / "voices" / v.speaker_id
        d.mkdir(parents=True)
        for j in range(4):
            sf.write(d / f"{j}.flac", synthesize(sentence(rng), v), 16000)
    bank = SpeakerBank.from_source(FolderSource(tmp_path / "voices"))
    ds = MixtureDataset(bank, bank.speakers, windows, MixtureConfig(max_speakers=3), seed=1, split="bundled")
    audio = np.concatenate([ds.generate(i).audio for i in range(windows)])
    rec = tmp_path / "recording.wav"
    sf.write(rec, audio, 16000, subtype="PCM_16")
    return rec, ds.counts()


def test_analyze_without_a_model_counts_unseen_voices(tmp_path):
    from ersam_ssl.analysis.cli import main

    rec, truth = _unseen_voice_recording(tmp_path)
    out = tmp_path / "out"
    assert main([str(rec), "--out", str(out), "--quiet", "--no-plot"]) == 0
    with open(out / "windows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(truth)
    counts = np.array([int(r["count"]) if int(r["count"]) >= 0 else 0 for r in rows])
    mae = float(np.abs(counts - truth).mean())
    card_mae = bundled.info()["test"]["metrics"]["synth"]["clean"]["mae"]
    # 24 windows of 0-3 voices: allow the card's 0-10 MAE plus sampling noise of a small recording
    assert mae <= card_mae + 0.5, (mae, counts.tolist(), truth.tolist())
