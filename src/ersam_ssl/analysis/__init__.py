"""Long-recording analysis: per-window speaker counts, ambiance levels and a timeline of a recording.

Example:
    >>> from ersam_ssl.analysis import analyze_recording
    >>> summary = analyze_recording("day.flac", "model.onnx", "out/day")
    >>> summary.level_share, summary.hours_analysed

Command line: ``ersam-ssl analyze RECORDING|FOLDER --model MODEL --out DIR``.
"""

from ersam_ssl.analysis.counters import Counter, OnnxCounter, TorchCounter, load_counter
from ersam_ssl.analysis.plots import BinnedTimeline, aggregate, plot_timeline
from ersam_ssl.analysis.reader import (
    AudioBlock,
    StreamReport,
    VadConfig,
    WindowBatch,
    iter_windows,
    stream_audio,
    vad_activity,
)
from ersam_ssl.analysis.recording import analyze_folder, analyze_recording, find_recordings
from ersam_ssl.analysis.table import Summary, WindowTable, read_windows, summarize_windows
from ersam_ssl.analysis.vad import SileroVAD, SpeechTracker, SpeechVadConfig
from ersam_ssl.export import ONNX_CONFIG_KEY, attach_onnx_config, read_onnx_config

__all__ = [
    "ONNX_CONFIG_KEY", "AudioBlock", "BinnedTimeline", "Counter", "OnnxCounter", "SileroVAD", "SpeechTracker",
    "SpeechVadConfig", "StreamReport", "Summary",
    "TorchCounter", "VadConfig", "WindowBatch", "WindowTable", "aggregate", "analyze_folder",
    "analyze_recording", "attach_onnx_config", "find_recordings", "iter_windows", "load_counter", "plot_timeline",
    "read_onnx_config", "read_windows", "stream_audio", "summarize_windows", "vad_activity",
]  # fmt: skip
