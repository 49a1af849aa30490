"""The data engine and its LightningDataModule.

:class:`DataEngine` turns a :class:`DataConfig` into everything the training stages need — source, speaker
bank, speaker-disjoint splits, scenario renderers, the train pool (few labeled + many unlabeled clips of the
clinical-style domain), validation and test sets — once, so several stages of a pipeline share it.
:class:`SAMDataModule` is a thin LightningDataModule over an engine that serves the loaders a training
method asks for (labeled, unlabeled, both) with the requested augmentation views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from ersam_ssl.config import check_at_least, check_positive
from ersam_ssl.data.augment import ViewDataset
from ersam_ssl.data.bank import SpeakerBank
from ersam_ssl.data.catalog import pool_source_names
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.data.mixtures import FileCountDataset, MixtureConfig, MixtureDataset, babble_track
from ersam_ssl.data.sampling import EpochSampler
from ersam_ssl.data.scenarios import ScenarioRenderer, get_scenario
from ersam_ssl.data.sources import SOURCES, CombinedSource, LibriCountSource, Source
from ersam_ssl.data.splits import ALL_LABELS, check_disjoint, label_budget, speaker_splits

log = logging.getLogger(__name__)

#: Test domains every accuracy figure is reported on: LibriCount-style overlapped mixtures in each acoustic
#: scenario, and clean conversational mixtures (turn-taking; label = speakers active >= min_speech_s).
TEST_DOMAINS = ("clean", "clinical", "noisy", "reverberant", "loud", "quiet", "conversational")


@dataclass(frozen=True)
class DataConfig:
    """Everything that defines the data of a run (defaults: the embedded synthesized corpus).

    Attributes:
        source: a registered source of speech (:func:`~ersam_ssl.data.catalog.pool_source_names`):
            ``synth`` (embedded default), ``librispeech`` or ``folder``.
        root: corpus root of a source that needs one (e.g. ``/data/LibriSpeech``); optional for ``synth``
            (its cache folder).
        subsets: LibriSpeech subset folders to read (empty: all found under ``root``).
        subset_splits: ``"subset:split"`` entries pinning whole subsets to a split, e.g.
            ``("test-clean:test",)``; other speakers are split by ``split_fractions``.
        split_fractions: train/val/test/babble shares of the speakers.
        pool_size: train-pool mixtures (labeled budget + unlabeled rest), balanced over counts.
        labels_per_class: few-label budget per count class; ``-1`` (:data:`ALL_LABELS`) = every pool clip
            is labeled. Other negative values are errors, so a typo cannot turn a few-label experiment into
            a fully supervised one.
        labeled_scenario / unlabeled_scenario / test_scenario: acoustic domain of each part; the default
            is the shifted "clinical" domain everywhere except where a study says otherwise.
        train_scenario / train_conversation_prob: domain and conversational share of the streamed
            mixtures that mixture supervision trains on (:mod:`ersam_ssl.data.stream`); the default
            randomizes every acoustic factor per clip. The share is a trade-off, measured by
            ``benchmarks/accuracy.py`` (wide SAM default, 6000 steps, results ``*-wide`` vs ``*-wide-conv0.2``):
            0.2 instead of 0.5 lowered the MAE of the six overlapped-speech domains by 0.1-0.2 and raised
            the conversational one by about 0.55. 0.5 stays the default: conversation is what social
            ambiance mostly is.
        extra_sources: more corpora mixed into the speaker pool, ``"kind"`` or ``"kind:root"`` (e.g.
            ``"folder:/data/speechocean762"``); speakers are then named ``<corpus>/<speaker>``.
        eval_domains: domains (of :data:`TEST_DOMAINS`) the evaluate stage reports and the search chooses
            its subnet on (validation mixtures of every domain, ``val_size`` in all).
        precompute_pool: render the pool into memory once (int16, exact) instead of every epoch.
        min_epoch_items: a training epoch repeats a small set (e.g. 10 labels per class) until it holds at
            least this many items, so validation and epoch overhead do not run after every batch.
        test_root: optional LibriCount-style folder used as the test set instead of generated mixtures.
        synth_speakers / synth_seconds / synth_seed: the embedded corpus (fixed across run seeds, as a real
            corpus would be; ``seed`` varies splits, mixtures and label budgets).

    A source reads its own options from this config (:meth:`~ersam_ssl.data.sources.Source.config_options`).
    """

    source: str = "synth"
    root: str | None = None
    subsets: tuple[str, ...] = ()
    subset_splits: tuple[str, ...] = ()
    synth_speakers: int = 120
    synth_seconds: float = 30.0
    synth_seed: int = 0
    max_seconds_per_speaker: float = 60.0
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    split_fractions: tuple[float, float, float, float] = (0.7, 0.1, 0.15, 0.05)
    pool_size: int = 2200
    labels_per_class: int = 10
    val_size: int = 330
    test_size: int = 660
    labeled_scenario: str = "clinical"
    unlabeled_scenario: str = "clinical"
    test_scenario: str = "clinical"
    train_scenario: str = "randomized"
    train_conversation_prob: float = 0.5
    extra_sources: tuple[str, ...] = ()
    eval_domains: tuple[str, ...] = ("clinical", "clean", "conversational")
    test_root: str | None = None
    batch_size: int = 32
    unlabeled_batch_size: int = 64
    num_workers: int = 2
    precompute_pool: bool = True
    min_epoch_items: int = 512
    seed: int = 0

    def validate(self) -> None:
        kinds = pool_source_names()
        if self.source not in kinds:
            raise ValueError(f"data.source={self.source!r}: choose one of {', '.join(kinds)}")
        if SOURCES.get(self.source).needs_root and not self.root:
            raise ValueError(f"data.source={self.source} needs data.root=/path/to/corpus")
        for entry in self.extra_sources:
            kind, _, root = entry.partition(":")
            if kind not in kinds or (SOURCES.get(kind).needs_root and not root):
                rooted = [k for k in kinds if SOURCES.get(k).needs_root]
                forms = [k for k in kinds if k not in rooted] + ["|".join(rooted) + ":/root"]
                raise ValueError(f"data.extra_sources entry {entry!r}: use {' or '.join(forms)}")
        if self.labels_per_class < ALL_LABELS:
            raise ValueError(
                f"data.labels_per_class={self.labels_per_class}: give a budget >= 0 per count class, or "
                f"{ALL_LABELS} to label every pool clip"
            )
        check_at_least("data", self, 1, "pool_size", "val_size", "test_size", "batch_size",
                       "unlabeled_batch_size", "synth_speakers")  # fmt: skip
        check_at_least("data", self, 0, "num_workers", "min_epoch_items")
        check_positive("data", self, "synth_seconds", "max_seconds_per_speaker")
        # The pool is balanced over counts (item i holds i mod num_classes speakers).
        per_class = self.pool_size // self.mixture.num_classes
        if self.labels_per_class > per_class:
            raise ValueError(
                f"data.labels_per_class={self.labels_per_class} exceeds the pool: data.pool_size="
                f"{self.pool_size} holds {per_class} clips per count class ({self.mixture.num_classes} "
                f"classes); raise data.pool_size to at least {self.labels_per_class * self.mixture.num_classes}"
            )
        if any(f < 0 for f in self.split_fractions):
            raise ValueError(
                f"data.split_fractions={list(self.split_fractions)}: train/val/test/babble shares must be >= 0"
            )
        if not 0.0 <= self.train_conversation_prob <= 1.0:
            raise ValueError(
                f"data.train_conversation_prob={self.train_conversation_prob} is not a probability"
            )
        for name in ("labeled_scenario", "unlabeled_scenario", "test_scenario", "train_scenario"):
            get_scenario(getattr(self, name))
        bad = [d for d in self.eval_domains if d not in TEST_DOMAINS]
        if bad or not self.eval_domains:
            raise ValueError(f"data.eval_domains={list(self.eval_domains)}: choose from {TEST_DOMAINS}")
        for entry in self.subset_splits:
            if ":" not in entry:
                raise ValueError(f"subset_splits entry {entry!r} must look like 'test-clean:test'")
        self.mixture.validate()


class DataEngine:
    """Builds source, bank, splits, scenarios and datasets of a :class:`DataConfig` (lazily, once)."""

    def __init__(self, config: DataConfig | None = None, source: Source | None = None) -> None:
        self.config = config or DataConfig()
        self.config.validate()
        self._source = source
        self.levels = AmbianceLevels()

    # -- building blocks -------------------------------------------------------------------------
    def _open(self, kind: str, root: str | None) -> Source:
        source = SOURCES.get(kind)
        return source.open(root, **source.config_options(self.config))

    @cached_property
    def source(self) -> Source:
        cfg = self.config
        if self._source is not None:
            return self._source
        main = self._open(cfg.source, cfg.root)
        if not cfg.extra_sources:
            return main
        parts = [main]
        for entry in cfg.extra_sources:
            kind, _, root = entry.partition(":")
            parts.append(self._open(kind, root or None))
        return CombinedSource(parts)

    @cached_property
    def bank(self) -> SpeakerBank:
        bank = SpeakerBank.from_source(
            self.source, max_seconds_per_speaker=self.config.max_seconds_per_speaker
        )
        for bad in bank.report.bad:
            log.warning("skipped %s: %s", bad.path, bad.reason)
        return bank

    @cached_property
    def splits(self) -> dict[str, list[str]]:
        return self._split(self.bank.speakers)

    def check(self) -> None:
        """Cheap pre-flight check of the data: open the source(s) (file headers only, no decoding) and
        check that their speakers fill the splits; a LibriCount ``test_root`` is opened too.

        Run before a pipeline writes anything, so a missing or empty root, a corpus with too few speakers
        or an unusable test folder is reported at once (speakers whose files all fail to decode can still
        make the splits too small later, when the bank is built).

        Raises:
            FileNotFoundError: a root is missing or holds no usable audio.
            ValueError: a split would get fewer speakers than ``mixture.max_speakers``.
        """
        speakers = self.source.speakers()
        try:
            self._split(speakers)
        except ValueError as e:
            where = self.config.root or f"{self.config.source} corpus"
            raise ValueError(f"{where}: {len(speakers)} speaker(s) found; {e}") from e
        if self.config.test_root:
            self.test_source  # noqa: B018 - opening it checks it

    @cached_property
    def test_source(self) -> LibriCountSource:
        return LibriCountSource(self.config.test_root)

    def _split(self, speakers: list[str]) -> dict[str, list[str]]:
        cfg = self.config
        subset_of = {u.speaker: u.subset for u in self.source.utterances}
        subsets = dict(e.split(":", 1) for e in cfg.subset_splits) if cfg.subset_splits else None
        k = cfg.mixture.max_speakers
        splits = speaker_splits(
            speakers,
            dict(zip(("train", "val", "test", "babble"), cfg.split_fractions)),
            seed=cfg.seed,
            subsets=subsets,
            subset_of=subset_of,
            min_speakers={"train": k, "val": k, "test": k}
            if cfg.test_root is None
            else {"train": k, "val": k},
        )
        check_disjoint(splits)
        return splits

    @cached_property
    def babble(self) -> np.ndarray | None:
        spk = self.splits["babble"]
        return babble_track(self.bank, spk, seed=self.config.seed) if spk else None

    def renderer(self, scenario: str) -> ScenarioRenderer | None:
        cfg = get_scenario(scenario)
        if cfg.is_clean:
            return None
        return ScenarioRenderer(
            cfg,
            seed=self.config.seed,
            babble=self.babble,
            clip_samples=self.config.mixture.num_samples,
            target_rms=self.config.mixture.target_rms,
        )

    def mixtures(self, split: str, size: int, scenario: str, stream: str | None = None) -> MixtureDataset:
        """A mixture dataset over the speakers of ``split`` (``stream`` names its seed stream)."""
        return MixtureDataset(
            self.bank,
            self.splits[split],
            size,
            self.config.mixture,
            seed=self.config.seed,
            split=stream or split,
            scenario=self.renderer(scenario),
        )

    def domain_set(
        self, split: str, domain: str, size: int, speakers: Sequence[str] | None = None
    ) -> MixtureDataset:
        """``size`` mixtures of ``split``'s speakers (or ``speakers``) in one of :data:`TEST_DOMAINS`."""
        if domain not in TEST_DOMAINS:
            raise ValueError(f"unknown test domain {domain!r}; choose from {TEST_DOMAINS}")
        conv = domain == "conversational"
        return MixtureDataset(
            self.bank,
            self.splits[split] if speakers is None else speakers,
            size,
            replace(self.config.mixture, conversation_prob=1.0 if conv else 0.0),
            seed=self.config.seed,
            split=f"{split}-{domain}",
            scenario=self.renderer("clean" if conv else domain),
        )

    # -- the datasets of a run -------------------------------------------------------------------
    @cached_property
    def pool(self) -> MixtureDataset:
        """Train-speaker mixtures in the labeled (clinical) domain; few get labels, the rest none.

        Rendered once into memory when ``precompute_pool`` is set (it is read for many epochs).
        """
        pool = self.mixtures("train", self.config.pool_size, self.config.labeled_scenario, stream="pool")
        return pool.precompute(self.config.num_workers) if self.config.precompute_pool else pool

    @cached_property
    def unlabeled_pool(self) -> MixtureDataset:
        """Unlabeled train-speaker mixtures; the pool itself unless the unlabeled domain differs."""
        cfg = self.config
        if cfg.unlabeled_scenario == cfg.labeled_scenario:
            return self.pool
        return self.mixtures("train", cfg.pool_size, cfg.unlabeled_scenario, stream="pool")

    @cached_property
    def budget(self) -> tuple[np.ndarray, np.ndarray]:
        """(labeled, unlabeled) pool indices for ``labels_per_class``."""
        cfg = self.config
        return label_budget(
            self.pool.counts(), cfg.labels_per_class, seed=cfg.seed, num_classes=cfg.mixture.num_classes
        )

    @cached_property
    def val(self) -> MixtureDataset:
        return self.mixtures("val", self.config.val_size, self.config.test_scenario)

    @cached_property
    def selection_val(self) -> Dataset:
        """Validation mixtures of every ``eval_domain`` (rendered once): what a subnet is chosen on."""
        doms = self.config.eval_domains
        size = max(self.num_classes, self.config.val_size // len(doms))
        return ConcatDataset([self.domain_set("val", d, size).precompute() for d in doms])

    def test_domains(self) -> dict[str, MixtureDataset]:
        """Test mixtures (``test_size`` each) of every ``eval_domain``, on the test speakers."""
        return {d: self.domain_set("test", d, self.config.test_size) for d in self.config.eval_domains}

    @cached_property
    def test(self) -> Dataset:
        cfg = self.config
        if cfg.test_root:
            return FileCountDataset(self.test_source, cfg.mixture.num_samples)
        return self.mixtures("test", cfg.test_size, cfg.test_scenario)

    @property
    def num_classes(self) -> int:
        return self.config.mixture.num_classes

    def summary(self) -> dict:
        lab, unl = self.budget
        return {
            **self.source.summary(),
            "bank_speakers": len(self.bank.speakers),
            "split_speakers": {k: len(v) for k, v in self.splits.items()},
            "labeled": int(lab.size),
            "unlabeled": int(unl.size),
            "val": len(self.val),
            "test": len(self.test),
            "bad_files": len(self.bank.report.bad),
            "not_decoded": len(self.bank.not_decoded),
        }


class SAMDataModule(pl.LightningDataModule):
    """Loaders over a :class:`DataEngine` for one training method.

    Args:
        engine: the shared data engine (or a config to build one).
        labeled_views: views of labeled items (``None``: no labeled loader, e.g. contrastive pretraining).
        unlabeled_views: views of unlabeled items (``None``: supervised only).
        labeled_indices: override the engine's budget (e.g. all pool items for the supervised reference).

    ``train_dataloader`` returns one loader, or ``{"labeled": ..., "unlabeled": ...}`` (Lightning cycles
    the shorter one) when both are requested.
    """

    def __init__(
        self,
        engine: DataEngine | DataConfig,
        labeled_views: dict[str, str] | None = None,
        unlabeled_views: dict[str, str] | None = None,
        labeled_indices: np.ndarray | None = None,
        batch_size: int | None = None,
        unlabeled_batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine if isinstance(engine, DataEngine) else DataEngine(engine)
        cfg = self.engine.config
        self.labeled_views = labeled_views if labeled_views is not None else None
        self.unlabeled_views = unlabeled_views
        self.labeled_indices = labeled_indices
        self.batch_size = batch_size or cfg.batch_size
        self.unlabeled_batch_size = unlabeled_batch_size or cfg.unlabeled_batch_size
        self.num_workers = cfg.num_workers if num_workers is None else num_workers
        if labeled_views is None and unlabeled_views is None:
            raise ValueError("ask for labeled_views, unlabeled_views or both")

    def _clock(self) -> int:
        """The trainer's optimizer step (0 outside a trainer): the data order's position."""
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        """Training loaders draw keys from an :class:`EpochSampler` (order and views exact per epoch)."""
        min_items = self.engine.config.min_epoch_items
        repeats = max(1, -(-min_items // len(ds))) if shuffle and min_items > 0 else 1
        return DataLoader(
            ds,
            batch_size=min(batch_size, len(ds)),
            sampler=EpochSampler(len(ds), seed=self.engine.config.seed, clock=self._clock, repeats=repeats)
            if shuffle
            else None,
            drop_last=shuffle and len(ds) >= batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def labeled_dataset(self) -> ViewDataset:
        lab = self.labeled_indices if self.labeled_indices is not None else self.engine.budget[0]
        seed = self.engine.config.seed
        return ViewDataset(self.engine.pool, self.labeled_views or {"x": "weak"}, indices=lab, seed=seed)

    def unlabeled_dataset(self) -> ViewDataset:
        e = self.engine
        if e.unlabeled_pool is e.pool:
            unl = e.budget[1]
            if unl.size == 0:  # fully labeled pool: use all clips as unlabeled too
                unl = np.arange(len(e.pool))
        else:
            unl = np.arange(len(e.unlabeled_pool))
        return ViewDataset(
            e.unlabeled_pool, self.unlabeled_views or {}, indices=unl, hide_label=True, seed=e.config.seed + 1
        )

    def train_dataloader(self):
        loaders = {}
        if self.labeled_views is not None:
            loaders["labeled"] = self._loader(self.labeled_dataset(), self.batch_size, True)
        if self.unlabeled_views is not None:
            loaders["unlabeled"] = self._loader(self.unlabeled_dataset(), self.unlabeled_batch_size, True)
        return next(iter(loaders.values())) if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader:
        return self._loader(ViewDataset(self.engine.val, {"x": "identity"}), self.batch_size * 2, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(ViewDataset(self.engine.test, {"x": "identity"}), self.batch_size * 2, False)
