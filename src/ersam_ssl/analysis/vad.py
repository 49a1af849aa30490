"""Speech voice-activity detection with Silero VAD, and the per-window speech share of a recording.

The energy gate (:class:`~ersam_ssl.analysis.reader.VadConfig`) only recognises silence: a fan, music or
a dishwasher is loud, so the counter runs on it and reports speakers who are not there. Silero VAD
(Silero Team, "Silero VAD: pre-trained enterprise-grade Voice Activity Detector", 2024; MIT licence) is
a small recurrent network that gives the probability of speech in every 32 ms frame (512 samples at
16 kHz). Its ONNX files ship inside the ``silero-vad`` wheel, so nothing is downloaded at run time; they
are located without importing the ``silero_vad`` package (whose ``__init__`` sets PyTorch's global thread
count to 1) and run with ONNX Runtime on one thread.

How the model is run (from ``silero_vad/utils_vad.py``, ``OnnxWrapper.__call__``): each frame is fed
with the last 64 samples of the previous frame prepended (576 samples; zeros before the first frame) and
the recurrent state of the previous call. The wheel has two exports of the same network:

- ``silero_vad.onnx``, one frame per call: inputs ``input [B, 576]``, ``state [2, B, 128]``, ``sr``
  (int64); outputs ``output [B, 1]``, ``stateN``.
- ``silero_vad_16k_sequence.onnx`` (``silero_vad/sequence_vad.py``), many frames per call: inputs
  ``input [N, 576]``, ``h``, ``c [1, 1, 128]``; outputs ``speech_probs [N]``, ``hn``, ``cn``. It gives the
  same probabilities (the tests check they are equal) about 6x faster, because the per-frame Python
  loop and session call are gone.

:class:`SileroVAD` prefers the sequence export and falls back to the per-frame one.
:class:`SpeechTracker` runs it over the decoded stream (one state carried through the whole recording, so
a window's first frames are not scored by a cold model) and answers, for every analysis window, which
share of its frames are speech.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ersam_ssl.analysis.reader import AudioBlock

log = logging.getLogger(__name__)

#: Silero VAD's frame (samples at 16 kHz) and the context prepended to every frame.
FRAME = 512
CONTEXT = 64
SAMPLE_RATE = 16_000
STATE_SIZE = 128
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"
FRAME_MODEL = "silero_vad.onnx"
VAD_BACKENDS = ("silero", "energy")


class VadUnavailable(RuntimeError):
    """The Silero model file cannot be found or loaded (the analysis then falls back to the energy gate)."""


def silero_model_dir() -> Path:
    """The ``data`` folder of the installed ``silero-vad`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise VadUnavailable("the silero-vad package is not installed (pip install silero-vad)")
    return Path(spec.origin).parent / "data"


@dataclass(frozen=True)
class SpeechVadConfig:
    """Which VAD decides that a window holds speech, and what a window needs to be counted.

    With ``backend="silero"`` every window gets a *speech share*: the fraction of its 32 ms frames whose
    speech probability reaches ``threshold`` (0.5, Silero's default). A window whose share is below
    ``min_speech_share`` is gated like silence (no speech: count 0, model not run); one below
    ``min_count_share`` holds too little speech for a count and is reported ``uncertain``. The defaults:
    ``min_speech_share`` 0.02 is 3 frames of a 5 s window (100 ms, the energy gate's ``min_active``);
    ``min_count_share`` 0.1 is 0.5 s, the speech a speaker needs in a training mixture to be counted
    (``MixtureConfig.min_speech_s``), so below it the training labels themselves are undefined.
    ``backend="energy"`` keeps only the energy gate (no speech share).

    Attributes:
        backend: ``"silero"`` or ``"energy"``.
        threshold: frame speech probability counted as speech.
        min_speech_share / min_count_share: see above (``0 <= min_speech_share <= min_count_share <= 1``).
        model_path: a Silero ONNX file to use instead of the wheel's.
    """

    backend: str = "silero"
    threshold: float = 0.5
    min_speech_share: float = 0.02
    min_count_share: float = 0.1
    model_path: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in VAD_BACKENDS:
            raise ValueError(f"backend must be one of {VAD_BACKENDS}, got {self.backend!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.min_speech_share <= self.min_count_share <= 1.0:
            raise ValueError(
                f"need 0 <= min_speech_share <= min_count_share <= 1, got {self.min_speech_share}, "
                f"{self.min_count_share}"
            )


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SileroVAD:
    """Silero VAD speech probability of 512-sample frames at 16 kHz, run by ONNX Runtime.

    Stateless itself: the recurrent state lives in the caller (see :meth:`initial_state` and
    :meth:`forward`), so one loaded model serves any number of streams.

    Args:
        path: a Silero ONNX file (either export, see the module docstring); default: the wheel's
            sequence export, else its per-frame export.
        threads: ONNX Runtime intra-op threads (1: the model is tiny, and more threads only contend).
        frames_per_call: frames per call of the sequence export (bounds its transient memory).

    Raises:
        VadUnavailable: no model file, or one whose inputs are not a Silero VAD's.
    """

    def __init__(self, path: str | Path | None = None, threads: int = 1, frames_per_call: int = 512) -> None:
        if path is None:
            folder = silero_model_dir()
            candidates = [folder / SEQUENCE_MODEL, folder / FRAME_MODEL]
            found = [p for p in candidates if p.is_file()]
            if not found:
                raise VadUnavailable(f"no Silero VAD model in {folder}")
            path = found[0]
        self.path = Path(path)
        try:
            self.session = _session(self.path, threads)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise VadUnavailable(f"cannot load {self.path}: {str(e).strip().splitlines()[0][:160]}") from e
        names = {i.name for i in self.session.get_inputs()}
        if names == {"input", "h", "c"}:
            self.sequence = True
        elif names == {"input", "state", "sr"}:
            self.sequence = False
        else:
            raise VadUnavailable(f"{self.path} is not a Silero VAD model (inputs {sorted(names)})")
        self.frames_per_call = max(1, int(frames_per_call))
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def initial_state(self) -> dict[str, np.ndarray]:
        """The recurrent state before the first frame of a stream."""
        if self.sequence:
            zeros = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
            return {"h": zeros, "c": zeros.copy()}
        return {"state": np.zeros((2, 1, STATE_SIZE), dtype=np.float32)}

    def forward(self, frames: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """Speech probabilities of consecutive frames ``[N, CONTEXT + FRAME]`` (each row: the previous
        frame's last 64 samples, then the frame); returns ``(probabilities [N], state after them)``."""
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != CONTEXT + FRAME:
            raise ValueError(f"frames must be [N, {CONTEXT + FRAME}], got {frames.shape}")
        out = []
        if self.sequence:
            h, c = state["h"], state["c"]
            for a in range(0, frames.shape[0], self.frames_per_call):
                p, h, c = self.session.run(
                    ["speech_probs", "hn", "cn"],
                    {"input": frames[a : a + self.frames_per_call], "h": h, "c": c},
                )
                out.append(np.asarray(p, dtype=np.float32).reshape(-1))
            state = {"h": h, "c": c}
        else:
            s = state["state"]
            for row in frames:
                p, s = self.session.run(None, {"input": row[None, :], "state": s, "sr": self._sr})
                out.append(np.asarray(p, dtype=np.float32).reshape(-1))
            state = {"state": s}
        probs = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        return probs, state

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of every frame of a whole 16 kHz signal (the last frame zero-padded), as
        ``silero_vad.get_speech_timestamps`` computes them."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = -(-audio.size // FRAME)
        frames = np.zeros(n * FRAME, dtype=np.float32)
        frames[: audio.size] = audio
        return self.forward(with_context(frames.reshape(n, FRAME), np.zeros(CONTEXT, np.float32)),
                            self.initial_state())[0]  # fmt: skip

    def info(self) -> dict[str, Any]:
        return {"model": str(self.path), "export": "sequence" if self.sequence else "frame"}


def with_context(frames: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``[N, FRAME]`` frames → ``[N, CONTEXT + FRAME]`` rows with the preceding 64 samples prepended
    (``previous``: the 64 samples before the first frame)."""
    ctx = np.empty((frames.shape[0], CONTEXT), dtype=np.float32)
    if frames.shape[0]:
        ctx[0] = previous
        ctx[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([ctx, frames], axis=1)


class SpeechTracker:
    """Speech probabilities of a whole decoded stream, queried window by window.

    :meth:`track` passes the stream's blocks through unchanged while scoring every complete frame (the
    recurrent state runs on across blocks; the final partial frame is zero-padded when the stream ends).
    :meth:`speech_share` then gives each window the share of its frames with probability ≥ ``threshold``.
    A window owns the frames that lie entirely inside it (the frame grid starts at the first sample; the
    zero-padded last frame ends where the stream ends), so a frame across two windows counts for neither
    and a window's share never waits for audio after it. Probabilities are kept only until no later
    window can need them: memory stays bounded on a recording of any length.
    """

    def __init__(self, vad: SileroVAD, threshold: float = 0.5) -> None:
        self.vad = vad
        self.threshold = threshold
        self._state = vad.initial_state()
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # samples after the last scored frame
        self._speech = np.zeros(0, dtype=bool)  # speech decision of frames first_frame, first_frame+1, ...
        self._first_frame = 0
        self._frames = 0  # frames scored so far
        self._end: int | None = None  # stream length in samples, once it has ended
        self.seconds = 0.0  # audio scored (for throughput figures)

    def track(self, blocks: Iterable[AudioBlock]) -> Iterator[AudioBlock]:
        """Yield ``blocks`` unchanged, scoring their frames on the way."""
        samples = 0
        for block in blocks:
            self._feed(np.asarray(block.samples, dtype=np.float32))
            samples += block.samples.shape[0]
            yield block
        if self._pending.size:
            last = np.zeros(FRAME, dtype=np.float32)
            last[: self._pending.size] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            self._score(last[None, :])
        self._end = samples

    def _feed(self, x: np.ndarray) -> None:
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        n = buf.size // FRAME
        if n:
            self._score(buf[: n * FRAME].reshape(n, FRAME))
        self._pending = buf[n * FRAME :].copy()

    def _score(self, frames: np.ndarray) -> None:
        probs, self._state = self.vad.forward(with_context(frames, self._context), self._state)
        self._context = frames[-1, -CONTEXT:].copy()
        self._speech = np.concatenate([self._speech, probs >= self.threshold])
        self._frames += frames.shape[0]
        self.seconds += frames.size / SAMPLE_RATE

    def speech_share(self, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Share of speech frames in windows ``[starts[i], starts[i] + lengths[i])`` (samples), NaN for a
        window with no whole frame (shorter than ~64 ms). Windows must come in increasing order of start
        and lie within the audio already passed through :meth:`track`."""
        out = np.full(len(starts), np.nan)
        for i, (a, n) in enumerate(zip(np.asarray(starts, np.int64), np.asarray(lengths, np.int64))):
            b = int(a + n)
            lo = -(-int(a) // FRAME)
            hi = self._frames if self._end is not None and b >= self._end else b // FRAME
            if hi > self._frames:
                raise ValueError(f"window [{a}, {b}) reaches past the {self._frames * FRAME} samples scored")
            if lo < self._first_frame:
                raise ValueError(f"window [{a}, {b}) starts before frames already released")
            if hi > lo:
                out[i] = float(self._speech[lo - self._first_frame : hi - self._first_frame].mean())
        if len(starts):
            # Later windows start after the last one asked for: earlier frames are not needed again.
            keep_from = max(self._first_frame, -(-int(np.max(starts)) // FRAME))
            self._speech = self._speech[keep_from - self._first_frame :]
            self._first_frame = keep_from
        return out


@functools.lru_cache(maxsize=4)
def load_speech_vad(config: SpeechVadConfig, threads: int = 1) -> tuple[SileroVAD | None, str | None]:
    """The Silero model ``config`` asks for, or ``(None, reason)`` when it asks for none or the model cannot
    be loaded (one warning line is logged; the analysis then gates with the energy VAD only).

    Cached: a folder of recordings loads the model once (it is stateless, see :class:`SileroVAD`) and
    warns once."""
    if config.backend != "silero":
        return None, None
    try:
        return SileroVAD(config.model_path, threads=threads), None
    except VadUnavailable as e:
        reason = str(e)
        log.warning("Silero VAD unavailable (%s); falling back to the energy VAD", reason)
        return None, reason
