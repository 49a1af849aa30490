"""Speaker-disjoint splits and few-label budgets.

Honest evaluation needs test mixtures made only of speakers never heard in training; every split here is a
partition of speaker ids, and babble noise comes from a fourth, held-out group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

SPLITS = ("train", "val", "test", "babble")
#: ``labels_per_class`` value meaning "every pool item is labeled" (the fully supervised reference).
ALL_LABELS = -1


def _stable_key(seed: int, speaker: str) -> str:
    return hashlib.sha1(f"{seed}:{speaker}".encode()).hexdigest()


def speaker_splits(
    speakers: Sequence[str],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    subsets: Mapping[str, str] | None = None,
    subset_of: Mapping[str, str] | None = None,
    min_speakers: Mapping[str, int] | None = None,
) -> dict[str, list[str]]:
    """Partition speaker ids into disjoint ``train``/``val``/``test``/``babble`` groups.

    Args:
        speakers: all speaker ids.
        fractions: share of speakers per split (normalised); default 0.7/0.1/0.15/0.05.
        seed: the assignment is a seeded hash order, stable when speakers are added or removed.
        subsets: optional ``{corpus subset: split}`` mapping (e.g. ``{"test-other": "test"}``); speakers
            of a mapped subset go to that split, the rest are divided by ``fractions``.
        subset_of: ``{speaker: subset}``, needed with ``subsets``.
        min_speakers: minimum speakers per split (e.g. ``max_speakers`` for val/test so every count is
            possible); a clear error says which split is too small.

    Returns:
        ``{split: sorted speaker ids}``; every speaker is in exactly one split.
    """
    fractions = dict(fractions or {"train": 0.7, "val": 0.1, "test": 0.15, "babble": 0.05})
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    rest = []
    for spk in sorted(set(speakers)):
        target = subsets.get((subset_of or {}).get(spk, ""), None) if subsets else None
        if target is not None:
            if target not in out:
                raise ValueError(f"subset mapping names unknown split {target!r}")
            out[target].append(spk)
        else:
            rest.append(spk)
    rest.sort(key=lambda s: _stable_key(seed, s))
    splits = [s for s in SPLITS if fractions.get(s, 0) > 0]
    total = sum(fractions[s] for s in splits)
    if rest and not splits:
        raise ValueError("no split has a positive fraction")
    # Largest-remainder apportionment so shares sum exactly to len(rest).
    quotas = {s: fractions[s] / total * len(rest) for s in splits}
    counts = {s: int(np.floor(q)) for s, q in quotas.items()}
    for s in sorted(splits, key=lambda s: quotas[s] - counts[s], reverse=True)[
        : len(rest) - sum(counts.values())
    ]:
        counts[s] += 1
    i = 0
    for s in splits:
        out[s].extend(rest[i : i + counts[s]])
        i += counts[s]
    for s in out:
        out[s].sort()
    for s, need in (min_speakers or {}).items():
        if len(out.get(s, [])) < need:
            raise ValueError(
                f"split {s!r} has {len(out.get(s, []))} speakers but needs at least {need}; "
                f"use a corpus with more speakers, larger fractions[{s!r}] or fewer max_speakers"
            )
    return out


def check_disjoint(splits: Mapping[str, Sequence[str]]) -> None:
    """Raise if any speaker appears in two splits."""
    seen: dict[str, str] = {}
    for name, spk in splits.items():
        for s in spk:
            if s in seen:
                raise AssertionError(f"speaker {s} is in both {seen[s]!r} and {name!r}")
            seen[s] = name


def label_budget(
    labels: Sequence[int], per_class: int, seed: int = 0, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``per_class`` labeled items per class; the rest are unlabeled.

    Args:
        labels: the (hidden) label of every pool item.
        per_class: labeled items per class; ``-1`` (:data:`ALL_LABELS`) labels everything (the fully
            supervised reference); any other negative value is an error.
        seed: which items get labels.
        num_classes: classes expected; an error is raised if a class has fewer than ``per_class`` items.

    Returns:
        (labeled indices, unlabeled indices), both sorted.
    """
    labels = np.asarray(labels)
    if per_class < ALL_LABELS:
        raise ValueError(f"labels per class must be >= 0, or {ALL_LABELS} for all; got {per_class}")
    if per_class == ALL_LABELS:
        return np.arange(labels.size), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x1AB])
    chosen = []
    classes = range(num_classes) if num_classes is not None else np.unique(labels)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise ValueError(f"class {c} has {idx.size} pool items, fewer than the budget {per_class}")
        chosen.append(rng.permutation(idx)[:per_class])
    lab = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    unl = np.setdiff1d(np.arange(labels.size), lab)
    return lab.astype(np.int64), unl.astype(np.int64)
