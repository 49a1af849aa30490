"""Item 4: a single-file analysis that lost part of the recording says what was lost, marks summary.json
"partial" and exits with the partial code (3), like the folder mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ersam_ssl.analysis.cli import EXIT_COMPLETE, EXIT_PARTIAL
from ersam_ssl.checkpoint import save_model
from ersam_ssl.cli import main
from ersam_ssl.models import create_model

SR = 16000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("partial")
    x = (0.1 * np.random.default_rng(0).standard_normal(15 * SR)).astype(np.float32)
    sf.write(d / "full.flac", x, SR)
    data = (d / "full.flac").read_bytes()
    (d / "truncated.flac").write_bytes(data[: int(len(data) * 6 / 15)])  # ~9 of 15 s lost
    y = x.copy()
    y[3 * SR : 4 * SR] = np.nan
    y[8 * SR : 8 * SR + 100] = np.inf
    sf.write(d / "nonfinite.wav", y, SR, subtype="FLOAT")
    sf.write(d / "one_sample.wav", x[:1], SR)
    torch.manual_seed(0)
    save_model(create_model("sam", num_classes=4), d / "sam.pt")
    return {"dir": d}


@pytest.mark.parametrize(
    ("name", "lost"),
    [
        ("truncated.flac", "truncated: "),
        ("nonfinite.wav", "16100 NaN/Inf samples"),
        ("one_sample.wav", "too short"),
    ],
)
def test_single_file_partial_analysis_is_reported(inputs, name, lost, tmp_path, capsys) -> None:
    d = inputs["dir"]
    out = tmp_path / "out"
    rc = main(
        ["analyze", str(d / name), "--model", str(d / "sam.pt"), "--out", str(out), "--quiet", "--no-plot"]
    )
    assert rc == EXIT_PARTIAL
    captured = capsys.readouterr()
    assert f"partial: {name}: " in captured.err and lost in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and any(lost in p for p in summary["problems"])
    if name == "truncated.flac":
        assert 8.0 < summary["input"]["unreadable_s"] < 10.5  # the seconds lost are stated


def test_intact_file_is_complete(inputs, tmp_path, capsys) -> None:
    d = inputs["dir"]
    rc = main(["analyze", str(d / "full.flac"), "--model", str(d / "sam.pt"), "--out", str(tmp_path), "--quiet",
               "--no-plot"])  # fmt: skip
    assert rc == EXIT_COMPLETE and capsys.readouterr().err == ""
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["problems"] == []


def test_folder_with_nothing_readable_says_so(inputs, tmp_path, capsys) -> None:
    folder = tmp_path / "recs"
    folder.mkdir()
    (folder / "empty.wav").write_bytes(b"")
    rc = main(
        ["analyze", str(folder), "--model", str(inputs["dir"] / "sam.pt"), "--out", str(tmp_path / "o")]
    )
    assert rc == 1 and "error: none of the 1 recording(s)" in capsys.readouterr().err
