"""Mixture supervision: a counter trained on streamed, never-repeating mixtures with their exact counts.

A generated mixture carries its count for free, so the source corpus is an unlimited labeled set. Trained
across randomized acoustic domains and conversational mixtures (:mod:`ersam_ssl.data.stream`), this is the
fully supervised reference every few-label / self-supervised result is compared against (its ceiling),
and the pretraining that the few-label stages start from. CountNet (Stöter et al., TASLP 2019) trained
its CRNN the same way on LibriCount's mixtures.
"""

from __future__ import annotations

from typing import ClassVar

from ersam_ssl.ssl.base import SupervisedCounter
from ersam_ssl.ssl.methods import METHODS


@METHODS.register("mixture")
class MixtureSupervision(SupervisedCounter):
    """:class:`SupervisedCounter` whose labeled data is the mixture stream (``DATA = "stream"``).

    No augmentation view: the stream's domain randomization (noise, reverberation, devices, level,
    conversation) is the augmentation, and every clip is new.
    """

    LABELED_VIEWS: ClassVar[dict[str, str] | None] = {"x": "identity"}
    UNLABELED_VIEWS: ClassVar[dict[str, str] | None] = None
    DATA: ClassVar[str] = "stream"
