import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ersam_ssl.data import (
    LibriCountSource,
    MixtureConfig,
    MixtureDataset,
    check_disjoint,
    materialize,
)
from ersam_ssl.data.mixtures import FileCountDataset


@pytest.fixture(scope="module")
def ds(small_engine):
    return small_engine.mixtures("train", 24, "clean")


def test_each_mixture_has_exactly_k_distinct_speakers_of_its_split(ds, small_engine):
    allowed = set(small_engine.splits["train"])
    for i in range(len(ds)):
        m = ds.generate(i)
        assert m.count == i % 4 == len(m.meta["speakers"])
        assert len(set(m.meta["speakers"])) == m.count
        assert set(m.meta["speakers"]) <= allowed
        assert m.activity.shape[0] == m.count
        assert 0 <= m.meta["max_concurrent"] <= m.count
        assert m.audio.shape == (16000,) and m.audio.dtype == np.float32
        assert all(0.9 <= s <= 1.1 for s in m.meta["speeds"])
        assert all(-6 <= g <= 6 for g in m.meta["gains_db"])


def test_labels_are_balanced(small_engine):
    d = small_engine.mixtures("train", 400, "clean")
    assert np.bincount(d.counts()).tolist() == [100] * 4


def test_zero_speakers_is_background_only(ds):
    quiet = ds.generate(0)
    loud = ds.generate(1)
    assert quiet.count == 0 and quiet.meta["speakers"] == []
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    assert rms(quiet.audio) < 0.01 < rms(loud.audio)


def test_speech_level_does_not_reveal_count(small_engine):
    d = small_engine.mixtures("train", 200, "clean")
    by_k = {k: [] for k in range(1, 4)}
    for i in range(200):
        m = d.generate(i)
        if m.count:
            by_k[m.count].append(np.sqrt(np.mean(m.audio**2)))
    means = [np.mean(v) for v in by_k.values()]
    assert max(means) / min(means) < 1.1


def test_deterministic_in_any_order_and_any_worker(ds):
    ref = [ds[i][0] for i in range(len(ds))]
    rev = [ds[i][0] for i in reversed(range(len(ds)))][::-1]
    for a, b in zip(ref, rev):
        assert torch.equal(a, b)
    workers = torch.cat([x for x, _ in DataLoader(ds, batch_size=5, num_workers=2)])
    assert torch.equal(workers, torch.stack(ref))


def test_seed_and_split_change_the_stream(small_engine):
    a = small_engine.mixtures("train", 8, "clean")
    b = small_engine.mixtures("train", 8, "clean", stream="other")
    assert not np.array_equal(a.generate(5).audio, b.generate(5).audio)


def test_mixture_splits_are_speaker_disjoint(small_engine):
    splits = small_engine.splits
    check_disjoint(splits)
    used = {}
    for split in ("train", "val", "test"):
        d = small_engine.mixtures(split, 40, "clinical")
        used[split] = {s for i in range(len(d)) for s in d.generate(i).meta["speakers"]}
        assert used[split] <= set(splits[split])
    assert (
        not (used["train"] & used["val"])
        and not (used["train"] & used["test"])
        and not (used["val"] & used["test"])
    )
    assert not set(splits["babble"]) & (used["train"] | used["val"] | used["test"])


def test_materialize_and_read_back_is_identical(small_engine, tmp_path):
    d = small_engine.mixtures("test", 12, "clinical")
    manifest = materialize(d, tmp_path)
    assert manifest.is_file() and len(manifest.read_text().splitlines()) == 13
    src = LibriCountSource(tmp_path)
    files = FileCountDataset(src, num_samples=d.config.num_samples)
    by_index = {u.meta["index"]: i for i, u in enumerate(src.utterances)}
    for idx in range(len(d)):
        m = d.generate(idx)
        x, y = files[by_index[idx]]
        assert int(y) == m.count
        np.testing.assert_array_equal(x.numpy(), m.audio)
        assert src.utterances[by_index[idx]].meta == m.meta


def test_too_few_speakers_for_max_count_is_a_clear_error(small_engine):
    cfg = MixtureConfig(max_speakers=10, duration=1.0)
    with pytest.raises(ValueError, match="fewer than max_speakers"):
        MixtureDataset(small_engine.bank, small_engine.splits["val"], 4, cfg)


def test_short_speaker_streams_are_looped(small_engine):
    cfg = MixtureConfig(max_speakers=3, duration=12.0)  # longer than each speaker's ~6 s of speech
    d = MixtureDataset(small_engine.bank, small_engine.splits["train"], 4, cfg)
    m = d.generate(3)
    assert m.audio.shape == (12 * 16000,) and m.count == 3


def test_precomputed_items_are_identical(small_engine):
    fresh = small_engine.mixtures("train", 10, "clinical", stream="pc")
    cached = small_engine.mixtures("train", 10, "clinical", stream="pc").precompute(
        num_workers=2, batch_size=3
    )
    for i in range(10):
        a, ya = fresh[i]
        b, yb = cached[i]
        assert torch.equal(a, b) and int(ya) == int(yb)
