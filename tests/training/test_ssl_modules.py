"""The semi-supervised training modules: one fast run each, their invariants, and stage hand-over."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from conftest import SMALL_NUM_CLASSES as NUM_CLASSES
from conftest import small_sam as sam
from ersam_ssl.models import SAMSpace
from ersam_ssl.ssl import (
    BYOLConfig,
    ContrastivePretrain,
    Distill,
    DistillConfig,
    Finetune,
    FinetuneConfig,
    FixMatch,
    FixMatchConfig,
    KNNProbe,
    OptimConfig,
    datamodule_for,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def quick_fit(module: pl.LightningModule, engine, **trainer_kwargs) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         **({"fast_dev_run": True} | trainer_kwargs))  # fmt: skip
    trainer.fit(module, datamodule=datamodule_for(module, engine))
    return trainer


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ContrastivePretrain.simclr(sam()), id="simclr"),
        pytest.param(lambda: ContrastivePretrain.byol(sam()), id="byol"),
        pytest.param(lambda: FixMatch(sam()), id="fixmatch"),
        pytest.param(
            lambda: FixMatch(
                sam(),
                config=FixMatchConfig(
                    flexmatch=True, distribution_alignment=True, lambda_mix=1.0, mixing_loss="cdf"
                ),
            ),  # fmt: skip
            id="flexmatch+da+mix",
        ),
        pytest.param(lambda: Finetune(sam(), config=FinetuneConfig(1, 0.1)), id="finetune"),
        pytest.param(lambda: Distill(sam(SAMSpace().smallest()), sam()), id="distill-entropy"),
        pytest.param(
            lambda: Distill(
                sam(SAMSpace().smallest()),
                sam(head_kwargs={"dropout": 0.3}),
                config=DistillConfig(uncertainty="mc_dropout", mc_samples=3),
            ),  # fmt: skip
            id="distill-mc",
        ),
    ],
)
def test_fast_dev_run_and_test(small_engine, make):
    torch.manual_seed(0)
    module = make()
    trainer = quick_fit(module, small_engine)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    trainer.test(module, datamodule=datamodule_for(module, small_engine), verbose=False)
    assert 0.0 <= module.test_results["error_rate"] <= 1.0


def test_contrastive_trains_encoder_only_and_probes_with_knn(small_engine):
    torch.manual_seed(0)
    module = ContrastivePretrain.simclr(sam())
    before = params_of(module.model)
    trainer = quick_fit(module, small_engine, fast_dev_run=False, max_steps=2, val_check_interval=2,
                        num_sanity_val_steps=0)  # fmt: skip
    after = module.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    # the head is frozen during the fit only (DDP needs that), then handed back trainable
    assert all(p.requires_grad for p in module.model.head.parameters())
    # validation = the kNN probe of the val clips against the labeled budget (identity views)
    model = module.model.eval()
    labeled = [small_engine.pool[i] for i in small_engine.budget[0]]
    val = [small_engine.val[i] for i in range(len(small_engine.val))]
    with torch.no_grad():
        reference = model.embed(torch.stack([x for x, _ in labeled]))
        log_probs = KNNProbe()(model.embed(torch.stack([x for x, _ in val])), reference,
                               torch.tensor([int(y) for _, y in labeled]), NUM_CLASSES)  # fmt: skip
    expected_err = (log_probs.argmax(1) != torch.tensor([int(y) for _, y in val])).float().mean()
    assert trainer.callback_metrics["val_err"].item() == pytest.approx(expected_err.item(), abs=1e-6)
    # projector lives outside "model." so the hand-over copies the encoder only
    assert not any(k.startswith("model.") and "projector" in k for k in module.state_dict())


def test_knn_probe_votes_by_similarity():
    reference = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 2, 2])
    query = torch.tensor([[0.95, 0.05], [0.05, 0.95]])
    log_probs = KNNProbe(k=2)(query, reference, labels, num_classes=3)
    assert log_probs.argmax(1).tolist() == [0, 2]
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(2))
    # k=4 with a sharp temperature still prefers the closer pair
    assert KNNProbe(k=4, temperature=0.05)(query, reference, labels, 3).argmax(1).tolist() == [0, 2]


def test_byol_target_follows_online_by_ema_and_is_not_optimised(small_engine):
    torch.manual_seed(0)
    module = ContrastivePretrain.byol(sam(), BYOLConfig(base_momentum=0.5))
    target_before = params_of(module.objective.target)
    trainer = quick_fit(module, small_engine)
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in module.objective.target.parameters()}
    assert {id(p) for p in module.objective.predictor.parameters()} <= optimised
    moved = [k for k, v in module.objective.target.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, target_before[k])]  # fmt: skip
    assert any("backbone" in k for k in moved)


def test_fixmatch_threshold_above_one_gives_zero_unlabeled_loss(small_engine):
    torch.manual_seed(0)
    never = quick_fit(FixMatch(sam(), config=FixMatchConfig(threshold=1.01)), small_engine)
    assert never.callback_metrics["train/unsup"].item() == 0.0
    assert never.callback_metrics["train/mask_rate"].item() == 0.0
    assert "train/pseudo_acc" not in never.callback_metrics
    always = quick_fit(FixMatch(sam(), config=FixMatchConfig(threshold=0.0)), small_engine)
    assert always.callback_metrics["train/unsup"].item() > 0.0
    assert always.callback_metrics["train/mask_rate"].item() == 1.0
    assert 0.0 <= always.callback_metrics["train/pseudo_acc"].item() <= 1.0


def test_flexmatch_state_is_sized_to_the_unlabeled_set_and_updated(small_engine):
    torch.manual_seed(0)
    module = FixMatch(sam(), config=FixMatchConfig(flexmatch=True, threshold=0.0))
    quick_fit(module, small_engine)
    dm = datamodule_for(module, small_engine)
    assert module.flexmatch.predictions.numel() == len(dm.unlabeled_dataset())
    # threshold 0: every sample of the one batch is confident, so its prediction is recorded
    assert (module.flexmatch.predictions >= 0).sum().item() == dm.unlabeled_batch_size


def test_finetune_freezes_encoder_then_uses_lower_encoder_lr(small_engine):
    torch.manual_seed(0)
    module = Finetune(sam(), OptimConfig(lr=1e-2, warmup_frac=0.0), FinetuneConfig(2, 0.1))
    before = params_of(module.model)
    trainer = quick_fit(module, small_engine, fast_dev_run=2)
    after = module.model.state_dict()
    frozen_keys = [k for k in before if k.startswith(("frontend.", "backbone."))]
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)  # incl. BatchNorm statistics
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    head_group, encoder_group = trainer.optimizers[0].param_groups
    assert encoder_group["lr"] == pytest.approx(0.1 * head_group["lr"])
    assert {id(p) for p in encoder_group["params"]} == {
        id(p) for part in (module.model.frontend, module.model.backbone) for p in part.parameters()
    }
    module.config = FinetuneConfig(0, 0.1)  # after the warm-up the encoder trains
    quick_fit(module, small_engine, fast_dev_run=1)
    assert any(not torch.equal(before[k], module.model.state_dict()[k]) for k in frozen_keys)


def test_plain_kd_without_uncertainty_weights(small_engine):
    torch.manual_seed(0)
    module = Distill(sam(SAMSpace().smallest()), sam(), config=DistillConfig(uncertainty="none"))
    trainer = quick_fit(module, small_engine)
    assert "train/kd_weight_mean" not in trainer.callback_metrics
    assert trainer.callback_metrics["train/kd"].item() > 0.0
    with pytest.raises(ValueError, match="needs a teacher with dropout"):
        Distill(sam(SAMSpace().smallest()), sam(), config=DistillConfig(uncertainty="mc_dropout"))
