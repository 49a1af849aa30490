"""The speaker counter shipped inside the package, its metadata and its model card.

``ersam_ssl.pretrained()`` (or :func:`pretrained`) returns it as an analysis counter, so
``ersam-ssl analyze RECORDING`` works without training anything. The files next to this module:

* ``sam-default.onnx`` — the counter (fp32 ONNX; 16 kHz mono 5 s windows → scores of 0–10 speakers), with
  the model config, calibration temperature and abstain threshold in its ONNX metadata;
* ``sam-default.json`` — provenance and figures: SHA-256 of the ONNX file, window, classes, the recipe
  that trained it, the package version, per-domain test metrics on unseen speakers, calibration, cost;
* ``MODEL_CARD.md`` — the human-readable card (also ``ersam-ssl analyze --model-info``).

They are written by ``recipes/bundle.py`` from a trained model (see the card for the exact commands).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

BUNDLE_DIR = Path(__file__).resolve().parent
MODEL_FILE = "sam-default.onnx"
INFO_FILE = "sam-default.json"
CARD_FILE = "MODEL_CARD.md"


def model_path() -> Path:
    """The shipped ONNX counter (``FileNotFoundError`` with a clear message if the install lacks it)."""
    path = BUNDLE_DIR / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled counter {path} is missing from this installation; reinstall ersam_ssl or pass --model"
        )
    return path


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def info() -> dict[str, Any]:
    """Provenance and measured figures of the shipped counter (``sam-default.json``)."""
    return json.loads((BUNDLE_DIR / INFO_FILE).read_text())


def verify() -> Path:
    """Check the shipped file against its recorded SHA-256; returns its path."""
    path = model_path()
    expected = info()["sha256"]
    actual = sha256(path)
    if actual != expected:
        raise ValueError(
            f"{path}: SHA-256 {actual[:12]}… does not match the recorded {expected[:12]}… (corrupt install?)"
        )
    return path


def model_card() -> str:
    return (BUNDLE_DIR / CARD_FILE).read_text()


def pretrained(threads: int = 1) -> Any:
    """The shipped counter as an :class:`~ersam_ssl.analysis.counters.Counter` (checksum verified)."""
    from ersam_ssl.analysis.counters import load_counter

    return load_counter(verify(), threads)
