"""The model contract every speaker counter follows, and the model factory.

A :class:`CountModel` is ``frontend`` (waveform → features) → ``backbone`` (features → embedding) →
``head`` (embedding → raw output). It serialises as a plain JSON dict (:meth:`CountModel.config`) from
which :meth:`CountModel.from_config` rebuilds the same architecture, in the spirit of asteroid's
``serialize()`` / ``from_pretrained()``; weights travel separately as a ``state_dict``.

Models register themselves in :data:`MODELS` where they are defined. The package ``__init__``, which
Python runs whenever a module of the package is imported, imports every model module, so the registry is
complete by the time a model is built (no import of the package from here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ersam_ssl.models.heads import CountHead
from ersam_ssl.registry import Registry

MODELS: Registry[Callable[..., CountModel]] = Registry("model")


class CountModel(nn.Module):
    """Speaker counter: raw 16 kHz mono waveform ``[B, T]`` → raw head output ``[B, C_out]``.

    Args:
        frontend: waveform ``[B, T]`` → features (e.g. log-mel ``[B, n_mels, frames]``).
        backbone: features → embedding ``[B, embed_dim]``.
        head: a :class:`~ersam_ssl.models.heads.CountHead`.
        embed_dim: size of the backbone embedding.
        config: JSON-serialisable ``{"name": ..., "kwargs": {...}}`` such that
            ``create_model(config["name"], **config["kwargs"])`` rebuilds this architecture.
    """

    def __init__(
        self, frontend: nn.Module, backbone: nn.Module, head: CountHead, embed_dim: int, config: dict
    ) -> None:
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.head = head
        self.embed_dim = embed_dim
        self.num_classes = head.num_classes
        self._config = copy.deepcopy(config)

    def embed(self, wave: Tensor) -> Tensor:
        """Backbone embedding ``[B, embed_dim]`` (for contrastive pretraining and distillation)."""
        return self.backbone(self.frontend(wave))

    def forward(self, wave: Tensor) -> Tensor:
        return self.head(self.embed(wave))

    def predict(self, wave: Tensor) -> Tensor:
        """Estimated speaker counts ``LongTensor[B]``."""
        return self.head.predict(self(wave))

    def config(self) -> dict:
        """JSON-serialisable description of the architecture (not the weights)."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config: dict) -> CountModel:
        """Rebuild the architecture described by :meth:`config` (fresh weights)."""
        kwargs = dict(config.get("kwargs", {}))
        if config["name"] == "sam":  # model files from before the level_norm option: no normalisation
            kwargs.setdefault("level_norm", "none")
        return create_model(config["name"], **kwargs)


def create_model(name: str, **kwargs: Any) -> CountModel:
    """Build a registered model by name: ``"crnn"`` (CountNet) or ``"sam"`` (a member of the SAM space).

    Example:
        >>> model = create_model("sam")  # the default architecture of SAMSpace()
        >>> model = create_model("crnn", num_classes=11)
    """
    return MODELS.get(name)(**kwargs)
