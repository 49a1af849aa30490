import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from ersam_ssl.checkpoint import AtomicCheckpointIO, load_model, load_weights, save_model
from ersam_ssl.data import SAMDataModule
from ersam_ssl.metrics import CountMetrics, evaluate, plot_confusion
from ersam_ssl.models import create_model
from ersam_ssl.ssl.base import OptimConfig, SupervisedCounter
from ersam_ssl.trainer import TrainerConfig, averaged_module, fit, make_trainer


def tiny_sam(num_classes=4):
    return create_model("sam", num_classes=num_classes)


@pytest.mark.parametrize("name", ["sam", "crnn"])
def test_fast_dev_run_each_model(small_engine, name, tmp_path):
    model = create_model(name, num_classes=4)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    dm = SAMDataModule(small_engine, labeled_views={"x": "weak"})
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(SupervisedCounter(model), datamodule=dm)
    # one optimizer step on a finite loss changed the weights, and left them finite
    assert trainer.global_step == 1 and math.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(before[k], p) for k, p in model.named_parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    module = SupervisedCounter(model)
    (logged,) = trainer.test(module, datamodule=dm)
    # fast_dev_run tests one batch: its clips are all counted, and the metrics are in range
    confusion = np.array(module.test_results["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == len(next(iter(dm.test_dataloader()))["y"])
    assert 0 <= logged["test/accuracy"] <= 1
    assert logged["test/error_rate"] == pytest.approx(1 - logged["test/accuracy"])
    assert 0 <= logged["test/mae"] <= 3  # counts 0..3


def test_metrics_match_hand_computation():
    m = CountMetrics(4)
    preds = torch.tensor([0, 1, 3, 2, 2])
    target = torch.tensor([0, 2, 3, 2, 0])
    logp = torch.log(torch.nn.functional.one_hot(preds, 4).float() * 0.7 + 0.075)
    m.update(preds, logp, target)
    r = m.compute()
    assert r["mae"] == pytest.approx((0 + 1 + 0 + 0 + 2) / 5)
    assert r["accuracy"] == pytest.approx(3 / 5) and r["error_rate"] == pytest.approx(2 / 5)
    # levels: 0->0, 1->1, 2->2, 3->2 ; pred levels [0,1,2,2,2] vs true [0,2,2,2,0]
    assert r["level_accuracy"] == pytest.approx(3 / 5)
    pcm = r["per_count_mae"]
    assert (
        pcm[0] == pytest.approx(1.0) and math.isnan(pcm[1]) and pcm[2] == pytest.approx(0.5) and pcm[3] == 0
    )
    assert np.array(r["confusion"]).sum() == 5 and r["confusion"][2][1] == 1
    # all predictions have confidence 0.775; accuracy 0.6 -> |0.775 - 0.6| in the single occupied bin
    assert r["ece"] == pytest.approx(0.175, abs=1e-4)


def test_training_learns_and_checkpoints_hand_over(small_engine, tmp_path):
    torch.manual_seed(0)
    model = tiny_sam()
    dm = SAMDataModule(small_engine, labeled_views={"x": "identity"}, labeled_indices=np.arange(40))
    before = evaluate(model, dm.val_dataloader())
    module = SupervisedCounter(model, OptimConfig(lr=3e-3))
    cfg = TrainerConfig(max_steps=60, checkpoint_every_steps=20, progress_bar=False)
    fit(module, dm, cfg, tmp_path / "sup")
    ckpt = tmp_path / "sup" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    blob = torch.load(ckpt, weights_only=True)
    assert blob["global_step"] == 60
    # the training set is learned (loss decreases); evaluation API works on any loader
    train_eval = evaluate(model, [(b["x"], b["y"]) for b in dm.train_dataloader()])
    assert train_eval["error_rate"] < before["error_rate"] or train_eval["mae"] < before["mae"]
    # hand-over: the checkpoint rebuilds the counter, and parts load into a fresh one
    rebuilt = load_model(ckpt)
    x = torch.randn(2, 16000) * 0.05
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x))
    fresh = tiny_sam()
    keys = load_weights(fresh, ckpt)
    assert keys and all(k.startswith(("frontend.", "backbone.")) for k in keys)
    fresh.eval()
    torch.testing.assert_close(fresh.embed(x), model.embed(x))
    path = save_model(model, tmp_path / "model.pt")
    torch.testing.assert_close(load_model(path)(x), model(x))
    with pytest.raises(ValueError, match="architectures differ"):
        load_weights(create_model("crnn", num_classes=4), path)


