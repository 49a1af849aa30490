"""CountNet's CRNN speaker counter in PyTorch.

Reference: Stöter, Chakrabarty, Edler, Habets, "CountNet: Estimating the Number of Concurrent Speakers
Using Supervised Learning", IEEE/ACM TASLP 27(2), 2019; Keras code and weights at
github.com/faroit/CountNet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ersam_ssl.models.base import MODELS, CountModel
from ersam_ssl.models.frontend import StftMagnitude
from ersam_ssl.models.heads import ClassificationHead, build_head

# CountNet's predict.py divides by mean(||frame||) + np.finfo(float).eps.
_CLIP_NORM_EPS = float(np.finfo(np.float64).eps)
_TIME_POOLINGS = ("flatten", "last")


def _conv_out(size: int) -> int:
    """Length after conv3 → conv3 → max-pool 3 (all 'valid', Keras defaults)."""
    return (size - 4) // 3


class CountNetBackbone(nn.Module):
    """CountNet CRNN body: standardised magnitude STFT ``[B, bins, frames]`` → embedding.

    Layers (valid padding, ReLU): conv 3x3x64 → conv 3x3x32 → max-pool 3x3 → conv 3x3x128 → conv 3x3x64
    → max-pool 3x3 → dropout → LSTM(40) over time, then either

    - ``time_pooling="flatten"`` (the original): all LSTM outputs → max-pool 2 over time → flatten
      (1040 values for 500 frames). The input is cropped, or padded with silent frames, to
      ``num_frames``, so any input length works but the embedding always covers ``num_frames`` frames.
    - ``time_pooling="last"``: the last LSTM output (40 values); any length, no padding.
    """

    def __init__(
        self,
        num_bins: int = 201,
        num_frames: int = 500,
        time_pooling: str = "flatten",
        dropout: float = 0.25,
        clip_norm: bool = True,
        lstm_units: int = 40,
    ) -> None:
        super().__init__()
        if time_pooling not in _TIME_POOLINGS:
            raise ValueError(f"time_pooling must be one of {_TIME_POOLINGS}, got {time_pooling!r}")
        self.num_bins = num_bins
        self.num_frames = num_frames
        self.time_pooling = time_pooling
        self.clip_norm = clip_norm
        # sklearn-StandardScaler statistics of the training frames (identity until fitted).
        self.register_buffer("scaler_mean", torch.zeros(num_bins))
        self.register_buffer("scaler_scale", torch.ones(num_bins))
        self.convs = nn.Sequential(
            nn.Conv2d(1, 64, 3),
            nn.ReLU(),
            nn.Conv2d(64, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(3),
            nn.Conv2d(32, 128, 3),
            nn.ReLU(),
            nn.Conv2d(128, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(3),
            nn.Dropout(dropout),
        )
        conv_bins = _conv_out(_conv_out(num_bins))
        if conv_bins < 1:
            raise ValueError(f"num_bins={num_bins} is too small for the CRNN's convolutions")
        self.lstm = nn.LSTM(64 * conv_bins, lstm_units, batch_first=True)
        if time_pooling == "flatten":
            conv_frames = _conv_out(_conv_out(num_frames))
            if conv_frames < 2:
                raise ValueError(f"num_frames={num_frames} is too small for the CRNN's flatten pooling")
            self.embed_dim = lstm_units * (conv_frames // 2)
        else:
            self.embed_dim = lstm_units

    def normalise(self, magnitude: Tensor) -> Tensor:
        """``[B, bins, frames]`` → standardised ``[B, frames, bins]`` as in CountNet's predict.py."""
        frames = magnitude.transpose(1, 2)
        if self.time_pooling == "flatten":
            missing = self.num_frames - frames.shape[1]
            if missing > 0:  # silent (zero-magnitude) frames, standardised like real ones below
                frames = F.pad(frames, (0, 0, 0, missing))
            frames = frames[:, : self.num_frames]
        frames = (frames - self.scaler_mean) / self.scaler_scale
        if self.clip_norm:
            theta = torch.linalg.vector_norm(frames, dim=2) + _CLIP_NORM_EPS
            frames = frames / theta.mean(dim=1, keepdim=True).unsqueeze(-1)
        return frames

    def forward(self, magnitude: Tensor) -> Tensor:
        x = self.convs(self.normalise(magnitude).unsqueeze(1))  # [B, 64, frames', bins']
        x = x.permute(0, 2, 1, 3).flatten(2)  # [B, frames', 64 * bins']
        out, _ = self.lstm(x)  # [B, frames', units]
        if self.time_pooling == "last":
            return out[:, -1]
        return F.max_pool1d(out.transpose(1, 2), 2).flatten(1)


