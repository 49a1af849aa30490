"""Per-op latency lookup table: a model's latency as the sum of its ops' measured latencies.

Hardware-aware NAS (ProxylessNAS, Cai et al., ICLR 2019; once-for-all, Cai et al., ICLR 2020; ERSAM,
Li et al., ICASSP 2023) avoids timing every candidate by timing each distinct layer configuration once
and summing. An op is a JSON-able spec (``{"op": "mbconv", ...}`` from ``models.layer_specs``);
``make_op(spec) -> (module, example_input)`` builds it with its real input shape. The sum misses what
happens between ops (framework overhead, cold caches): it under-predicts whole models. The correction
fitted on measured models (:mod:`ersam_ssl.hw.latency_fit`, :mod:`ersam_ssl.hw.latency_predictor`)
models that; :func:`lut_error` measures either against whole-model timings (mean error, Spearman's rho),
and ``benchmarks/cost_models.py`` reports both (``benchmarks/results/cost_models.json``).

The ops of a table are timed interleaved, a chunk at a time (:meth:`LatencyLUT.fill`,
:func:`~ersam_ssl.hw.latency.measure_interleaved`), so that the machine's drifting speed does not reorder
them, and each chunk is brought to the table's level by re-timing a few ops already in the table with it
(anchors); an op looked up lazily is timed alone.

A table records the machine it was measured on (:func:`ersam_ssl.hw.machine.machine_info`) and
:meth:`LatencyLUT.load` refuses a table from another CPU, thread count or torch version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ersam_ssl.fileio import write_json
from ersam_ssl.hw.latency import LatencyReport, measure_interleaved, measure_torch_latency
from ersam_ssl.hw.machine import check_machine, machine_info

__all__ = ["IGNORED_SPEC_FIELDS", "LUTError", "LatencyLUT", "lut_error", "spec_key", "summarize_errors"]

MakeOp = Callable[[dict], tuple[nn.Module, Any]]
_FORMAT_VERSION = 1
#: Ops timed in the same interleaved rounds by :meth:`LatencyLUT.fill` (all of them in memory at once): the
#: default space's 445 ops fit in one chunk (about 10 s on one core), the most consistent table.
CHUNK = 512
#: Ops already in the table re-timed with each later chunk, to bring the chunk to the table's level.
ANCHORS = 16


# Fields that say where an op sits in a model, not what it computes: two ops that differ only here
# share one LUT entry (``layer_specs`` names each op by its module path).
IGNORED_SPEC_FIELDS = ("name",)


def spec_key(spec: Mapping[str, Any]) -> str:
    """Canonical JSON of an op spec (sorted keys, no spaces, without :data:`IGNORED_SPEC_FIELDS`)."""
    kept = {k: v for k, v in spec.items() if k not in IGNORED_SPEC_FIELDS}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


class LatencyLUT:
    """Median single-op latencies (ms) keyed by canonical op spec (:func:`spec_key`), measured on this CPU.

    Args:
        entries: Known ``{spec_key: ms}``.
        make_op: Builds ``(module, example_input)`` from a spec; with it, unknown specs are measured
            lazily (and cached); without it, :meth:`predict` raises ``KeyError`` on unknown specs.
        threads, warmup, repeats: Measurement settings (see :func:`measure_torch_latency`).
        meta: Metadata saved with the table; by default ``{"machine": machine_info(threads)}``, which
            :meth:`load` checks against the machine that loads it.
    """

    def __init__(
        self,
        entries: Mapping[str, float] | None = None,
        *,
        make_op: MakeOp | None = None,
        threads: int = 1,
        warmup: int = 5,
        repeats: int = 20,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.entries: dict[str, float] = dict(entries or {})
        self.make_op = make_op
        self.threads = threads
        self.warmup = warmup
        self.repeats = repeats
        self.meta: dict[str, Any] = dict(meta) if meta else {"machine": machine_info(threads)}
        self.num_measured = 0  # ops measured by this instance (not loaded)

    @classmethod
    def build(
        cls,
        specs: Iterable[Mapping[str, Any]],
        make_op: MakeOp,
        threads: int = 1,
        warmup: int = 5,
        repeats: int = 20,
    ) -> LatencyLUT:
        """Measure every distinct spec in ``specs`` once (:meth:`fill`) and keep ``make_op`` for lazy measurement."""
        lut = cls(make_op=make_op, threads=threads, warmup=warmup, repeats=repeats)
        lut.fill(specs)
        return lut

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, Mapping) and spec_key(spec) in self.entries

    def measure(self, spec: Mapping[str, Any]) -> LatencyReport:
        """Build and time one op (always measures; use :meth:`latency_ms` for the cached value)."""
        if self.make_op is None:
            raise KeyError(f"cannot measure op {spec_key(spec)}: this LUT has no make_op attached")
        module, example_input = self.make_op(dict(spec))
        report = measure_torch_latency(
            module,
            threads=self.threads,
            warmup=self.warmup,
            repeats=self.repeats,
            example_input=example_input,
        )
        self.num_measured += 1
        return report

    def fill(
        self,
        specs: Iterable[Mapping[str, Any]],
        chunk: int = CHUNK,
        after_chunk: Callable[[], Any] | None = None,
        anchors: int = ANCHORS,
    ) -> int:
        """Measure every distinct spec of ``specs`` missing from the table, ``chunk`` ops at a time.

        The ops of a chunk are timed interleaved (:func:`~ersam_ssl.hw.latency.measure_interleaved`,
        ``repeats`` rounds), together with up to ``anchors`` ops already in the table (spread over its
        latency range). Chunks run seconds to minutes apart, at whatever speed the machine has then: each
        chunk is scaled by the geometric mean of the anchors' table latency over their latency now, so all
        entries share the level of the first chunk. Two builds of the default space's table on an idle
        2-core VM, in chunks of 64 ops, ranked the per-op sums of 60 members alike at Spearman 0.91 (sums
        10 % apart, sd) without anchors, 0.975 (3.9 %) with 8; with all 445 ops in one chunk, 0.989 (2.2 %).

        ``after_chunk`` is called after each chunk (e.g. to save, so that a killed build resumes).
        Returns how many ops were measured.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if anchors < 0:
            raise ValueError(f"anchors must be >= 0, got {anchors}")
        missing = {spec_key(s): dict(s) for s in specs if spec_key(s) not in self.entries}
        if missing and self.make_op is None:
            raise KeyError(f"cannot measure {len(missing)} ops: this LUT has no make_op attached")
        todo = list(missing.items())
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            anchor_keys = self._anchor_keys(anchors)
            built = [self.make_op(spec) for _, spec in batch]
            built += [self.make_op(json.loads(key)) for key in anchor_keys]
            medians = measure_interleaved(
                [module for module, _ in built],
                threads=self.threads,
                warmup=self.warmup,
                rounds=self.repeats,
                example_inputs=[example for _, example in built],
            )
            new, again = medians[: len(batch)], medians[len(batch) :]
            ratios = [self.entries[key] / ms for key, ms in zip(anchor_keys, again)]
            scale = float(np.exp(np.mean(np.log(ratios)))) if ratios else 1.0
            self.entries.update((key, ms * scale) for (key, _), ms in zip(batch, new))
            self.num_measured += len(batch)
            if after_chunk is not None:
                after_chunk()
        return len(todo)

    def _anchor_keys(self, count: int) -> list[str]:
        """Up to ``count`` keys of the table, spread evenly over its entries sorted by latency."""
        ranked = sorted(self.entries, key=self.entries.__getitem__)
        if not ranked or count == 0:
            return []
        picks = np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round().astype(int)
        return [ranked[i] for i in dict.fromkeys(picks.tolist())]

    def latency_ms(self, spec: Mapping[str, Any]) -> float:
        """Median latency of one op: from the table, or measured now (if ``make_op`` is attached)."""
        key = spec_key(spec)
        if key not in self.entries:
            if self.make_op is None:
                raise KeyError(
                    f"op {key} is not in the latency LUT ({len(self.entries)} entries) and no make_op is "
                    "attached to measure it; build the LUT over a superset of ops or pass make_op"
                )
            self.entries[key] = self.measure(spec).median_ms
        return self.entries[key]

    def predict(self, arch_specs: Sequence[Mapping[str, Any]]) -> float:
        """Predicted latency (ms) of a model given as its list of op specs: the sum of op latencies."""
        return float(sum(self.latency_ms(spec) for spec in arch_specs))

    def to_dict(self) -> dict[str, Any]:
        settings = {"threads": self.threads, "warmup": self.warmup, "repeats": self.repeats}
        return {"version": _FORMAT_VERSION, "meta": self.meta, "settings": settings, "entries": self.entries}

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON atomically (temp file in the same directory, then rename)."""
        return write_json(path, self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        make_op: MakeOp | None = None,
        *,
        check: bool = True,
        threads: int | None = None,
        source: str = "latency table",
    ) -> LatencyLUT:
        """Inverse of :meth:`to_dict`. With ``check``, a table measured on another machine (CPU model, torch
        version; see :mod:`ersam_ssl.hw.machine`) or, if ``threads`` is given, with another thread count
        raises ``MachineMismatchError``."""
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{source}: unsupported LUT format version {data.get('version')!r}")
        settings = data.get("settings", {})
        saved_threads = int(settings.get("threads", 1))
        meta = data.get("meta") or {}
        if check:
            here = machine_info(saved_threads if threads is None else threads)
            check_machine(meta.get("machine"), here, source)
        return cls(
            {str(k): float(v) for k, v in data["entries"].items()},
            make_op=make_op,
            threads=saved_threads,
            warmup=int(settings.get("warmup", 5)),
            repeats=int(settings.get("repeats", 20)),
            meta=meta,
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        make_op: MakeOp | None = None,
        *,
        check: bool = True,
        threads: int | None = None,
    ) -> LatencyLUT:
        """Read a table written by :meth:`save`; attach ``make_op`` to measure unknown ops lazily.

        A table from another machine (or not measured with ``threads`` threads, if given) raises
        ``MachineMismatchError`` unless ``check=False`` (e.g. to inspect it: its values do not describe
        this machine).
        """
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return cls.from_dict(data, make_op, check=check, threads=threads, source=str(path))


@dataclass(frozen=True)
class LUTError:
    """Predicted vs measured latency over a set of architectures.

    Attributes:
        rows: Per architecture ``{"arch", "predicted_ms", "measured_ms", "rel_error"}`` with
            ``rel_error = (predicted - measured) / measured``.
        mean_abs_pct_error: Mean of ``|rel_error|`` in percent.
        mean_pct_error: Mean signed error in percent (positive: the LUT over-predicts).
        spearman: Spearman rank correlation of predicted vs measured (what search relies on).
    """

    rows: tuple[dict[str, Any], ...]
    mean_abs_pct_error: float
    mean_pct_error: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_errors(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float, float]:
    """``(mean |rel err| %, mean rel err %, Spearman rho)`` of predicted vs measured latencies."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or p.size == 0:
        raise ValueError("predicted and measured must be non-empty and of equal length")
    from scipy import stats  # imported here: only error analysis needs SciPy

    rel = (p - m) / m
    rho = float(stats.spearmanr(p, m).statistic) if p.size > 1 else float("nan")
    return float(np.mean(np.abs(rel)) * 100), float(np.mean(rel) * 100), rho