def test_resume_continues_from_last_checkpoint(small_engine, tmp_path):
    torch.manual_seed(0)
    dm = SAMDataModule(small_engine, labeled_views={"x": "identity"})
    cfg = TrainerConfig(max_steps=10, checkpoint_every_steps=5, progress_bar=False)
    fit(SupervisedCounter(tiny_sam()), dm, cfg, tmp_path)
    cfg2 = TrainerConfig(max_steps=16, checkpoint_every_steps=4, progress_bar=False)
    trainer = fit(SupervisedCounter(tiny_sam()), dm, cfg2, tmp_path)
    assert trainer.global_step == 16


def test_atomic_checkpoint_never_leaves_partial_files(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(3)}, target)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"a": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(target)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_confusion_png(tmp_path):
    p = plot_confusion([[3, 1], [0, 4]], tmp_path / "cm.png")
    assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"


def test_trainer_scale_out_settings_pass_through(tmp_path):
    t = make_trainer(TrainerConfig(devices=1, strategy="auto", progress_bar=False), tmp_path)
    assert t.num_devices == 1 and t.num_nodes == 1


class _Kill(pl.Callback):
    """Simulates a kill: raises in the middle of an epoch, after an epoch-boundary checkpoint was written."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise SystemExit("killed")


def _run(engine, out, steps, seed=0, callbacks=None, ema_decay=0.0):
    pl.seed_everything(seed)
    dm = SAMDataModule(engine, labeled_views={"x": "weak"}, unlabeled_views=None)
    module = SupervisedCounter(create_model("sam", num_classes=4))
    cfg = TrainerConfig(max_steps=steps, progress_bar=False, ema_decay=ema_decay)
    fit(module, dm, cfg, out, callbacks=callbacks)
    return module


def test_killed_run_resumes_to_the_identical_result(small_engine, tmp_path):
    """An uninterrupted run and a run killed mid-epoch then resumed end with identical weights."""
    full = _run(small_engine, tmp_path / "full", steps=8)  # 2 batches per epoch (8 labeled / 4)
    with pytest.raises(SystemExit):
        _run(small_engine, tmp_path / "killed", steps=8, callbacks=[_Kill(at_step=5)])
    assert (
        torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    )
    resumed = _run(small_engine, tmp_path / "killed", steps=8, seed=123)  # other RNG state at start
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_ema_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        TrainerConfig(ema_decay=decay)


class _RecordRaw(pl.Callback):
    """After every step: the raw weights/buffers, and what ``averaged_module`` exposes at that moment."""

    def __init__(self):
        self.raw, self.seen = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.raw.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})
        self.seen.append({k: v.detach().clone() for k, v in averaged_module(trainer).model.state_dict().items()})


def test_ema_weights_are_the_exponential_average_of_the_trained_ones(small_engine, tmp_path):
    decay, rec = 0.6, _RecordRaw()
    module = _run(small_engine, tmp_path, steps=5, callbacks=[rec], ema_decay=decay)
    assert len(rec.raw) == 5
    avg = {k: v.double() for k, v in rec.raw[0].items()}  # the first update copies the weights
    for t, raw in enumerate(rec.raw):
        if t:
            avg = {k: decay * a + (1 - decay) * raw[k].double() for k, a in avg.items()}
        for k, a in avg.items():  # during training the average is readable after each step
            if rec.seen[t][k].is_floating_point():
                torch.testing.assert_close(rec.seen[t][k].double(), a, rtol=1e-5, atol=1e-6)
    final = module.model.state_dict()
    floats = [k for k, v in final.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)  # BatchNorm statistics are averaged too
    for k in floats:  # training ended on the average, not on the last raw weights
        torch.testing.assert_close(final[k].double(), avg[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(final[k], rec.raw[-1][k]) for k in floats)


def test_ema_run_killed_and_resumed_ends_identical(small_engine, tmp_path):
    full = _run(small_engine, tmp_path / "full", steps=8, ema_decay=0.9)
    with pytest.raises(SystemExit):
        _run(small_engine, tmp_path / "killed", steps=8, callbacks=[_Kill(at_step=5)], ema_decay=0.9)
    resumed = _run(small_engine, tmp_path / "killed", steps=8, seed=123, ema_decay=0.9)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
