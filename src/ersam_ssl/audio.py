"""Audio input/output with soundfile: decode, validate, downmix and resample to the model rate.

``torchaudio.load`` needs torchcodec/FFmpeg since torchaudio 2.9, so everything here reads through
soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3 since libsndfile 1.1, ...). Bad input raises
:class:`AudioError` carrying the file and a human-readable reason; callers decide whether to skip (and
report) or stop. :data:`AUDIO_EXTENSIONS` is the one list of what every reader (corpus sources, ``data
check``, ``analyze`` of a file or a folder) treats as audio, and :func:`list_files` the one way they walk
a folder.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16_000
#: File extensions treated as audio everywhere. MP3 is included: libsndfile >= 1.1 decodes it (see
#: ``soundfile.available_formats()``); with an older libsndfile an MP3 file is reported as bad, not skipped.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")
MP3_SUPPORTED = "MP3" in sf.available_formats()

#: Shortest file accepted as speech (seconds). Shorter files are reported as bad input.
MIN_DURATION = 0.1
#: A channel mean this far (dB) below the loudest channel means the channels cancel each other.
CANCEL_DB = -20.0

log = logging.getLogger(__name__)


class AudioError(Exception):
    """A file that cannot be used as audio; ``str(e)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no decoding)."""

    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the :data:`AUDIO_EXTENSIONS` (its content is not checked)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def list_files(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every regular file under ``root`` (sorted), following symlinked folders, and what could not be
    followed.

    ``Path.rglob`` silently drops symlink loops, dangling links and symlinked folders; a corpus check must
    say what it did not read. Symlinked folders are entered once (a link back to an enclosing folder, or
    a second link to a folder already read, is reported instead of looping).

    Returns:
        ``(files, problems)`` where ``problems`` holds ``(path, reason)`` for symlink loops, broken
        symlinks and folders that cannot be listed.
    """
    root = Path(root)
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen = {os.path.realpath(root)}

    def unreadable(e: OSError) -> None:
        problems.append((Path(e.filename or root), f"folder not readable ({e.strerror})"))

    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        for d in list(dirs):
            path = Path(folder, d)
            real = os.path.realpath(path)
            if real in seen:
                dirs.remove(d)
                inside = (os.path.realpath(folder) + os.sep).startswith(real + os.sep)
                problems.append((path, "symlink loop: points to an enclosing folder; not followed" if inside
                                 else f"symlink to a folder already read ({real}); not followed"))  # fmt: skip
            else:
                seen.add(real)
        for name in names:
            path = Path(folder, name)
            if path.is_file():
                files.append(path)
            elif path.is_symlink():
                try:
                    os.stat(path)
                    reason = "not a regular file"
                except OSError as e:
                    reason = "symlink loop" if e.errno == errno.ELOOP else "broken symlink (target missing)"
                problems.append((path, reason))
    return sorted(files), sorted(problems)


def info(path: str | Path) -> AudioInfo:
    """Read the header only. Raises :class:`AudioError` for non-audio, empty or unreadable files."""
    path = Path(path)
    if path.suffix.lower() == ".mp3" and not MP3_SUPPORTED:
        raise AudioError(path, f"MP3 needs libsndfile >= 1.1 (soundfile uses {sf.__libsndfile_version__})")
    try:
        if path.stat().st_size == 0:
            raise AudioError(path, "empty file (0 bytes)")
        i = sf.info(str(path))
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
        raise AudioError(path, f"not readable as audio ({_short(e)})") from e
    if i.samplerate <= 0 or i.channels <= 0:
        raise AudioError(path, f"invalid header (rate={i.samplerate}, channels={i.channels})")
    if i.frames <= 0:
        raise AudioError(path, "no audio frames")
    return AudioInfo(str(path), int(i.samplerate), int(i.channels), int(i.frames))


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:160]


@lru_cache(maxsize=32)
def _resampler_kernel(orig: int, new: int) -> tuple[int, int]:
    g = math.gcd(orig, new)
    return orig // g, new // g