def lut_error(
    lut: LatencyLUT,
    archs: Sequence[dict],
    build_model: Callable[[dict], nn.Module],
    layer_specs: Callable[[dict], list[dict]],
    *,
    num_samples: int = 80000,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> LUTError:
    """Compare the LUT's prediction with the measured latency of each whole model (timed interleaved).

    Args:
        lut: The table (ops missing from it are measured first, :meth:`LatencyLUT.fill`, if it has
            ``make_op``).
        archs: Architecture dicts.
        build_model: ``arch -> nn.Module`` taking a waveform ``[1, num_samples]``.
        layer_specs: ``arch -> list of op specs`` (the same decomposition the LUT was built from).
    """
    specs = [layer_specs(arch) for arch in archs]
    if lut.make_op is not None:
        lut.fill(s for arch_specs in specs for s in arch_specs)
    predicted = [lut.predict(arch_specs) for arch_specs in specs]
    measured = measure_interleaved(
        [build_model(arch) for arch in archs], num_samples, threads, warmup, rounds=repeats
    )
    rows = [
        {"arch": arch, "predicted_ms": p, "measured_ms": m, "rel_error": (p - m) / m}
        for arch, p, m in zip(archs, predicted, measured)
    ]
    mape, mpe, rho = summarize_errors([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    return LUTError(tuple(rows), mape, mpe, rho)
