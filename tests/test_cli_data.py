import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from ersam_ssl.cli import main
from ersam_ssl.data import LibriCountSource


def test_data_check_lists_bad_files(tmp_path: Path, capsys):
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "ok.wav", tone(2.0), 16000)
    (tmp_path / "a" / "broken.flac").write_bytes(b"garbage" * 10)
    nan = tone(1.0)
    nan[3] = np.nan
    sf.write(tmp_path / "a" / "nan.wav", nan, 16000, subtype="FLOAT")
    assert main(["data", "check", str(tmp_path), "--decode", "--json"]) == 1  # bad files found
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == 2 and out["speakers"] == 1 and out["bad_files"] == 2
    reasons = {Path(b["path"]).name: b["reason"] for b in out["bad"]}
    assert "readable" in reasons["broken.flac"] and "NaN" in reasons["nan.wav"]
    assert main(["data", "check", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "broken.flac" in text and "hours" in text


def test_data_check_librispeech_tree(librispeech_tree, capsys):
    assert main(["data", "check", str(librispeech_tree), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "librispeech" and out["speakers"] == 30 and out["bad_files"] == 0


def test_data_check_missing_path(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2


def test_data_make_from_librispeech_root(librispeech_tree, tmp_path, capsys):
    out = tmp_path / "mix"
    rc = main(["data", "make", "--source", "librispeech", "--root", str(librispeech_tree), "--out", str(out),
               "--n", "8", "--max-speakers", "3", "--seed", "1", "--scenario", "clinical"])  # fmt: skip
    assert rc == 0
    src = LibriCountSource(out)
    assert sorted(src.counts()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (out / "manifest.csv").read_text().startswith("path,count,split,index,speakers")
    assert all(u.meta["scenario"] == "clinical" for u in src.utterances)


@pytest.mark.parametrize("command", ["analyze", "search", "run"])
def test_subcommand_help_reaches_the_subcommands_parser(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_building_the_parser_does_not_load_the_data_package():
    """``--source`` choices come from the source registry only when needed, so ``ersam-ssl --help``
    does not wait for the data package (and Lightning) to import."""
    code = ("import sys; from ersam_ssl.cli import build_parser; "
            "build_parser().parse_args(['data', 'make', '--out', 'x', '--n', '1']); "
            "print('ersam_ssl.data' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
