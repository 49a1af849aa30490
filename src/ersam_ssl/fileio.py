"""Atomic file writes: a reader (or a run resumed after a kill) sees the old file or the new one, never half.

Every writer in the library goes through :func:`atomic_path`: write to a unique temporary file in the
destination folder, ``fsync``, then ``os.replace`` it over the destination (atomic on POSIX and Windows
within one file system); on any error the temporary file is removed and the destination is untouched.
A run folder has one writer at a time: :func:`exclusive_lock`. What the package can rebuild (synthesized
corpora, latency tables) lives under :func:`cache_dir`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is deleted.

    For writers that take a file name (``soundfile.write``, ``onnx.save``, ``torch.save``). The temporary
    name keeps the destination's suffix so format detection by extension still works.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode, **kwargs)`` that only replaces ``path`` once the ``with`` block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not a write mode")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """Atomically write ``json.dumps(obj, **dumps_kwargs)`` (default ``indent=1``) plus a newline."""
    dumps_kwargs.setdefault("indent", 1)
    return write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def cache_dir() -> Path:
    """The package's cache root: ``$ERSAM_SSL_CACHE`` or the platform's user cache dir (``~/.cache/ersam_ssl``)."""
    env = os.environ.get("ERSAM_SSL_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("ersam_ssl"))


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: NumPy scalars and arrays as Python values, paths as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


#: Names of :func:`atomic_path`'s temporary files: ``.<stem>.<8 random chars from mkstemp>.part<suffix>``.
_PARTIAL_NAME = re.compile(r"\..*\.[a-z0-9_]{8}\.part(\.[^.]*)?")


def remove_partial_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves behind when its process is killed mid-write
    (e.g. ``.last.k3j9x_2a.part.ckpt`` next to ``last.ckpt``); returns the removed paths.

    They hold incomplete data that nothing reads, so a run resumed after kills would otherwise collect one
    per kill. Call it only while no other process writes to ``folder`` (e.g. under :func:`exclusive_lock`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.part*") if recursive else folder.glob(".*.part*")
    removed = []
    for path in sorted(candidates):
        if _PARTIAL_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class LockHeldError(OSError):
    """Another process holds the lock (the message names its PID when it recorded one)."""


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str = "") -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``fcntl.flock`` on ``path`` (created if missing) for the ``with`` block.

    The lock belongs to an open file descriptor, so the kernel releases it when the process exits or is
    killed (no stale lock after a crash, unlike a lock that is a file's existence). The holder writes its
    PID into the file so a refused process can name it. The file itself is never deleted: unlinking it
    while another process waits on it would let two processes hold "the" lock on two different files.
    On platforms without ``fcntl`` (Windows) nothing is locked and a warning is logged.

    Args:
        path: the lock file.
        what: what the lock protects, for the error message (default: the lock file's folder).

    Raises:
        LockHeldError: another process holds the lock.
    """
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        log.warning("no fcntl on this platform: %s is not locked against a second writer", path.parent)
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            by = f"PID {holder}" if holder.isdigit() else "another process"
            raise LockHeldError(
                f"{what or path.parent} is in use by {by} (lock {path}); wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
