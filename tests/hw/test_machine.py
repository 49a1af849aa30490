"""Which machine a latency table belongs to: CPU model, key, mismatch errors, where tables live."""

from __future__ import annotations

import pytest

from ersam_ssl.hw import machine
from ersam_ssl.hw.machine import (
    LATENCY_DIR_ENV,
    MachineMismatchError,
    check_machine,
    cpu_model,
    latency_dir,
    machine_info,
    machine_key,
)


def test_cpu_model_reads_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Xeon(R) CPU @ 2.20GHz\n"
    )
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert cpu_model(tmp_path / "missing")  # falls back to what platform reports


def test_machine_key_changes_with_threads_cpu_and_backend_version(monkeypatch):
    monkeypatch.setattr(machine, "cpu_model", lambda: "Fake CPU 9000")
    one = machine_info(1)
    assert one["cpu"] == "Fake CPU 9000" and one["threads"] == 1 and one["backend"] == "torch"
    assert machine_key(one) == machine_key(machine_info(1))  # stable
    assert machine_key(one).startswith("fake-cpu-9000-")
    assert machine_key(machine_info(2)) != machine_key(one)
    assert machine_key({**one, "backend_version": "0.0"}) != machine_key(one)
    monkeypatch.setattr(machine, "cpu_model", lambda: "Fake CPU 9001")
    assert machine_key(machine_info(1)) != machine_key(one)
    # slugging cannot merge two CPUs: the hash of the raw fields tells them apart
    assert machine_key({**one, "cpu": "Fake/CPU 9000"}) != machine_key(one)


def test_check_machine_names_what_differs(monkeypatch):
    monkeypatch.setattr(machine, "cpu_model", lambda: "Fake CPU")
    here = machine_info(1)
    check_machine(dict(here), here, "t.json")  # same machine: no error
    with pytest.raises(MachineMismatchError, match=r"t.json was measured elsewhere \(threads 4 vs 1 here\)"):
        check_machine({**here, "threads": 4}, here, "t.json")
    with pytest.raises(MachineMismatchError, match="cpu 'Other CPU' vs 'Fake CPU' here; backend_version"):
        check_machine({**here, "cpu": "Other CPU", "backend_version": "1.0"}, here, "t.json")
    with pytest.raises(MachineMismatchError, match="does not say which machine"):
        check_machine(None, here, "t.json")


def test_bad_settings():
    with pytest.raises(ValueError, match="threads must be a positive int"):
        machine_info(0)
    with pytest.raises(ValueError, match="backend must be one of"):
        machine_info(1, backend="tvm")


def test_latency_dir_argument_env_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv(LATENCY_DIR_ENV, raising=False)
    monkeypatch.setenv("ERSAM_SSL_CACHE", str(tmp_path / "cache"))
    assert latency_dir() == tmp_path / "cache" / "latency"
    monkeypatch.setenv(LATENCY_DIR_ENV, str(tmp_path / "env"))
    assert latency_dir() == tmp_path / "env"
    assert latency_dir(tmp_path / "arg") == tmp_path / "arg"
