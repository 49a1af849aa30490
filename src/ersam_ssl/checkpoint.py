"""Checkpoints: atomic writes, safe loading, and hand-over of weights between training stages.

* :class:`AtomicCheckpointIO` — a Lightning ``CheckpointIO`` that writes to a temporary file and renames it,
  so a run killed mid-write never leaves a truncated checkpoint (``last.ckpt`` stays the previous one).
* :func:`save_model` / :func:`load_model` — a self-describing model file (architecture config + weights),
  loaded with ``torch.load(..., weights_only=True)`` (:func:`load_blob`). The NAS supernet writes and reads
  its own file format with the same two helpers.
* :func:`load_weights` — the one call that moves weights from any stage to the next: pretrain → finetune →
  distill → NAS supernet. It accepts a model file, a Lightning checkpoint or a state dict, and copies the
  chosen parts (e.g. ``("frontend", "backbone")``) into a model.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from ersam_ssl.fileio import atomic_path

MODEL_FILE_VERSION = 1
MODEL_FORMAT = "ersam_ssl.model"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O with atomic writes and ``weights_only`` loading."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict:
        return torch.load(path, map_location=map_location, weights_only=True)


def save_model(
    model: nn.Module, path: str | Path, extra: dict | None = None, *, file_format: str = MODEL_FORMAT
) -> Path:
    """Write ``{"format", "version", "config", "state_dict", "extra"}`` atomically (CPU tensors).

    ``model`` must have ``config()``. ``file_format`` names what the file holds: a counter
    (:func:`load_model` reads it) by default; the NAS supernet passes its own format.
    """
    payload = {
        "format": file_format,
        "version": MODEL_FILE_VERSION,
        "config": model.config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)
    return Path(path)


def load_model(path: str | Path):
    """Rebuild a :class:`~ersam_ssl.models.CountModel` from :func:`save_model`'s file (or a Lightning
    checkpoint whose ``ersam_model_config`` entry was stored by a training module), in eval mode."""
    from ersam_ssl.models import CountModel

    blob = load_blob(path)
    if blob.get("format") == MODEL_FORMAT:
        config, state = blob["config"], blob["state_dict"]
    elif "ersam_model_config" in blob:
        config, state = blob["ersam_model_config"], strip_prefix(blob["state_dict"], "model.")
    else:
        raise ValueError(
            f"{path}: neither an ersam_ssl model file nor a checkpoint of an ersam_ssl training module"
        )
    model = CountModel.from_config(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit its architecture ({_first_line(e)})") from e
    return model.eval()


def load_blob(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` of a dict; anything else is a ``ValueError`` naming the file.

    A model path is user input: a file of another kind must give a one-line reason, and a pickle holding
    more than tensors and plain containers is refused (unpickling it could run arbitrary code).
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if code:
            raise ValueError(
                f"{path}: refused: it references Python code ({code[1]}) that unpickling would run; "
                "ersam_ssl model files and checkpoints hold weights only (torch.load weights_only=True)"
            ) from e
        raise ValueError(f"{path}: not a PyTorch model file or checkpoint (not a weights-only pickle)") from e
    except (RuntimeError, EOFError, KeyError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(
            f"{path}: not a PyTorch model file or checkpoint ({type(e).__name__}: {_first_line(e)})"
        ) from e
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: holds a {type(blob).__name__}, not an ersam_ssl model file or checkpoint")
    return blob


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (e.g. ``"model."`` in a Lightning checkpoint), without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _state_dict_of(source: str | Path | dict | nn.Module) -> dict[str, torch.Tensor]:
    """Model-level state dict (keys like ``backbone.stem...``) from any supported source."""
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, dict) and "state_dict" not in source and "format" not in source:
        return source
    blob = source if isinstance(source, dict) else load_blob(source)
    if "state_dict" not in blob:
        raise ValueError(f"{source}: no 'state_dict'; not an ersam_ssl model file or checkpoint")
    state = blob["state_dict"]
    if blob.get("format") == MODEL_FORMAT:
        return state
    # Lightning checkpoint of a training module: the counter lives under "model." (teachers, EMA copies and
    # projection heads under other prefixes are ignored).
    inner = strip_prefix(state, "model.")
    return inner or state


def load_weights(
    model: nn.Module,
    source: str | Path | dict | nn.Module,
    parts: Sequence[str] = ("frontend", "backbone"),
    strict: bool = True,
) -> list[str]:
    """Copy the ``parts`` of ``source``'s counter into ``model`` (the stage-to-stage hand-over).

    Example:
        >>> student = create_model("sam")
        >>> load_weights(student, "runs/x/pretrain/last.ckpt")                   # backbone from pretraining
        >>> load_weights(student, "runs/x/finetune/model.pt", parts=("",))       # everything

    Args:
        model: the destination counter.
        source: a model file, a Lightning checkpoint of an ersam_ssl module, a state dict or a module.
        parts: top-level module names to copy (``""`` = all).
        strict: every destination key of the chosen parts must be present with the same shape.

    Returns:
        The list of copied keys.
    """
    src = _state_dict_of(source)
    dst = model.state_dict()
    prefixes = tuple("" if p == "" else f"{p}." for p in parts)
    wanted = [k for k in dst if k.startswith(prefixes)]
    missing = [k for k in wanted if k not in src]
    mismatched = [k for k in wanted if k in src and src[k].shape != dst[k].shape]
    if strict and (missing or mismatched):
        raise ValueError(
            f"cannot load {parts}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(mismatched)} with other shapes (e.g. {mismatched[:3]}); architectures differ?"
        )
    copied = [k for k in wanted if k in src and src[k].shape == dst[k].shape]
    with torch.no_grad():
        for k in copied:
            dst[k].copy_(src[k])
    return copied
