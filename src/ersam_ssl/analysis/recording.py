"""Long-recording analysis: stream a recording, cut it into windows, gate silence, count, summarise.

The clinical read-out of social ambiance measurement (ERSAM: Li, Chen, Yuan, Lin, Sabharwal, ICASSP 2023):
a wearable records for hours; every 5 s window gets a speaker count (CountNet protocol, Stöter et al.,
TASLP 2019), a confidence and a social ambiance level, and the recording gets the share of time spent at
each level.

Pipeline (bounded memory, whatever the recording's length):

1. :func:`stream_audio` decodes blocks with soundfile, downmixes to mono and resamples to 16 kHz. Blocks
   are resampled with ``margin`` native samples of context on each side that are cut away afterwards, so
   the output equals resampling the whole file in one go (resampling each block on its own would zero-pad
   every block edge and put a click at every block boundary). Decode errors are survived: the file is
   reopened, the failing block is re-read in 1 s pieces, and only the pieces that cannot be decoded are
   replaced by silence and marked as corrupt (as are NaN/Inf samples).
2. :func:`iter_windows` cuts ``window``-second windows every ``hop`` seconds; a tail shorter than a window
   (or a recording shorter than one window) is zero-padded when it holds at least ``min_tail`` seconds.
3. :func:`vad_activity` gates windows with no speech-like energy (see :class:`VadConfig`): they get count 0
   without running the model. Windows that are mostly corrupt are reported as ``unreadable``. With a
   speech VAD (``speech_vad``, :mod:`ersam_ssl.analysis.vad`; the command line's default) every window
   also gets its *speech share*: windows with (almost) no speech are gated too, and windows with too
   little speech for a count are reported ``uncertain``.
4. A :class:`Counter` (an exported ONNX file through onnxruntime, or a PyTorch
   :class:`~ersam_ssl.models.CountModel`) returns count and confidence (max of ``head.log_probs``, divided
   by the model's calibrated temperature, see :mod:`ersam_ssl.calibration`); a window whose confidence is
   below the model's ``abstain_confidence`` is reported ``uncertain`` instead of counted.
5. ``windows.csv``, ``summary.json`` and ``timeline.png`` are written to the output folder (and, on
   request, a self-contained ``report.html``, :mod:`ersam_ssl.analysis.report`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import torch

from ersam_ssl import audio
from ersam_ssl.analysis.vad import SpeechTracker, SpeechVadConfig, load_speech_vad
from ersam_ssl.data.levels import AmbianceLevels
from ersam_ssl.export import read_onnx_calibration, read_onnx_config
from ersam_ssl.fileio import atomic_open, write_json

#: Default analysis window (seconds): the 5 s clips the counters are trained on; the hop defaults to it.
DEFAULT_WINDOW = 5.0
#: Tails (and whole recordings) shorter than a window are analysed zero-padded if at least this long.
DEFAULT_MIN_TAIL = 0.5
#: Seconds decoded per block.
DEFAULT_BLOCK_SECONDS = 30.0
#: Windows whose corrupt/unreadable share exceeds this are not counted (status ``unreadable``).
MAX_CORRUPT_SHARE = 0.5
#: ONNX metadata key holding ``model.config()`` as JSON (see :class:`OnnxCounter`).

STATUS_ANALYSED = "analysed"
STATUS_GATED = "gated"
STATUS_UNREADABLE = "unreadable"
#: Readable, but no count is given: too little speech for one, or the counter is not confident enough.
STATUS_UNCERTAIN = "uncertain"

WINDOW_COLUMNS = (
    "start_s", "end_s", "count", "confidence", "level", "level_name", "gated", "status",
    "active_frac", "rms_dbfs", "corrupt_s", "speech_share",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Streaming decode + resampling


@dataclass
class StreamReport:
    """What happened while decoding one file (filled in by :func:`stream_audio`).

    Attributes:
        unreadable: ``(start_s, end_s)`` spans that could not be decoded (replaced by silence).
        nonfinite_samples: NaN/Inf samples replaced by silence.
        truncated_at_s: where decoding stopped early (the header promised more frames), else None.
        decoded_s: seconds of audio delivered (including replaced spans).
        antiphase_s: seconds whose channels cancel each other (anti-phase): the loudest channel was used
            instead of their mean (:func:`ersam_ssl.audio.downmix`).
    """

    path: str
    sample_rate: int
    channels: int
    header_frames: int
    format: str = ""
    subtype: str = ""
    unreadable: list[tuple[float, float]] = field(default_factory=list)
    nonfinite_samples: int = 0
    truncated_at_s: float | None = None
    decoded_s: float = 0.0
    antiphase_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.header_frames / self.sample_rate

    @property
    def unreadable_s(self) -> float:
        """Seconds of the recording that could not be decoded: unreadable spans plus a missing end."""
        spans = sum(b - a for a, b in self.unreadable)
        missing = self.duration_s - self.truncated_at_s if self.truncated_at_s is not None else 0.0
        return spans + max(0.0, missing)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration_s"] = self.duration_s
        d["unreadable_s"] = round(self.unreadable_s, 3)
        d["unreadable"] = [[round(a, 3), round(b, 3)] for a, b in self.unreadable]
        return d


@dataclass
class AudioBlock:
    """A run of consecutive output samples; ``start`` is the index of ``samples[0]`` at the output rate.

    ``corrupt`` marks samples that were unreadable or non-finite in the file (they hold zeros), or is None
    when the block is clean.
    """

    start: int
    samples: np.ndarray
    corrupt: np.ndarray | None = None


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:160]


class _SalvagingReader:
    """Sequential mono reader that survives decode errors (see the module docstring, step 1)."""

    _ERRORS = (sf.LibsndfileError, RuntimeError, OSError, ValueError)

    def __init__(self, path: str, report: StreamReport, salvage_seconds: float = 1.0) -> None:
        self.path = path
        self.report = report
        self.frames = report.header_frames
        self.salvage = max(1, int(round(salvage_seconds * report.sample_rate)))
        self.pos = 0
        self._file: sf.SoundFile | None = None
        self._need_seek = False
        self._tail_ok: bool | None = None
        self._open()

    def _open(self) -> None:
        self.close()
        self._file = sf.SoundFile(self.path)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(*self._ERRORS):
                self._file.close()
            self._file = None

    def _decode(self, f: sf.SoundFile, n: int) -> np.ndarray:
        x, channel = audio.downmix(f.read(n, dtype="float32", always_2d=True))
        if channel is not None:
            self.report.antiphase_s += x.shape[0] / self.report.sample_rate
        return x

    def read(self, n: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """Up to ``n`` frames from the current position: ``(mono, corrupt mask or None, end_of_stream)``."""
        n = min(n, self.frames - self.pos)
        if n <= 0:
            return np.zeros(0, np.float32), None, True
        try:
            if self._need_seek:
                self._open()
                assert self._file is not None
                self._file.seek(self.pos)
                self._need_seek = False
            assert self._file is not None
            x = self._decode(self._file, n)
            corrupt = None
        except self._ERRORS:
            x, corrupt = self._salvage(n)
            self._need_seek = True
            if not self._tail_readable():
                # The file ends early (an interrupted recording or copy): keep what decodes and stop, rather
                # than re-reading hours of missing audio second by second.
                good = np.flatnonzero(~corrupt)
                keep = int(good[-1]) + 1 if good.size else 0
                x, corrupt = x[:keep], corrupt[:keep]
                cut = (self.pos + keep) / self.report.sample_rate
                self.report.unreadable = [(a, min(b, cut)) for a, b in self.report.unreadable if a < cut]
        x, corrupt = self._clean(x, corrupt)
        if x.shape[0] < n:  # the stream ended before the header said it would
            self.report.truncated_at_s = (self.pos + x.shape[0]) / self.report.sample_rate
            self.pos += x.shape[0]
            return x, corrupt, True
        self.pos += n
        return x, corrupt, self.pos >= self.frames

    def _clean(self, x: np.ndarray, corrupt: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Replace NaN/Inf by silence and mark them corrupt."""
        if corrupt is not None:
            corrupt = corrupt[: x.shape[0]]
        finite = np.isfinite(x)
        if not finite.all():
            self.report.nonfinite_samples += int((~finite).sum())
            x = np.where(finite, x, np.float32(0.0))
            corrupt = ~finite if corrupt is None else corrupt | ~finite
        return x, corrupt

    def _salvage(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-read ``n`` frames from ``pos`` in small pieces, each from a freshly opened file."""
        out = np.zeros(n, dtype=np.float32)
        corrupt = np.zeros(n, dtype=bool)
        sr = self.report.sample_rate
        for off in range(0, n, self.salvage):
            m = min(self.salvage, n - off)
            try:
                with sf.SoundFile(self.path) as f:
                    f.seek(self.pos + off)
                    piece = self._decode(f, m)
            except self._ERRORS:
                piece = np.zeros(0, dtype=np.float32)
            out[off : off + piece.shape[0]] = piece
            if piece.shape[0] < m:
                corrupt[off + piece.shape[0] : off + m] = True
                self._add_unreadable((self.pos + off + piece.shape[0]) / sr, (self.pos + off + m) / sr)
        return out, corrupt

    def _tail_readable(self) -> bool:
        """Whether the last second of the file decodes (False: the file is truncated)."""
        if self._tail_ok is None:
            try:
                with sf.SoundFile(self.path) as f:
                    f.seek(max(0, self.frames - self.salvage))
                    self._tail_ok = self._decode(f, self.salvage).shape[0] > 0
            except self._ERRORS:
                self._tail_ok = False
        return self._tail_ok

    def _add_unreadable(self, a: float, b: float) -> None:
        spans = self.report.unreadable
        if spans and abs(spans[-1][1] - a) < 1e-9:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))


def _resample_ratio(orig: int, new: int) -> tuple[int, int]:
    g = math.gcd(orig, new)
    return orig // g, new // g


def stream_audio(
    path: str | Path,
    sample_rate: int = audio.SAMPLE_RATE,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    report: StreamReport | None = None,
) -> Iterator[AudioBlock]:
    """Decode ``path`` block by block as mono float32 at ``sample_rate`` in bounded memory.

    Unlike :func:`ersam_ssl.audio.blocks`, blocks are resampled with context from their neighbours, so the
    concatenated output equals resampling the whole file at once (to float32 rounding), with no artefacts
    at block boundaries; and decode errors / NaN samples do not end the stream (module docstring).

    Args:
        path: audio file (anything libsndfile reads: WAV, FLAC, OGG, ...; any rate and channel count).
        sample_rate: output rate.
        block_seconds: native seconds decoded per block (memory is a few blocks).
        report: a :class:`StreamReport` to fill in (pass your own to read it afterwards).

    Raises:
        ersam_ssl.audio.AudioError: the file cannot be opened as audio at all.
    """
    hdr = audio.info(path)
    if report is None:
        report = StreamReport(str(path), hdr.sample_rate, hdr.channels, hdr.frames)
    try:
        sfi = sf.info(str(path))
        report.format, report.subtype = sfi.format, sfi.subtype
    except sf.LibsndfileError:  # pragma: no cover - info() above already opened it
        pass
    native = hdr.sample_rate
    o, n = _resample_ratio(native, sample_rate)
    resampling = native != sample_rate
    block = _round_up(max(1, int(block_seconds * native)), o)
    # Context on each side: torchaudio's sinc kernel spans ~6 zero crossings of the lower Nyquist rate
    # (< 40 native samples for common rates); 10 ms (at least 256 samples) is ample.
    margin = _round_up(max(256, native // 100), o) if resampling else 0
    try:
        reader = _SalvagingReader(str(path), report)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise audio.AudioError(path, f"not readable as audio ({_short(e)})") from e

    buf = np.zeros(0, dtype=np.float32)
    bad = np.zeros(0, dtype=bool)
    buf_start = 0  # native index of buf[0]
    done = 0  # native index up to which output has been emitted (a multiple of o until the very end)
    eof = False
    try:
        while True:
            while not eof and buf_start + buf.shape[0] < done + block + margin:
                x, corrupt, eof = reader.read(block)
                buf = np.concatenate([buf, x])
                bad = np.concatenate([bad, corrupt if corrupt is not None else np.zeros(x.shape[0], bool)])
            end = buf_start + buf.shape[0]
            if done >= end:
                break
            stop = min(done + block, end)
            lo, hi = max(done - margin, buf_start), min(stop + margin, end)
            seg = buf[lo - buf_start : hi - buf_start]
            seg_bad = bad[done - buf_start : stop - buf_start]
            if resampling:
                y = audio.resample(seg, native, sample_rate)
                left = (done - lo) * n // o
                out = y[left : left + -(-(stop - done) * n // o)]
                if seg_bad.any():
                    idx = np.minimum(np.arange(out.shape[0]) * o // n, seg_bad.shape[0] - 1)
                    out_bad: np.ndarray | None = seg_bad[idx]
                else:
                    out_bad = None
            else:
                out = seg.copy()
                out_bad = seg_bad.copy() if seg_bad.any() else None
            yield AudioBlock(done * n // o, np.ascontiguousarray(out, dtype=np.float32), out_bad)
            report.decoded_s = stop / native
            done = stop
            keep_from = max(done - margin, buf_start)
            buf, bad = buf[keep_from - buf_start :], bad[keep_from - buf_start :]
            buf_start = keep_from
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------------
# Windows and voice-activity gating


@dataclass
class WindowBatch:
    """Windows cut from the stream: ``audio[i]`` starts at sample ``starts[i]`` and holds ``lengths[i]``
    real samples (the rest is zero padding); ``corrupt[i]`` counts corrupt samples among them."""

    starts: np.ndarray
    lengths: np.ndarray
    corrupt: np.ndarray
    audio: np.ndarray


def iter_windows(
    blocks: Iterable[AudioBlock],
    window: int,
    hop: int,
    min_tail: int,
    batch_size: int = 16,
) -> Iterator[WindowBatch]:
    """Cut consecutive blocks into windows of ``window`` samples every ``hop`` samples, in batches.

    After the last full window, one zero-padded window starting at the next hop position covers the
    rest of the stream if the full windows left audio uncovered and that window holds at least
    ``min_tail`` samples (so a recording shorter than one window yields one window when it is at least
    ``min_tail`` long).
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be > 0 samples, got {window}, {hop}")
    buf = np.zeros(0, dtype=np.float32)
    bad = np.zeros(0, dtype=bool)
    buf_start = 0
    next_start = 0
    pending: list[tuple[int, int, int, np.ndarray]] = []

    def flush() -> Iterator[WindowBatch]:
        if pending:
            yield WindowBatch(
                np.array([p[0] for p in pending], dtype=np.int64),
                np.array([p[1] for p in pending], dtype=np.int64),
                np.array([p[2] for p in pending], dtype=np.int64),
                np.stack([p[3] for p in pending]),
            )
            pending.clear()

    for blk in blocks:
        if blk.start != buf_start + buf.shape[0]:
            raise ValueError(f"blocks are not contiguous: got start {blk.start}, expected "
                             f"{buf_start + buf.shape[0]}")  # fmt: skip
        buf = np.concatenate([buf, blk.samples])
        bad = np.concatenate(
            [bad, blk.corrupt if blk.corrupt is not None else np.zeros(blk.samples.size, bool)]
        )
        while next_start + window <= buf_start + buf.shape[0]:
            a = next_start - buf_start
            pending.append((next_start, window, int(bad[a : a + window].sum()), buf[a : a + window].copy()))
            next_start += hop
            if len(pending) >= batch_size:
                yield from flush()
        drop = min(next_start, buf_start + buf.shape[0]) - buf_start
        buf, bad = buf[drop:], bad[drop:]
        buf_start += drop
    end = buf_start + buf.shape[0]
    rest = end - next_start
    covered_to = next_start - hop + window if next_start > 0 else 0
    if end > covered_to and rest >= max(min_tail, 1):
        a = next_start - buf_start
        x = np.zeros(window, dtype=np.float32)
        x[:rest] = buf[a:]
        pending.append((next_start, rest, int(bad[a:].sum()), x))
    yield from flush()


@dataclass(frozen=True)
class VadConfig:
    """Energy voice-activity gate: a window is *gated* (count 0, model not run) when fewer than
    ``min_active`` of its frames reach ``threshold_db``.

    A frame is ``frame_s`` seconds (20 ms); its level is ``20 log10(RMS)`` in dB relative to full scale
    (dBFS, a full-scale sine is -3 dBFS). Defaults: threshold -55 dBFS, 2 % of frames (100 ms of a 5 s
    window). For scale: the training mixtures hold speech at about -26 dBFS RMS and a background at
    -65 to -50 dBFS; speech 30 dB quieter than that (-56 dBFS RMS) still has 15-30 % of its frames above
    -55 dBFS (the tests check it is never gated), while digital silence and a -62 dBFS noise floor have
    none. The gate is deliberately
    conservative — a noisy window is never gated; the model decides — and exists to save energy on silent
    stretches (most of a day). Lower ``threshold_db`` for recordings made at a very low gain; set
    ``enabled=False`` to run the model on every window.
    """

    threshold_db: float = -55.0
    min_active: float = 0.02
    frame_s: float = 0.02
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_active <= 1.0:
            raise ValueError(f"min_active must be in [0, 1], got {self.min_active}")
        if self.frame_s <= 0:
            raise ValueError(f"frame_s must be > 0, got {self.frame_s}")


def vad_activity(
    windows: np.ndarray, lengths: np.ndarray, vad: VadConfig, sample_rate: int = audio.SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Share of active frames and overall level (dBFS) of each window ``[B, T]`` (only the first
    ``lengths[i]`` samples of window ``i`` count; zero padding is not audio).

    Returns:
        ``(active_frac [B], rms_dbfs [B])``.
    """
    frame = max(1, int(round(vad.frame_s * sample_rate)))
    b, t = windows.shape
    nf = t // frame
    if nf == 0:
        frames_power = np.mean(windows.astype(np.float64) ** 2, axis=1, keepdims=True)
        valid = np.ones((b, 1), dtype=bool)
    else:
        f = windows[:, : nf * frame].reshape(b, nf, frame).astype(np.float32)
        frames_power = np.einsum("bij,bij->bi", f, f, dtype=np.float64) / frame
        # A frame counts when at least half of it is real audio.
        valid = (np.arange(nf)[None, :] * frame + frame // 2) < lengths[:, None]
        valid[:, 0] = True
    thr_power = 10.0 ** (vad.threshold_db / 10.0)
    active = (frames_power >= thr_power) & valid
    n_valid = valid.sum(axis=1)
    active_frac = active.sum(axis=1) / np.maximum(n_valid, 1)
    energy = np.array(
        [np.mean(w[: max(int(n), 1)].astype(np.float64) ** 2) for w, n in zip(windows, lengths)]
    )
    rms_dbfs = 10.0 * np.log10(np.maximum(energy, 1e-20))
    return active_frac.astype(np.float64), rms_dbfs


# ---------------------------------------------------------------------------------------------------
# Counters: ONNX Runtime or PyTorch, one interface


class Counter(Protocol):
    """``counter(windows [B, T] float32) -> (counts int64 [B], confidence float [B])``.

    Attributes:
        num_classes: counts ``0..num_classes-1``.
        fixed_batch / fixed_samples: an input dimension the model requires (None: any).
        abstain_confidence: optional; windows whose confidence is below it get no count (``uncertain``).
    """

    num_classes: int
    fixed_batch: int | None
    fixed_samples: int | None

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def info(self) -> dict[str, Any]: ...


def _head_outputs(
    head: torch.nn.Module, out: torch.Tensor, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    log_probs = head.log_probs(out)
    counts = head.predict(out)
    probs = log_probs.exp() if temperature == 1.0 else torch.softmax(log_probs / temperature, dim=-1)
    confidence = probs.max(dim=-1).values
    return counts.long().cpu().numpy(), confidence.double().cpu().numpy()


class TorchCounter:
    """A :class:`~ersam_ssl.models.CountModel` (put in eval mode) run under ``torch.inference_mode``.

    Args:
        model: the counter.
        threads: intra-op threads while counting (the previous setting is restored after each call);
            None keeps PyTorch's setting.
        source: where the model came from (for the summary).
        temperature / abstain_confidence: calibration (see :mod:`ersam_ssl.calibration`); defaults: the
            model's own confidence, never abstain.
    """

    fixed_batch = None
    fixed_samples = None

    def __init__(
        self,
        model: torch.nn.Module,
        threads: int | None = 1,
        source: str | None = None,
        temperature: float = 1.0,
        abstain_confidence: float | None = None,
    ) -> None:
        self.model = model.eval()
        self.head = model.head
        self.num_classes = int(model.head.num_classes)
        self.threads = threads
        self.source = source
        self.temperature = float(temperature)
        self.abstain_confidence = abstain_confidence

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        previous = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                out = self.model(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)))
                return _head_outputs(self.head, out, self.temperature)
        finally:
            torch.set_num_threads(previous)

    def info(self) -> dict[str, Any]:
        config = self.model.config() if hasattr(self.model, "config") else None
        return {
            "backend": "pytorch",
            "source": self.source,
            "config": config,
            "num_classes": self.num_classes,
            "params": int(sum(p.numel() for p in self.model.parameters())),
            "threads": self.threads,
            "temperature": self.temperature,
            "abstain_confidence": self.abstain_confidence,
        }


class OnnxCounter:
    """An exported counter run by ONNX Runtime (CPU, ``threads`` intra-op threads, one inter-op thread).

    Contract with the exporter: the graph takes the waveform ``[B, T]`` float32 as its first input (any
    name; either dimension may be fixed) and returns the raw head output as its first output; the model
    config (``CountModel.config()``) is stored as JSON under the metadata key ``ersam_model_config`` (or
    in a sidecar JSON, see :func:`read_onnx_config`). The head's ``log_probs``/``predict`` — which do not
    depend on weights — are rebuilt from that config and applied to the output. A temperature and an abstain
    threshold stored under ``ersam_calibration`` (:func:`ersam_ssl.export.attach_onnx_calibration`) are
    applied too; files without them give the model's own confidence and never abstain.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from ersam_ssl.models import CountModel

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, ... derive from Exception only
            raise ValueError(f"{self.path}: not a usable ONNX model ({_short(e)})") from e
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config = read_onnx_config(self.path, meta)
        calibration = read_onnx_calibration(self.path, meta)
        self.temperature = calibration["temperature"]
        self.abstain_confidence = calibration["abstain_confidence"]
        self.head = CountModel.from_config(self.config).head.eval()
        self.num_classes = int(self.head.num_classes)
        self.threads = int(threads)
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 2:
            raise ValueError(f"{self.path}: expected a [batch, samples] input, got shape {inp.shape}")
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.fixed_samples = inp.shape[1] if isinstance(inp.shape[1], int) else None

    def __call__(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        b = self.fixed_batch
        if b is None:
            out = self.session.run(None, {self.input_name: x})[0]
        else:
            parts = []
            for i in range(0, x.shape[0], b):
                chunk = x[i : i + b]
                if chunk.shape[0] < b:
                    chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], x.shape[1]), np.float32)])
                parts.append(self.session.run(None, {self.input_name: chunk})[0])
            out = np.concatenate(parts)[: x.shape[0]]
        with torch.inference_mode():
            return _head_outputs(self.head, torch.from_numpy(np.asarray(out)), self.temperature)

    def info(self) -> dict[str, Any]:
        return {
            "backend": "onnxruntime",
            "source": str(self.path),
            "config": self.config,
            "num_classes": self.num_classes,
            "input": self.input_name,
            "fixed_batch": self.fixed_batch,
            "fixed_samples": self.fixed_samples,
            "threads": self.threads,
            "temperature": self.temperature,
            "abstain_confidence": self.abstain_confidence,
        }


