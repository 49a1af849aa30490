"""Hardware cost accounting: MACs/parameters, measured latency, latency LUTs and device energy.

The NAS search depends only on the :class:`CostOracle` protocol (:mod:`ersam_ssl.hw.cost_model`), which
:class:`CostModel` implements: ``cost(arch) -> dict`` (once-for-all style: the search needs only an
efficiency oracle, Cai et al., ICLR 2020) and per-op costs for one-shot search. ERSAM (Li et al., ICASSP 2023) constrains the
search by MACs and reports energy on a Pixel 3; :mod:`ersam_ssl.hw.energy` models that device.
"""

from __future__ import annotations

from ersam_ssl.hw.cost import (
    CostReport,
    ModuleCost,
    count_macs,
    count_params,
    matmul_macs,
    mel_filterbank_macs,
    register_mac_formula,
    rnn_macs,
    stft_macs,
)
from ersam_ssl.hw.cost_model import CostModel, CostOracle, arch_key
from ersam_ssl.hw.energy import (
    DeviceProfile,
    EnergyReport,
    ProfileError,
    available_profiles,
    device_latency_s,
    load_profile,
    report_energy,
)
from ersam_ssl.hw.latency import LatencyReport, measure_onnx_latency, measure_torch_latency
from ersam_ssl.hw.lut import LatencyLUT, LUTError, lut_error, spec_key

__all__ = [
    "CostModel",
    "CostOracle",
    "CostReport",
    "arch_key",
    "DeviceProfile",
    "EnergyReport",
    "LUTError",
    "LatencyLUT",
    "LatencyReport",
    "ModuleCost",
    "ProfileError",
    "available_profiles",
    "count_macs",
    "count_params",
    "device_latency_s",
    "load_profile",
    "lut_error",
    "matmul_macs",
    "measure_onnx_latency",
    "measure_torch_latency",
    "mel_filterbank_macs",
    "register_mac_formula",
    "report_energy",
    "rnn_macs",
    "spec_key",
    "stft_macs",
]
