"""Model-side audio frontends: raw 16 kHz waveform batch ``[B, T]`` → time-frequency features.

Both frontends follow ``torchaudio.transforms`` semantics (centred frames, reflect padding, periodic Hann
window, no normalisation) and export to ONNX (``torch.onnx.export(..., dynamo=False, opset_version=17)``).

torchaudio's ``Spectrogram`` does not export ("STFT does not currently support complex types"). In eager
mode the STFT is ``torch.stft``; while exporting it is a strided ``Conv`` with a windowed real-DFT basis.
We measured the alternative, an autograd function emitting the ONNX ``STFT`` operator: onnxruntime 1.32
runs it, but its kernel for the non-power-of-two ``n_fft = 400`` is ~50x less accurate than the DFT-as-Conv
(max abs error 9e-5 vs 2e-6 on unit-scale magnitudes, 2e-3 on log-mel), which misses a 1e-4 relative match
with PyTorch; a ``Conv`` also runs on every mobile runtime.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchaudio.functional import melscale_fbanks

LOG_OFFSET = 1e-6


def dft_basis(n_fft: int, window: Tensor) -> Tensor:
    """Windowed real DFT basis ``[2 * (n_fft // 2 + 1), 1, n_fft]`` (cosines, then minus sines) as a conv kernel.

    Computed in float64 and rounded once, so the exported STFT is as accurate as ``torch.stft``.
    """
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2.0 * math.pi * torch.outer(k, n) / n_fft
    win = window.to(torch.float64)
    basis = torch.cat([torch.cos(angle) * win, -torch.sin(angle) * win])
    return basis.to(window.dtype).unsqueeze(1)


def stft_real_imag(
    wave: Tensor, window: Tensor, basis: Tensor, n_fft: int, hop_length: int
) -> tuple[Tensor, Tensor]:
    """Centred, reflect-padded one-sided STFT of ``wave [B, T]`` as (real, imag), each ``[B, bins, frames]``.

    Matches ``torch.stft(center=True, pad_mode="reflect")``; ``frames = 1 + T // hop_length``. While
    exporting to ONNX the DFT runs as a strided ``Conv`` with the precomputed ``basis`` (see module doc).
    """
    pad = n_fft // 2
    padded = F.pad(wave.unsqueeze(1), (pad, pad), mode="reflect")  # [B, 1, T + n_fft]
    if torch.onnx.is_in_onnx_export():
        real, imag = F.conv1d(padded, basis, stride=hop_length).chunk(2, dim=1)
        return real, imag
    spec = torch.stft(
        padded.squeeze(1),
        n_fft,
        hop_length,
        win_length=n_fft,
        window=window,
        center=False,
        return_complex=True,
    )
    return spec.real, spec.imag


def num_frames(num_samples: int, hop_length: int = 160) -> int:
    """Number of centred STFT frames for ``num_samples`` samples (501 for 5 s at hop 160)."""
    return 1 + num_samples // hop_length


class StftMagnitude(nn.Module):
    """Magnitude STFT ``|X|`` → ``[B, n_fft // 2 + 1, frames]`` (CountNet's input: 201 bins, hop 10 ms).

    Same numbers as ``torchaudio.transforms.Spectrogram(n_fft, hop_length=hop_length, power=1)`` and as
    ``abs(librosa.stft(x, n_fft, hop_length, pad_mode="reflect"))``, which CountNet used.
    """

    def __init__(self, n_fft: int = 400, hop_length: int = 160) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_bins = n_fft // 2 + 1
        # Deterministic from the arguments, so kept out of the state dict.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("dft_basis", dft_basis(n_fft, self.window), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        real, imag = stft_real_imag(wave, self.window, self.dft_basis, self.n_fft, self.hop_length)
        # sqrt(re² + im²) rather than complex abs so eager and exported graphs share the formula; the
        # clamp inside the unused branch keeps the gradient finite on exact zeros (digital silence).
        power = real.square() + imag.square()
        return torch.where(power > 0, power.clamp_min(1e-30).sqrt(), torch.zeros_like(power))

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop_length={self.hop_length}"


LEVEL_NORMS = ("none", "clip")


class LogMel(nn.Module):
    """Log-mel power spectrogram ``log(mel + 1e-6)`` → ``[B, n_mels, frames]``, optionally level-invariant.

    Same numbers as ``torchaudio.transforms.MelSpectrogram`` (power 2, HTK mel scale, no filter-bank
    normalisation) followed by ``log(· + 1e-6)``.

    ``level_norm="clip"`` subtracts each clip's mean log-mel (over bands and frames): a gain ``g`` on the
    waveform adds ``2 log g`` to every log-mel value, so the output no longer depends on the recording
    level (up to the ``1e-6`` floor, i.e. for anything above digital silence). A counter trained on
    normalised speech level then still counts a recording 20 dB louder or quieter. ``"none"`` keeps the
    absolute level (a quiet background-only window is then recognisable by its level alone, but every
    level the model meets must have been seen in training).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        level_norm: str = "none",
    ) -> None:
        super().__init__()
        if level_norm not in LEVEL_NORMS:
            raise ValueError(f"level_norm={level_norm!r}: choose one of {LEVEL_NORMS}")
        self.level_norm = level_norm
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = float(sample_rate // 2) if f_max is None else f_max
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("dft_basis", dft_basis(n_fft, self.window), persistent=False)
        fbank = melscale_fbanks(n_fft // 2 + 1, self.f_min, self.f_max, n_mels, sample_rate)
        self.register_buffer("fbank", fbank, persistent=False)  # [bins, n_mels]

    def forward(self, wave: Tensor) -> Tensor:
        real, imag = stft_real_imag(wave, self.window, self.dft_basis, self.n_fft, self.hop_length)
        power = real.square() + imag.square()  # [B, bins, frames]
        mel = torch.matmul(power.transpose(1, 2), self.fbank).transpose(1, 2)
        logmel = torch.log(mel + LOG_OFFSET)
        if self.level_norm == "clip":
            logmel = logmel - logmel.mean(dim=(1, 2), keepdim=True)
        return logmel

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, level_norm={self.level_norm}"
        )
