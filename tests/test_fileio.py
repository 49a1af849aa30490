"""Atomic writes: the destination holds the old or the new content, never a partial file."""

import json

import numpy as np
import pytest
import soundfile as sf

from ersam_ssl.fileio import atomic_open, atomic_path, json_default, write_json, write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "result.json"
    write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(dest) as fh:
        fh.write('{"v": 2')  # half-written when the "kill" happens
        raise RuntimeError("killed")
    assert json.loads(dest.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_successful_write_replaces_and_creates_parents(tmp_path):
    dest = tmp_path / "a" / "b" / "notes.txt"
    write_text(dest, "first")
    write_text(dest, "second")
    assert dest.read_text() == "second"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["notes.txt"]


def test_temporary_path_keeps_the_suffix_for_format_detection(tmp_path):
    dest = tmp_path / "clip.flac"
    with atomic_path(dest) as tmp:
        assert tmp.suffix == ".flac" and tmp.parent == tmp_path and tmp != dest
        sf.write(str(tmp), np.zeros(160, dtype=np.int16), 16000)  # format from the extension
    assert sf.info(str(dest)).format == "FLAC"


def test_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="write mode"), atomic_open(tmp_path / "x", "a"):
        pass


def test_json_default_writes_numpy_values_and_paths(tmp_path):
    from pathlib import Path

    obj = {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "a": np.arange(2), "p": Path("x/y")}
    write_json(tmp_path / "r.json", obj, default=json_default)
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "f": 0.5,
        "i": 3,
        "b": True,
        "a": [0, 1],
        "p": "x/y",
    }
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json.dumps({"o": object()}, default=json_default)
