import json

import numpy as np
import pytest
import torch

from ersam_ssl.models import CountModel, CountNetCRNN, create_model

KERAS_PARAMS = 352_699  # CountNet's released CRNN.h5 (README: 0.35M)


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_countnet():
    model = CountNetCRNN()
    count = _num_params(model)
    assert abs(count - KERAS_PARAMS) <= 0.05 * KERAS_PARAMS
    # Exact: Keras' layers plus the second bias vector of PyTorch's LSTM (4 gates x 40 units).
    assert count == KERAS_PARAMS + 4 * 40
    assert model.embed_dim == 40 * 26
    assert model.embed(torch.zeros(1, 80000)).shape == (1, 1040)
    assert _num_params(CountNetCRNN(time_pooling="last")) == KERAS_PARAMS - 40 * 26 * 11 + 40 * 11 + 4 * 40


@pytest.mark.parametrize("time_pooling", ["flatten", "last"])
def test_forward_backward_on_one_second(time_pooling):
    torch.manual_seed(0)
    model = CountNetCRNN(time_pooling=time_pooling)
    wave = 0.1 * torch.randn(2, 16000)
    out = model(wave)
    assert out.shape == (2, 11)
    assert model.embed(wave).shape == (2, model.embed_dim)
    model.head.loss(out, torch.tensor([0, 3])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.convs[0].weight.grad.abs().sum() > 0
    assert model.predict(wave).shape == (2,)


def test_longer_input_is_cropped_to_num_frames():
    torch.manual_seed(0)
    model = CountNetCRNN(num_frames=100).eval()  # 500 in CountNet; fewer keeps the test fast
    wave = 0.1 * torch.randn(1, 24000)
    # Frames 0..99 only see samples < 99 * 160 + 200 = 16040, so the tail beyond them must not matter.
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model(wave[:, :16240]))
        changed = wave.clone()
        changed[:, 16100:] = 0
        torch.testing.assert_close(model(wave), model(changed))
        changed[:, 15000:] = 0
        assert not torch.allclose(model(wave), model(changed))


def test_short_input_is_padded_with_standardised_silence():
    model = CountNetCRNN(clip_norm=False)
    model.backbone.scaler_mean.fill_(2.0)
    model.backbone.scaler_scale.fill_(4.0)
    magnitude = torch.rand(1, 201, 101) + 1.0
    frames = model.backbone.normalise(magnitude)
    assert frames.shape == (1, 500, 201)
    torch.testing.assert_close(frames[0, :101], (magnitude[0].T - 2.0) / 4.0)
    torch.testing.assert_close(frames[0, 101:], torch.full((399, 201), -0.5))


def test_clip_norm_makes_the_unfitted_model_gain_invariant():
    # predict.py: standardise, then divide by the mean frame norm -> with zero mean, the gain cancels.
    torch.manual_seed(0)
    model = CountNetCRNN(time_pooling="last").eval()
    wave = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model(7.0 * wave), rtol=1e-4, atol=1e-5)
        no_norm = CountNetCRNN(time_pooling="last", clip_norm=False).eval()
        no_norm.load_state_dict(model.state_dict())
        assert not torch.allclose(no_norm(wave), no_norm(7.0 * wave), rtol=1e-3, atol=1e-4)


def test_fit_normalizer_streams_like_standard_scaler():
    torch.manual_seed(0)
    model = CountNetCRNN()
    waves = [
        0.1 * torch.randn(3, 16000),
        (0.5 * torch.randn(1, 16000), "label"),
        {"wave": torch.randn(2, 8000)},
    ]
    model.fit_normalizer(iter(waves))
    frames = np.concatenate(
        [
            model.frontend(w).transpose(1, 2).reshape(-1, 201).double().numpy()
            for w in (waves[0], waves[1][0], waves[2]["wave"])
        ]
    )
    np.testing.assert_allclose(model.backbone.scaler_mean.numpy(), frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.backbone.scaler_scale.numpy(), frames.std(0), rtol=1e-5)
    standardised = model.backbone.normalise(model.frontend(waves[0]))
    assert standardised.shape[-1] == 201


def test_fit_normalizer_gives_unit_scale_to_constant_bins_and_rejects_no_audio():
    model = CountNetCRNN()
    model.fit_normalizer([torch.zeros(2, 16000)])
    assert torch.equal(model.backbone.scaler_scale, torch.ones(201))
    assert torch.equal(model.backbone.scaler_mean, torch.zeros(201))
    with pytest.raises(ValueError, match="no audio"):
        model.fit_normalizer([])


def test_config_round_trip_rebuilds_the_same_model():
    torch.manual_seed(0)
    model = CountNetCRNN(num_classes=6, time_pooling="last", head="poisson").eval()
    config = json.loads(json.dumps(model.config()))
    assert config == model.config()
    rebuilt = CountModel.from_config(config).eval()
    assert isinstance(rebuilt, CountNetCRNN)
    rebuilt.load_state_dict(model.state_dict())
    wave = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(wave), model(wave))
    assert rebuilt.num_classes == 6
    assert isinstance(create_model("crnn"), CountNetCRNN)


def test_rejects_unknown_time_pooling():
    with pytest.raises(ValueError, match="time_pooling"):
        CountNetCRNN(time_pooling="mean")
