"""Already holding, kept by these tests: every model/checkpoint loader refuses a booby-trapped pickle
(``torch.load(..., weights_only=True)`` everywhere) and YAML is only read with ``yaml.safe_load``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ersam_ssl.checkpoint import AtomicCheckpointIO, load_model, load_weights
from ersam_ssl.models import create_model

ROOT = Path(__file__).resolve().parents[2]
CODE = [p for d in ("src", "benchmarks", "recipes", "notebooks/src") for p in (ROOT / d).rglob("*.py")]


class Trap:
    """Unpickling this runs ``Path.touch(target)``: what a malicious model file would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.fixture
def trap_file(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"format": "ersam_ssl.model", "config": {}, "state_dict": {"w": Trap(target)}}, path)
    return path, target


def test_every_loader_refuses_a_booby_trapped_pickle(trap_file) -> None:
    path, target = trap_file
    loaders = [
        load_model,
        lambda p: load_weights(create_model("sam", num_classes=4), p),
        lambda p: AtomicCheckpointIO().load_checkpoint(p),
    ]
    try:
        from ersam_ssl.nas.supernet import ElasticSAM

        loaders.append(ElasticSAM.load)
    except ImportError:  # pragma: no cover - without the nas extra
        pass
    for load in loaders:
        with pytest.raises(Exception, match="(?i)weights|refused"):
            load(path)
        assert not target.exists()


def test_torch_load_is_weights_only_and_yaml_is_safe_load_everywhere() -> None:
    torch_load = re.compile(r"torch\.load\(([^()]|\([^()]*\))*\)", re.S)
    offenders = []
    for path in CODE:
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path}: {m[0]}" for m in torch_load.finditer(text) if "weights_only=True" not in m[0]]
        offenders += [f"{path}: {m}" for m in re.findall(r"yaml\.(?:load|unsafe_load|full_load)\(", text)]
        offenders += [f"{path}: {m}" for m in re.findall(r"\bpickle\.loads?\(", text)]
    assert CODE and not offenders, offenders
