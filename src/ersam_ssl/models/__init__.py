"""Speaker-counting models: frontends, count heads, CountNet's CRNN and the SAM search space.

Every model is a :class:`CountModel` (waveform ``[B, T]`` → frontend → backbone → head); build one by
name with :func:`create_model` (``"crnn"``, ``"sam"``) or rebuild one with
``CountModel.from_config(model.config())``.
"""

from ersam_ssl.models.base import MODELS, CountModel, create_model
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
from ersam_ssl.models.space import (
    POOL_HEADS,
    MBConv1d,
    SAMBackbone,
    SAMSpace,
    build_model,
    layer_specs,
    make_op,
    subnet_state_dict,
)

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
    "subnet_state_dict",
]
