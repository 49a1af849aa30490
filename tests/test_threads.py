"""The CPU-sharing defences are in place before torch initialises (see ersam_ssl.threads)."""

import os
import subprocess
import sys

from ersam_ssl import threads


def _run(code: str, **env) -> str:
    e = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=e, check=True
    ).stdout


def test_import_sets_passive_wait_before_torch_loads():
    out = _run(
        "import sys, os; import ersam_ssl; print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY']);"
        "import torch; print(torch.get_num_threads() >= 1)"
    )
    assert out.split() == ["False", "PASSIVE", "True"]


def test_a_user_setting_wins():
    out = _run("import os, ersam_ssl; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE")
    assert out.strip() == "ACTIVE"


def test_the_cli_and_pipeline_import_ersam_ssl_before_torch():
    out = _run(
        "import sys, os; import ersam_ssl.pipeline, ersam_ssl.cli;print(os.environ['OMP_WAIT_POLICY'])"
    )
    assert out.strip() == "PASSIVE"


def test_thread_count_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert threads.available_cpus() == 4 and threads.default_threads() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert threads.default_threads() == 1
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(0) == 1 and torch.get_num_threads() == 1
        assert threads.configure_threads(3) == 3
    finally:
        torch.set_num_threads(before)
