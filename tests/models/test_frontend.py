import io
import math

import numpy as np
import pytest
import torch
import torchaudio

from ersam_ssl.models.frontend import LogMel, StftMagnitude, num_frames


@pytest.fixture
def waves() -> torch.Tensor:
    torch.manual_seed(0)
    return 0.1 * torch.randn(2, 16000)


def test_shapes_follow_centred_frames(waves):
    assert LogMel()(waves).shape == (2, 64, 101)
    assert LogMel(n_mels=40)(waves).shape == (2, 40, 101)
    assert StftMagnitude()(waves).shape == (2, 201, 101)
    assert num_frames(80000) == 501
    assert StftMagnitude()(torch.zeros(1, 80000)).shape == (1, 201, 501)


def test_logmel_matches_torchaudio(waves):
    reference = torchaudio.transforms.MelSpectrogram(
        16000, n_fft=400, hop_length=160, n_mels=64, f_min=0.0, f_max=8000.0
    )(waves)
    torch.testing.assert_close(LogMel()(waves), torch.log(reference + 1e-6), rtol=1e-5, atol=1e-5)


def test_stft_magnitude_matches_torchaudio_and_librosa(waves):
    ours = StftMagnitude()(waves)
    reference = torchaudio.transforms.Spectrogram(n_fft=400, hop_length=160, power=1.0)(waves)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    librosa = pytest.importorskip("librosa")
    # CountNet computed np.abs(librosa.stft(audio, n_fft=400, hop_length=160)) with reflect padding.
    expected = np.abs(librosa.stft(waves[0].double().numpy(), n_fft=400, hop_length=160, pad_mode="reflect"))
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_logmel_keeps_absolute_level(waves):
    # No per-clip normalisation: a 2x louder clip is log(4) higher in every well-above-floor band.
    quiet, loud = LogMel()(waves), LogMel()(2 * waves)
    strong = quiet > math.log(1e-3)
    assert strong.float().mean() > 0.9
    torch.testing.assert_close(
        (loud - quiet)[strong], torch.full_like(quiet[strong], math.log(4.0)), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize("frontend_cls", [LogMel, StftMagnitude])
def test_gradients_are_finite_even_on_silence(frontend_cls):
    wave = torch.cat([torch.zeros(1, 4000), 0.1 * torch.randn(1, 12000)], dim=1).requires_grad_()
    frontend_cls()(wave).sum().backward()
    assert torch.isfinite(wave.grad).all()
    assert wave.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore:Constant folding")
@pytest.mark.parametrize("frontend_cls", [LogMel, StftMagnitude])
def test_onnx_export_matches_pytorch(frontend_cls, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ort = pytest.importorskip("onnxruntime")
    frontend = frontend_cls().eval()
    buffer = io.BytesIO()
    # Raw export on purpose: the frontend alone, with a dynamic time axis (export_onnx fixes it).
    torch.onnx.export(
        frontend,
        (torch.randn(1, 4000),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["wave"],
        output_names=["features"],
        dynamic_axes={"wave": {0: "batch", 1: "samples"}, "features": {0: "batch", 2: "frames"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    wave = 0.1 * torch.randn(3, 6000)  # other batch size and length than at export
    (exported,) = session.run(None, {"wave": wave.numpy()})
    expected = frontend(wave).numpy()
    assert exported.shape == expected.shape
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