@MODELS.register("crnn")
class CountNetCRNN(CountModel):
    """CountNet CRNN (Stöter et al., TASLP 2019): the 0.35 M-parameter baseline, ~3 G MACs per 5 s.

    What follows the original (github.com/faroit/CountNet ``predict.py``/``eval.py`` and the paper):

    - input: magnitude (not log) STFT, ``n_fft=400``, hop 160 (201 bins, 500 frames for 5 s at 16 kHz);
      librosa's centred, reflect-padded frames, cropped to the first 500 frames.
    - normalisation: per-frequency-bin standardisation with training-set mean/std (sklearn
      ``StandardScaler``; :meth:`fit_normalizer`), then division of the clip by the mean over frames of
      the per-frame L2 norm (``X /= mean(||X_t|| + eps)``), as ``predict.py`` does (``clip_norm``).
    - layers: valid-padded 3x3 convolutions with ReLU (64, 32, pool 3, 128, 64, pool 3), dropout 0.25,
      LSTM(40) returning sequences, max-pool 2 over time, flatten, dense 11. This reproduces the released
      model's 352,699 parameters (these layers are the only way to reach that number), plus 160 for the
      second bias vector PyTorch's LSTM keeps; the dense layer is the :class:`ClassificationHead`. We
      return logits (the softmax lives in the loss).
    - initialisation: Keras defaults (Glorot-uniform kernels, orthogonal recurrent kernel, zero biases,
      forget-gate bias 1).

    Where it differs: PyTorch's LSTM uses the logistic sigmoid for its gates (Keras' default was
    ``hard_sigmoid``), and ``time_pooling="last"`` (last LSTM output, 341,859 parameters) is offered for
    inputs of any length without padding.

    Args:
        num_classes: counts ``0..num_classes-1``.
        num_frames: frames the ``"flatten"`` pooling covers (input cropped / padded with silence to it).
        time_pooling: ``"flatten"`` (original) or ``"last"``.
        dropout: dropout after the convolutions.
        clip_norm: divide each clip by its mean frame norm after standardisation (original: True).
        head: count head name from :data:`~ersam_ssl.models.heads.HEADS`.
        head_kwargs: extra arguments of the head.
        n_fft, hop_length: STFT parameters.
    """

    def __init__(
        self,
        num_classes: int = 11,
        num_frames: int = 500,
        time_pooling: str = "flatten",
        dropout: float = 0.25,
        clip_norm: bool = True,
        head: str = "classify",
        head_kwargs: dict | None = None,
        n_fft: int = 400,
        hop_length: int = 160,
    ) -> None:
        frontend = StftMagnitude(n_fft=n_fft, hop_length=hop_length)
        backbone = CountNetBackbone(
            num_bins=frontend.num_bins,
            num_frames=num_frames,
            time_pooling=time_pooling,
            dropout=dropout,
            clip_norm=clip_norm,
        )
        count_head = build_head(head, backbone.embed_dim, num_classes, **(head_kwargs or {}))
        config = {
            "name": "crnn",
            "kwargs": {
                "num_classes": num_classes,
                "num_frames": num_frames,
                "time_pooling": time_pooling,
                "dropout": dropout,
                "clip_norm": clip_norm,
                "head": head,
                "head_kwargs": dict(head_kwargs or {}),
                "n_fft": n_fft,
                "hop_length": hop_length,
            },
        }
        super().__init__(frontend, backbone, count_head, backbone.embed_dim, config)
        self._keras_init()

    def _keras_init(self) -> None:
        dense = [self.head.linear] if isinstance(self.head, ClassificationHead) else []
        convs = [m for m in self.backbone.modules() if isinstance(m, nn.Conv2d)]
        for module in convs + dense:
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        lstm = self.backbone.lstm
        nn.init.xavier_uniform_(lstm.weight_ih_l0)
        nn.init.orthogonal_(lstm.weight_hh_l0)
        nn.init.zeros_(lstm.bias_ih_l0)
        nn.init.zeros_(lstm.bias_hh_l0)
        units = lstm.hidden_size
        with torch.no_grad():  # gate order i, f, g, o: forget-gate bias 1 (Keras unit_forget_bias)
            lstm.bias_ih_l0[units : 2 * units].fill_(1.0)

    @torch.no_grad()
    def fit_normalizer(self, batches: Iterable[Any]) -> CountNetCRNN:
        """Fit the per-bin standardisation on training audio (streaming, like ``StandardScaler.fit``).

        Mean and population standard deviation of every STFT bin over all frames of all waves, merged
        batch by batch with Chan et al.'s parallel update in float64; bins with zero variance get scale 1.

        Args:
            batches: iterable of waveform batches ``[B, T]``; a tuple/list batch uses its first element,
                a mapping its ``"wave"`` entry.

        Returns:
            ``self``.
        """
        device = self.backbone.scaler_mean.device
        count = 0
        mean = torch.zeros(self.backbone.num_bins, dtype=torch.float64, device=device)
        m2 = torch.zeros_like(mean)
        for batch in batches:
            wave = _wave_of(batch).to(device)
            frames = self.frontend(wave).transpose(1, 2).reshape(-1, self.backbone.num_bins).double()
            n_batch = frames.shape[0]
            if n_batch == 0:
                continue
            batch_mean = frames.mean(dim=0)
            batch_m2 = (frames - batch_mean).square().sum(dim=0)
            delta = batch_mean - mean
            total = count + n_batch
            mean += delta * (n_batch / total)
            m2 += batch_m2 + delta.square() * (count * n_batch / total)
            count = total
        if count == 0:
            raise ValueError("fit_normalizer got no audio")
        scale = (m2 / count).sqrt()
        scale[scale < 10 * torch.finfo(torch.float64).eps] = 1.0
        self.backbone.scaler_mean.copy_(mean)
        self.backbone.scaler_scale.copy_(scale)
        return self


def _wave_of(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["wave"]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    raise TypeError(f"cannot find a waveform in a batch of type {type(batch).__name__}")
