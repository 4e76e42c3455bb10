"""Run records: one JSON file per finished run, written atomically, read back by the reports.

A record carries the full resolved config and its hash, dataset and split statistics, library versions,
hardware, identifier statistics, the training curve, metrics per segment (all / warm / cold), per-example
ranks (enough to recompute any top-K metric or run significance tests) and timings. A file counts as a
record only when it parses and has the fields the reports read (:func:`read_record`): the runner re-runs a
config whose file is not one, and the leaderboard lists such files.
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import torch

from benchmark.config import RunConfig
from benchmark.safeio import atomic_write

SCHEMA_VERSION = 1
UNSAFE = re.compile(r"[^A-Za-z0-9_.&-]+")
"""Characters replaced by ``-`` in the name parts of a record's path."""
CONFIG_KEYS = ("dataset", "scheme", "backbone", "split", "profile")
"""Config fields every record must have: they place it in the reports."""
SEGMENTS = ("all", "warm", "cold")
"""Test segments of a finished record's metrics."""
LIBRARIES = ("torch", "transformers", "peft", "sentence-transformers", "vector-quantize-pytorch", "scikit-learn",
             "numpy", "pandas")

PARADIGMS = ("baseline", "sequence", "embedding", "set")
"""Kinds of scheme, in the order tables list them: baselines, then token sequences, one vector, sets of tokens."""


def record_path(results_dir: str | Path, config: RunConfig) -> Path:
    """``<results>/<dataset>/<scheme>__<backbone>__<split>__<profile>__s<seed>__<hash>.json``; a backbone given as
    a path is named by its characters outside :data:`UNSAFE` (the hash tells such runs apart), so no name part
    can make the record leave its folder."""
    backbone = UNSAFE.sub("-", config.backbone).strip("-.") or "backbone"
    name = f"{config.scheme}__{backbone}__{config.split}__{config.profile}__s{config.seed}__{config.hash()}"
    return Path(results_dir) / UNSAFE.sub("-", config.dataset.replace(":", "_")) / f"{name}.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file, and a failed
    write leaves none (:class:`~benchmark.safeio.WriteError` names the file)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            json.dump(payload, handle, separators=(",", ":"))

    atomic_write(path, write)


class RecordError(ValueError):
    """A file under the results folder is not a complete run record; the message names it and the problem."""


def read_record(path: Path) -> dict[str, Any]:
    """The run record in ``path``, checked to have every field the reports read; RecordError otherwise."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise RecordError(f"{path}: not readable JSON ({error})") from error
    problem = _record_problem(record)
    if problem:
        raise RecordError(f"{path}: not a complete run record: {problem}")
    return record


def _record_problem(record: Any) -> str | None:
    """What a parsed record lacks (None when it is complete)."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    if record.get("schema") != SCHEMA_VERSION:
        return f"schema {record.get('schema')!r}, expected {SCHEMA_VERSION}"
    config = record.get("config")
    if not isinstance(config, dict) or not all(isinstance(config.get(key), str) for key in CONFIG_KEYS):
        return f"config lacks one of {', '.join(CONFIG_KEYS)}"
    if record.get("status") == "not_applicable":
        return None if isinstance(record.get("reason"), str) else "a not-applicable run without its reason"
    if record.get("status") != "ok":
        return f"status {record.get('status')!r}, expected ok or not_applicable"
    metrics, timings = record.get("metrics"), record.get("timings")
    if not isinstance(metrics, dict) or not all(isinstance(metrics.get(seg), dict) for seg in SEGMENTS):
        return f"metrics lack one of the segments {', '.join(SEGMENTS)}"
    if not isinstance(timings, dict) or not isinstance(timings.get("inference_ms_per_user"), (int, float)):
        return "timings lack inference_ms_per_user"
    return None


@dataclass(frozen=True)
class RecordScan:
    """One read of a results folder: its complete records and why each other JSON file there is not one.

    The reports take a scan, not a folder, so that one ``leaderboard`` command reads every file once.
    """

    results_dir: Path
    records: list[tuple[Path, dict[str, Any]]]
    problems: list[str]

    def finished(self) -> list[dict[str, Any]]:
        """The records of runs that finished with metrics (status ok), without the not-applicable ones."""
        return [record for _, record in self.records if record["status"] == "ok"]


def scan_records(results_dir: str | Path) -> RecordScan:
    """Every complete record under ``results_dir``, and why each other JSON file there is not one.

    Temporary files of an atomic write (their names start with a dot) are not looked at.
    """
    found, problems = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            found.append((path, read_record(path)))
        except RecordError as error:
            problems.append(str(error))
    return RecordScan(Path(results_dir), found, problems)


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every complete record under ``results_dir`` (see :func:`scan_records` for the files that are not)."""
    yield from scan_records(results_dir).records


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit checked out where the benchmark's code lives (``git rev-parse HEAD``), None outside git. Read once
    per process (the runner asks before its first run): a commit made while a long run goes on does not name code
    the process never loaded."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@lru_cache(maxsize=1)
def git_dirty() -> bool | None:
    """Whether tracked files of the benchmark's checkout differed from :func:`git_commit` when first asked (the
    runner asks before its first run), so that a record made by uncommitted code says so; None outside git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             cwd=Path(__file__).resolve().parent, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def hardware(device: torch.device) -> dict[str, Any]:
    """The machine a run used: platform, CPU model and count, device (and GPU name), torch threads."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "device": str(device),
                            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process so far and, on CUDA, peak allocated GPU memory of the run."""
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
