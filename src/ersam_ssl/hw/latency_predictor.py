"""Whole-model latency from a per-op table and a fitted correction, measured once per machine and reused.

:class:`LatencyPredictor` is a :class:`~ersam_ssl.hw.lut.LatencyLUT` (median latency of every op, timed
alone) plus a :class:`~ersam_ssl.hw.latency_fit.LatencyCorrection` (fitted on measured whole members, so
that what the sum misses is modelled). :func:`load_or_build` keeps both in one JSON file per machine
(named by :func:`~ersam_ssl.hw.machine.machine_key`; CPU model, thread count, torch version): it fills
the table for every op of the space once, fits one correction per *context* (search space, input length,
heads: another context has other members to calibrate on), saves atomically, and later searches on the
same machine load it instead of measuring. A file from another machine is refused, and a table timed with
fewer warm-up or timed runs than asked for is measured again. :func:`sam_latency_predictor` does all this
for a SAM search space; ``CostModel(latency="lut")`` uses it by default.

Everything is timed interleaved (:func:`~ersam_ssl.hw.latency.measure_interleaved`): the table's ops a chunk
at a time, the calibration members all together, so that the drifting speed of a shared machine does not
reorder them.

File layout::

    {"version": 1, "meta": {"machine": {...}}, "settings": {"threads", "warmup", "repeats"},
     "entries": {spec_key: ms},
     "calibrations": {context_key: {"context", "archs", "measured_ms", "settings", "correction"}}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from ersam_ssl.fileio import write_json
from ersam_ssl.hw.latency import measure_interleaved
from ersam_ssl.hw.latency_fit import DEFAULT_FORM, IDENTITY, LatencyCorrection, fit_correction
from ersam_ssl.hw.lut import CHUNK, LatencyLUT, MakeOp
from ersam_ssl.hw.machine import latency_dir, machine_info, machine_key

__all__ = [
    "Calibration",
    "LatencyPredictor",
    "calibrate",
    "calibration_members",
    "context_key",
    "distinct_members",
    "fit_calibration",
    "load_or_build",
    "measure_models",
    "predictor_path",
    "read_store",
    "sam_latency_predictor",
    "write_store",
]

log = logging.getLogger(__name__)
_SAVE_EVERY = CHUNK  # ops timed together, then saved, while filling a table (a killed build resumes there)


def context_key(context: Mapping[str, Any]) -> str:
    """Short hash of a context's canonical JSON (the key of its calibration in the file)."""
    return hashlib.sha1(json.dumps(context, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Calibration:
    """Whole members measured on this machine and the correction fitted on them.

    Attributes:
        context: What the members are (e.g. ``{"space": ..., "num_samples": ..., ...}``).
        archs: The calibration members.
        measured_ms: Median whole-model latency of each member (timed interleaved with each other).
        correction: The fitted correction.
        settings: ``{"warmup", "repeats"}`` of the whole-model timings and the requested ``"form"`` (e.g.
            ``"auto"``; the chosen one is ``correction.form``).
    """

    context: dict[str, Any]
    archs: tuple[dict, ...]
    measured_ms: tuple[float, ...]
    correction: LatencyCorrection
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "archs": list(self.archs),
            "measured_ms": list(self.measured_ms),
            "settings": self.settings,
            "correction": self.correction.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            dict(data["context"]),
            tuple(data["archs"]),
            tuple(float(v) for v in data["measured_ms"]),
            LatencyCorrection.from_dict(data["correction"]),
            dict(data.get("settings", {})),
        )


class LatencyPredictor:
    """Predicted whole-model latency (ms) of a model given as its op specs: the corrected sum of table latencies.

    Args:
        lut: Per-op latencies (ops missing from it are measured lazily if it has ``make_op``).
        correction: Applied to the per-op latencies; the default :data:`~ersam_ssl.hw.latency_fit.IDENTITY`
            is the raw sum.
        calibration: Where ``correction`` came from (kept for reports), if it was fitted.
    """

    def __init__(
        self,
        lut: LatencyLUT,
        correction: LatencyCorrection = IDENTITY,
        calibration: Calibration | None = None,
    ) -> None:
        self.lut = lut
        self.correction = correction
        self.calibration = calibration

    def raw(self, arch_specs: Sequence[Mapping[str, Any]]) -> float:
        """The uncorrected sum of op latencies."""
        return self.lut.predict(arch_specs)

    def predict(self, arch_specs: Sequence[Mapping[str, Any]]) -> float:
        """Corrected latency: ``constant + Σ op_cost(spec)``."""
        return self.correction.predict(arch_specs, [self.lut.latency_ms(s) for s in arch_specs])

    def op_cost(self, spec: Mapping[str, Any]) -> float:
        """One op's share of :meth:`predict` (additive over ops, for one-shot search cost tables)."""
        return self.correction.op_cost(spec, self.lut.latency_ms(spec))

    @property
    def constant(self) -> float:
        """The part of :meth:`predict` that belongs to no op (the correction's intercept)."""
        return self.correction.intercept


def measure_models(
    archs: Sequence[dict],
    build_model: Callable[[dict], nn.Module],
    *,
    num_samples: int,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> list[float]:
    """Median latency (ms) of each whole model on a waveform ``[1, num_samples]``, all timed in the same
    ``repeats`` rounds (:func:`~ersam_ssl.hw.latency.measure_interleaved`): comparable with each other."""
    models = [build_model(arch) for arch in archs]
    return measure_interleaved(models, num_samples, threads, warmup, rounds=repeats)


def fit_calibration(
    lut: LatencyLUT,
    archs: Sequence[dict],
    measured_ms: Sequence[float],
    layer_specs: Callable[[dict], list[dict]],
    *,
    context: Mapping[str, Any],
    form: str = DEFAULT_FORM,
    settings: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit the correction ``form`` to whole members' measured latencies and the table's per-op latencies."""
    ops = []
    for arch in archs:
        specs = layer_specs(arch)
        ops.append((specs, [lut.latency_ms(s) for s in specs]))
    correction = fit_correction(ops, measured_ms, form)
    settings = {**(settings or {}), "form": form}
    return Calibration(
        dict(context), tuple(archs), tuple(float(m) for m in measured_ms), correction, settings
    )


def calibrate(
    lut: LatencyLUT,
    archs: Sequence[dict],
    layer_specs: Callable[[dict], list[dict]],
    build_model: Callable[[dict], nn.Module],
    *,
    context: Mapping[str, Any],
    num_samples: int,
    form: str = DEFAULT_FORM,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> Calibration:
    """Time each whole member of ``archs``, then :func:`fit_calibration`."""
    measured = measure_models(
        archs, build_model, num_samples=num_samples, threads=threads, warmup=warmup, repeats=repeats
    )
    settings = {"warmup": warmup, "repeats": repeats}
    return fit_calibration(lut, archs, measured, layer_specs, context=context, form=form, settings=settings)


def predictor_path(threads: int = 1, directory: str | Path | None = None) -> Path:
    """This machine's latency file: ``latency_dir(directory) / f"{machine_key}.json"`` (torch backend)."""
    return latency_dir(directory) / f"{machine_key(machine_info(threads))}.json"


def read_store(
    path: str | Path, make_op: MakeOp | None = None, *, check: bool = True, threads: int | None = None
) -> tuple[LatencyLUT, dict[str, Calibration]]:
    """The table and the calibrations (by context key) in ``path``; a file from another machine (or not
    timed with ``threads`` threads, if given) raises ``MachineMismatchError`` unless ``check=False``."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    lut = LatencyLUT.from_dict(data, make_op, check=check, threads=threads, source=str(path))
    calibrations = {k: Calibration.from_dict(v) for k, v in data.get("calibrations", {}).items()}
    return lut, calibrations


def write_store(path: str | Path, lut: LatencyLUT, calibrations: Mapping[str, Calibration]) -> Path:
    """Write the table and calibrations atomically (a reader sees the old file or the new one)."""
    data = {**lut.to_dict(), "calibrations": {k: c.to_dict() for k, c in sorted(calibrations.items())}}
    return write_json(path, data, indent=1, sort_keys=True)


def _fresh_enough(settings: Mapping[str, Any], warmup: int, repeats: int) -> bool:
    return int(settings.get("warmup", 0)) >= warmup and int(settings.get("repeats", 0)) >= repeats


def load_or_build(
    op_specs: Iterable[Mapping[str, Any]],
    calibration_archs: Sequence[dict],
    layer_specs: Callable[[dict], list[dict]],
    build_model: Callable[[dict], nn.Module],
    make_op: MakeOp,
    context: Mapping[str, Any],
    *,
    num_samples: int,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    form: str = DEFAULT_FORM,
    path: str | Path | None = None,
    directory: str | Path | None = None,
    remeasure: bool = False,
    calibration_ms: Sequence[float] | None = None,
) -> LatencyPredictor:
    """This machine's corrected predictor for ``context``: loaded from its file, completed and saved if needed.

    Args:
        op_specs: Every op the members can contain (e.g. ``models.space_op_specs``): each one missing from
            the table is measured once.
        calibration_archs: Members to time whole and fit the correction on (their timings are reused from
            the file if the same members were timed with at least ``warmup`` / ``repeats``; another ``form``
            is then refitted without timing).
        layer_specs: ``arch -> op specs``; build_model: ``arch -> nn.Module`` on a waveform
            ``[1, num_samples]``; make_op: ``spec -> (module, example input)``.
        context: JSON-able description of the members (the calibration's key).
        threads, warmup, repeats: Timing settings (part of the machine key: ``threads``).
        form: Correction form (:data:`~ersam_ssl.hw.latency_fit.FORMS`, or ``"auto"`` to choose one by
            leave-one-out error on the calibration members).
        path: The file (default :func:`predictor_path` under ``directory``).
        remeasure: Ignore an existing file and measure everything again.
        calibration_ms: The latencies of ``calibration_archs``, measured by the caller with ``warmup`` /
            ``repeats`` (e.g. in the same interleaved rounds as members it evaluates the predictor on, so
            that both see the same machine speed): the correction is fitted on them and stored instead of
            timing the members again.

    Raises:
        MachineMismatchError: ``path`` holds a table measured on another machine.
    """
    path = Path(path) if path is not None else predictor_path(threads, directory)
    lut, calibrations = None, {}
    if path.exists() and not remeasure:
        lut, calibrations = read_store(path, make_op, threads=threads)
        lut_settings = {"warmup": lut.warmup, "repeats": lut.repeats}
        if not _fresh_enough(lut_settings, warmup, repeats):
            log.info("%s was timed with %s, fewer runs than asked for: measuring again", path, lut_settings)
            lut, calibrations = None, {}
    if lut is None:
        lut = LatencyLUT(make_op=make_op, threads=threads, warmup=warmup, repeats=repeats)

    missing = [spec for spec in op_specs if spec not in lut]
    if missing:
        log.info("measuring %d ops missing from the latency table %s", len(missing), path)
        start = time.perf_counter()
        count = lut.fill(missing, _SAVE_EVERY, after_chunk=lambda: write_store(path, lut, calibrations))
        log.info("measured %d ops in %.1f s", count, time.perf_counter() - start)

    key = context_key(context)
    calibration = calibrations.get(key)
    if calibration_ms is not None:
        if len(calibration_ms) != len(calibration_archs):
            raise ValueError(
                f"got {len(calibration_ms)} calibration latencies for {len(calibration_archs)} members"
            )
        calibration = fit_calibration(lut, calibration_archs, calibration_ms, layer_specs, context=context,
                                      form=form, settings={"warmup": warmup, "repeats": repeats})  # fmt: skip
    elif (
        calibration is None
        or list(calibration.archs) != list(calibration_archs)
        or not _fresh_enough(calibration.settings, warmup, repeats)
    ):
        log.info("timing %d whole models to fit the latency correction", len(calibration_archs))
        calibration = calibrate(
            lut,
            calibration_archs,
            layer_specs,
            build_model,
            context=context,
            num_samples=num_samples,
            form=form,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
        )
    elif calibration.settings.get("form") != form:  # same timings, another form: refit, nothing to time
        settings = {k: v for k, v in calibration.settings.items() if k != "form"}
        calibration = fit_calibration(
            lut,
            calibration_archs,
            calibration.measured_ms,
            layer_specs,
            context=context,
            form=form,
            settings=settings,
        )
    if calibrations.get(key) != calibration:
        calibrations[key] = calibration
        write_store(path, lut, calibrations)
        c = calibration.correction
        log.info(
            "latency correction %r: intercept %.3g ms, %s", c.form, c.intercept, dict(zip(c.features, c.coef))
        )
    return LatencyPredictor(lut, calibration.correction, calibration)


def distinct_members(
    space: Any, count: int, seed: int = 0, *, ends: bool = False, exclude: Iterable[dict] = ()
) -> list[dict]:
    """``count`` distinct canonical members of a :class:`~ersam_ssl.models.SAMSpace`, seeded random ones (after
    its smallest and largest, the ends of the latency range, if ``ends``), none of them in ``exclude``."""
    taken = {json.dumps(space.canonical(a), sort_keys=True) for a in exclude}
    rng, members = random.Random(seed), {}
    candidates = [space.smallest(), space.largest()] if ends else []
    for _ in range(100 * count):
        if len(members) >= count:
            break
        arch = space.canonical(candidates.pop(0) if candidates else space.sample(rng))
        key = json.dumps(arch, sort_keys=True)
        if key not in taken:
            members.setdefault(key, arch)
    if len(members) < count:
        raise ValueError(f"the space has fewer than {count} distinct members to draw")
    return list(members.values())


def calibration_members(space: Any, count: int, seed: int = 0) -> list[dict]:
    """The members :func:`sam_latency_predictor` times whole: :func:`distinct_members` with both ends."""
    if count < 2:
        raise ValueError(f"need at least 2 calibration members, got {count}")
    return distinct_members(space, count, seed, ends=True)


def sam_latency_predictor(
    space: Any = None,
    *,
    n_mels: int = 64,
    num_samples: int = 80000,
    num_classes: int = 11,
    head: str = "classify",
    level_norm: str = "clip",
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    calibration_archs: int = 40,
    seed: int = 0,
    form: str = DEFAULT_FORM,
    directory: str | Path | None = None,
    path: str | Path | None = None,
    remeasure: bool = False,
    calibration_ms: Sequence[float] | None = None,
) -> LatencyPredictor:
    """:func:`load_or_build` for the members of a SAM search space (``space``: a ``SAMSpace``, its ``to_dict()``
    or None for the default) built with these model settings, calibrated on :func:`calibration_members`
    (``calibration_archs`` of them, drawn with ``seed``; ``calibration_ms``: their latencies, if the caller
    measured them)."""
    # imported here so that ``hw`` does not depend on ``models``
    from ersam_ssl.models import build_model, layer_specs, make_op, space_op_specs
    from ersam_ssl.models.space import as_space

    space = as_space(space)
    settings = {
        "n_mels": n_mels,
        "num_samples": num_samples,
        "num_classes": num_classes,
        "head": head,
        "level_norm": level_norm,
    }
    build_settings = {k: v for k, v in settings.items() if k != "num_samples"}
    return load_or_build(
        space_op_specs(space, **settings),
        calibration_members(space, calibration_archs, seed),
        partial(layer_specs, space=space, **settings),
        partial(build_model, space=space, **build_settings),
        make_op,
        {"space": space.to_dict(), **settings},
        num_samples=num_samples,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        form=form,
        path=path,
        directory=directory,
        remeasure=remeasure,
        calibration_ms=calibration_ms,
    )
