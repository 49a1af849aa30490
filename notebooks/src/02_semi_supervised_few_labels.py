# %% [markdown]
# # 02 · Semi-supervised training with few labels
#
# Train a counter from a handful of labeled clinical-style clips plus unlabeled mixtures:
# contrastive pretraining (SimCLR) of the encoder, then FixMatch (fixed 0.95 threshold, which beat FlexMatch in `benchmarks/few_label.py`), compared
# with supervised training on the same labels. Checkpoints move between stages with one call
# (`ersam_ssl.checkpoint.load_weights`).
#
# CI runs this with tiny settings (a few optimizer steps, 1 s clips): the numbers only show the plumbing.
# `ERSAM_NOTEBOOK_FULL=1` uses the library defaults; `benchmarks/few_label.py` is the real comparison.

# %%
import os
import tempfile
from pathlib import Path

import pytorch_lightning as pl

from ersam_ssl.checkpoint import load_weights
from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig
from ersam_ssl.metrics import plot_confusion
from ersam_ssl.models import SAMSpace, build_model
from ersam_ssl.ssl import (
    ContrastivePretrain,
    FixMatch,
    FixMatchConfig,
    OptimConfig,
    SupervisedCounter,
    datamodule_for,
)
from ersam_ssl.trainer import TrainerConfig, fit

FULL = os.environ.get("ERSAM_NOTEBOOK_FULL") == "1"
STEPS = 300 if FULL else 4
engine = DataEngine(
    DataConfig(labels_per_class=5, num_workers=2)
    if FULL
    else DataConfig(
        synth_speakers=30,
        synth_seconds=6.0,
        mixture=MixtureConfig(max_speakers=3, duration=1.0),
        split_fractions=(0.6, 0.15, 0.15, 0.1),
        pool_size=48,
        labels_per_class=2,
        val_size=16,
        test_size=16,
        batch_size=8,
        unlabeled_batch_size=8,
        num_workers=0,
    )  # fmt: skip
)
lab, unl = engine.budget
print(f"{lab.size} labeled clips, {unl.size} unlabeled clips, {engine.num_classes} count classes")
work = Path(tempfile.mkdtemp(prefix="nb02-"))
trainer_cfg = TrainerConfig(max_steps=STEPS, progress_bar=False)
arch = SAMSpace().default()

# %% [markdown]
# ## Supervised baseline on the few labels

# %%
pl.seed_everything(0)
sup = SupervisedCounter(build_model(arch, num_classes=engine.num_classes), OptimConfig(lr=3e-3))
dm = datamodule_for(sup, engine)
trainer = fit(sup, dm, trainer_cfg, work / "supervised")
trainer.test(sup, datamodule=dm, verbose=False)
sup.test_results["error_rate"], sup.test_results["mae"]

# %% [markdown]
# ## Contrastive pretraining on unlabeled clips (SimCLR), then FixMatch

# %%
pl.seed_everything(0)
pre = ContrastivePretrain.simclr(
    build_model(arch, num_classes=engine.num_classes), optim=OptimConfig(lr=2e-3)
)
fit(pre, datamodule_for(pre, engine), trainer_cfg, work / "pretrain")

student = build_model(arch, num_classes=engine.num_classes)
copied = load_weights(student, work / "pretrain" / "checkpoints" / "last.ckpt")  # the hand-over
print(f"copied {len(copied)} tensors (frontend + backbone)")
fm = FixMatch(student, OptimConfig(lr=3e-3), FixMatchConfig(threshold=0.95))
dm = datamodule_for(fm, engine)
trainer = fit(fm, dm, trainer_cfg, work / "fixmatch")
trainer.test(fm, datamodule=dm, verbose=False)
fm.test_results["error_rate"], fm.test_results["mae"]

# %%
import pandas as pd

pd.DataFrame(
    {
        name: {k: m.test_results[k] for k in ("error_rate", "mae", "level_accuracy", "ece")}
        for name, m in (("supervised (few labels)", sup), ("SimCLR + FixMatch", fm))
    }  # fmt: skip
).T

# %%
from IPython.display import Image

Image(filename=str(plot_confusion(fm.test_results["confusion"], work / "confusion.png", "SimCLR + FixMatch")))
