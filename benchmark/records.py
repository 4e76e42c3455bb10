"""Run records: one JSON file per finished run, written atomically, read back by the reports.

A record carries the full resolved config and its hash, dataset and split statistics, library versions,
hardware, identifier statistics, the training curve, metrics per segment (all / warm / cold), per-example
ranks (enough to recompute any top-K metric or run significance tests) and timings.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import torch

from benchmark.config import RunConfig

SCHEMA_VERSION = 1
LIBRARIES = ("torch", "transformers", "peft", "sentence-transformers", "vector-quantize-pytorch", "scikit-learn",
             "numpy", "pandas")


def record_path(results_dir: str | Path, config: RunConfig) -> Path:
    """``<results>/<dataset>/<scheme>__<backbone>__<split>__<profile>__s<seed>__<hash>.json``."""
    name = f"{config.scheme}__{config.backbone}__{config.split}__{config.profile}__s{config.seed}__{config.hash()}"
    return Path(results_dir) / config.dataset.replace(":", "_") / f"{name}.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every readable record under ``results_dir`` (temporary and foreign JSON files are skipped)."""
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(record, dict) and record.get("schema") == SCHEMA_VERSION:
            yield path, record


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "device": str(device),
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
