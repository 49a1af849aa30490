"""Item 11: ``analyze`` takes its window from an ONNX export (which records it) and, when the user asks for
another one, names the flag as it is spelled: ``--window 1``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ersam_ssl.cli import main
from ersam_ssl.export import export_onnx
from ersam_ssl.models import create_model


def test_window_defaults_to_the_onnx_export_and_the_hint_names_the_flag(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = export_onnx(create_model("sam", num_classes=4).eval(), tmp_path / "one_second.onnx", 16000)
    rec = tmp_path / "rec.wav"
    sf.write(rec, 0.1 * np.random.default_rng(0).standard_normal(6 * 16000).astype(np.float32), 16000)
    out = tmp_path / "out"
    assert main(["analyze", str(rec), "--model", str(model), "--out", str(out), "--quiet", "--no-plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["window_s"] == 1.0 and summary["windows"] == 6
    capsys.readouterr()
    assert main(["analyze", str(rec), "--model", str(model), "--out", str(out), "--window", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--window 1" in err[0] and "window=" not in err[0], err
