"""Stage hand-over, checkpoints, resume and loggers of the semi-supervised training modules."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from conftest import SMALL_NUM_CLASSES as NUM_CLASSES
from conftest import small_sam as sam
from ersam_ssl.checkpoint import load_model, load_weights, save_model
from ersam_ssl.models import SAMSpace, subnet_state_dict
from ersam_ssl.ssl import (
    ContrastivePretrain,
    Distill,
    Finetune,
    FixMatch,
    FixMatchConfig,
    OptimConfig,
    datamodule_for,
)
from ersam_ssl.trainer import TrainerConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_distill_keeps_teacher_frozen_out_of_optimizer_and_checkpoint(small_engine, tmp_path):
    torch.manual_seed(0)
    teacher = sam(head_kwargs={"dropout": 0.5})
    teacher_path = save_model(teacher, tmp_path / "teacher.pt")
    module = Distill.from_teacher_file(sam(SAMSpace().smallest()), teacher_path, OptimConfig(lr=1e-2))
    frozen = params_of(module.teacher)
    dm = datamodule_for(module, small_engine)
    seen_modes = []

    class TeacherMode(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen_modes.append(
                pl_module.teacher.training or any(m.training for m in pl_module.teacher.modules())
            )

    cfg = TrainerConfig(max_steps=3, checkpoint_every_steps=3, progress_bar=False)
    trainer = fit(module, dm, cfg, tmp_path / "kd", callbacks=[TeacherMode()])
    assert seen_modes == [False, False, False]
    assert all(torch.equal(frozen[k], v) for k, v in module.teacher.state_dict().items())
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.model.parameters()}
    blob = torch.load(tmp_path / "kd" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in blob["state_dict"])
    assert blob["hyper_parameters"]["teacher_path"] == str(teacher_path)
    student = load_model(tmp_path / "kd" / "checkpoints" / "last.ckpt")
    assert student.config() == module.model.config()
    # resuming restores the student and keeps the constructor's teacher (strict loading still passes)
    again = Distill.from_teacher_file(sam(SAMSpace().smallest()), teacher_path)
    trainer = fit(again, dm, TrainerConfig(max_steps=4, progress_bar=False), tmp_path / "kd")
    assert trainer.global_step == 4


def test_pretrain_finetune_distill_nas_hand_over(small_engine, tmp_path):
    torch.manual_seed(0)
    largest = SAMSpace().largest()
    cfg = TrainerConfig(max_steps=2, checkpoint_every_steps=2, progress_bar=False, limit_val_batches=1)
    pre = ContrastivePretrain.byol(sam(largest))
    fit(pre, datamodule_for(pre, small_engine), cfg, tmp_path / "pre")
    pre_ckpt = tmp_path / "pre" / "checkpoints" / "last.ckpt"

    ft = Finetune.from_pretrained(sam(largest), pre_ckpt)
    x = torch.randn(2, 16000) * 0.05
    pre.model.eval(), ft.model.eval()
    torch.testing.assert_close(ft.model.embed(x), pre.model.embed(x))
    assert ft.hparams["pretrained_from"] == str(pre_ckpt)
    fit(ft, datamodule_for(ft, small_engine), cfg, tmp_path / "ft")
    ft_ckpt = tmp_path / "ft" / "checkpoints" / "last.ckpt"

    kd = Distill.from_teacher_file(sam(SAMSpace().smallest()), ft_ckpt)
    kd.teacher.eval(), ft.model.eval()
    torch.testing.assert_close(kd.teacher(x), ft.model(x))
    fit(kd, datamodule_for(kd, small_engine), cfg, tmp_path / "kd")
    student = load_model(tmp_path / "kd" / "checkpoints" / "last.ckpt")
    kd.model.eval()
    torch.testing.assert_close(student(x), kd.model(x))

    # NAS supernet: the fine-tuned largest model's weights slice into any member of the space
    teacher_sd = load_model(ft_ckpt).state_dict()
    small_arch = {**SAMSpace().smallest(), "head": "gru"}  # the supernet's pooling head
    small = sam(small_arch)
    small.load_state_dict(subnet_state_dict(teacher_sd, small_arch, num_classes=NUM_CLASSES))
    full = sam(largest)
    assert len(load_weights(full, ft_ckpt, parts=("",))) == len(full.state_dict())


class _Killed(RuntimeError):
    pass


def test_fixmatch_resumes_from_a_killed_run(small_engine, tmp_path):
    torch.manual_seed(0)
    config = FixMatchConfig(flexmatch=True, threshold=0.0)
    dm = datamodule_for(FixMatch, small_engine)

    class KillAtStep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 5:
                raise _Killed

    cfg = TrainerConfig(max_steps=8, checkpoint_every_steps=2, progress_bar=False)
    with pytest.raises(_Killed):
        fit(FixMatch(sam(), config=config), dm, cfg, tmp_path, callbacks=[KillAtStep()])
    blob = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert blob["global_step"] == 4
    saved_predictions = blob["state_dict"]["flexmatch.predictions"]
    assert (saved_predictions >= 0).any()

    first_step = []

    class FirstStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if not first_step:
                first_step.append(trainer.global_step)
                assert torch.equal(pl_module.flexmatch.predictions, saved_predictions)

    resumed = FixMatch(sam(), config=config)
    trainer = fit(resumed, dm, cfg, tmp_path, callbacks=[FirstStep()])
    assert first_step == [4] and trainer.global_step == 8


def test_wandb_offline_logger(small_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    torch.manual_seed(0)
    module = FixMatch(sam())
    cfg = TrainerConfig(max_steps=2, log_every_steps=1, wandb=True, progress_bar=True, limit_val_batches=1)
    trainer = fit(module, datamodule_for(module, small_engine), cfg, tmp_path)
    from pytorch_lightning.loggers import WandbLogger

    assert any(isinstance(lg, WandbLogger) for lg in trainer.loggers)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())
    assert (tmp_path / "logs" / "metrics.csv").is_file()
