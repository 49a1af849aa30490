"""Data engine: speech sources, speaker bank, mixtures, scenarios, splits, views and the DataModule."""

from ersam_ssl.data.augment import VIEWS, ViewDataset, make_view
from ersam_ssl.data.bank import SpeakerBank
from ersam_ssl.data.catalog import detect_source, open_source
from ersam_ssl.data.datamodule import DataConfig, DataEngine, SAMDataModule
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.data.mixtures import (
    FileCountDataset,
    Mixture,
    MixtureConfig,
    MixtureDataset,
    babble_track,
    materialize,
)
from ersam_ssl.data.scenarios import SCENARIOS, ScenarioConfig, ScenarioRenderer, get_scenario
from ersam_ssl.data.sources import (
    SOURCES,
    CombinedSource,
    FolderSource,
    LibriCountSource,
    LibriSpeechSource,
    ScanReport,
    Source,
    Utterance,
)
from ersam_ssl.data.splits import ALL_LABELS, check_disjoint, label_budget, speaker_splits
from ersam_ssl.data.stream import MixtureStreamDataModule, StreamSampler, stream_dataset
from ersam_ssl.data.synth import SynthSpeechSource, voice_catalog

__all__ = [
    "ALL_LABELS", "VIEWS", "AmbianceLevels", "DataConfig", "DataEngine", "FileCountDataset", "FolderSource",
    "CombinedSource", "LibriCountSource", "LibriSpeechSource", "MixtureStreamDataModule", "StreamSampler",
    "stream_dataset", "Mixture", "MixtureConfig", "MixtureDataset", "SAMDataModule",
    "SCENARIOS", "SOURCES", "ScanReport", "ScenarioConfig", "ScenarioRenderer", "Source", "SpeakerBank",
    "SynthSpeechSource", "Utterance", "ViewDataset", "babble_track", "check_disjoint", "detect_source",
    "get_scenario", "label_budget", "make_view", "materialize", "open_source", "speaker_splits",
    "voice_catalog",
]  # fmt: skip