def load_counter(model: str | Path | torch.nn.Module | Counter, threads: int = 1) -> Counter:
    """A :class:`Counter` from an ``.onnx`` file, a model file / Lightning checkpoint
    (:func:`ersam_ssl.checkpoint.load_model`), a :class:`~ersam_ssl.models.CountModel`, or a counter."""
    if isinstance(model, torch.nn.Module):
        return TorchCounter(model, threads)
    if not isinstance(model, (str, Path)):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxCounter(path, threads)
    from ersam_ssl.checkpoint import load_model

    return TorchCounter(load_model(path), threads, source=str(path))


def model_window(counter: Counter, window: float | None = None) -> float:
    """The analysis window in seconds: ``window`` if given, else the counter's fixed input length (an ONNX
    export fixes and so records it), else :data:`DEFAULT_WINDOW`.

    Raises:
        ValueError: ``window`` differs from the length the model takes.
    """
    fixed = counter.fixed_samples
    if fixed is None:
        return DEFAULT_WINDOW if window is None else window
    own = fixed / audio.SAMPLE_RATE
    if window is not None and int(round(window * audio.SAMPLE_RATE)) != fixed:
        raise ValueError(f"the model takes exactly {fixed} samples ({own:g} s windows), not {window:g} s; "
                         f"pass window={own:g} or leave the window out")  # fmt: skip
    return own


