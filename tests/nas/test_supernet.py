import inspect
import random

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_space  # noqa: E402
from ersam_ssl import checkpoint
from ersam_ssl.losses import entropy_weights, kd_loss
from ersam_ssl.models import SAMSpace, build_model
from ersam_ssl.models.heads import ClassificationHead
from ersam_ssl.nas import supernet as supernet_module
from ersam_ssl.nas.config import SearchConfig, SupernetConfig
from ersam_ssl.nas.supernet import SUPERNET_FORMAT, ElasticSAM, SupernetModule, recalibrate_bn
from ersam_ssl.ssl.base import OptimConfig
from ersam_ssl.ssl.distill import UNCERTAINTY_POLICIES, DistillConfig

SPACE = SAMSpace()


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics (defaults would hide slicing bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


@pytest.fixture(scope="module")
def supernet() -> ElasticSAM:
    torch.manual_seed(0)
    net = ElasticSAM(SPACE, num_classes=11)
    _randomise(net)
    return net.eval()


def _archs(space: SAMSpace, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [space.largest(), space.smallest(), space.default(), *(space.sample(rng) for _ in range(n))]


def test_extracted_member_computes_what_the_supernet_computes(supernet):
    wave = 0.1 * torch.randn(2, 3200, generator=torch.Generator().manual_seed(1))
    for arch in _archs(SPACE, 5):
        member = supernet.extract(arch)
        assert member.config()["kwargs"]["arch"] == arch
        with torch.no_grad():
            expected = member(wave)
            got = supernet(wave, arch)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_members_differ_and_active_arch_is_the_default_forward(supernet):
    wave = 0.1 * torch.randn(1, 4000)
    with torch.no_grad():
        small, large = supernet(wave, SPACE.smallest()), supernet(wave, SPACE.largest())
        assert not torch.allclose(small, large)
        torch.testing.assert_close(supernet(wave), large)  # active_arch defaults to the largest


def test_custom_space_without_se_or_expansion_and_other_heads():
    space = SAMSpace(
        kernels=(3, 5),
        expands=(1,),
        depths=(1, 2),
        width_mults=(0.5, 1.0),
        se_choices=(False,),
        stage_widths=(8, 12),
        stage_strides=(2, 1),
        pool_heads=("attention",),
    )
    torch.manual_seed(2)
    for head in ("poisson", "ordinal"):
        net = ElasticSAM(space, num_classes=6, head=head)
        _randomise(net, seed=3)
        net.eval()
        wave = 0.1 * torch.randn(3, 3200)
        for arch in _archs(space, 3, seed=4):
            with torch.no_grad():
                torch.testing.assert_close(net(wave, arch), net.extract(arch)(wave), rtol=1e-5, atol=1e-6)


def test_training_forward_updates_exactly_the_members_bn_statistics():
    torch.manual_seed(3)
    net = ElasticSAM(SPACE)
    _randomise(net, seed=5)
    arch = SPACE.sample(random.Random(7))
    member = net.extract(arch).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wave = 0.1 * torch.randn(4, 4000)
    net.train()
    with torch.no_grad():
        net(wave, arch)
        member(wave)
    after = net.state_dict()
    member_state = member.state_dict()
    for key, value in member_state.items():
        if "running_" not in key:
            continue
        n = value.shape[0]
        torch.testing.assert_close(after[key][:n], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after[key][n:], before[key][n:])  # channels the member does not use


def test_gradients_reach_only_the_members_slices():
    net = ElasticSAM(SPACE)
    arch = SPACE.smallest()  # kernel 3 of 7, expand 1, width 0.5, attention head
    net.train()
    net(0.1 * torch.randn(3, 4000), arch).sum().backward()
    dw = net.backbone.stages[0][0].dw.conv.weight.grad  # [hidden_max, 1, 7]
    assert dw[:8, :, 2:5].abs().sum() > 0  # centre taps of the first in_ch (stem at width 0.5: 8) channels
    assert dw[:, :, :2].abs().sum() == 0 and dw[:, :, 5:].abs().sum() == 0 and dw[8:].abs().sum() == 0
    assert net.backbone.stages[0][0].expand.conv.weight.grad is None  # expand 1: no expand conv
    assert net.backbone.pool.gru.weight_ih_l0.grad is None  # attention pooling only
    assert net.head.linear.weight.grad[:, 32:].abs().sum() == 0  # pool width 32 of 64


def test_load_largest_from_either_pooling_head_and_reject_others(tmp_path):
    net = ElasticSAM(SPACE)
    wave = 0.1 * torch.randn(2, 4000)
    for pool_head in ("gru", "attention"):
        torch.manual_seed(9)
        largest = build_model({**SPACE.largest(), "head": pool_head})
        _randomise(largest, seed=11)
        largest.eval()
        assert net.load_largest(largest) == pool_head
        with torch.no_grad():
            torch.testing.assert_close(
                net.eval()(wave, {**SPACE.largest(), "head": pool_head}), largest(wave)
            )
    with pytest.raises(ValueError, match="not a largest-arch counter"):
        net.load_largest(build_model(SPACE.default()))
    with pytest.raises(ValueError, match="not a largest-arch counter"):
        net.load_largest(build_model(SPACE.largest(), num_classes=5))


def test_save_and_load_round_trip(tmp_path, supernet):
    path = supernet.save(tmp_path / "supernet.pt")
    loaded = ElasticSAM.load(path)
    assert loaded.config() == supernet.config()
    for k, v in supernet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    with pytest.raises(ValueError, match="neither"):
        torch.save({"state_dict": {}}, tmp_path / "other.pt")
        ElasticSAM.load(tmp_path / "other.pt")


def test_recalibrate_bn_is_the_mean_of_batch_statistics():
    bn = nn.BatchNorm1d(3, momentum=0.3)
    model = nn.Sequential(bn).eval()
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 5, generator=gen) * (i + 1) + i for i in range(3)]
    assert recalibrate_bn(model, batches) == 3
    x = [b.numpy().astype(np.float64) for b in batches]
    mean = np.mean([b.mean(axis=(0, 2)) for b in x], axis=0)
    var = np.mean([b.var(axis=(0, 2), ddof=1) for b in x], axis=0)  # running_var uses the unbiased variance
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5)
    assert bn.momentum == 0.3 and not model.training
    with pytest.raises(ValueError):
        recalibrate_bn(model, [])


