import pytest
import torch

from ersam_ssl.models import SAMSpace, build_model
from ersam_ssl.ssl import MixtureSupervision
from ersam_ssl.ssl.specaugment import SpecAugment, SpecAugmentConfig


def test_masks_are_bands_and_spans_filled_with_the_clip_mean():
    torch.manual_seed(0)
    # different means per clip, and no cell within 0.5 of its clip's mean
    z = torch.randn(16, 64, 501)
    x = torch.sign(z) * (0.5 + z.abs()) + torch.arange(16.0).view(16, 1, 1)
    aug = SpecAugment(SpecAugmentConfig(freq_masks=1, freq_width=10, time_masks=1, time_width=50))
    y = aug(x)
    changed = (y - x).abs() > 1e-4
    assert 0.0 < changed.float().mean() < 0.35
    for i in range(16):
        mean = x[i].mean()
        assert ((x[i] - mean).abs() > 0.3).all()
        assert torch.allclose(y[i][changed[i]], mean.expand(int(changed[i].sum())), atol=1e-4)
        rows = changed[i].all(dim=1).nonzero().flatten()  # masked bands span every frame
        cols = changed[i].all(dim=0).nonzero().flatten()  # masked spans cover every band
        assert rows.numel() <= 10 and cols.numel() <= 50
        for idx in (rows, cols):  # one contiguous block each
            if idx.numel():
                assert int(idx[-1] - idx[0]) + 1 == idx.numel()
    # independent draws per clip
    assert len({tuple(changed[i].all(dim=1).nonzero().flatten().tolist()) for i in range(16)}) > 4


def test_identity_in_eval_mode_and_with_no_masks():
    x = torch.randn(2, 64, 100)
    aug = SpecAugment().eval()
    assert torch.equal(aug(x), x)
    off = SpecAugment(SpecAugmentConfig(freq_masks=0, time_masks=0))
    assert torch.allclose(off(x), x, atol=1e-6)
    assert torch.equal(SpecAugment(SpecAugmentConfig(enabled=False)).train()(x), x)
    with pytest.raises(ValueError):
        SpecAugment(SpecAugmentConfig(freq_width=-1))


def test_mixture_supervision_masks_features_only_while_training():
    torch.manual_seed(0)
    model = build_model(SAMSpace().smallest(), num_classes=11).eval()
    module = MixtureSupervision(model, spec_augment=SpecAugmentConfig(freq_masks=2, freq_width=30))
    x = 0.05 * torch.randn(4, 16000)
    with torch.no_grad():
        clean = model(x)
        module.spec_augment.train()
        masked = module.train_forward(x)
        module.spec_augment.eval()
        same = module.train_forward(x)
    assert not torch.allclose(clean, masked)
    assert torch.allclose(clean, same)
    assert MixtureSupervision(model).spec_augment is None
    # the pipeline's pretrain.spec_augment section is off by default (enabled=False)
    assert MixtureSupervision(model, spec_augment=SpecAugmentConfig(enabled=False)).spec_augment is None
