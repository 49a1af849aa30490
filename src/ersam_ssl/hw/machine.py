"""Which machine a latency measurement belongs to: CPU model, thread count and inference backend.

Per-op latencies measured on one CPU, with one thread count, in one framework version say little about
another. A latency table persisted under :func:`latency_dir` is named by :func:`machine_key` and records
:func:`machine_info`; :func:`check_machine` refuses to use it anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ersam_ssl.fileio import cache_dir

__all__ = [
    "BACKENDS",
    "LATENCY_DIR_ENV",
    "MachineMismatchError",
    "check_machine",
    "cpu_model",
    "latency_dir",
    "machine_info",
    "machine_key",
]

#: Environment variable that overrides :func:`latency_dir`.
LATENCY_DIR_ENV = "ERSAM_SSL_LATENCY_DIR"
BACKENDS = ("torch", "onnxruntime")
#: The fields of :func:`machine_info` that must match for a table to be used.
_KEY_FIELDS = ("cpu", "arch", "threads", "backend", "backend_version")


class MachineMismatchError(ValueError):
    """A latency table was measured on another machine, thread count or backend version."""


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` reports."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown"


def _backend_version(backend: str) -> str:
    if backend == "torch":
        import torch

        return torch.__version__
    if backend == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def machine_info(threads: int, backend: str = "torch") -> dict[str, Any]:
    """``{cpu, arch, threads, backend, backend_version}`` of this process measuring with ``threads`` threads."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "threads": threads,
        "backend": backend,
        "backend_version": _backend_version(backend),
    }


def machine_key(info: Mapping[str, Any]) -> str:
    """A file name stem for ``info``: readable (``amd-epyc-x86-64-1t-torch-2.14.1+cu130``) plus a short hash
    of the key fields, so two machines whose readable parts coincide after slugging still get two files."""
    fields = {k: info[k] for k in _KEY_FIELDS}
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
    readable = f"{fields['cpu']} {fields['arch']} {fields['threads']}t {fields['backend']} {fields['backend_version']}"
    slug = re.sub(r"[^a-z0-9.+]+", "-", readable.lower()).strip("-")
    return f"{slug[:80]}_{digest}"


def check_machine(saved: Mapping[str, Any] | None, current: Mapping[str, Any], source: str) -> None:
    """Raise :class:`MachineMismatchError` (one line naming the differences) unless ``saved`` is ``current``."""
    if saved is None:
        raise MachineMismatchError(
            f"{source} does not say which machine it was measured on; re-measure it here"
        )
    diffs = [
        f"{k} {saved.get(k)!r} vs {current.get(k)!r} here"
        for k in _KEY_FIELDS
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise MachineMismatchError(
            f"{source} was measured elsewhere ({'; '.join(diffs)}); re-measure it on this machine"
        )


def latency_dir(directory: str | Path | None = None) -> Path:
    """Where per-machine latency tables live: ``directory``, else ``$ERSAM_SSL_LATENCY_DIR``, else
    ``cache_dir()/latency`` (``~/.cache/ersam_ssl/latency``; see :func:`ersam_ssl.fileio.cache_dir`)."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(LATENCY_DIR_ENV)
    return Path(env) if env else cache_dir() / "latency"
