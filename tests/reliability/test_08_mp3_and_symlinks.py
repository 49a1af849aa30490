"""Item 8: one list of audio extensions for every reader, MP3 included (libsndfile decodes it), and symlink
loops or broken links are listed instead of skipped silently."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ersam_ssl import audio
from ersam_ssl.checkpoint import save_model
from ersam_ssl.cli import main
from ersam_ssl.data import FolderSource, LibriSpeechSource
from ersam_ssl.models import create_model

SR = 16000
pytestmark = pytest.mark.skipif(not audio.MP3_SUPPORTED, reason="this libsndfile cannot decode MP3")


def _mp3(path: Path, seconds: float = 6.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(int(seconds * SR))).astype(np.float32), SR)
    return path


def test_mp3_is_audio_for_every_reader(tmp_path: Path, capsys) -> None:
    assert ".mp3" in audio.AUDIO_EXTENSIONS
    libri = tmp_path / "LibriSpeech" / "train-clean-100"
    _mp3(libri / "19" / "198" / "19-198-0001.mp3")
    assert [Path(u.path).name for u in LibriSpeechSource(libri.parent).utterances] == ["19-198-0001.mp3"]
    recs = tmp_path / "recs"
    _mp3(recs / "day.mp3")
    assert [Path(u.path).name for u in FolderSource(recs).utterances] == ["day.mp3"]
    torch.manual_seed(0)
    model = str(save_model(create_model("sam", num_classes=4), tmp_path / "sam.pt"))
    assert (
        main(["analyze", str(recs / "day.mp3"), "--model", model, "--out", str(tmp_path / "one"), "--quiet"])
        == 0
    )
    assert main(["analyze", str(recs), "--model", model, "--out", str(tmp_path / "all"), "--no-plot"]) == 0
    with open(tmp_path / "all" / "summary.csv") as fh:
        assert [(r["file"], r["status"]) for r in csv.DictReader(fh)] == [("day.mp3", "ok")]


def test_symlink_loops_and_broken_links_are_listed(tmp_path: Path, capsys) -> None:
    recs = tmp_path / "recs"
    _mp3(recs / "spk" / "a.mp3")
    os.symlink("loop.wav", recs / "loop.wav")  # points to itself
    os.symlink("missing.flac", recs / "gone.flac")
    os.symlink("..", recs / "spk" / "up")  # a folder link back to an enclosing folder
    main(["data", "check", str(recs), "--json"])
    bad = {Path(b["path"]).name: b["reason"] for b in json.loads(capsys.readouterr().out)["bad"]}
    assert bad == {"loop.wav": "symlink loop", "gone.flac": "broken symlink (target missing)",
                   "up": "symlink loop: points to an enclosing folder; not followed"}  # fmt: skip
    torch.manual_seed(0)
    model = str(save_model(create_model("sam", num_classes=4), tmp_path / "sam.pt"))
    assert main(["analyze", str(recs), "--model", model, "--out", str(tmp_path / "o"), "--no-plot"]) == 3
    with open(tmp_path / "o" / "summary.csv") as fh:
        status = {r["file"]: r["status"] for r in csv.DictReader(fh)}
    assert status == {"gone.flac": "error", "loop.wav": "error", "spk/a.mp3": "ok", "spk/up": "error"}
    capsys.readouterr()
    assert main(["analyze", str(recs / "loop.wav"), "--model", model, "--out", str(tmp_path / "l")]) == 2
    assert "symlink loop or a broken symlink" in capsys.readouterr().err
