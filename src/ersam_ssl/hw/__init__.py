"""Hardware cost accounting: MACs/parameters, measured latency, latency predictors and device energy.

Host latency is predicted from a per-op table (:mod:`~ersam_ssl.hw.lut`) corrected by a linear model
fitted on measured whole models (:mod:`~ersam_ssl.hw.latency_fit`), both persisted per machine
(:mod:`~ersam_ssl.hw.latency_predictor`, :mod:`~ersam_ssl.hw.machine`).

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
from ersam_ssl.hw.latency import (
    LatencyReport,
    measure_interleaved,
    measure_onnx_interleaved,
    measure_onnx_latency,
    measure_torch_latency,
)
from ersam_ssl.hw.latency_fit import LatencyCorrection, fit_correction
from ersam_ssl.hw.latency_predictor import LatencyPredictor, load_or_build, sam_latency_predictor
from ersam_ssl.hw.lut import LatencyLUT, LUTError, lut_error, spec_key
from ersam_ssl.hw.machine import MachineMismatchError, latency_dir, machine_info, machine_key

__all__ = [
    "CostModel",
    "CostOracle",
    "CostReport",
    "arch_key",
    "DeviceProfile",
    "EnergyReport",
    "LUTError",
    "LatencyCorrection",
    "LatencyLUT",
    "LatencyPredictor",
    "LatencyReport",
    "MachineMismatchError",
    "ModuleCost",
    "ProfileError",
    "available_profiles",
    "count_macs",
    "count_params",
    "device_latency_s",
    "fit_correction",
    "latency_dir",
    "load_or_build",
    "load_profile",
    "lut_error",
    "machine_info",
    "machine_key",
    "matmul_macs",
    "measure_interleaved",
    "measure_onnx_interleaved",
    "measure_onnx_latency",
    "measure_torch_latency",
    "mel_filterbank_macs",
    "register_mac_formula",
    "report_energy",
    "rnn_macs",
    "sam_latency_predictor",
    "spec_key",
    "stft_macs",
]