# ---------------------------------------------------------------------------------------------------
# Analysis of one recording


@dataclass
class WindowTable:
    """Per-window results as arrays (``count``/``level`` are -1 where not counted, ``confidence`` NaN where
    the model did not run, ``speech_share`` NaN where no speech VAD ran)."""

    start_s: np.ndarray
    end_s: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    level: np.ndarray
    gated: np.ndarray
    status: np.ndarray
    active_frac: np.ndarray
    rms_dbfs: np.ndarray
    corrupt_s: np.ndarray
    speech_share: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.speech_share is None:
            self.speech_share = np.full(self.start_s.shape[0], np.nan)

    def __len__(self) -> int:
        return int(self.start_s.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[WindowTable]) -> WindowTable:
        if not parts:
            empty = {
                "start_s": np.zeros(0), "end_s": np.zeros(0), "count": np.zeros(0, np.int64),
                "confidence": np.zeros(0), "level": np.zeros(0, np.int64), "gated": np.zeros(0, bool),
                "status": np.zeros(0, dtype="<U10"), "active_frac": np.zeros(0), "rms_dbfs": np.zeros(0),
                "corrupt_s": np.zeros(0),
            }  # fmt: skip
            return cls(**empty)
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__})

    def owned_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """The stretch of the recording each window stands for, ``(start_s, end_s)``.

        Consecutive windows that overlap (hop < window) split their overlap in the middle, so no time
        counts twice and each window speaks for its centre (for equal windows: the ``hop`` seconds around
        it); a window never stands for time outside itself (hop > window leaves gaps unaccounted for).
        """
        if len(self) == 0:
            return np.zeros(0), np.zeros(0)
        nxt_start, end = self.start_s[1:], self.end_s[:-1]
        overlap = nxt_start < end
        cut = (nxt_start + end) / 2
        hi = np.append(np.where(overlap, cut, end), self.end_s[-1])
        lo = np.concatenate([[self.start_s[0]], np.where(overlap, cut, nxt_start)])
        return lo, np.maximum(hi, lo)

    def owned_seconds(self) -> np.ndarray:
        """Length of :meth:`owned_spans` (seconds each window stands for)."""
        lo, hi = self.owned_spans()
        return hi - lo


