"""Item 5: user errors at every entry point are one ``error: ...`` line on stderr with a non-zero exit;
``--debug`` or ``ERSAM_SSL_DEBUG=1`` shows the traceback instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ersam_ssl import config as cfglib
from ersam_ssl.analysis.cli import main as analyze_main
from ersam_ssl.cli import main as cli_main
from ersam_ssl.pipeline import load_config
from ersam_ssl.pipeline import main as run_main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes" / "configs" / "tiny.yaml")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture
def existing_run(tmp_path: Path) -> list[str]:
    """A run folder holding the resolved config, as an earlier run leaves it."""
    args = ["--config", TINY, f"out_root={tmp_path}", "name=r"]
    cfglib.save(load_config(TINY, args[2:]), tmp_path / "r" / "config.yaml")
    return args


def test_pipeline_errors_are_one_line(existing_run: list[str], capsys) -> None:
    cases = [
        (["teachr.steps=3"], "unknown config key 'teachr'"),
        (["--stages", "data,train"], "unknown stages"),
        ([], "exists: pass --resume"),
        (["--resume", "teacher.optim.lr=0.5"], "different config"),
    ]
    for extra, expected in cases:
        assert run_main([*existing_run, *extra]) != 0
        assert expected in _one_error_line(capsys), extra


def test_malformed_or_missing_preset_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  steps: [3\n")
    assert run_main(["--config", str(bad), f"out_root={tmp_path}"]) == 2
    assert "not valid YAML" in _one_error_line(capsys)
    assert run_main(["--config", str(tmp_path / "nope.yaml"), f"out_root={tmp_path}"]) == 2
    assert "No such file" in _one_error_line(capsys)


def test_debug_flag_and_environment_variable_show_the_traceback(existing_run, capsys, monkeypatch) -> None:
    with pytest.raises(cfglib.ConfigError):
        run_main([*existing_run, "teachr.steps=3", "--debug"])
    monkeypatch.setenv("ERSAM_SSL_DEBUG", "1")
    with pytest.raises(FileExistsError):
        run_main(existing_run)
    with pytest.raises(cfglib.ConfigError):
        cli_main(["search", "budget.nope=1"])


@pytest.fixture(scope="module")
def analyze_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("analyze_inputs")
    rec = d / "rec.wav"
    sf.write(rec, 0.1 * np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32), 16000)
    (d / "garbage.onnx").write_bytes(np.random.default_rng(1).bytes(3000))
    (d / "notes.pt").write_text("not a model\n")

    class Trap:
        def __reduce__(self):
            return (Path.touch, (d / "pwned",))

    torch.save({"state_dict": Trap()}, d / "trap.pt")
    torch.save([1, 2, 3], d / "list.pt")
    (d / "a_file").write_text("x")
    return {"rec": rec, "dir": d}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("garbage.onnx", "not a usable ONNX model"),
        ("notes.pt", "not a PyTorch model file"),
        ("trap.pt", "refused"),
        ("list.pt", "holds a list"),
    ],
)
def test_analyze_bad_model_files_are_one_line(analyze_inputs, model, expected, tmp_path, capsys) -> None:
    d = analyze_inputs["dir"]
    rc = analyze_main([str(analyze_inputs["rec"]), "--model", str(d / model), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert expected in _one_error_line(capsys)
    assert not (d / "pwned").exists()


def test_analyze_out_pointing_at_a_file_is_one_line(analyze_inputs, tmp_path, capsys) -> None:
    from ersam_ssl.checkpoint import save_model
    from ersam_ssl.models import create_model

    model = save_model(create_model("sam", num_classes=4), tmp_path / "m.pt")
    out = analyze_inputs["dir"] / "a_file"
    assert cli_main(["analyze", str(analyze_inputs["rec"]), "--model", str(model), "--out", str(out)]) == 2
    assert "is a file" in _one_error_line(capsys)
