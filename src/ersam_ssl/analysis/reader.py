"""Reading a long recording: decode it in blocks, resample to 16 kHz, cut windows, measure their energy.

Bounded memory, whatever the recording's length:

1. :func:`stream_audio` decodes blocks with soundfile, downmixes to mono and resamples to 16 kHz. Blocks
   are resampled with ``margin`` native samples of context on each side that are cut away afterwards, so
   the output equals resampling the whole file in one go (resampling each block on its own would zero-pad
   every block edge and put a click at every block boundary). Decode errors are survived: the file is
   reopened, the failing block is re-read in 1 s pieces, and only the pieces that cannot be decoded are
   replaced by silence and marked as corrupt (as are NaN/Inf samples).
2. :func:`iter_windows` cuts ``window``-second windows every ``hop`` seconds; a tail shorter than a window
   (or a recording shorter than one window) is zero-padded when it holds at least ``min_tail`` seconds.
3. :func:`vad_activity` measures each window's share of frames with speech-like energy, for the energy
   gate (:class:`VadConfig`) that lets silent windows skip the model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ersam_ssl import audio

#: Seconds decoded per block.
DEFAULT_BLOCK_SECONDS = 30.0


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
