"""MAC counting against hand calculations (the arithmetic is written out in each test)."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio
from torch import nn

from ersam_ssl.hw.cost import (
    count_macs,
    count_params,
    matmul_macs,
    mel_filterbank_macs,
    rnn_macs,
    stft_macs,
)


def macs_of(module: nn.Module, *inputs: torch.Tensor, fold_bn: bool = True) -> int:
    torch.manual_seed(0)
    return count_macs(module, example_input=tuple(inputs), fold_bn=fold_bn).macs


# --------------------------------------------------------------------------------------------------
# Layer formulas


def test_conv1d_plain():
    # L_out = 100 - 5 + 1 = 96; MACs = L_out * C_out * C_in * k = 96 * 16 * 8 * 5
    assert macs_of(nn.Conv1d(8, 16, 5), torch.randn(1, 8, 100)) == 96 * 16 * 8 * 5 == 61_440


def test_conv1d_groups_stride_dilation_padding_and_bias_excluded():
    # L_out = floor((100 + 2*3 - 2*(5-1) - 1) / 2) + 1 = floor(97 / 2) + 1 = 49
    # MACs = 49 * C_out(16) * C_in/groups (8/4 = 2) * k(5) = 7840; the bias adds nothing
    conv = nn.Conv1d(8, 16, 5, stride=2, padding=3, dilation=2, groups=4, bias=True)
    assert macs_of(conv, torch.randn(1, 8, 100)) == 49 * 16 * 2 * 5 == 7_840


def test_depthwise_conv1d_and_batch():
    # depthwise: C_in/groups = 1; L_out = 50 (padding 1, k 3); batch 2 doubles the count
    conv = nn.Conv1d(8, 8, 3, padding=1, groups=8)
    assert macs_of(conv, torch.randn(2, 8, 50)) == 2 * 50 * 8 * 1 * 3 == 2_400


def test_conv2d():
    # 10x12 input, k 3, stride 2, pad 1 -> 5x6 output; MACs = 30 * 4 * 3 * 9
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    assert macs_of(conv, torch.randn(1, 3, 10, 12)) == 30 * 4 * 3 * 9 == 3_240


def test_conv_transpose1d():
    # every input element (4 ch x 10) is multiplied into C_out/groups * k = 6 * 3 outputs
    assert macs_of(nn.ConvTranspose1d(4, 6, 3), torch.randn(1, 4, 10)) == 40 * 6 * 3


def test_linear_on_sequence():
    # out numel = 2 * 5 * 7 = 70 outputs, each an in_features(20)-long dot product
    assert macs_of(nn.Linear(20, 7), torch.randn(2, 5, 20)) == 70 * 20 == 1_400


def test_batchnorm_folded_by_default_and_counted_when_asked():
    bn = nn.BatchNorm1d(8)
    x = torch.randn(1, 8, 30)
    assert macs_of(bn, x) == 0
    assert macs_of(bn, x, fold_bn=False) == 8 * 30
    assert macs_of(nn.LayerNorm(30), x) == 8 * 30  # cannot fold: 1 MAC per element


def test_lstm_bidirectional_two_layers():
    # layer 0, per direction and step: 4*20*(10 + 20) + 3*20 = 2460
    # layer 1 reads 2*20 = 40:          4*20*(40 + 20) + 3*20 = 4860
    # per step: 2 directions * (2460 + 4860) = 14640; 7 steps
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True)
    assert macs_of(lstm, torch.randn(1, 7, 10)) == 7 * 14_640 == 102_480
    assert rnn_macs("LSTM", 10, 20, 7, num_layers=2, bidirectional=True) == 102_480


def test_gru_sequence_first_and_batch():
    # per step: 3*4*(6 + 4) + 3*4 = 132; 5 steps, batch 3
    gru = nn.GRU(6, 4)
    assert macs_of(gru, torch.randn(5, 3, 6)) == 5 * 3 * 132 == 1_980


def test_lstm_with_projection():
    # gates use the projected state (3): 4*8*(6 + 3) = 288; + 3*8 elementwise + 8*3 projection = 336
    lstm = nn.LSTM(6, 8, proj_size=3, batch_first=True)
    assert macs_of(lstm, torch.randn(1, 4, 6)) == 4 * 336


def test_rnn_cells():
    assert macs_of(nn.GRUCell(6, 4), torch.randn(3, 6)) == 3 * (3 * 4 * 10 + 3 * 4)
    assert macs_of(nn.LSTMCell(6, 4), torch.randn(3, 6)) == 3 * (4 * 4 * 10 + 3 * 4)


def test_multihead_attention():
    # E = 16; L = 5 queries, S = 7 keys:
    # in-projections 5*16*16 + 7*16*16 + 7*16*16 = 4864; QK^T and AV 2*5*7*16 = 1120; out 5*16*16 = 1280
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    q, kv = torch.randn(1, 5, 16), torch.randn(1, 7, 16)
    assert macs_of(mha, q, kv, kv) == 4864 + 1120 + 1280 == 7_264


def test_activations_pooling_dropout_are_free():
    model = nn.Sequential(nn.ReLU(), nn.MaxPool1d(2), nn.Dropout(0.1), nn.Tanh(), nn.AdaptiveAvgPool1d(1))
    assert macs_of(model, torch.randn(1, 4, 16)) == 0


# --------------------------------------------------------------------------------------------------
# Frontends and functional ops


class TorchStft(nn.Module):
    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, x):
        return torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True).abs()


def test_stft_fft_estimate():
    # n_fft 256: per frame 256 window MACs + 4 * (256/2) * log2(256) = 4096 -> 4352
    # centred frames: 1 + 1600 // 128 = 13
    assert stft_macs(256, 13) == 13 * (256 + 4 * 128 * 8) == 56_576
    assert macs_of(TorchStft(256, 128), torch.randn(1, 1600)) == 56_576
    assert macs_of(TorchStft(256, 128), torch.randn(2, 1600)) == 2 * 56_576


def test_stft_non_power_of_two():
    # CountNet's n_fft = 400: 400 + 4 * 200 * log2(400) per frame, 501 frames for 5 s at hop 160
    assert stft_macs(400, 501) == round(501 * (400 + 800 * math.log2(400)))


def test_torchaudio_melspectrogram():
    # STFT as above plus the dense filterbank matmul: 129 bins * 20 mels * 13 frames = 33540
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=256, hop_length=128, n_mels=20)
    assert mel_filterbank_macs(129, 20, 13) == 33_540
    report = count_macs(mel, 1600)
    assert report.macs == 56_576 + 33_540
    assert {b.type for b in report.breakdown} == {"fn:stft", "fn:matmul"}


def test_matmul_macs_broadcasting():
    assert matmul_macs((3, 4, 5), (5, 6)) == 3 * 4 * 5 * 6
    assert matmul_macs((5,), (5, 6)) == 5 * 6
    with pytest.raises(ValueError):
        matmul_macs((3, 4), (5, 6))


class RawMatmulPool(nn.Module):
    """Attention pooling written with functional ops only: scores = x @ w, weighted sum as a matmul."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim, 1))

    def forward(self, x):  # x: [B, T, D]
        weights = torch.softmax(x @ self.w, dim=1)  # B*T*D*1 MACs
        return torch.einsum("btd,bt->bd", x, weights.squeeze(-1))  # einsum: B*T*D MACs


