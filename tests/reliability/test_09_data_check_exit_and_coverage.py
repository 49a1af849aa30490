"""Item 9: ``data check`` exits non-zero when it finds bad files, says when it read headers only, and the
pipeline's ``bad_files.json`` names the files it never decoded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import tone
from ersam_ssl.cli import main
from ersam_ssl.data import SpeakerBank

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")


def test_exit_status_gates_on_bad_files_and_headers_only_is_stated(tmp_path: Path, capsys) -> None:
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "ok.wav", tone(2.0), 16000)
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "checked file headers only" in capsys.readouterr().out
    nan = tone(1.0)
    nan[5] = np.nan
    sf.write(tmp_path / "a" / "nan.wav", nan, 16000, subtype="FLOAT")  # its header is fine
    assert main(["data", "check", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == "headers"
    assert main(["data", "check", str(tmp_path), "--decode", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["checked"] == "decoded" and [Path(b["path"]).name for b in out["bad"]] == ["nan.wav"]


def test_libricount_folder_is_decoded_with_decode(tmp_path: Path, capsys) -> None:
    sf.write(tmp_path / "2_a.wav", tone(1.0), 16000)
    nan = tone(1.0)
    nan[::3] = np.nan
    sf.write(tmp_path / "1_b.wav", nan, 16000, subtype="FLOAT")
    assert main(["data", "check", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path), "--decode", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "libricount" and [Path(b["path"]).name for b in out["bad"]] == ["1_b.wav"]


def test_files_never_decoded_are_named(tmp_path: Path, folder_corpus: Path) -> None:
    from ersam_ssl.data.sources import FolderSource
    from ersam_ssl.pipeline import main as run_main

    corpus = tmp_path / "corpus"
    for spk in sorted(folder_corpus.iterdir()):  # a second file per speaker, beyond 1 s of speech
        (corpus / spk.name).mkdir(parents=True)
        (corpus / spk.name / "a.wav").write_bytes((spk / "utt.wav").read_bytes())
        sf.write(corpus / spk.name / "b.wav", tone(2.0), 16000)
    bank = SpeakerBank(FolderSource(corpus).utterances[:2], max_seconds_per_speaker=1.0)
    assert [Path(p).name for p in bank.not_decoded] == ["b.wav"]
    assert run_main(["--config", TINY, f"out_root={tmp_path}", "name=r", "data.source=folder",
                     f"data.root={corpus}", "data.max_seconds_per_speaker=1", "--stages", "data"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "r" / "data" / "bad_files.json").read_text())
    assert report["bad"] == [] and "header-checked" in report["note"]
    assert sorted(Path(p).parent.name for p in report["not_decoded"]) == sorted(
        p.name for p in corpus.iterdir()
    )


def test_a_folder_of_only_bad_files_is_listed_and_an_empty_one_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.wav").write_bytes(b"")
    (tmp_path / "bad" / "notes.wav").write_text("not audio")
    assert main(["data", "check", str(tmp_path / "bad"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == 0 and sorted(Path(b["path"]).name for b in out["bad"]) == [
        "empty.wav",
        "notes.wav",
    ]
    (tmp_path / "none").mkdir()
    assert main(["data", "check", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: no usable audio")
