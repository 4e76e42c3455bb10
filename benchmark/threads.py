"""CPU threads of one process: torch's intra-op threads and the BLAS / OpenMP pools, all set from one number.

Every fit of a run (the recommender, RQ-VAE, MQ-Tokenizer, LightGCN, k-means, ...) runs in the process that set
them, so they all use the same count. The default (:func:`default_threads`) is ``$OMP_NUM_THREADS`` when set, else
:func:`available_cores`: one thread per physical core the process may run on. Hyper-threads of one core share
its arithmetic units, so a second thread per core mostly adds contention, and more threads than the cores the
process is given (a CPU set or container quota shared with other jobs) oversubscribe them: on a busy 2-core
machine a TIGER step took 3x as long with 2 threads as with 1 (issue 14).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
"""Environment variables read by OpenMP and the BLAS libraries when they load (later in this process: e.g.
scikit-learn's own OpenMP runtime, loaded with its first import; or in a child process)."""

CPU_TOPOLOGY = Path("/sys/devices/system/cpu")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when it holds an integer >= 1 (the share a launcher or the user gave this process, e.g.
    torchrun's 1 per process), else :func:`available_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdecimal() and int(value) >= 1 else available_cores()


def available_cores() -> int:
    """Physical cores this process may use: the CPUs of its affinity mask (``os.sched_getaffinity``) counted once
    per physical core (CPUs listed as siblings in ``/sys/devices/system/cpu/cpuN/topology/core_cpus_list`` or,
    on older kernels, ``thread_siblings_list`` are hyper-threads of one core), at most the cgroup v2 CPU quota
    (``/sys/fs/cgroup/cpu.max``, rounded up), and at least 1. Where the topology cannot be read (not Linux),
    every CPU of the affinity mask (or ``os.cpu_count()``) counts as a core."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    cores = {_core_of(cpu) for cpu in cpus}
    return max(1, min(len(cores), _quota() or len(cores)))


def _core_of(cpu: int) -> str:
    """The physical core of logical CPU ``cpu``: its sibling list, or the CPU itself when the topology is absent."""
    for name in ("core_cpus_list", "thread_siblings_list"):
        try:
            return (CPU_TOPOLOGY / f"cpu{cpu}" / "topology" / name).read_text().strip()
        except OSError:
            continue
    return str(cpu)


def _quota() -> int | None:
    """CPUs allowed by the cgroup v2 quota (``quota period`` in ``cpu.max``, rounded up); None when unlimited."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def set_threads(threads: int) -> dict[str, int]:
    """Use ``threads`` CPU threads in this process: ``torch.set_num_threads`` (torch's intra-op pool), every
    OpenMP / BLAS pool already loaded (threadpoolctl) and the environment variables of :data:`THREAD_VARIABLES`
    for those loaded later. Returns what took effect: torch's count and each loaded pool's (by library)."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    return {"torch": torch.get_num_threads(),
            **{f"{pool['internal_api']}:{Path(pool['filepath']).name}": pool["num_threads"]
               for pool in threadpool_info()}}
