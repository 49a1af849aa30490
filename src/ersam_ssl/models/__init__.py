"""Speaker-counting models: frontends, count heads, CountNet's CRNN and the SAM search space.

Every model is a :class:`CountModel` (waveform ``[B, T]`` → frontend → backbone → head); build one by
name with :func:`create_model` (``"crnn"``, ``"sam"``) or rebuild one with
``CountModel.from_config(model.config())``.

Modules: ``base`` (the model contract, the ``MODELS`` registry and the factory), ``frontend`` (waveform →
features), ``heads`` (count heads), ``crnn`` (CountNet), ``blocks`` (the SAM space's building blocks),
``space`` (the SAM space, its members and ``build_model``), ``op_specs`` (members as per-op specs for
hardware cost models, and every op of the space), ``slicing`` (weight sharing between members).

A model registers itself where it is defined (``@MODELS.register``). This ``__init__`` imports every
model module, and Python runs it before any module of the package, so the registry is complete before
:func:`create_model` can be called; a new model module must be imported here.
"""

from ersam_ssl.models.base import MODELS, CountModel, create_model
from ersam_ssl.models.blocks import POOL_HEADS, MBConv1d, SAMBackbone
from ersam_ssl.models.crnn import CountNetBackbone, CountNetCRNN
from ersam_ssl.models.frontend import LogMel, StftMagnitude
from ersam_ssl.models.heads import (
    HEADS,
    ClassificationHead,
    CountHead,
    OrdinalHead,
    PoissonHead,
    build_head,
)
from ersam_ssl.models.op_specs import layer_specs, make_op, space_op_specs
from ersam_ssl.models.slicing import subnet_state_dict
from ersam_ssl.models.space import SAMSpace, build_model

__all__ = [
    "HEADS",
    "MODELS",
    "POOL_HEADS",
    "ClassificationHead",
    "CountHead",
    "CountModel",
    "CountNetBackbone",
    "CountNetCRNN",
    "LogMel",
    "MBConv1d",
    "OrdinalHead",
    "PoissonHead",
    "SAMBackbone",
    "SAMSpace",
    "StftMagnitude",
    "build_head",
    "build_model",
    "create_model",
    "layer_specs",
    "make_op",
    "space_op_specs",
    "subnet_state_dict",
]
