"""How the reports name the machine a run used, from its record's ``hardware`` and ``environment`` sections.

Caveat: a CPU is named by the model its record gives (``hardware.cpu_model``); records written before the model
was recorded say so ("model not recorded") rather than being taken for any other CPU with as many cores, since
two 2-core machines can differ twofold in speed. The model is what ``/proc/cpuinfo`` says, and a virtual machine
may report a generic one (``Intel(R) Xeon(R) Processor``), so one label can still cover machines of different speed.
"""
from __future__ import annotations

from typing import Any, Iterable

NO_MODEL = "model not recorded"
"""Stands for the CPU model of a record written before ``hardware.cpu_model`` existed."""


def machine(record: dict[str, Any]) -> str:
    """The GPU's name, else ``N-core CPU: <model>``, followed by ``(P processes, N jobs)`` where the run trained
    data-parallel over P > 1 processes (``accelerate launch``; records without the count read as one) or was one of
    N > 1 ``run --jobs`` workers sharing the machine (its times include their contention)."""
    hardware = record.get("hardware") or {}
    name = hardware.get("gpu") or f"{hardware.get('cpu_count', '?')}-core CPU: {hardware.get('cpu_model') or NO_MODEL}"
    processes, jobs = hardware.get("processes", 1), (record.get("environment") or {}).get("jobs", 1)
    notes = [f"{processes} processes"] * (processes > 1) + [f"{jobs} jobs"] * (jobs > 1)
    return name + (f" ({', '.join(notes)})" if notes else "")


def machines(records: Iterable[dict[str, Any]]) -> str:
    """The distinct :func:`machine` names of ``records``, sorted and joined by ", " ("unknown hardware" for none)."""
    return ", ".join(sorted({machine(record) for record in records})) or "unknown hardware"
