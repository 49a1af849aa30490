"""Item 2: only ``-1`` means "every clip labeled"; any other negative label budget is an error."""

from __future__ import annotations

import numpy as np
import pytest

from ersam_ssl.data import ALL_LABELS, DataConfig, label_budget
from ersam_ssl.pipeline import load_config


@pytest.mark.parametrize("value", [-5, -2])
def test_negative_labels_per_class_other_than_minus_one_is_an_error(value: int) -> None:
    with pytest.raises(ValueError, match=f"labels_per_class={value}"):
        load_config(None, [f"data.labels_per_class={value}"])
    with pytest.raises(ValueError, match="-1 for all"):
        label_budget(np.arange(12) % 4, value, num_classes=4)


def test_minus_one_still_labels_every_clip() -> None:
    assert load_config(None, ["data.labels_per_class=-1"]).data.labels_per_class == ALL_LABELS
    DataConfig(labels_per_class=ALL_LABELS).validate()
    lab, unl = label_budget(np.arange(12) % 4, ALL_LABELS, num_classes=4)
    assert lab.tolist() == list(range(12)) and unl.size == 0
