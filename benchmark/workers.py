"""Worker processes of one command: ``run --jobs N`` starts ``N - 1`` copies of itself that share its runs.

Every worker walks the same list of runs; the per-run lock files of :mod:`benchmark.runner` give each run to the
first worker that reaches it and the others skip it, so no run is done twice and a killed worker's run is taken
over by the next command. Parallel runs pay off where one run cannot use every core: the small models of the
quick profile on a CPU, whose steps are dominated by single-threaded work (dropout's random numbers, small
matrix products), or a GPU too large for one small model. Each worker's times then include the contention of
the others (its record names the job count, ``environment.jobs``). Results do not depend on the number of jobs,
only on each worker's thread count (float sums are split by thread).
"""
from __future__ import annotations

import signal
import subprocess
import sys
from typing import Sequence

WORKER_FLAG = "--worker"
"""Marks a copy started by :func:`start`: it runs its share and starts none of its own."""


def start(argv: Sequence[str], count: int, threads: int) -> list[subprocess.Popen]:
    """Start ``count`` copies of ``python -m benchmark`` with the command line ``argv``, each with ``threads``
    CPU threads and without progress bars (their lines would interleave with this process's bars); the appended
    options win over the same options in ``argv``. They share this process's standard output and error."""
    command = [sys.executable, "-m", "benchmark", *argv, "--threads", str(threads), "--no-progress", WORKER_FLAG]
    return [subprocess.Popen(command) for _ in range(count)]


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
