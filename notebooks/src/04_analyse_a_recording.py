# %% [markdown]
# # 04 · Analysing a long recording
#
# The clinical use: a day of phone audio → a count, confidence and social-ambiance level for every
# 5 s window, plus the time share per level. Here we build a recording with known speaker counts from the
# data engine, train a small counter quickly, and analyse the recording with it (the same as
# `ersam-ssl analyze RECORDING --model MODEL --out DIR`).

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import soundfile as sf
from IPython.display import Image

from ersam_ssl.analysis.recording import analyze_recording
from ersam_ssl.checkpoint import save_model
from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig, SAMDataModule
from ersam_ssl.export import export_onnx
from ersam_ssl.models import create_model
from ersam_ssl.ssl import OptimConfig, SupervisedCounter
from ersam_ssl.trainer import TrainerConfig, fit

FULL = os.environ.get("ERSAM_NOTEBOOK_FULL") == "1"
work = Path(tempfile.mkdtemp(prefix="nb04-"))
engine = DataEngine(DataConfig(
    synth_speakers=120 if FULL else 30, synth_seconds=30.0 if FULL else 6.0,
    mixture=MixtureConfig(max_speakers=10 if FULL else 3),
    split_fractions=(0.7, 0.1, 0.15, 0.05) if FULL else (0.6, 0.15, 0.15, 0.1),
    pool_size=2200 if FULL else 40, labels_per_class=-1, val_size=40, test_size=40, num_workers=0,
    batch_size=16 if FULL else 8,
))  # fmt: skip

# %% [markdown]
# ## A recording with known counts: one test-speaker mixture per 5 s segment (count 0 = background only)

# %%
segments = engine.mixtures("test", 24 if not FULL else 120, "clinical")
truth = [segments.count(i) for i in range(len(segments))]
audio = np.concatenate([segments.generate(i).audio for i in range(len(segments))])
rec = work / "recording.flac"
sf.write(rec, audio, 16000)
print(f"{audio.size / 16000 / 60:.1f} minutes, counts {truth[:12]}...")

# %% [markdown]
# ## A counter (all pool labels, a short supervised run — the pipeline's searched model goes here)

# %%
pl.seed_everything(0)
module = SupervisedCounter(create_model("sam", num_classes=engine.num_classes), OptimConfig(lr=3e-3))
fit(module, SAMDataModule(engine, labeled_views={"x": "weak"}), TrainerConfig(max_steps=400 if FULL else 10,
    progress_bar=False), work / "train")  # fmt: skip
model_path = save_model(module.model, work / "model.pt")

# %%
summary = analyze_recording(rec, model_path, work / "analysis")
windows = pd.read_csv(work / "analysis" / "windows.csv")
windows["true_count"] = truth[: len(windows)]
print(f"MAE against the known counts: {np.mean(np.abs(windows['count'] - windows['true_count'])):.2f}")
windows.head(8)

# %% [markdown]
# ## Time share per ambiance level (what a clinician reads), and the same analysis from the ONNX export
#
# `export_onnx` stores the model config in the file, so the export alone is enough for
# `ersam-ssl analyze` on a phone-side or server-side pipeline.

# %%
onnx_path = export_onnx(module.model, work / "model.onnx")
from_onnx = analyze_recording(rec, onnx_path, work / "analysis-onnx", plot=False)
assert (from_onnx.table.count == summary.table.count).all()
pd.Series(summary.level_share, name="time share")

# %%
Image(filename=str(work / "analysis" / "timeline.png"))
