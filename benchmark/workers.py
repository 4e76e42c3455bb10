"""Worker processes of one command: ``run --jobs N`` starts ``N - 1`` copies of itself that share its runs.

Every worker walks the same list of runs; the per-run lock files of :mod:`benchmark.runner` give each run to the
first worker that reaches it and the others skip it, so no run is done twice and a killed worker's run is taken
over by the next command. Parallel runs pay off where one run cannot use every core: the small models of the
quick profile on a CPU, whose steps are dominated by single-threaded work (dropout's random numbers, small
matrix products), or a GPU too large for one small model. Each worker's times then include the contention of
the others (its record names the job count, ``environment.jobs``). Results do not depend on the number of jobs,
only on each worker's thread count (float sums are split by thread). ``run --jobs auto`` picks the count
(:func:`auto_count`): one worker per core, within the runs to do and the memory available.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

WORKER_MEMORY = 3 * 2**30
"""Bytes of memory ``--jobs auto`` sets aside for each worker (:func:`auto_count`): the runs in
``docs/reference/costs.md`` peaked at 2.4 GB of resident memory (CID and SemID on Office, SETRec on Beauty)."""

MEMINFO = Path("/proc/meminfo")
CGROUP_MEMORY = Path("/sys/fs/cgroup")

WORKER_FLAG = "--worker"
"""Marks a copy started by :func:`start`: it runs its share and starts none of its own."""


def auto_count(cores: int, threads: int, pending: int) -> int:
    """``run --jobs auto`` on a CPU: one job per ``threads`` of the ``cores``, at most one per ``pending`` run and
    one per :data:`WORKER_MEMORY` of the memory available now (:func:`available_memory`; not capped where it is
    unknown), and at least 1."""
    memory = available_memory()
    slots = pending if memory is None else memory // WORKER_MEMORY
    return max(1, min(cores // threads, pending, slots))


def available_memory() -> int | None:
    """Bytes new processes may take now: Linux's ``MemAvailable`` (``/proc/meminfo``), at most what the cgroup v2
    limit leaves (``memory.max`` less ``memory.current``); None where neither can be read (not Linux)."""
    amounts = []
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                amounts.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = (CGROUP_MEMORY / "memory.max").read_text().strip()
        if limit != "max":
            amounts.append(int(limit) - int((CGROUP_MEMORY / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(amounts) if amounts else None


def start(argv: Sequence[str], jobs: int, threads: int) -> list[subprocess.Popen]:
    """Start ``jobs - 1`` copies of ``python -m benchmark`` with the command line ``argv``, each with ``threads``
    CPU threads, the job count ``jobs`` (what ``--jobs auto`` came to, for their records) and no progress bars
    (their lines would interleave with this process's bars); the appended options win over the same options in
    ``argv``. They share this process's standard output and error."""
    command = [sys.executable, "-m", "benchmark", *argv, "--jobs", str(jobs), "--threads", str(threads),
               "--no-progress", WORKER_FLAG]
    return [subprocess.Popen(command) for _ in range(jobs - 1)]


def stop(workers: list[subprocess.Popen]) -> None:
    """Send SIGTERM to every worker still running (each keeps its finished records and its current training's last
    epoch checkpoint, as a single process does) and wait for all of them."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait()


def wait(workers: list[subprocess.Popen]) -> list[int]:
    """Wait for every worker; their exit codes, in start order."""
    return [worker.wait() for worker in workers]
