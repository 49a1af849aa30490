# %% [markdown]
# # 03 · Hardware-aware NAS and the Pareto front
#
# ERSAM's search: a weight-sharing supernet over the SAM search space (kernel, expansion, depth, width,
# squeeze-excitation, pooling head), trained once with the sandwich rule and distillation, then searched
# with NNI (regularized evolution, inherited weights) under a modeled Pixel-3 energy budget. The chosen
# member is fine-tuned and exported to ONNX (fp32 and int8).
#
# Tiny settings in CI; `ERSAM_NOTEBOOK_FULL=1` for the defaults (see `benchmarks/nas.py` for figures).

# %%
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Image

from ersam_ssl import config as cfglib
from ersam_ssl.data import DataEngine
from ersam_ssl.models import SAMSpace
from ersam_ssl.nas.config import SearchConfig
from ersam_ssl.nas.search import run_search

FULL = os.environ.get("ERSAM_NOTEBOOK_FULL") == "1"
out = Path(tempfile.mkdtemp(prefix="nb03-"))
if FULL:
    cfg = SearchConfig(out_dir=str(out))
else:
    tiny = ["data.synth_speakers=30", "data.synth_seconds=6", "data.mixture.max_speakers=3",
            "data.mixture.duration=1.0", "data.split_fractions=[0.6,0.15,0.15,0.1]", "data.pool_size=48",
            "data.labels_per_class=2", "data.val_size=16", "data.test_size=16", "data.num_workers=0",
            "supernet.steps=4", "supernet.batch_size=4", "supernet.unlabeled_batch_size=8",
            "budget.latency=none", "budget.num_samples=16000", "search.trials=4", "search.population_size=2",
            "search.sample_size=1", "search.calib_batches=1", "search.calib_batch_size=8", "finetune.steps=2",
            "export.calib_clips=8", "export.repeats=3", "trainer.progress_bar=false"]  # fmt: skip
    cfg = cfglib.load(SearchConfig, overrides=[f"out_dir={out}", *tiny])
print(f"search space: {SAMSpace().num_archs():,} architectures")

# %%
summary = run_search(cfg, DataEngine(cfg.data))
print(json.dumps(summary["arch"], indent=1))
summary["cost"], summary["test"]["error_rate"], summary["test"]["mae"]

# %%
pd.read_csv(out / "candidates.csv").sort_values("score", ascending=False).head(10)

# %%
Image(filename=str(out / "pareto.png"))

# %% [markdown]
# ## Exported models: accuracy preserved, latency re-measured (1 thread, ONNX Runtime)

# %%
export = summary["export"]
print(
    "latency, 1 thread (ms):",
    {k: round(v, 2) for k, v in export["latency_1_thread"].items() if k.endswith("_ms")},
)
models = {name: m for name, m in export["test"].items() if isinstance(m, dict)}  # torch, onnx_fp32, onnx_int8
pd.DataFrame(models).T[["error_rate", "mae", "max_abs_diff"]]
