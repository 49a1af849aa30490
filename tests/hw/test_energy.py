"""Device energy model: hand arithmetic on a toy profile, profile loading and its errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from ersam_ssl.hw.energy import (
    DeviceProfile,
    ProfileError,
    available_profiles,
    device_latency_s,
    load_profile,
    report_energy,
)

TOY = {
    "name": "toy",
    "description": "a toy core",
    "gmacs_per_s": 2.0,
    "active_power_w": 0.5,
    "base_power_w": 0.01,
    "overhead_ms": 2.0,
    "sources": ["assumption: made up for a test"],
}


def write_profile(tmp_path, data, name="toy.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_energy_arithmetic_on_toy_profile(tmp_path):
    profile = load_profile(write_profile(tmp_path, TOY))
    report = report_energy(1e9, profile, period_s=5.0, hours=12.0)
    # latency = 1e9 / 2e9 s + 2 ms = 0.502 s; energy = 0.5 W x 0.502 s = 0.251 J = 251 mJ
    assert report.device_latency_ms == pytest.approx(502.0)
    assert report.energy_mj_per_inference == pytest.approx(251.0)
    # one inference per 5 s: 0.251 J / 5 s = 50.2 mW; + 10 mW base = 60.2 mW
    assert report.avg_power_mw == pytest.approx(50.2)
    assert report.avg_power_with_base_mw == pytest.approx(60.2)
    # 12 h: 0.0502 W x 43200 s = 2168.64 J = 50.2 mW x 12 h = 602.4 mWh; 43200 / 5 = 8640 inferences
    assert report.energy_j == pytest.approx(2168.64)
    assert report.energy_mwh == pytest.approx(602.4)
    assert report.inferences == pytest.approx(8640)
    assert report.duty_cycle == pytest.approx(0.502 / 5.0)
    assert report.real_time


def test_not_real_time_when_slower_than_the_period(tmp_path):
    profile = load_profile(write_profile(tmp_path, TOY))
    # 20 GMACs at 2 GMAC/s = 10 s (+2 ms) > 5 s period
    assert not report_energy(20e9, profile).real_time


def test_measured_latency_model(tmp_path):
    profile = load_profile(
        write_profile(tmp_path, {**TOY, "latency_model": "measured", "measured_scale": 3.0})
    )
    # device latency = 3 x 40 ms = 120 ms, whatever the MACs; energy = 0.5 W x 0.12 s = 60 mJ
    report = report_energy(123, profile, measured_latency_ms=40.0)
    assert report.device_latency_ms == pytest.approx(120.0)
    assert report.energy_mj_per_inference == pytest.approx(60.0)
    with pytest.raises(ValueError, match="measured_latency_s"):
        device_latency_s(123, profile)


def test_macs_profile_ignores_measured_latency(tmp_path):
    profile = load_profile(write_profile(tmp_path, TOY))
    assert device_latency_s(2e9, profile, measured_latency_s=99.0) == pytest.approx(1.002)


def test_bundled_profiles_load_with_sources():
    names = available_profiles()
    assert {"pixel3", "cortex_a55", "host"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.sources and profile.description
    pixel3 = load_profile("pixel3")
    assert pixel3.latency_model == "macs"
    assert report_energy(1e9, "pixel3").energy_mj_per_inference == pytest.approx(
        pixel3.active_power_w * (1e9 / (pixel3.gmacs_per_s * 1e9) + pixel3.overhead_ms / 1e3) * 1e3
    )
    assert load_profile("host").latency_model == "measured"


def test_unknown_profile_names_the_available_ones():
    with pytest.raises(ProfileError, match="unknown device profile 'pixel99'.*pixel3"):
        load_profile("pixel99")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("/nonexistent/dir/phone.yaml")


@pytest.mark.parametrize("field", ["gmacs_per_s", "active_power_w", "base_power_w", "overhead_ms", "sources"])
def test_missing_field_is_named(tmp_path, field):
    data = {k: v for k, v in TOY.items() if k != field}
    with pytest.raises(ProfileError, match=f"missing required field.*{field}"):
        load_profile(write_profile(tmp_path, data))


def test_unknown_field_and_bad_values(tmp_path):
    with pytest.raises(ProfileError, match="unknown field.*gmacs"):
        load_profile(write_profile(tmp_path, {**TOY, "gmacs": 3.0}))
    with pytest.raises(ProfileError, match="gmacs_per_s must be > 0"):
        load_profile(write_profile(tmp_path, {**TOY, "gmacs_per_s": 0}))
    with pytest.raises(ProfileError, match="active_power_w must be >= 0"):
        load_profile(write_profile(tmp_path, {**TOY, "active_power_w": -1}))
    with pytest.raises(ProfileError, match="latency_model"):
        load_profile(write_profile(tmp_path, {**TOY, "latency_model": "guess"}))
    with pytest.raises(ProfileError, match="sources must be a list"):
        load_profile(write_profile(tmp_path, {**TOY, "sources": "one string"}))
    with pytest.raises(ProfileError, match="could not convert"):
        load_profile(write_profile(tmp_path, {**TOY, "gmacs_per_s": "fast"}))
    with pytest.raises(ProfileError, match="mapping"):
        load_profile(write_profile(tmp_path, [1, 2]))


def test_profile_is_frozen_and_name_defaults_to_file_stem(tmp_path):
    data = {k: v for k, v in TOY.items() if k != "name"}
    profile = load_profile(write_profile(tmp_path, data, name="my_phone.yaml"))
    assert profile.name == "my_phone"
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.gmacs_per_s = 9.0  # type: ignore[misc]
    assert isinstance(profile, DeviceProfile)


def test_report_energy_rejects_bad_period():
    with pytest.raises(ValueError):
        report_energy(1e9, "pixel3", period_s=0.0)
