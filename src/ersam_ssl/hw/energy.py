"""Device energy model: MACs (or a measured latency) → device latency → energy and average power.

ERSAM (Li et al., ICASSP 2023) reports the energy of always-on speaker counting on a Pixel 3 as the
average power drawn while counting one 5 s window after another for 12 hours ("mW·12 h"). We model a
single big CPU core running one inference per ``period_s``::

    device_latency_s = macs / (gmacs_per_s * 1e9) + overhead_ms / 1e3       (latency_model: macs)
    device_latency_s = measured_scale * measured_latency_s                     (latency_model: measured)
    energy_per_inference_J = active_power_W * device_latency_s
    avg_power_W = energy_per_inference_J / period_s          (+ base_power_W for ``avg_power_with_base``)
    energy over H hours [J] = avg_power_W * H * 3600,   [mWh] = avg_power_mW * H

Device numbers live in YAML profiles (``ersam_ssl/hw/profiles/*.yaml``) that cite their sources and say
which numbers are assumptions.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DeviceProfile",
    "EnergyReport",
    "ProfileError",
    "available_profiles",
    "device_latency_s",
    "load_profile",
    "report_energy",
]

_LATENCY_MODELS = ("macs", "measured")


class ProfileError(ValueError):
    """A device profile that cannot be found or is malformed."""


@dataclass(frozen=True)
class DeviceProfile:
    """One CPU core of a device, as used for an always-on audio model.

    Attributes:
        name: Short identifier (the YAML file stem for bundled profiles).
        description: What device and core this describes.
        gmacs_per_s: Effective sustained throughput of one core on small fp32 conv nets (GMAC/s).
        active_power_w: Power of that core (plus its cluster share) while running inference (W).
        base_power_w: Power attributable to keeping the CPU awake for periodic inference (W).
        overhead_ms: Fixed per-inference overhead (wake-up, framework invoke) added to the MAC time.
        sources: Where the numbers come from.
        latency_model: ``"macs"`` (latency from MACs) or ``"measured"`` (scale a measured latency).
        measured_scale: Device latency / measured host latency, for ``latency_model: measured``.
    """

    name: str
    description: str
    gmacs_per_s: float
    active_power_w: float
    base_power_w: float
    overhead_ms: float
    sources: tuple[str, ...]
    latency_model: str = "macs"
    measured_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.gmacs_per_s <= 0:
            raise ProfileError(f"profile {self.name!r}: gmacs_per_s must be > 0, got {self.gmacs_per_s}")
        for key in ("active_power_w", "base_power_w", "overhead_ms"):
            if getattr(self, key) < 0:
                raise ProfileError(f"profile {self.name!r}: {key} must be >= 0, got {getattr(self, key)}")
        if self.latency_model not in _LATENCY_MODELS:
            raise ProfileError(
                f"profile {self.name!r}: latency_model must be one of {_LATENCY_MODELS}, got {self.latency_model!r}"
            )
        if self.measured_scale <= 0:
            raise ProfileError(
                f"profile {self.name!r}: measured_scale must be > 0, got {self.measured_scale}"
            )
        if not self.sources:
            raise ProfileError(f"profile {self.name!r}: sources must list at least one source")


@dataclass(frozen=True)
class EnergyReport:
    """Energy of periodic inference on one device (see the module docstring for the formulas)."""

    profile: str
    macs: int
    device_latency_ms: float
    energy_mj_per_inference: float
    avg_power_mw: float
    base_power_mw: float
    avg_power_with_base_mw: float
    period_s: float
    hours: float
    inferences: float
    energy_j: float
    energy_mwh: float
    duty_cycle: float
    real_time: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_latency_s(macs: float, profile: DeviceProfile, measured_latency_s: float | None = None) -> float:
    """Latency of one inference on the device.

    For ``latency_model: measured`` profiles a measured host latency is required; for ``macs`` profiles a
    measured latency is ignored (the device is not this host).
    """
    if macs < 0:
        raise ValueError(f"macs must be >= 0, got {macs}")
    if profile.latency_model == "measured":
        if measured_latency_s is None:
            raise ValueError(
                f"profile {profile.name!r} derives latency from a measurement; pass measured_latency_s"
            )
        return profile.measured_scale * measured_latency_s
    return macs / (profile.gmacs_per_s * 1e9) + profile.overhead_ms / 1e3


def report_energy(
    macs: float,
    profile: DeviceProfile | str,
    period_s: float = 5.0,
    hours: float = 12.0,
    *,
    measured_latency_ms: float | None = None,
) -> EnergyReport:
    """Energy per inference and average power of one inference every ``period_s`` for ``hours``.

    ``avg_power_mw`` is the model-attributable average power (ERSAM's "mW·12 h" when ``hours=12``);
    ``avg_power_with_base_mw`` adds the profile's base power of keeping the CPU awake.
    """
    if period_s <= 0 or hours <= 0:
        raise ValueError(f"period_s and hours must be > 0, got {period_s}, {hours}")
    prof = load_profile(profile) if isinstance(profile, str) else profile
    measured_s = None if measured_latency_ms is None else measured_latency_ms / 1e3
    latency_s = device_latency_s(macs, prof, measured_s)
    energy_j = prof.active_power_w * latency_s
    avg_power_w = energy_j / period_s
    seconds = hours * 3600.0
    return EnergyReport(
        profile=prof.name,
        macs=int(macs),
        device_latency_ms=latency_s * 1e3,
        energy_mj_per_inference=energy_j * 1e3,
        avg_power_mw=avg_power_w * 1e3,
        base_power_mw=prof.base_power_w * 1e3,
        avg_power_with_base_mw=(avg_power_w + prof.base_power_w) * 1e3,
        period_s=period_s,
        hours=hours,
        inferences=seconds / period_s,
        energy_j=avg_power_w * seconds,
        energy_mwh=avg_power_w * 1e3 * hours,
        duty_cycle=latency_s / period_s,
        real_time=latency_s <= period_s,
    )


# ----------------------------------------------------------------------------------------------------
# Profiles


def _profiles_dir() -> Any:  # importlib.resources Traversable
    return importlib.resources.files("ersam_ssl.hw").joinpath("profiles")


def available_profiles() -> list[str]:
    """Names of the bundled profiles."""
    return sorted(p.name[: -len(".yaml")] for p in _profiles_dir().iterdir() if p.name.endswith(".yaml"))


_REQUIRED = tuple(f.name for f in dataclasses.fields(DeviceProfile) if f.default is dataclasses.MISSING)
_OPTIONAL = tuple(f.name for f in dataclasses.fields(DeviceProfile) if f.default is not dataclasses.MISSING)


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a bundled profile by name (``"pixel3"``) or any profile YAML by path.

    Raises:
        ProfileError: Unknown profile name, missing or unknown fields, or invalid values.
    """
    path = Path(name_or_path)
    if isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"device profile file {str(path)!r} does not exist")
        text, origin, default_name = path.read_text(encoding="utf-8"), str(path), path.stem
    else:
        resource = _profiles_dir().joinpath(f"{name_or_path}.yaml")
        if not resource.is_file():
            raise ProfileError(
                f"unknown device profile {name_or_path!r}; bundled profiles: {available_profiles()}"
            )
        text, origin, default_name = (
            resource.read_text(encoding="utf-8"),
            f"bundled {name_or_path}.yaml",
            name_or_path,
        )
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: top level must be a mapping")
    return _profile_from_dict(data, origin, default_name)


def _profile_from_dict(data: dict[str, Any], origin: str, default_name: str) -> DeviceProfile:
    data = {"name": default_name, **data}
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ProfileError(f"{origin}: unknown field(s) {unknown}; known: {sorted(_REQUIRED + _OPTIONAL)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ProfileError(f"{origin}: missing required field(s) {missing}")
    try:
        kwargs = {
            "name": str(data["name"]),
            "description": str(data["description"]),
            "gmacs_per_s": float(data["gmacs_per_s"]),
            "active_power_w": float(data["active_power_w"]),
            "base_power_w": float(data["base_power_w"]),
            "overhead_ms": float(data["overhead_ms"]),
            "sources": tuple(str(s) for s in (data["sources"] or ())),
        }
        if "latency_model" in data:
            kwargs["latency_model"] = str(data["latency_model"])
        if "measured_scale" in data:
            kwargs["measured_scale"] = float(data["measured_scale"])
    except (TypeError, ValueError) as e:
        raise ProfileError(f"{origin}: {e}") from e
    if not isinstance(data["sources"], list):
        raise ProfileError(f"{origin}: sources must be a list of strings")
    return DeviceProfile(**kwargs)
