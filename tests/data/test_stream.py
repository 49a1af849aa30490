"""Conversational mixtures, domain randomization and the streamed mixture-supervision data."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ersam_ssl.data import (
    MixtureDataset,
    MixtureStreamDataModule,
    ScenarioRenderer,
    StreamSampler,
    get_scenario,
)
from ersam_ssl.data.bank import VAD_FRAME
from ersam_ssl.data.scenarios import DEVICE_BANDS_HZ, _biquad


def _conversations(engine, n=40, **kw):
    cfg = replace(engine.config.mixture, conversation_prob=1.0, backchannel_prob=0.5, **kw)
    return MixtureDataset(engine.bank, engine.splits["train"], n, cfg, seed=3, split="conv")


@pytest.mark.parametrize("kw", [{}, {"max_speakers": 7, "max_group": 2}], ids=["one", "parallel"])
def test_conversation_label_is_the_number_of_speakers_active_long_enough(small_engine, kw):
    ds = _conversations(small_engine, **kw)
    min_frames = np.ceil(ds.config.min_speech_s * ds.config.sample_rate / VAD_FRAME)
    backchannels = 0
    for i in range(len(ds)):
        m = ds.generate(i)
        assert m.count == ds.count(i)
        if m.count == 0:
            continue
        assert m.meta["conversation"]
        size = ds.config.max_group
        assert m.meta["conversation_groups"] == (-(-m.count // size) if size else 1)
        talkers = int((m.activity.sum(axis=1) >= min_frames).sum())
        assert talkers == m.count, (i, m.activity.sum(axis=1))
        if "backchannel_speaker" in m.meta:  # present in the audio, below the threshold, not counted
            backchannels += 1
            assert m.activity.shape[0] == m.count + 1
            assert m.activity[-1].sum() < min_frames
            assert m.meta["backchannel_speaker"] not in m.meta["speakers"]
    assert backchannels > 0


def test_conversation_turns_take_turns(small_engine):
    """In a conversation speakers are silent for part of the window (in a LibriCount mixture they are not)."""
    ds = _conversations(small_engine, duration=1.0)
    plain = small_engine.mixtures("train", 40, "clean")
    share = lambda d: np.mean([d.generate(i).activity.mean() for i in range(1, 40) if i % 4])  # noqa: E731
    assert share(ds) < 0.8 * share(plain)


def test_many_speakers_talk_in_parallel_conversations_of_at_most_max_group(monkeypatch):
    from ersam_ssl.data import mixtures

    cfg = mixtures.MixtureConfig(max_group=4)
    frames = cfg.num_samples // VAD_FRAME
    sizes = []
    real = mixtures._conversation
    monkeypatch.setattr(mixtures, "_conversation", lambda k, *a: sizes.append(k) or real(k, *a))
    for k, groups in ((1, [1]), (4, [4]), (5, [3, 2]), (8, [4, 4]), (10, [4, 3, 3])):
        sizes.clear()
        env = mixtures._turn_plan(k, frames, cfg, np.random.default_rng(k))
        assert sizes == groups and env.shape == (k, frames) and env.any(axis=1).all()
    sizes.clear()
    mixtures._turn_plan(10, frames, replace(cfg, max_group=0), np.random.default_rng(0))
    assert sizes == [10]  # max_group=0: one conversation of everybody
    # up to max_group speakers: the plan of one conversation, draw for draw
    for k in (2, 4):
        a = mixtures._turn_plan(k, frames, cfg, np.random.default_rng(9))
        np.testing.assert_array_equal(a, real(k, frames, cfg, np.random.default_rng(9)))
    # parallel conversations: more voices at once and longer turns than ten people in one conversation
    def stats(c):
        envs = [mixtures._turn_plan(10, frames, c, np.random.default_rng(s)) for s in range(30)]
        return np.mean([e.sum(axis=0).mean() for e in envs]), np.mean([e.sum(axis=1).mean() for e in envs])
    (conc_groups, turn_groups), (conc_one, turn_one) = stats(cfg), stats(replace(cfg, max_group=0))
    assert conc_groups > 1.5 * conc_one and turn_groups > 1.5 * turn_one
    with pytest.raises(ValueError, match="max_group"):
        replace(cfg, max_group=-1).validate()


def test_no_conversation_leaves_items_unchanged(small_engine):
    a = small_engine.mixtures("train", 8, "clean")
    cfg = replace(small_engine.config.mixture, conversation_prob=0.0, backchannel_prob=1.0)
    b = MixtureDataset(small_engine.bank, small_engine.splits["train"], 8, cfg, seed=a.seed, split="train")
    for i in range(8):
        np.testing.assert_array_equal(a.generate(i).audio, b.generate(i).audio)


def test_randomized_domain_is_seeded_and_varies_every_factor(small_engine):
    r = ScenarioRenderer(get_scenario("randomized"), seed=0, clip_samples=16000, babble=small_engine.babble)
    x = (0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    seen = {"noise": set(), "rir": 0, "mic_band_hz": set(), "level_db": [], "eq_db": []}
    for i in range(200):
        a, ma = r(x, np.random.default_rng([7, i]))
        b, mb = r(x, np.random.default_rng([7, i]))
        np.testing.assert_array_equal(a, b)
        assert ma == mb
        seen["noise"].add(ma.get("noise"))
        seen["rir"] += "rir" in ma
        seen["mic_band_hz"].add(tuple(ma.get("mic_band_hz", ())))
        seen["level_db"].append(ma["level_db"])
        seen["eq_db"] += ma.get("eq_db", [])
    assert {"white", "pink", "brown", "babble", None} <= seen["noise"]
    assert 30 < seen["rir"] < 120
    bands = seen["mic_band_hz"] - {()}
    assert () in seen["mic_band_hz"] and len(bands) > 50  # full band, and a continuum of device bands
    # every band is one of the four devices with its edges moved by at most mic_jitter (25 %)
    for lo, hi in bands:
        assert any(
            0.74 * a <= lo <= 1.26 * a and 0.74 * b <= hi <= min(1.26 * b, 7840) for a, b in DEVICE_BANDS_HZ
        )
    his = sorted(hi for _, hi in bands)
    assert his[0] < 3400 and his[-1] > 7000
    assert 150 < len(seen["eq_db"]) < 450  # three gains per coloured clip, about half of the clips
    assert min(seen["eq_db"]) < -8 and max(seen["eq_db"]) > 8 and max(map(abs, seen["eq_db"])) <= 10
    assert min(seen["level_db"]) < -20 and max(seen["level_db"]) > 10


def test_stream_never_repeats_and_resumes_where_it_stopped(small_engine):
    sampler = StreamSampler(64, 8, clock=lambda: 0)
    keys = list(sampler)
    assert keys == list(range(64))
    assert list(StreamSampler(64, 8, clock=lambda: 5)) == keys[40:]

    class _Trainer:
        max_steps = 8
        global_step = 0

    dm = MixtureStreamDataModule(small_engine, batch_size=8, num_workers=0)
    dm.trainer = _Trainer()
    batches = list(dm.train_dataloader())
    seen = set()
    for x, y in batches:
        assert x.shape == (8, 16000) and y.shape == (8,)
        for clip in x:
            seen.add(clip.numpy().tobytes())
    assert len(seen) == 64  # every clip of the epoch is new
    _Trainer.global_step = 6
    x_resumed, _ = next(iter(dm.train_dataloader()))
    torch.testing.assert_close(x_resumed, batches[6][0])


def test_replay_adaptation_trains_on_target_labels_and_the_stream(small_engine, tmp_path, one_thread):
    from conftest import small_sam
    from ersam_ssl.ssl import METHODS, datamodule_for
    from ersam_ssl.trainer import TrainerConfig, fit

    module = METHODS.get("replay")(small_sam())
    dm = datamodule_for(module, small_engine, batch_size=4, target_batch_size=4)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit(module, dm, TrainerConfig(max_steps=3, limit_val_batches=0.0, progress_bar=False), tmp_path)
    assert module.trainer.global_step == 3
    logged = module.trainer.logged_metrics
    assert {"train/target_loss", "train/replay_loss"} <= set(logged)
    assert any(not torch.equal(before[k], v) for k, v in module.model.state_dict().items())


def test_colour_filters_match_the_cookbook_gains():
    """Shelves reach their gain at the far end of the band and 0 dB at the other; a peak at its centre."""
    from scipy import signal

    for kind, probe, gain_at in (
        ("low_shelf", [5, 7990], 0),
        ("high_shelf", [5, 7990], 1),
        ("peak", [5, 1000], 1),
    ):
        for g in (-9.0, 6.0):
            _, h = signal.sosfreqz(_biquad(kind, 1000.0, g, 0.707, 16000)[None], worN=probe, fs=16000)
            db = 20 * np.log10(np.abs(h))
            np.testing.assert_allclose(db[gain_at], g, atol=0.3)
            np.testing.assert_allclose(db[1 - gain_at], 0.0, atol=0.3)


def test_stream_distillation_learns_from_counts_and_a_frozen_teacher(small_engine, tmp_path, one_thread):
    from conftest import small_sam
    from ersam_ssl.ssl import METHODS, datamodule_for
    from ersam_ssl.trainer import TrainerConfig, fit

    teacher = small_sam()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = METHODS.get("stream-distill")(small_sam(), teacher)
    dm = datamodule_for(module, small_engine, batch_size=4)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit(module, dm, TrainerConfig(max_steps=3, limit_val_batches=0.0, progress_bar=False), tmp_path)
    assert module.trainer.global_step == 3
    logged = module.trainer.logged_metrics
    assert {"train/ce", "train/kd", "train/kd_weight_mean"} <= set(logged)
    assert all(torch.isfinite(logged[k]) for k in ("train/ce", "train/kd"))
    assert any(not torch.equal(before[k], v) for k, v in module.model.state_dict().items())
    for k, v in teacher.state_dict().items():  # the teacher stays frozen
        torch.testing.assert_close(v, teacher_state[k])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])  # checkpoints hold the student
