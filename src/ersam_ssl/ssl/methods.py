"""Registry of training methods and the data views each one consumes.

Every method module registers its LightningModule here where it is defined (``@METHODS.register(name)``)
and declares the augmentation views it reads as class attributes ``LABELED_VIEWS`` / ``UNLABELED_VIEWS``
(``None``: that loader is not used). :func:`datamodule_for` turns them into the matching
:class:`~ersam_ssl.data.SAMDataModule`, so a recipe never restates which views a method needs.

The pipeline (:mod:`ersam_ssl.pipeline`) selects its stages' methods here by name: a method lists the
stages it serves in ``PIPELINE_STAGES`` and is built with ``from_stage(model, stage_config, levels)``
(:meth:`~ersam_ssl.ssl.base.CounterModule.from_stage`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ersam_ssl.data.datamodule import DataEngine, SAMDataModule
from ersam_ssl.data.stream import MixtureStreamDataModule
from ersam_ssl.registry import Registry

METHODS: Registry[type] = Registry("training method")

# SupervisedCounter (base.py) predates the view attributes; its views are the defaults here.
_DEFAULT_VIEWS: dict[str, dict[str, str] | None] = {"LABELED_VIEWS": {"x": "weak"}, "UNLABELED_VIEWS": None}


def views_of(method: type | Any) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """``(labeled_views, unlabeled_views)`` a method class (or instance) trains on."""
    return (
        getattr(method, "LABELED_VIEWS", _DEFAULT_VIEWS["LABELED_VIEWS"]),
        getattr(method, "UNLABELED_VIEWS", _DEFAULT_VIEWS["UNLABELED_VIEWS"]),
    )


def datamodule_for(
    method: type | Any,
    engine: DataEngine,
    labeled_indices: np.ndarray | None = None,
    **kwargs: Any,
) -> SAMDataModule | MixtureStreamDataModule:
    """The :class:`SAMDataModule` serving ``method``'s views from ``engine``.

    Example:
        >>> dm = datamodule_for(FixMatch, engine)      # labeled {"x": weak} + unlabeled {"weak", "strong"}

    Args:
        method: a registered method class or instance.
        engine: the shared data engine.
        labeled_indices: override the engine's labeled budget (pool indices).
        **kwargs: passed to :class:`SAMDataModule` (batch sizes, workers).

    A method with ``DATA = "stream"`` (mixture supervision) trains on fresh generated mixtures instead of
    the pool: it gets a :class:`~ersam_ssl.data.stream.MixtureStreamDataModule` (``batch_size`` and
    ``num_workers`` apply).
    """
    data = getattr(method, "DATA", "pool")
    if data in ("stream", "stream+target"):
        if labeled_indices is not None:
            raise ValueError(
                "a streamed method takes the engine's label budget (labeled_indices not supported)"
            )
        return MixtureStreamDataModule(
            engine,
            batch_size=kwargs.get("batch_size"),
            num_workers=kwargs.get("num_workers"),
            target_batch_size=kwargs.get("target_batch_size", 16) if data == "stream+target" else None,
        )
    labeled, unlabeled = views_of(method)
    return SAMDataModule(
        engine, labeled_views=labeled, unlabeled_views=unlabeled, labeled_indices=labeled_indices, **kwargs
    )
