# %% [markdown]
# # 01 · Data and mixtures
#
# The data engine of `ersam_ssl`: speech sources, the speaker bank, LibriCount-style mixtures of 0..K
# speakers, clinical-style scenarios, speaker-disjoint splits and few-label budgets.
#
# Runs offline on the embedded corpus (speech synthesized with libespeak-ng). Set `FULL = True` for the
# default sizes (120 voices); CI executes this notebook with the tiny settings below.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Audio, display

from ersam_ssl.data import DataConfig, DataEngine, MixtureConfig, make_view

FULL = os.environ.get("ERSAM_NOTEBOOK_FULL") == "1"
cfg = DataConfig(
    synth_speakers=120 if FULL else 40,
    synth_seconds=30.0 if FULL else 8.0,
    mixture=MixtureConfig(max_speakers=10 if FULL else 4),
    pool_size=2200 if FULL else 50,
    val_size=110 if FULL else 10,
    test_size=220 if FULL else 10,
    num_workers=0,
)
engine = DataEngine(cfg)
engine.summary()

# %% [markdown]
# ## Speaker-disjoint splits
# Every speaker belongs to exactly one of train / val / test / babble (babble = held-out voices used only
# as background noise).

# %%
from ersam_ssl.data import check_disjoint

check_disjoint(engine.splits)
{k: len(v) for k, v in engine.splits.items()}

# %% [markdown]
# ## Mixtures of K speakers
# Item `i` has `K = i mod (max_speakers + 1)` speakers; the metadata lists them, their gains and speeds and
# the per-speaker voice activity.

# %%
clean = engine.mixtures("train", 20, "clean")
clinical = engine.mixtures("train", 20, "clinical")
m = clean.generate(3)
print(m.count, m.meta["speakers"], m.meta["max_concurrent"])
display(Audio(m.audio, rate=16000))

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 5), sharex=True)
for ax, (name, ds) in zip(axes.T.ravel(), [("clean K=1", clean), ("clinical K=1", clinical),
                                          ("clean K=3", clean), ("clinical K=3", clinical)]):  # fmt: skip
    k = int(name[-1])
    x = ds.generate(k).audio
    ax.specgram(x, NFFT=400, Fs=16000, noverlap=240, cmap="magma")
    ax.set_title(name)
fig.tight_layout()

# %% [markdown]
# ## Activity: how many speakers are talking in each 20 ms frame

# %%
m = clean.generate(4)
plt.figure(figsize=(8, 2))
plt.plot(np.arange(m.activity.shape[1]) * 0.02, m.activity.sum(0))
plt.xlabel("time (s)")
plt.ylabel("active speakers")
plt.title(f"K = {m.count}, max concurrent = {m.meta['max_concurrent']}")
# %% [markdown]
# ## Few labels and augmentation views
# The train pool is in the clinical domain; `labels_per_class` clips per count get labels, the rest stay
# unlabeled. Weak and strong views (audiomentations) feed pseudo-labeling and contrastive learning.

# %%
lab, unl = engine.budget
print(f"{lab.size} labeled, {unl.size} unlabeled clips")
x = engine.pool[int(lab[0])][0].numpy()
for name in ("weak", "strong"):
    y = make_view(name)(x)
    print(name, float(np.sqrt(np.mean(y**2))))
display(Audio(make_view("strong")(x), rate=16000))
