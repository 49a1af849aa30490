"""Lightning Trainer factory: checkpointing with resume, progress bars, loggers and scale-out from config.

Scale-out is configuration only: ``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` are passed to
Lightning unchanged (e.g. ``trainer.devices=4 trainer.strategy=ddp`` on a GPU node, or
``trainer.num_nodes=2`` under SLURM/torchrun); the modules never place tensors themselves.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities import rank_zero_only

from ersam_ssl.checkpoint import AtomicCheckpointIO
from ersam_ssl.fileio import remove_partial_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    """How one training stage runs.

    Attributes:
        max_steps / max_epochs: stop criteria (``max_steps=-1`` means epochs decide).
        val_every_steps: validate every N training steps (0: once per epoch).
        checkpoint_every_steps: 0 (default) writes ``last.ckpt`` at every epoch end: a killed run resumes
            from the last epoch boundary and, with the epoch-seeded data of :class:`SAMDataModule` and the
            RNG states saved by :class:`RNGStateCallback`, reproduces the uninterrupted run exactly. N > 0
            also writes every N steps (finer-grained, but a mid-epoch resume replays that epoch's data
            from its start, so it is not bit-identical).
        ema_decay: 0 (default) trains plain weights; in (0, 1) keeps an exponential moving average of the
            weights and of the BatchNorm statistics (Lightning's ``EMAWeightAveraging``, updated after every
            optimizer step), which replaces the trained weights when training ends and is what validation
            and checkpoints' ``state_dict`` see (the raw weights stay in the checkpoint for resuming).
        wandb: log to Weights & Biases (offline unless the user is logged in / ``WANDB_MODE=online``).
        accelerator / devices / num_nodes / strategy / precision: passed to ``pl.Trainer`` (scale-out).
    """

    max_steps: int = 500
    max_epochs: int = -1
    val_every_steps: int = 0
    limit_val_batches: float = 1.0
    checkpoint_every_steps: int = 0
    log_every_steps: int = 10
    progress_bar: bool = True
    wandb: bool = False
    wandb_project: str = "ersam_ssl"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float = 0.0
    ema_decay: float = 0.0
    deterministic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"trainer.ema_decay={self.ema_decay}: must be in [0, 1) (0 turns averaging off)")

    @property
    def world_size(self) -> int:
        """Processes this config trains with (devices per node × nodes; ``"auto"``/-1 count as one)."""
        d = self.devices
        per_node = len(d) if isinstance(d, (list, tuple)) else d if isinstance(d, int) and d > 0 else 1
        return per_node * max(1, self.num_nodes)


class RNGStateCallback(pl.Callback):
    """Save and restore the torch/NumPy/Python generator states with every checkpoint.

    Lightning restores weights, optimizer and loop counters but not the generators that drive dropout,
    random subnet sampling, etc.; without them a resumed run diverges from the uninterrupted one.
    """

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        np_state = np.random.get_state()
        checkpoint["ersam_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": _python_state_to_tensor(random.getstate()),
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        rng = checkpoint.get("ersam_rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        random.setstate(_python_state_from_tensor(rng["python"]))


class EMA(EMAWeightAveraging):
    """Lightning's EMA of weights and buffers, with the averaged module readable during training."""

    def averaged(self) -> pl.LightningModule | None:
        """The averaged copy of the LightningModule (None before ``fit`` sets it up)."""
        model = self._average_model  # Lightning keeps the AveragedModel private; .module is the copy
        return None if model is None else model.module


def averaged_module(trainer: pl.Trainer) -> pl.LightningModule | None:
    """The EMA copy of the module ``trainer`` trains, if ``TrainerConfig.ema_decay`` turned averaging on."""
    for cb in trainer.callbacks:
        if isinstance(cb, EMA):
            return cb.averaged()
    return None


def _python_state_to_tensor(state: tuple) -> dict:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_tensor(d: dict) -> tuple:
    return d["version"], tuple(int(x) for x in d["internal"].tolist()), d["gauss"]


def _loggers(cfg: TrainerConfig, out_dir: Path, name: str) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(str(out_dir), name="logs", version="")]
    if cfg.wandb:
        from pytorch_lightning.loggers import WandbLogger

        offline = os.environ.get("WANDB_MODE", "offline") != "online" and not os.environ.get("WANDB_API_KEY")
        loggers.append(
            WandbLogger(project=cfg.wandb_project, name=name, save_dir=str(out_dir), offline=offline)
        )
    return loggers


def make_trainer(
    cfg: TrainerConfig, out_dir: str | Path, name: str = "stage", callbacks: list | None = None
) -> pl.Trainer:
    """A Trainer writing checkpoints/logs under ``out_dir`` (``checkpoints/last.ckpt`` is the resume point)."""
    out_dir = Path(out_dir)
    every = {"every_n_train_steps": cfg.checkpoint_every_steps} if cfg.checkpoint_every_steps > 0 else {}
    ckpt = ModelCheckpoint(
        # save_top_k=1 without a monitor keeps the newest checkpoint; Lightning writes last.ckpt only when
        # a regular checkpoint was written in the same step.
        dirpath=str(out_dir / "checkpoints"),
        save_last=True,
        save_top_k=1,
        save_on_train_epoch_end=True,
        **every,
    )
    cbs: list = [ckpt, RNGStateCallback(), LearningRateMonitor(logging_interval="step")]
    if cfg.ema_decay > 0:  # before the caller's callbacks, so they see this step's average
        cbs.append(EMA(decay=cfg.ema_decay))
    cbs.extend(callbacks or [])
    if cfg.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=10))
    kwargs: dict[str, Any] = {}
    if cfg.val_every_steps > 0:
        kwargs["val_check_interval"] = cfg.val_every_steps
        kwargs["check_val_every_n_epoch"] = None
    return pl.Trainer(
        default_root_dir=str(out_dir),
        max_steps=cfg.max_steps,
        max_epochs=cfg.max_epochs if cfg.max_epochs > 0 else (None if cfg.max_steps > 0 else 1),
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        logger=_loggers(cfg, out_dir, name),
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg.log_every_steps,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        gradient_clip_val=cfg.gradient_clip_val or None,
        deterministic=cfg.deterministic,
        limit_val_batches=cfg.limit_val_batches,
        num_sanity_val_steps=0,
        **kwargs,
    )


def resume_path(out_dir: str | Path) -> str | None:
    """``out_dir/checkpoints/last.ckpt`` if a previous (possibly killed) run left one."""
    p = Path(out_dir) / "checkpoints" / "last.ckpt"
    return str(p) if p.is_file() else None


def fit(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    cfg: TrainerConfig,
    out_dir: str | Path,
    name: str = "stage",
    resume: bool = True,
    callbacks: list | None = None,
) -> pl.Trainer:
    """Train ``module`` (resuming from ``out_dir``'s last checkpoint when ``resume``); returns the Trainer.

    Resuming first deletes the temporary files of checkpoint writes that a kill interrupted (see
    :func:`ersam_ssl.fileio.remove_partial_files`; rank 0 alone writes checkpoints, so it alone cleans).
    """
    if resume and rank_zero_only.rank == 0:
        for stale in remove_partial_files(Path(out_dir) / "checkpoints"):
            log.info("removed %s, left by an interrupted checkpoint write", stale)
    trainer = make_trainer(cfg, out_dir, name, callbacks)
    ckpt = resume_path(out_dir) if resume else None
    if ckpt:
        log.info("resuming %s from %s", name, ckpt)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    return trainer