def test_functional_matmul_and_einsum_are_counted():
    # x @ w: 1*10*8*1 = 80; einsum btd,bt->bd: product of index sizes 1*10*8 = 80
    report = count_macs(RawMatmulPool(8), example_input=torch.randn(1, 10, 8))
    assert report.macs == 80 + 80
    assert report.unrecognized == ()


class DeclaredAttentionPool(nn.Module):
    """Attention pooling with an elementwise weighted sum, which declares it via ``extra_macs``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x):  # x: [B, T, D]
        weights = torch.softmax(self.score(x), dim=1)
        _ = x @ x.transpose(1, 2)  # issued by this module: covered by extra_macs, not auto-counted
        return (weights * x).sum(dim=1)

    def extra_macs(self, input_shape):
        batch, steps, dim = input_shape
        return batch * steps * dim  # the weighted sum over time


def test_extra_macs_convention():
    # score Linear: 10 outputs * 8 inputs = 80 (hooked); extra_macs: 1*10*8 = 80; the raw matmul is
    # owned by the declaring module, so it is not counted a second time
    report = count_macs(DeclaredAttentionPool(8), example_input=torch.randn(1, 10, 8))
    assert report.macs == 80 + 80
    by_name = {(b.name, b.type): b.macs for b in report.breakdown}
    assert by_name[("score", "Linear")] == 80
    assert by_name[("", "DeclaredAttentionPool")] == 80


class ElementwiseScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4, 1))

    def forward(self, x):
        return x * self.gain


def test_unrecognized_parametric_leaf_is_reported():
    model = nn.Sequential(nn.Conv1d(4, 4, 1), ElementwiseScale())
    report = count_macs(model, example_input=torch.randn(1, 4, 10))
    assert report.unrecognized == ("1 (ElementwiseScale)",)


def test_small_sequential_model_sum_and_breakdown():
    model = nn.Sequential(
        nn.Conv1d(1, 8, 5, stride=2),  # L_out = (100 - 5) // 2 + 1 = 48: 48 * 8 * 1 * 5 = 1920
        nn.BatchNorm1d(8),  # folded: 0
        nn.ReLU(),
        nn.MaxPool1d(2),  # 24 steps
        nn.Conv1d(8, 8, 3, padding=1, groups=8),  # depthwise: 24 * 8 * 1 * 3 = 576
        nn.Conv1d(8, 16, 1),  # pointwise: 24 * 16 * 8 = 3072
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 11),  # 16 * 11 = 176
    )
    report = count_macs(model, example_input=torch.randn(1, 1, 100))
    assert report.macs == 1920 + 576 + 3072 + 176 == 5_744
    assert report.params == count_params(model) == sum(p.numel() for p in model.parameters())
    by_name = {b.name: b for b in report.breakdown}
    assert by_name["0"].macs == 1920 and by_name["0"].params == 8 * 5 + 8
    assert by_name["1"].macs == 0 and by_name["1"].params == 16  # BN weight + bias
    assert report.by_type() == {"Conv1d": 1920 + 576 + 3072, "Linear": 176, "BatchNorm1d": 0}
    assert count_macs(model, example_input=torch.randn(1, 1, 100), fold_bn=False).macs == 5_744 + 8 * 48
    assert "total" in report.table()


def test_count_params_shared_and_trainable():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_params(model) == 20
    model[0].bias.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 16


def test_training_mode_restored_and_hooks_removed():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.train()
    count_macs(model, example_input=torch.randn(1, 3))
    assert model.training
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


def test_waveform_default_input_length():
    # default dummy input is [1, num_samples]: a conv over the raw waveform
    class Wave(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 2, 10, stride=10)

        def forward(self, wave):
            return self.conv(wave.unsqueeze(1))

    assert count_macs(Wave(), num_samples=1000).macs == 100 * 2 * 10


# --------------------------------------------------------------------------------------------------
# CountNet CRNN


def test_countnet_crnn_hand_count():
    from ersam_ssl.models.crnn import CountNetCRNN

    # STFT: n_fft 400, 501 frames -> stft_macs(400, 501); input cropped to 500 frames x 201 bins
    # conv1 1->64, 3x3 valid: 498 x 199 x 64 x 1 x 9      =    57,082,752
    # conv2 64->32:           496 x 197 x 32 x 64 x 9     = 1,801,027,584
    # max-pool 3:             165 x 65
    # conv3 32->128:          163 x 63 x 128 x 32 x 9     =   378,556,416
    # conv4 128->64:          161 x 61 x 64 x 128 x 9     =   724,082,688
    # max-pool 3:             53 x 20 -> LSTM input 64 * 20 = 1280, 53 steps
    # LSTM(40): 53 x (4 x 40 x (1280 + 40) + 3 x 40)     =    11,199,960
    # dense 1040 -> 11                                     =        11,440
    convs = 498 * 199 * 64 * 9 + 496 * 197 * 32 * 64 * 9 + 163 * 63 * 128 * 32 * 9 + 161 * 61 * 64 * 128 * 9
    assert convs == 2_960_749_440
    expected = stft_macs(400, 501) + convs + 53 * (4 * 40 * 1320 + 120) + 1040 * 11
    report = count_macs(CountNetCRNN())
    assert report.macs == expected
    assert report.params == 352_859  # 352,699 Keras parameters + 160 for PyTorch's second LSTM bias
    assert report.unrecognized == ()


# --------------------------------------------------------------------------------------------------
# SAM search space (ersam_ssl.models.space, .op_specs)


def test_sam_space_ops_sum_to_the_whole_model():
    import random

    from ersam_ssl.models import SAMSpace, build_model, layer_specs, make_op

    space = SAMSpace()
    archs = [space.smallest(), space.largest(), space.sample(random.Random(3))]
    for arch in archs:
        whole = count_macs(build_model(arch))
        parts = 0
        for spec in layer_specs(arch):
            op, example = make_op(spec)
            parts += count_macs(op, example_input=example).macs
        assert whole.macs == parts
        assert whole.macs > stft_macs(400, 501)  # the frontend alone is cheaper than the model
    largest, smallest = (count_macs(build_model(a)).macs for a in (space.largest(), space.smallest()))
    assert largest > smallest


def test_sam_frontend_hand_count():
    from ersam_ssl.models.frontend import LogMel

    # eager LogMel: torch.stft (FFT estimate, 501 frames) + dense mel matmul 201 bins x 64 mels x 501
    report = count_macs(LogMel())
    assert report.macs == stft_macs(400, 501) + mel_filterbank_macs(201, 64, 501)
