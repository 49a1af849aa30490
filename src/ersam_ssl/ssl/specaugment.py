"""SpecAugment on the frontend's output: random frequency bands and time spans masked while training.

Park et al. (Interspeech 2019) masking, through :func:`torchaudio.functional.mask_along_axis_iid` (an
independent draw per clip). Masked cells get the clip's own mean feature value, so the mask carries no
level cue whatever the frontend's normalisation (0 for the level-normalised log-mel, the clip's mean log
power otherwise). Meant against brittle spectral cues (a band-limit never seen, a bright voice), but
measured it did not help: the 43k-parameter SAM default member underfits the mixture stream, and with
SpecAugment (plus colouration) its test MAE rose in 19 of 21 domain x corpus cells (LibriSpeech clean
0.94 -> 1.16, ``benchmarks/results/accuracy/mixture-default-libri+ocean+synth-s0-6000-eqsa.json``),
while colouration alone was neutral. Hence off by default everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torchaudio.functional import mask_along_axis_iid


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Whether to mask, and how many masks of at most how many bins / frames (``enabled=False``: off).

    Defaults: two bands of up to 8 of 64 mel bands and two spans of up to 40 of 501 frames (0.4 s),
    LibriSpeech's "LB" policy scaled to 64 bands and a 5 s window. ``enabled`` lets a config that holds
    the section (the pipeline's ``pretrain.spec_augment``) keep it off: a YAML value cannot be ``None``
    and a section at the same time.
    """

    enabled: bool = True
    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_width: int = 40

    def validate(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"spec_augment.{name}={getattr(self, name)}: must be >= 0")


class SpecAugment(nn.Module):
    """``[B, bins, frames]`` → the same with random masks while ``training`` (identity in eval mode or when
    the config is not ``enabled``)."""

    def __init__(self, config: SpecAugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config or SpecAugmentConfig()
        self.config.validate()

    def forward(self, feats: Tensor) -> Tensor:
        cfg = self.config
        if not self.training or not cfg.enabled or feats.dim() != 3:
            return feats
        # centred, masked with 0, shifted back: masked cells hold the clip's mean
        mean = feats.detach().mean(dim=(1, 2), keepdim=True)
        out = (feats - mean).unsqueeze(1)  # [B, 1, bins, frames]: one draw per clip
        for axis, n, width in ((2, cfg.freq_masks, cfg.freq_width), (3, cfg.time_masks, cfg.time_width)):
            width = min(width, out.shape[axis])
            for _ in range(n if width > 0 else 0):
                out = mask_along_axis_iid(out, width, 0.0, axis)
        return out.squeeze(1) + mean

    def extra_repr(self) -> str:
        return str(self.config)