def resample(x: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited (sinc) resampling with torchaudio; float32 in, float32 out."""
    if orig_sr == new_sr:
        return x.astype(np.float32, copy=False)
    o, n = _resampler_kernel(int(orig_sr), int(new_sr))
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), o, n)
    return y.numpy()


def downmix(x: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Mono float32 from ``[frames, channels]``: the mean of the channels, unless they cancel.

    Averaging is right for channels that carry the same sound, but a channel pair in anti-phase (one
    microphone or cable wired with reversed polarity) averages to near silence, which would then be
    counted as "nobody speaks". When the mean is :data:`CANCEL_DB` or more below the loudest channel,
    that channel is returned instead (uncorrelated channels lose only 3 dB in the mean, so they are
    unaffected).

    Returns:
        ``(mono, index of the channel used instead of the mean, or None)``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x, None
    if x.shape[1] == 1:
        return x[:, 0], None
    mean = x.mean(axis=1, dtype=np.float32)
    power = np.einsum("tc,tc->c", x, x, dtype=np.float64) / max(1, x.shape[0])
    loud = int(np.argmax(power)) if np.isfinite(power).all() else 0
    mean_power = float(np.dot(mean, mean.astype(np.float64))) / max(1, x.shape[0])
    if power[loud] > 1e-10 and mean_power < power[loud] * 10.0 ** (CANCEL_DB / 10.0):
        return np.ascontiguousarray(x[:, loud]), loud
    return mean, None


def sanitize(x: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Downmix to mono float32 (:func:`downmix`) and reject NaN/Inf or silent-by-corruption content."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x, channel = downmix(x)
        if channel is not None:
            log.warning("%s: the channels cancel each other (anti-phase); using channel %d, not their mean",
                        path, channel + 1)  # fmt: skip
    if x.ndim != 1:
        raise AudioError(path, f"unexpected array shape {x.shape}")
    if x.size == 0:
        raise AudioError(path, "no audio samples")
    bad = ~np.isfinite(x)
    if bad.any():
        raise AudioError(path, f"contains {int(bad.sum())} NaN/Inf samples")
    return x


def load(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    min_duration: float = MIN_DURATION,
    start: int = 0,
    frames: int = -1,
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Stereo is averaged (or, if the channels cancel, the louder one is used: :func:`downmix`); any input
    rate is resampled. Raises :class:`AudioError` (with the file and the
    reason) for empty, truncated, corrupt, non-audio, NaN/Inf or too-short files.

    Args:
        path: audio file.
        sample_rate: output rate.
        min_duration: files shorter than this (seconds) are rejected.
        start: first frame to read, at the file's own rate.
        frames: number of frames to read at the file's rate (-1: to the end).
    """
    hdr = info(path)
    try:
        x, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(path, f"decoding failed ({_short(e)})") from e
    if x.shape[0] == 0:
        raise AudioError(path, "decoded to zero samples (truncated?)")
    if frames < 0 and start == 0 and x.shape[0] < 0.5 * hdr.frames:
        raise AudioError(path, f"truncated: header says {hdr.frames} frames, decoded {x.shape[0]}")
    y = sanitize(x, path)
    if y.size / sr < min_duration:
        raise AudioError(path, f"too short ({y.size} samples = {y.size / sr:.3f} s < {min_duration} s)")
    return resample(y, sr, sample_rate)


def blocks(
    path: str | Path, block_seconds: float, sample_rate: int = SAMPLE_RATE
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream a long file as (start_seconds, mono float32 block at ``sample_rate``) in bounded memory.

    NaN/Inf samples inside a block are replaced by zeros (a long recording should not be lost because of a
    few corrupt samples); the caller sees them as silence.
    """
    hdr = info(path)
    block = max(1, int(round(block_seconds * hdr.sample_rate)))
    pos = 0
    try:
        for x in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
            x = downmix(x)[0]
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            yield pos / hdr.sample_rate, resample(x, hdr.sample_rate, sample_rate)
            pos += x.shape[0]
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, f"decoding failed at {pos / hdr.sample_rate:.1f} s ({_short(e)})") from e


def save(path: str | Path, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio; format from the extension (FLAC is stored as 24-bit PCM)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_24" if path.suffix.lower() == ".flac" else None
    if path.suffix.lower() == ".wav":
        subtype = "FLOAT"
    sf.write(str(path), np.asarray(x, dtype=np.float32), sample_rate, subtype=subtype)
