import numpy as np
import pytest
import torch

from ersam_ssl.data import AmbianceLevels, SAMDataModule, ViewDataset, make_view


def test_views_keep_shape_and_are_finite():
    x = (np.random.default_rng(0).standard_normal(16000) * 0.05).astype(np.float32)
    for name in ("identity", "weak", "strong"):
        y = make_view(name)(x)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.array_equal(make_view("identity")(x), x)
    assert not np.allclose(make_view("strong")(x), x)


def test_view_dataset_keys_and_hidden_labels(small_engine):
    base = small_engine.pool
    d = ViewDataset(base, {"weak": "weak", "strong": "strong"}, indices=[3, 5], hide_label=True)
    item = d[1]
    assert set(item) == {"weak", "strong", "idx", "y_hidden"}
    assert item["idx"].item() == 1 and item["y_hidden"].item() == base.count(5)
    lab = ViewDataset(base, {"x": "identity"})[2]
    assert torch.equal(lab["x"], base[2][0]) and lab["y"].item() == base.count(2)


def test_levels_default_mapping():
    lv = AmbianceLevels()
    assert [lv.level(k) for k in range(7)] == [0, 1, 2, 2, 3, 3, 3]
    assert lv.name(3) == "small group" and lv.name(0) == "none"
    m = lv.matrix(11)
    assert m.shape == (11, 4) and np.allclose(m.sum(1), 1)
    with pytest.raises(ValueError):
        AmbianceLevels(lower_bounds=(2, 1), names=("a", "b", "c"))


def test_datamodule_serves_labeled_and_unlabeled(small_engine):
    dm = SAMDataModule(
        small_engine, labeled_views={"x": "weak"}, unlabeled_views={"weak": "weak", "strong": "strong"}
    )
    loaders = dm.train_dataloader()
    lab = next(iter(loaders["labeled"]))
    unl = next(iter(loaders["unlabeled"]))
    assert lab["x"].shape == (4, 16000) and lab["y"].shape == (4,)
    assert unl["weak"].shape == (8, 16000) and "y" not in unl
    lab_idx, unl_idx = small_engine.budget
    assert lab_idx.size == 2 * 4 and unl_idx.size == 40 - 8
    val = next(iter(dm.val_dataloader()))
    assert val["x"].shape[1] == 16000


def test_datamodule_with_worker_processes(small_engine):
    dm = SAMDataModule(small_engine, labeled_views={"x": "identity"}, num_workers=2)
    batches = list(dm.train_dataloader())
    assert sum(b["x"].shape[0] for b in batches) == 8


def test_small_labeled_sets_repeat_to_a_useful_epoch(small_engine):
    from dataclasses import replace

    from ersam_ssl.data import DataEngine
    from ersam_ssl.data.sampling import EpochSampler

    engine = DataEngine(replace(small_engine.config, min_epoch_items=20), source=small_engine.source)
    dm = SAMDataModule(engine, labeled_views={"x": "identity"})
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochSampler) and len(loader.sampler) == 24  # 8 labeled x 3 repeats
    keys = list(loader.sampler)
    assert sorted(k[0] for k in keys) == sorted(list(range(8)) * 3)
    assert len({k[3] for k in keys}) == 3  # each copy has its own order and its own augmentation draws
    assert keys == list(EpochSampler(8, seed=engine.config.seed, repeats=3, clock=lambda: 0))
