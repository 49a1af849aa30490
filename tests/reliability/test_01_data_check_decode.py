"""Item 1: ``data check --decode`` on a folder whose only file (= its own speaker) does not decode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import tone
from ersam_ssl.cli import main


def _truncated_flac(path: Path) -> Path:
    full = path.with_name("full.flac")
    sf.write(full, tone(3.0), 16000)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(0.4 * len(data))])  # the header still promises 3 s
    return path


def _nan_wav(path: Path) -> Path:
    x = tone(1.0)
    x[::2] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    return path


def test_data_check_decode_survives_a_speaker_without_decodable_files(tmp_path: Path, capsys) -> None:
    for name, make in (("truncated.flac", _truncated_flac), ("nan.wav", _nan_wav)):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        bad = make(folder / name)
        main(["data", "check", str(folder), "--decode", "--json"])  # raised ValueError before the fix
        out = json.loads(capsys.readouterr().out)
        assert out["files"] == 1 and out["usable_speakers"] == 0
        assert str(bad) in {b["path"] for b in out["bad"]}, out["bad"]
