import numpy as np
import pytest

from ersam_ssl.data import check_disjoint, label_budget, speaker_splits


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("n", [12, 50, 251])
def test_splits_partition_speakers(seed, n):
    spk = [f"s{i}" for i in range(n)]
    out = speaker_splits(spk, seed=seed)
    check_disjoint(out)
    assert sorted(s for v in out.values() for s in v) == sorted(spk)
    assert abs(len(out["train"]) - 0.7 * n) <= 1


def test_split_is_stable_when_speakers_are_added():
    a = speaker_splits([f"s{i}" for i in range(100)], seed=3)
    b = speaker_splits([f"s{i}" for i in range(101)], seed=3)
    moved = sum(len(set(a[k]) - set(b[k])) for k in a)
    assert moved <= 5


def test_subset_mapping_and_min_speakers():
    spk = [f"s{i}" for i in range(30)]
    subset_of = {s: ("test-clean" if i < 10 else "train") for i, s in enumerate(spk)}
    out = speaker_splits(spk, {"train": 0.8, "val": 0.2}, subsets={"test-clean": "test"}, subset_of=subset_of)
    assert out["test"] == sorted(spk[:10])
    assert not set(out["train"]) & set(out["test"])
    with pytest.raises(ValueError, match="split 'val' has"):
        speaker_splits(spk, {"train": 0.9, "val": 0.1}, min_speakers={"val": 10})


def test_check_disjoint_detects_overlap():
    with pytest.raises(AssertionError, match="s1"):
        check_disjoint({"train": ["s1", "s2"], "test": ["s1"]})


def test_label_budget_per_class_and_seeded():
    labels = np.arange(110) % 11
    lab, unl = label_budget(labels, 5, seed=0)
    assert np.bincount(labels[lab], minlength=11).tolist() == [5] * 11
    assert lab.size + unl.size == 110 and not set(lab) & set(unl)
    assert np.array_equal(lab, label_budget(labels, 5, seed=0)[0])
    assert not np.array_equal(lab, label_budget(labels, 5, seed=1)[0])
    small = label_budget(labels, 1, seed=0)[0]
    assert small.size == 11
    all_lab, none = label_budget(labels, -1)
    assert all_lab.size == 110 and none.size == 0
    with pytest.raises(ValueError, match="fewer than the budget"):
        label_budget(labels, 11)
