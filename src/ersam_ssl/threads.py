"""CPU threading that stays fast on a shared machine.

PyTorch's OpenMP threads spin-wait at every parallel-region barrier. On a 2-core machine with one more
CPU-bound process, two spinning threads steal each other's (and the other process's) time slices, and a
training step was measured 6–15x slower (see ``benchmarks/cpu_sharing.py``). Two defences, both applied by
this package:

* ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning). OpenMP reads it once, when the runtime
  initialises, i.e. when ``torch`` is first imported: ``import ersam_ssl`` sets it (unless the user set it)
  before anything imports torch. A script that imports torch *before* ersam_ssl gets a warning from
  :func:`configure_threads` instead.
* Thread counts sized from the CPUs this process may actually run on (``os.sched_getaffinity``, which
  honours ``taskset`` / cgroup cpusets), not from the machine's core count.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def set_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless already set; True if it can still take effect (torch not loaded)."""
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")
    return "torch" not in sys.modules


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask / cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Intra-op threads for training when the config says 0 (auto): half the available CPUs, at least 1.

    The other half renders data (DataLoader workers). Measured on 2 cores (``benchmarks/cpu_sharing.py``,
    results/cpu_sharing.json): beside one busy process, a step with 2 intra-op threads is 2.5-3.6x slower
    than alone, with passive waiting as well (every parallel region waits for the thread that shares its
    core), while with 1 thread it is 0.9-1.3x; alone, 2 threads gain 1.0-1.6x. One thread per two CPUs
    keeps training fast on a shared machine.
    """
    return max(1, available_cpus() // 2)


def configure_threads(threads: int = 0) -> int:
    """Apply ``threads`` intra-op threads (0: :func:`default_threads`) to torch; returns the number used."""
    import torch

    n = threads if threads > 0 else default_threads()
    if os.environ.get(WAIT_POLICY_ENV, "").upper() != "PASSIVE" and n > 1:
        log.warning(
            "%s is %r: torch's OpenMP threads spin-wait and slow down badly beside other busy processes; "
            "import ersam_ssl before torch (or export %s=PASSIVE)",
            WAIT_POLICY_ENV, os.environ.get(WAIT_POLICY_ENV), WAIT_POLICY_ENV,
        )  # fmt: skip
    torch.set_num_threads(n)
    return n