class _FixedTeacher(nn.Module):
    """A 'teacher' predicting a fixed distribution, to check the teacher term is used."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)
        self.head = ClassificationHead(1, logits.shape[0])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(wave.shape[0], -1)


def _batch(n_l: int = 3, n_u: int = 4, classes: int = 11) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "labeled": {"x": 0.1 * torch.randn(n_l, 4000, generator=gen), "y": torch.randint(0, classes, (n_l,))},
        "unlabeled": {"x": 0.1 * torch.randn(n_u, 4000, generator=gen)},
    }


def test_sandwich_archs_and_training_step():
    net = ElasticSAM(SPACE)
    module = SupernetModule(net, OptimConfig(), num_random_subnets=2, seed=1)
    logged = {}
    module.log_dict = lambda d, **kw: logged.update(d)
    module.log = lambda *a, **kw: None
    archs = module.sandwich_archs(5)
    assert archs[0] == SPACE.largest() and archs[1] == SPACE.smallest() and len(archs) == 4
    assert archs == module.sandwich_archs(5) and archs[2:] != module.sandwich_archs(6)[2:]
    loss = module.training_step(_batch(), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert {"train/ce_largest", "train/kd_children", "train/ce_children"} <= set(logged)
    expected = logged["train/ce_largest"] + logged["train/ce_children"] * 3 + logged["train/kd_children"] * 3
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_teacher_distillation_changes_the_loss_and_is_frozen():
    torch.manual_seed(0)
    teacher = _FixedTeacher(torch.tensor([5.0] + [0.0] * 10))
    net = ElasticSAM(SPACE)
    plain = SupernetModule(net, num_random_subnets=0)
    taught = SupernetModule(net, num_random_subnets=0, teacher=teacher, distill=DistillConfig(kd_weight=2.0))
    for m in (plain, taught):
        m.log_dict = lambda *a, **kw: None
        m.log = lambda *a, **kw: None
    batch = _batch()
    assert taught.training_step(batch, 0) > plain.training_step(batch, 0)
    assert not teacher.logits.requires_grad and not teacher.training
    assert all(not p is teacher.logits for p in taught.trainable_modules())  # noqa: E714


class _WaveTeacher(nn.Module):
    """A teacher whose prediction (and so its certainty) differs from clip to clip; optional dropout."""

    def __init__(self, classes: int = 11, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Linear(64, classes)
        self.drop = nn.Dropout(dropout)
        self.head = ClassificationHead(1, classes)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(30.0 * wave[:, :64]))


@pytest.mark.parametrize(
    "cfg",
    [
        DistillConfig(),
        DistillConfig(temperature=2.0, ce_weight=0.5, kd_weight=3.0, entropy_kind="exp"),
        DistillConfig(uncertainty="none"),
        DistillConfig(uncertainty="mc_dropout", mc_samples=3),
    ],
    ids=["default", "exp-weights", "none", "mc-dropout"],
)
def test_teacher_kd_of_the_largest_member_is_the_distill_policy(cfg: DistillConfig) -> None:
    """The supernet's teacher term is ssl.distill's: the policy's weights, kd_loss and the config's objective."""
    torch.manual_seed(0)
    teacher = _WaveTeacher(dropout=0.3 if cfg.uncertainty == "mc_dropout" else 0.0)
    net = ElasticSAM(SPACE)
    module = SupernetModule(net, num_random_subnets=0, teacher=teacher, distill=cfg)
    logged: dict = {}
    module.log_dict = lambda d, **kw: logged.update(d)
    module.log = lambda *a, **kw: None
    batch = _batch()
    waves = torch.cat([batch["labeled"]["x"], batch["unlabeled"]["x"]])
    torch.manual_seed(1)  # the MC-dropout passes draw from the global generator
    loss = module.training_step(batch, 0)

    torch.manual_seed(1)
    with torch.no_grad():
        student = net.head.log_probs(net.forward_features(net.frontend(waves), SPACE.largest()))
        teacher_log_probs = teacher.head.log_probs(teacher(waves))
        weights = UNCERTAINTY_POLICIES[cfg.uncertainty](teacher, waves, teacher_log_probs, cfg)
    expected = kd_loss(student, teacher_log_probs, cfg.temperature, weights)
    torch.testing.assert_close(logged["train/kd_teacher"], expected, rtol=1e-6, atol=0.0)
    largest = cfg.ce_weight * logged["train/ce_largest"] + cfg.kd_weight * expected
    smallest = logged["train/ce_children"] + logged["train/kd_children"]  # the sandwich's other member
    torch.testing.assert_close(loss.detach(), largest + smallest)
    if cfg == DistillConfig():  # the weighting the supernet had before it used the policies
        assert weights is not None and weights.std() > 0.01  # a teacher with unequal certainty
        before = kd_loss(student, teacher_log_probs, 4.0, entropy_weights(teacher_log_probs.exp()))
        torch.testing.assert_close(logged["train/kd_teacher"], before, rtol=1e-6, atol=0.0)


def test_supernet_config_nests_the_distill_config() -> None:
    assert SupernetConfig().distill == DistillConfig()
    assert not {"teacher_weight", "teacher_temperature", "uncertainty"} & set(vars(SupernetConfig()))
    bad = SearchConfig(supernet=SupernetConfig(distill=DistillConfig(uncertainty="variance")))
    with pytest.raises(ValueError, match=r"^supernet\.distill\.uncertainty='variance'"):
        bad.validate()
    with pytest.raises(ValueError, match="mc_dropout.*needs a teacher with dropout"):
        SupernetModule(
            ElasticSAM(SPACE), teacher=_WaveTeacher(), distill=DistillConfig(uncertainty="mc_dropout")
        )
    with pytest.raises(ValueError, match="teacher counts 5 classes, student 11"):
        SupernetModule(ElasticSAM(SPACE), teacher=_WaveTeacher(classes=5))


def test_supernet_file_is_written_and_read_by_the_checkpoint_helpers(tmp_path) -> None:
    net = ElasticSAM(tiny_space(), num_classes=4)
    path = net.save(tmp_path / "supernet.pt", extra={"note": 1})
    blob = checkpoint.load_blob(path)
    assert blob["format"] == SUPERNET_FORMAT and blob["version"] == checkpoint.MODEL_FILE_VERSION
    assert blob["config"] == net.config() and blob["extra"] == {"note": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["supernet.pt"]  # no temporary file left behind
    loaded = ElasticSAM.load(path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    source = inspect.getsource(supernet_module)
    assert (
        "torch.save" not in source and "torch.load" not in source
    )  # one implementation: ersam_ssl.checkpoint

    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"junk\.pt: not a PyTorch model file"):
        ElasticSAM.load(tmp_path / "junk.pt")
    counter = checkpoint.save_model(
        build_model(tiny_space().smallest(), num_classes=4, space=tiny_space()), tmp_path / "m.pt"
    )
    with pytest.raises(ValueError, match="neither a supernet file nor a SupernetModule checkpoint"):
        ElasticSAM.load(counter)


def test_supernet_trains_with_lightning_and_resumes(small_engine, tmp_path):
    from ersam_ssl.data import SAMDataModule
    from ersam_ssl.trainer import TrainerConfig, fit

    space = tiny_space()
    net = ElasticSAM(space, num_classes=small_engine.num_classes)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    dm = SAMDataModule(small_engine, labeled_views={"x": "identity"}, unlabeled_views={"x": "identity"})
    cfg = TrainerConfig(max_steps=3, progress_bar=False, checkpoint_every_steps=1, val_every_steps=3)
    module = SupernetModule(net, OptimConfig(lr=1e-2), calib_batches=2)
    fit(module, dm, cfg, tmp_path, name="supernet")
    assert module.global_step == 3 and module.val_results["accuracy"] >= 0.0
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, start[k])]
    assert any("backbone.pool.gru" in k for k in changed) and any("backbone.pool.proj" in k for k in changed)
    loaded = ElasticSAM.load(tmp_path / "checkpoints" / "last.ckpt")
    # Parameters only: validation (after the step-3 checkpoint) recalibrated the BatchNorm statistics.
    for k, v in net.named_parameters():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    module2 = SupernetModule(ElasticSAM(space, num_classes=small_engine.num_classes))
    fit(
        module2, dm, TrainerConfig(max_steps=4, progress_bar=False, limit_val_batches=0), tmp_path, "supernet"
    )
    assert module2.global_step == 4  # resumed at step 3, one more step