@dataclass
class Summary:
    """Result of :func:`analyze_recording` (also written as ``summary.json``; ``table`` is not).

    Time statistics weight every window by the stretch of the recording it stands for
    (:meth:`WindowTable.owned_spans`) and leave unreadable windows out.

    Attributes:
        input: file facts and damage (rate, channels, duration, unreadable spans, NaN count, truncation).
        model: backend (``pytorch``/``onnxruntime``), source, config, classes, threads.
        settings: window, hop, VAD, levels, batch size.
        windows / analysed_windows / gated_windows / unreadable_windows: window counts (analysed = model run).
        gated_share: share of the readable time the VAD gated (count 0 without the model).
        hours_analysed: readable time in hours (gated and uncertain windows included).
        mean_count: time-weighted mean count; ``mean_count_when_speaking`` over windows with count > 0.
        mean_confidence: mean max-probability of the windows the model ran on.
        level_share / level_hours: time per ambiance level over the counted time (readable and not
            uncertain; shares sum to 1); ``count_share`` per count.
        uncertain_windows / uncertain_share: windows given no count (status ``uncertain``) and their share
            of the readable time.
        wall_time_s / real_time_factor: analysis time and decoded seconds per wall-clock second.
        outputs: paths of the files written.
        status: ``"ok"``, or ``"partial"`` when part of the recording was lost (see ``problems``): the
            statistics then describe only what could be read.
        problems: one human-readable line per loss (seconds unreadable or missing, NaN/Inf samples
            replaced by silence, a recording too short for any window); empty when ``status == "ok"``.
        warnings: input that was repaired without loss (channels in anti-phase: the loudest one used).
        table: every window (:class:`WindowTable`).
    """

    input: dict[str, Any]
    model: dict[str, Any]
    settings: dict[str, Any]
    windows: int
    analysed_windows: int
    gated_windows: int
    unreadable_windows: int
    gated_share: float
    hours_analysed: float
    mean_count: float
    mean_count_when_speaking: float
    mean_confidence: float
    level_share: dict[str, float]
    level_hours: dict[str, float]
    count_share: dict[str, float]
    wall_time_s: float
    real_time_factor: float
    outputs: dict[str, str]
    status: str = "ok"
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    uncertain_windows: int = 0
    uncertain_share: float = 0.0
    table: WindowTable | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of everything but ``table`` (NaN where a statistic is undefined)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "table"}
        return json.loads(json.dumps(d, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def summarize_windows(table: WindowTable, levels: AmbianceLevels, num_classes: int) -> dict[str, Any]:
    """Time-weighted statistics of a window table (see :class:`Summary`)."""
    readable = table.status != STATUS_UNREADABLE
    uncertain = table.status == STATUS_UNCERTAIN
    counted = readable & ~uncertain
    owned = table.owned_seconds()
    readable_s = float((owned * readable).sum())
    w = owned * counted
    total = float(w.sum())
    gated = table.gated & counted
    model_run = np.isfinite(table.confidence)

    def share(mask: np.ndarray) -> float:
        return float((w * mask).sum() / total) if total > 0 else 0.0

    def share_of_readable(mask: np.ndarray) -> float:
        return float((owned * mask).sum() / readable_s) if readable_s > 0 else 0.0

    speaking = counted & (table.count > 0)
    return {
        "windows": len(table),
        "analysed_windows": int((table.status == STATUS_ANALYSED).sum()),
        "gated_windows": int(gated.sum()),
        "unreadable_windows": int((~readable).sum()),
        "uncertain_windows": int(uncertain.sum()),
        "gated_share": share_of_readable(gated),
        "uncertain_share": share_of_readable(uncertain),
        "hours_analysed": readable_s / 3600.0,
        "mean_count": float((w * np.where(counted, table.count, 0)).sum() / total) if total > 0 else math.nan,
        "mean_count_when_speaking": float((owned * table.count)[speaking].sum() / owned[speaking].sum())
        if speaking.any()
        else math.nan,
        "mean_confidence": float(table.confidence[model_run].mean()) if model_run.any() else math.nan,
        "level_share": {name: share(counted & (table.level == i)) for i, name in enumerate(levels.names)},
        "level_hours": {
            name: float((w * (counted & (table.level == i))).sum() / 3600.0)
            for i, name in enumerate(levels.names)
        },
        "count_share": {str(k): share(counted & (table.count == k)) for k in range(num_classes)},
    }


def input_problems(report: StreamReport, windows: int, min_tail: float) -> list[str]:
    """What part of a recording an analysis lost, one line each (empty: nothing was lost).

    A damaged recording still gets a full analysis of what decodes; these lines are how the caller (and
    ``summary.json``) learns that the figures cover less than the file.
    """
    problems = []
    if report.truncated_at_s is not None:
        missing = report.duration_s - report.truncated_at_s
        problems.append(f"truncated: {missing:.1f} s of {report.duration_s:.1f} s unreadable after "
                        f"{report.truncated_at_s:.1f} s")  # fmt: skip
    if report.unreadable:
        spans = sum(b - a for a, b in report.unreadable)
        problems.append(f"{len(report.unreadable)} unreadable span(s), {spans:.1f} s replaced by silence")
    if report.nonfinite_samples:
        problems.append(f"{report.nonfinite_samples} NaN/Inf samples replaced by silence")
    if windows == 0:
        problems.append(f"too short: {report.decoded_s:.3f} s of audio, less than min_tail={min_tail:g} s; "
                        "no window analysed")  # fmt: skip
    return problems


def input_warnings(report: StreamReport) -> list[str]:
    """What was repaired in a recording without losing it, one line each (see :class:`StreamReport`)."""
    if report.antiphase_s > 0:
        return [f"the channels cancel each other (anti-phase) in {report.antiphase_s:.1f} s; the loudest "
                "channel was analysed there instead of their silent mean"]  # fmt: skip
    return []


def window_rows(t: WindowTable, levels: AmbianceLevels) -> Iterator[list[Any]]:
    """``windows.csv`` rows (see :data:`WINDOW_COLUMNS`); blank count/level/confidence/speech share where not
    defined."""
    assert t.speech_share is not None
    for i in range(len(t)):
        counted = t.status[i] not in (STATUS_UNREADABLE, STATUS_UNCERTAIN)
        yield [
            f"{t.start_s[i]:.3f}",
            f"{t.end_s[i]:.3f}",
            int(t.count[i]) if counted else "",
            f"{t.confidence[i]:.4f}" if np.isfinite(t.confidence[i]) else "",
            int(t.level[i]) if counted else "",
            levels.names[int(t.level[i])] if counted else "",
            int(bool(t.gated[i])),
            t.status[i],
            f"{t.active_frac[i]:.3f}",
            f"{t.rms_dbfs[i]:.1f}",
            f"{t.corrupt_s[i]:.3f}",
            f"{t.speech_share[i]:.3f}" if np.isfinite(t.speech_share[i]) else "",
        ]


def read_windows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``windows.csv`` (or of the folder holding it) with typed values (None where blank)."""
    path = Path(path)
    if path.is_dir():
        path = path / "windows.csv"
    conv: dict[str, Callable[[str], Any]] = {
        "start_s": float, "end_s": float, "count": int, "confidence": float, "level": int,
        "gated": lambda s: s == "1", "active_frac": float, "rms_dbfs": float, "corrupt_s": float,
        "speech_share": float,
    }  # fmt: skip
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({k: (None if v == "" else conv.get(k, str)(v)) for k, v in r.items()})
    return rows


def analyze_recording(
    path: str | Path,
    model: str | Path | torch.nn.Module | Counter,
    out_dir: str | Path,
    window: float | None = None,
    hop: float | None = None,
    vad: VadConfig | None = None,
    vad_threshold_db: float | None = None,
    speech_vad: SpeechVadConfig | None = None,
    batch_size: int = 16,
    threads: int = 1,
    levels: AmbianceLevels | None = None,
    min_tail: float = DEFAULT_MIN_TAIL,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    plot: bool = True,
    progress: Callable[[float, float], None] | None = None,
    html_report: bool = False,
) -> Summary:
    """Count speakers in every window of a long recording; write ``windows.csv``, ``summary.json`` and
    ``timeline.png`` to ``out_dir``.

    Example:
        >>> s = analyze_recording("day.flac", "model.onnx", "out/day")
        >>> s.level_share            # {"none": 0.71, "one-to-one": 0.18, "small group": 0.09, "crowd": 0.02}

    Args:
        path: the recording (WAV/FLAC/OGG/MP3..., any rate and channel count; streamed, never fully loaded).
        model: an ``.onnx`` export, a model file or Lightning checkpoint, a ``CountModel``, or a
            :class:`Counter` (see :func:`load_counter`).
        out_dir: output folder (created).
        window, hop: window length and hop in seconds. ``window=None``: the model's own window when it
            takes a fixed input length (an ONNX export records it), else :data:`DEFAULT_WINDOW`;
            ``hop=None``: the window (no overlap).
        vad: the voice-activity gate (default :class:`VadConfig`); ``vad_threshold_db`` overrides its
            threshold.
        speech_vad: a speech VAD as well (:class:`~ersam_ssl.analysis.vad.SpeechVadConfig`; the command
            line's default is Silero): adds each window's speech share, gates windows without speech and
            reports those with too little for a count as ``uncertain``. None (the default here, so existing
            callers keep their results): the energy gate only. If the Silero model cannot be loaded, one
            warning is logged and the energy gate works alone (``summary.settings["speech_vad"]`` says so).
        batch_size: windows per model call.
        threads: intra-op threads of the model.
        levels: count → ambiance level mapping.
        min_tail: a final partial window is analysed (zero-padded) if it holds at least this many seconds.
        block_seconds: decode block size (memory ≈ a few blocks + one batch of windows).
        plot: write ``timeline.png``.
        progress: called as ``progress(seconds_done, total_seconds)`` after every batch.
        html_report: also write ``report.html`` (:func:`ersam_ssl.analysis.report.write_report`).

    Raises:
        ersam_ssl.audio.AudioError: the file cannot be read as audio at all (partial damage is reported in
            ``summary.input`` instead).
    """
    t0 = time.perf_counter()
    counter = load_counter(model, threads)
    window = model_window(counter, window)
    hop = window if hop is None else hop
    if window <= 0 or hop <= 0 or batch_size < 1:
        raise ValueError(f"need window > 0, hop > 0 and batch_size >= 1, got {window}, {hop}, {batch_size}")
    levels = levels or AmbianceLevels()
    vad = vad or VadConfig()
    if vad_threshold_db is not None:
        vad = VadConfig(vad_threshold_db, vad.min_active, vad.frame_s, vad.enabled)
    speech_vad = speech_vad or SpeechVadConfig(backend="energy")
    silero, vad_problem = load_speech_vad(speech_vad)
    tracker = SpeechTracker(silero, speech_vad.threshold) if silero is not None else None
    sr = audio.SAMPLE_RATE
    win, hop_n = int(round(window * sr)), int(round(hop * sr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hdr = audio.info(path)
    report = StreamReport(str(path), hdr.sample_rate, hdr.channels, hdr.frames)
    csv_path = out_dir / "windows.csv"
    csv_part = csv_path.with_name(csv_path.name + ".part")
    level_of = np.asarray(levels.level(np.arange(counter.num_classes)), dtype=np.int64)
    parts: list[WindowTable] = []
    # Resampling runs in PyTorch too: give it the same thread budget as the model (extra threads only
    # contend with other work on a small machine; 1 thread is the fastest on a busy 2-core CPU).
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        # Rows are written batch by batch (a crash leaves the .part file with everything counted so far);
        # the complete file is renamed into place at the end.
        with open(csv_part, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(WINDOW_COLUMNS)
            blocks = stream_audio(path, sr, block_seconds, report)
            if tracker is not None:
                blocks = tracker.track(blocks)
            for wb in iter_windows(blocks, win, hop_n, int(round(min_tail * sr)), batch_size):
                share = tracker.speech_share(wb.starts, wb.lengths) if tracker is not None else None
                t = _count_batch(wb, counter, vad, level_of, sr, share, speech_vad)
                writer.writerows(window_rows(t, levels))
                fh.flush()
                parts.append(t)
                if progress is not None:
                    progress(float(t.end_s[-1]), report.duration_s)
        os.replace(csv_part, csv_path)
    finally:
        torch.set_num_threads(previous_threads)
    table = WindowTable.concat(parts)
    stats = summarize_windows(table, levels, counter.num_classes)
    wall = time.perf_counter() - t0
    outputs = {"windows_csv": str(csv_path), "summary_json": str(out_dir / "summary.json")}
    input_info = report.to_dict()
    input_info["size_bytes"] = Path(path).stat().st_size
    settings = {
        "window_s": window,
        "hop_s": hop,
        "sample_rate": sr,
        "batch_size": batch_size,
        "threads": threads,
        "min_tail_s": min_tail,
        "vad": asdict(vad),
        "speech_vad": {
            **asdict(speech_vad),
            "used": "silero" if silero is not None else "energy",
            **(silero.info() if silero is not None else {}),
            **({"fallback_reason": vad_problem} if vad_problem else {}),
        },
        "levels": {"names": list(levels.names), "lower_bounds": list(levels.lower_bounds)},
        "max_corrupt_share": MAX_CORRUPT_SHARE,
    }
    if plot:
        from ersam_ssl.analysis.plots import plot_timeline

        png = plot_timeline(table, levels, out_dir / "timeline.png", title=Path(path).name)
        outputs["timeline_png"] = str(png)
    problems = input_problems(report, len(table), min_tail)
    summary = Summary(
        input=input_info,
        model=counter.info(),
        settings=settings,
        wall_time_s=wall,
        real_time_factor=(report.decoded_s / wall) if wall > 0 else math.inf,
        outputs=outputs,
        status="partial" if problems else "ok",
        problems=problems,
        warnings=input_warnings(report),
        table=table,
        **stats,
    )
    if html_report:
        from ersam_ssl.analysis.report import write_report

        outputs["report_html"] = str(write_report(summary, out_dir / "report.html", levels, Path(path).name))
    _write_json(out_dir / "summary.json", _finite(summary.to_dict()))
    return summary


def _finite(o: Any) -> Any:
    """Replace NaN/inf floats by None so ``summary.json`` is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, allow_nan=False)


def _count_batch(
    wb: WindowBatch,
    counter: Counter,
    vad: VadConfig,
    level_of: np.ndarray,
    sr: int,
    speech_share: np.ndarray | None = None,
    speech_vad: SpeechVadConfig | None = None,
) -> WindowTable:
    b = wb.starts.shape[0]
    active_frac, rms_dbfs = vad_activity(wb.audio, wb.lengths, vad, sr)
    unreadable = wb.corrupt > MAX_CORRUPT_SHARE * wb.lengths
    gated = (~unreadable) & (active_frac < vad.min_active) if vad.enabled else np.zeros(b, dtype=bool)
    share = np.full(b, np.nan) if speech_share is None else np.asarray(speech_share, dtype=np.float64)
    little_speech = np.zeros(b, dtype=bool)
    if vad.enabled and speech_vad is not None:
        # NaN (no speech VAD, or a window without a whole VAD frame) compares False: never gated by it.
        gated |= (~unreadable) & (share < speech_vad.min_speech_share)
        little_speech = (~unreadable) & (~gated) & (share < speech_vad.min_count_share)
    run = ~(unreadable | gated | little_speech)
    count = np.zeros(b, dtype=np.int64)
    confidence = np.full(b, np.nan)
    if run.any():
        c, p = counter(wb.audio[run])
        count[run] = c
        confidence[run] = p
    abstain = getattr(counter, "abstain_confidence", None)
    uncertain = little_speech | (run & (confidence < abstain)) if abstain is not None else little_speech
    count[unreadable | uncertain] = -1
    level = np.where(count < 0, -1, level_of[np.clip(count, 0, level_of.size - 1)])
    status = np.where(
        unreadable,
        STATUS_UNREADABLE,
        np.where(gated, STATUS_GATED, np.where(uncertain, STATUS_UNCERTAIN, STATUS_ANALYSED)),
    )
    return WindowTable(
        start_s=wb.starts / sr,
        end_s=(wb.starts + wb.lengths) / sr,
        count=count,
        confidence=confidence,
        level=level.astype(np.int64),
        gated=gated,
        status=status.astype("<U10"),
        active_frac=active_frac,
        rms_dbfs=rms_dbfs,
        corrupt_s=wb.corrupt / sr,
        speech_share=share,
    )


# ---------------------------------------------------------------------------------------------------
# Folders of recordings

SUMMARY_CSV_COLUMNS = (
    "file", "status", "reason", "out_dir", "duration_s", "hours_analysed", "windows", "gated_share",
    "unreadable_windows", "mean_count", "mean_confidence",
)  # fmt: skip


def find_recordings(folder: str | Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted, following symlinked folders), by extension."""
    return [p for p in audio.list_files(folder)[0] if audio.is_audio_file(p)]


def _out_name(rel: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^\w.-]+", "_", str(rel.with_suffix("")).replace(os.sep, "__"))
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    taken.add(name)
    return name


def analyze_folder(
    folder: str | Path,
    model: str | Path | torch.nn.Module | Counter,
    out_dir: str | Path,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Analyse every recording under ``folder`` into ``out_dir/<stem>/`` and write ``out_dir/summary.csv``.

    Files that cannot be read (and symlink loops or broken links) are reported (status ``error`` with the
    reason) and skipped; damaged recordings are analysed as far as they decode (status ``partial``). The
    model is loaded once. ``kwargs`` go to :func:`analyze_recording`.

    Returns:
        One row per file (the rows of ``summary.csv``; ``summary`` holds the :class:`Summary` if analysed).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    folder, out_dir = Path(folder), Path(out_dir)
    found, unfollowed = audio.list_files(folder)
    files = [p for p in found if audio.is_audio_file(p)]
    if not files:
        hint = f"; not readable: {unfollowed[0][0]}: {unfollowed[0][1]}" if unfollowed else ""
        raise FileNotFoundError(f"no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) under {folder}{hint}")
    counter = load_counter(model, kwargs.get("threads", 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows: list[dict[str, Any]] = []
    # Symlink loops and broken links are listed (status "error") with the files, in path order.
    entries: list[tuple[Path, str | None]] = sorted([(f, None) for f in files] + list(unfollowed))
    for f, unreadable in entries:
        rel = f.relative_to(folder)
        if unreadable is not None:
            rows.append({"file": str(rel), "out_dir": "", "status": "error", "reason": unreadable})
            log(f"skipped {rel}: {unreadable}")
            continue
        sub = out_dir / _out_name(rel, taken)
        row: dict[str, Any] = {"file": str(rel), "out_dir": str(sub), "status": "ok", "reason": ""}
        try:
            s = analyze_recording(f, counter, sub, **kwargs)
        except audio.AudioError as e:
            row.update(status="error", reason=e.reason)
            log(f"skipped {rel}: {e.reason}")
        except (ValueError, RuntimeError, OSError) as e:
            row.update(status="error", reason=_short(e))
            log(f"skipped {rel}: {_short(e)}")
        else:
            if s.problems or s.warnings:
                row.update(status=s.status, reason="; ".join(s.problems + s.warnings))
                log(f"{rel}: {row['reason']}")
            row.update(
                duration_s=round(s.input["duration_s"], 3),
                hours_analysed=round(s.hours_analysed, 6),
                windows=s.windows,
                gated_share=round(s.gated_share, 4),
                unreadable_windows=s.unreadable_windows,
                mean_count=_round_or_blank(s.mean_count),
                mean_confidence=_round_or_blank(s.mean_confidence),
            )
            for name, v in s.level_share.items():
                row[f"share_{name}"] = round(v, 4)
            row["summary"] = s
        rows.append(row)
    levels = kwargs.get("levels") or AmbianceLevels()
    cols = list(SUMMARY_CSV_COLUMNS) + [f"share_{name}" for name in levels.names]
    with atomic_open(out_dir / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return rows


def _round_or_blank(x: float) -> float | str:
    return round(x, 4) if np.isfinite(x) else ""
