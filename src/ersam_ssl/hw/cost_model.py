"""The efficiency oracle of the architecture search: :class:`CostModel` and the :class:`CostOracle` protocol.

The search depends only on :class:`CostOracle` (once-for-all style: the search needs only an efficiency
oracle, Cai et al., ICLR 2020): ``cost(arch) -> dict`` for whole members and ``op_cost_function(metric)``
for the additive per-op costs a one-shot strategy tabulates. :class:`CostModel` implements it from MAC
counts (:mod:`ersam_ssl.hw.cost`), host latency (predicted from per-op latencies with a correction fitted
on measured members and persisted per machine, :mod:`ersam_ssl.hw.latency_predictor`, or measured,
:mod:`ersam_ssl.hw.latency`) and a device energy model (:mod:`ersam_ssl.hw.energy`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import nn

from ersam_ssl.hw.cost import count_macs
from ersam_ssl.hw.energy import DeviceProfile, load_profile, report_energy
from ersam_ssl.hw.latency import measure_torch_latency
from ersam_ssl.hw.latency_predictor import LatencyPredictor, sam_latency_predictor
from ersam_ssl.hw.lut import LatencyLUT, spec_key

__all__ = ["CostModel", "CostOracle", "arch_key"]

_LATENCY_MODES = ("lut", "measure", "none")


def arch_key(arch: dict) -> str:
    """Canonical JSON of an architecture dict (the cache key)."""
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


@runtime_checkable
class CostOracle(Protocol):
    """What the search needs of a hardware cost model (implemented by :class:`CostModel`)."""

    def cost(self, arch: dict) -> dict[str, Any]:
        """Costs of one member: ``{macs, params, latency_ms, device_latency_ms, energy_mj, avg_power_mw}``."""
        ...

    def op_cost_function(self, metric: str) -> tuple[Callable[[dict], float], float]:
        """``(op_cost(spec), constant)`` such that ``sum(op_cost) + constant`` is ``metric`` of a member."""
        ...


class CostModel:
    """Efficiency oracle for search: ``cost(arch) -> {macs, params, latency_ms, device_latency_ms, energy_mj,
    avg_power_mw}``, cached per architecture.

    Args:
        profile: Device profile name or :class:`DeviceProfile` for energy (default: Pixel 3 big core).
        latency: ``"lut"`` predicts host latency from per-op latencies (:class:`LatencyPredictor`),
            ``"measure"`` builds the model and times it, ``"none"`` skips host latency (``latency_ms`` is None).
        lut: The predictor for ``latency="lut"``: a :class:`LatencyPredictor`, or a :class:`LatencyLUT` whose
            raw sum is the prediction. If None (SAM space, default builders), this machine's persisted,
            corrected predictor of the default space (:func:`~ersam_ssl.hw.latency_predictor.
            sam_latency_predictor`), loaded on first use, or measured and saved then (under a minute,
            once per machine). Custom builders need an explicit ``lut``.
        build_model: ``arch -> nn.Module`` taking a waveform ``[1, num_samples]``. Defaults to
            ``ersam_ssl.models.build_model(arch, num_classes=num_classes)``.
        layer_specs: ``arch -> list of op specs`` for the LUT (default ``models.layer_specs`` with
            ``num_samples`` and ``num_classes``).
        make_op: ``spec -> (module, example_input)`` for the LUT and :meth:`op_cost_function` (default
            ``models.make_op``).
        canonicalize: ``arch -> arch`` applied before caching, so archs that build the same model share
            one entry (default: ``SAMSpace().canonical`` when ``build_model`` is the default).
        num_samples: Waveform length per inference (80000 = 5 s at 16 kHz).
        period_s, hours: One inference every ``period_s`` seconds, energy reported over ``hours``.
        threads, warmup, repeats: Host latency measurement settings.
        fold_bn: Count BatchNorm as folded (0 MACs).
        latency_dir: Folder of the persisted per-machine latency tables (default
            :func:`~ersam_ssl.hw.machine.latency_dir`: ``$ERSAM_SSL_LATENCY_DIR`` or
            ``~/.cache/ersam_ssl/latency``).

    ``device_latency_ms`` and the energy come from MACs for phone profiles (``latency_model: macs``) and
    from the host latency for ``latency_model: measured`` profiles (which need ``latency != "none"``).
    """

    def __init__(
        self,
        profile: str | DeviceProfile = "pixel3",
        latency: str = "lut",
        lut: LatencyLUT | LatencyPredictor | None = None,
        *,
        build_model: Callable[[dict], nn.Module] | None = None,
        layer_specs: Callable[[dict], list[dict]] | None = None,
        make_op: Callable[[dict], tuple[nn.Module, Any]] | None = None,
        canonicalize: Callable[[dict], dict] | None = None,
        num_samples: int = 80000,
        num_classes: int = 11,
        period_s: float = 5.0,
        hours: float = 12.0,
        threads: int = 1,
        warmup: int = 5,
        repeats: int = 20,
        fold_bn: bool = True,
        latency_dir: str | Path | None = None,
    ) -> None:
        if latency not in _LATENCY_MODES:
            raise ValueError(f"latency must be one of {_LATENCY_MODES}, got {latency!r}")
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        if self.profile.latency_model == "measured" and latency == "none":
            raise ValueError(
                f"profile {self.profile.name!r} needs a host latency; use latency='lut' or 'measure'"
            )
        self.latency = latency
        self.num_samples = num_samples
        self.period_s = period_s
        self.hours = hours
        self.threads = threads
        self.warmup = warmup
        self.repeats = repeats
        self.fold_bn = fold_bn
        sam_defaults = build_model is None and layer_specs is None and make_op is None
        if build_model is None:
            build_model = partial(_space("build_model"), num_classes=num_classes)
            canonicalize = canonicalize or _space("SAMSpace")().canonical
        self._build_model = build_model
        self._canonicalize = canonicalize
        self._layer_specs = layer_specs
        self._make_op = make_op
        self._predictor = LatencyPredictor(lut) if isinstance(lut, LatencyLUT) else lut
        self._default_predictor: Callable[[], LatencyPredictor] | None = None
        if sam_defaults:
            self._default_predictor = partial(
                sam_latency_predictor,
                num_samples=num_samples,
                num_classes=num_classes,
                threads=threads,
                warmup=warmup,
                repeats=repeats,
                directory=latency_dir,
            )
        if latency == "lut":
            self._layer_specs = layer_specs or partial(
                _space("layer_specs"), num_samples=num_samples, num_classes=num_classes
            )
            if self._predictor is None and self._default_predictor is None:
                raise ValueError(
                    "latency='lut' with custom model builders needs lut=: a LatencyPredictor (e.g. "
                    "ersam_ssl.hw.sam_latency_predictor(space, ...)) or a LatencyLUT (uncorrected sum)"
                )
        self._cache: dict[str, dict[str, Any]] = {}

    @property
    def lut(self) -> LatencyLUT | None:
        """The per-op table of the latency predictor (None until one is configured or first used)."""
        return self._predictor.lut if self._predictor is not None else None

    def latency_predictor(self) -> LatencyPredictor:
        """The host-latency predictor: the configured one; else, with the SAM defaults, this machine's
        persisted and corrected one (loaded, or measured and saved, now); else an uncorrected table that
        measures ops lazily with ``make_op`` (for per-op costs of a model not costed by ``"lut"``)."""
        if self._predictor is None:
            if self._default_predictor is not None:
                self._predictor = self._default_predictor()
            else:
                make_op = self._make_op or _space("make_op")
                lut = LatencyLUT(
                    make_op=make_op, threads=self.threads, warmup=self.warmup, repeats=self.repeats
                )
                self._predictor = LatencyPredictor(lut)
        return self._predictor

    def cost(self, arch: dict) -> dict[str, Any]:
        """Costs of one architecture (a copy of the cached dict)."""
        if self._canonicalize is not None:
            arch = self._canonicalize(arch)
        key = arch_key(arch)
        if key not in self._cache:
            self._cache[key] = self._compute(arch)
        return dict(self._cache[key])

    __call__ = cost

    def get_efficiency(self, arch: dict, metric: str = "energy_mj") -> float:
        """One number for search (once-for-all's ``get_efficiency``): ``macs``, ``latency_ms``, ``energy_mj``, ..."""
        value = self.cost(arch)[metric]
        if value is None:
            raise ValueError(f"{metric} is not available with latency={self.latency!r}")
        return float(value)

    def op_cost_function(self, metric: str) -> tuple[Callable[[dict], float], float]:
        """``(op_cost(spec), constant)`` such that ``sum(op_cost) + constant`` is ``metric`` of a member.

        ``spec`` is one op spec of ``layer_specs`` (built with ``make_op``). MACs and predicted latency add
        over ops (the latency correction is a sum over ops plus a constant); the modelled average power is
        affine in both, so each op contributes its marginal power and the constant holds the power of a
        model with no ops but the latency constant (wake-up overhead). Latency comes from
        :meth:`latency_predictor`.
        """
        make_op = self._make_op or _space("make_op")
        macs_cache: dict[str, float] = {}

        def macs(spec: dict) -> float:
            key = spec_key(spec)
            if key not in macs_cache:
                module, example = make_op(spec)
                macs_cache[key] = float(count_macs(module, example_input=example, fold_bn=self.fold_bn).macs)
            return macs_cache[key]

        if metric == "macs":
            return macs, 0.0
        if metric == "latency_ms":
            predictor = self.latency_predictor()
            return predictor.op_cost, predictor.constant
        if metric != "avg_power_mw":
            raise ValueError(f"unknown cost metric {metric!r}")
        measured = self.profile.latency_model == "measured"
        predictor = self.latency_predictor() if measured else None

        def power(macs_value: float, latency_ms: float) -> float:
            return report_energy(
                macs_value,
                self.profile,
                self.period_s,
                self.hours,
                measured_latency_ms=latency_ms if measured else None,
            ).avg_power_mw

        base = power(0.0, 0.0)

        def marginal_power(spec: dict) -> float:
            return power(macs(spec), predictor.op_cost(spec) if predictor else 0.0) - base

        return marginal_power, power(0.0, predictor.constant) if predictor else base

    def _compute(self, arch: dict) -> dict[str, Any]:
        model = self._build_model(arch)
        report = count_macs(model, self.num_samples, fold_bn=self.fold_bn)
        latency_ms: float | None = None
        if self.latency == "measure":
            latency_ms = measure_torch_latency(
                model, self.num_samples, threads=self.threads, warmup=self.warmup, repeats=self.repeats
            ).median_ms
        elif self.latency == "lut":
            assert self._layer_specs is not None
            latency_ms = self.latency_predictor().predict(self._layer_specs(arch))
        energy = report_energy(
            report.macs,
            self.profile,
            self.period_s,
            self.hours,
            measured_latency_ms=latency_ms if self.profile.latency_model == "measured" else None,
        )
        return {
            "macs": report.macs,
            "params": report.params,
            "latency_ms": latency_ms,
            "device_latency_ms": energy.device_latency_ms,
            "energy_mj": energy.energy_mj_per_inference,
            "avg_power_mw": energy.avg_power_mw,
        }


def _space(name: str) -> Any:
    """A name of the SAM space's public API in ``ersam_ssl.models`` (imported on first use so ``hw`` does not
    depend on it)."""
    from ersam_ssl import models

    return getattr(models, name)
