"""``ersam-ssl analyze``: single files and folders, PyTorch model files, checkpoints and ONNX exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ersam_ssl.analysis import read_windows
from ersam_ssl.checkpoint import save_model
from ersam_ssl.cli import main
from ersam_ssl.models import create_model

SR = 16000


@pytest.fixture(scope="module")
def sam_model():
    torch.manual_seed(0)
    return create_model("sam", num_classes=4).eval()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """22 s at 44.1 kHz stereo: 10 s noise-like activity, 7 s digital silence, 5 s activity."""
    rng = np.random.default_rng(0)
    sr = 44100
    x = (0.05 * rng.standard_normal(22 * sr)).astype(np.float32)
    x[10 * sr : 17 * sr] = 0.0
    path = tmp_path_factory.mktemp("rec") / "session.flac"
    sf.write(str(path), np.stack([x, x], axis=1), sr)
    return path


def test_analyze_file_with_model_file(sam_model, recording: Path, tmp_path: Path, capsys) -> None:
    model = save_model(sam_model, tmp_path / "sam.pt")
    out = tmp_path / "out"
    rc = main(["analyze", str(recording), "--model", str(model), "--out", str(out), "--vad-threshold-db", "-50",
               "--vad", "energy", "--quiet"])  # fmt: skip
    assert rc == 0
    assert "session.flac" in capsys.readouterr().out
    rows = read_windows(out)
    assert [r["start_s"] for r in rows] == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert rows[-1]["end_s"] == pytest.approx(22.0)  # 2 s tail, zero-padded
    assert [r["gated"] for r in rows] == [False, False, True, False, False]
    assert rows[2]["count"] == 0 and rows[2]["level_name"] == "none"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["vad"]["threshold_db"] == -50.0
    assert summary["model"]["backend"] == "pytorch" and summary["input"]["channels"] == 2
    assert (out / "timeline.png").is_file()


def test_analyze_with_lightning_checkpoint_and_no_vad(sam_model, recording: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in sam_model.state_dict().items()},
         "ersam_model_config": sam_model.config()},
        ckpt,
    )  # fmt: skip
    out = tmp_path / "out"
    assert main(["analyze", str(recording), "--model", str(ckpt), "--out", str(out), "--no-vad", "--hop", "2.5",
                 "--no-plot", "--quiet"]) == 0  # fmt: skip
    rows = read_windows(out)
    assert not any(r["gated"] for r in rows) and len(rows) == 8
    assert not (out / "timeline.png").exists()
    with torch.inference_mode():
        wave = torch.zeros(1, 5 * SR)
        expected = int(sam_model.predict(wave))
    assert {r["count"] for r in rows if r["start_s"] >= 10.0 and r["end_s"] <= 17.0} == {expected}


def test_analyze_with_onnx_export(sam_model, recording: Path, tmp_path: Path) -> None:
    from ersam_ssl.export import export_onnx

    path = export_onnx(sam_model, tmp_path / "sam.onnx")  # the exporter stores the model config
    out_onnx, out_torch = tmp_path / "onnx", tmp_path / "torch"
    assert main(["analyze", str(recording), "--model", str(path), "--out", str(out_onnx), "--quiet"]) == 0
    save_model(sam_model, tmp_path / "sam.pt")
    assert main(["analyze", str(recording), "--model", str(tmp_path / "sam.pt"), "--out", str(out_torch),
                 "--quiet"]) == 0  # fmt: skip
    onnx_rows, torch_rows = read_windows(out_onnx), read_windows(out_torch)
    assert [r["count"] for r in onnx_rows] == [r["count"] for r in torch_rows]
    np.testing.assert_allclose(
        [r["confidence"] or 0 for r in onnx_rows], [r["confidence"] or 0 for r in torch_rows], atol=2e-4
    )
    info = json.loads((out_onnx / "summary.json").read_text())["model"]
    assert (
        info["backend"] == "onnxruntime"
        and info["fixed_batch"] is None
        and info["config"] == sam_model.config()
    )


def test_analyze_folder_reports_bad_files(sam_model, recording: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "recs"
    folder.mkdir()
    (folder / "a.flac").write_bytes(recording.read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF1234WAVEfmt " + bytes(range(256)) * 8)
    model = save_model(sam_model, tmp_path / "sam.pt")
    out = tmp_path / "out"
    assert (
        main(["analyze", str(folder), "--model", str(model), "--out", str(out), "--no-plot"]) == 3
    )  # partial
    printed = capsys.readouterr().out
    assert "analysed 1/2" in printed and "corrupt.wav" in printed
    with open(out / "summary.csv") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert rows["a.flac"]["status"] == "ok" and rows["corrupt.wav"]["status"] == "error"
    assert int(rows["a.flac"]["windows"]) == 5 and (out / "a" / "windows.csv").is_file()


def test_analyze_errors(sam_model, recording: Path, tmp_path: Path, capsys) -> None:
    model = save_model(sam_model, tmp_path / "sam.pt")
    assert main(["analyze", str(tmp_path / "nope.wav"), "--model", str(model), "--out", str(tmp_path)]) == 2
    assert (
        main(["analyze", str(recording), "--model", str(tmp_path / "nope.onnx"), "--out", str(tmp_path)]) == 2
    )
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["analyze", str(bad), "--model", str(model), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "bad.wav" in capsys.readouterr().err
    assert (
        main(["analyze", str(recording), "--model", str(model), "--out", str(tmp_path / "h"), "--hop", "0"])
        == 2
    )
    assert main(["analyze", str(recording), "--model", str(model), "--out", str(tmp_path), "--vad-min-active",
                 "2"]) == 2  # fmt: skip
    (tmp_path / "empty_dir").mkdir()
    assert main(["analyze", str(tmp_path / "empty_dir"), "--model", str(model), "--out", str(tmp_path)]) == 2
