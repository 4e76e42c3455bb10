"""Run records: one JSON file per finished run, written atomically, read back by the reports.

A record carries the full resolved config and its hash, dataset and split statistics, library versions,
hardware, identifier statistics, the training curve, metrics per segment (all / warm / cold), per-example
ranks (enough to recompute any top-K metric or run significance tests) and timings. A file counts as a
record only when it parses and every field the reports read is there (or, for the fields older records lack, is
absent) with its type and shape (:func:`read_record`): the runner re-runs a config whose file is not one, and the
leaderboard lists such files, naming the field, instead of failing on them half-way through its reports.
"""
from __future__ import annotations

import json
import math
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
from benchmark.safeio import OutputDirError, atomic_write, check_input_dir

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


class ResultsDirError(OutputDirError):
    """The results folder to read records from is missing or not a folder; the message names it. A kind of
    :class:`~benchmark.safeio.OutputDirError` so that the command line reports it as it does any unusable folder
    option (exit code 2, no traceback)."""


def read_record(path: Path) -> dict[str, Any]:
    """The run record in ``path``, checked to have every field the reports read; RecordError otherwise."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise RecordError(f"{path}: not readable JSON ({error})") from error
    except RecursionError as error:
        raise RecordError(f"{path}: not readable JSON (nested too deeply)") from error
    problem = _record_problem(record)
    if problem:
        raise RecordError(f"{path}: not a complete run record: {problem}")
    return record


def _record_problem(record: Any) -> str | None:
    """What a parsed record lacks, or which field it holds with a type or shape the reports cannot read (None
    when it is complete): :func:`_check_fields`."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    if record.get("schema") != SCHEMA_VERSION:
        return f"schema {record.get('schema')!r}, expected {SCHEMA_VERSION}"
    config = record.get("config")
    if not isinstance(config, dict) or not all(isinstance(config.get(key), str) for key in CONFIG_KEYS):
        return f"config lacks one of {', '.join(CONFIG_KEYS)}"
    if record.get("status") == "not_applicable":
        if not isinstance(record.get("reason"), str):
            return "a not-applicable run without its reason"
    elif record.get("status") != "ok":
        return f"status {record.get('status')!r}, expected ok or not_applicable"
    else:
        metrics, timings = record.get("metrics"), record.get("timings")
        if not isinstance(metrics, dict) or not all(isinstance(metrics.get(seg), dict) for seg in SEGMENTS):
            return f"metrics lack one of the segments {', '.join(SEGMENTS)}"
        if not isinstance(timings, dict) or "inference_ms_per_user" not in timings:
            return "timings lack inference_ms_per_user"
    try:
        _check_fields(record)
    except _Invalid as error:
        return str(error)
    return None


# Field checks of a record -----------------------------------------------------------------------------------
#
# Every field the reports (benchmark/reports/*.py) and the runner read from a record, with the type they read it
# as. A field that records written before it existed lack may be absent (the reports list or skip such records);
# when it is there it must be readable, so that a damaged file is listed by :func:`scan_records` rather than
# breaking a report (or silently showing a wrong number).

IDENTIFIER_NUMBERS = ("new_tokens", "code_length_max", "code_length_mean", "collision_rate_before_dedup",
                      "collision_rate_after_dedup")
"""Statistics of ``identifier`` the identifier report averages (NaN: the scheme has no such statistic)."""
TIMINGS = ("identifier_fit_s", "train_s", "inference_s", "inference_ms_per_user")
MEMORY = ("process_peak_rss_mb", "gpu_peak_allocated_mb")
PARAMETERS = ("total_parameters", "trainable_parameters")
SECTIONS = ("split", "evaluation", "selection", "inference", "components", "valid_metrics")
"""Parts of a finished record the reports do not read; still JSON objects whenever present."""


class _Invalid(ValueError):
    """A field of a record the reports cannot read; the message names the field (internal)."""


def _shown(value: Any) -> str:
    """``value`` as the JSON file writes it (``"high"``, ``null``, ``NaN``), cut to 40 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _invalid(field: str, value: Any, expected: str) -> _Invalid:
    if isinstance(value, (dict, list)):
        kind = "an object" if isinstance(value, dict) else f"a list of {len(value)}"
        return _Invalid(f"{field} is {kind} ({_shown(value)}), expected {expected}")
    return _Invalid(f"{field} is {_shown(value)}, expected {expected}")


def _is_int(value: Any, low: int | None = None) -> bool:
    return type(value) is int and (low is None or value >= low)


def _is_number(value: Any, low: float | None = None, high: float | None = None, finite: bool = True) -> bool:
    """An int or float (not a bool); NaN and infinities only when not ``finite`` (and no bound is given)."""
    if type(value) not in (int, float):
        return False
    if math.isnan(value) or math.isinf(value):
        return not finite and low is None and high is None
    return (low is None or value >= low) and (high is None or value <= high)


def _object(record: dict[str, Any], key: str, prefix: str = "", null: bool = True) -> dict[str, Any]:
    """``record[key]`` when a JSON object, {} when absent (or null, when ``null``); else :class:`_Invalid`."""
    value = record.get(key)
    if isinstance(value, dict):
        return value
    if key not in record or (value is None and null):
        return {}
    raise _invalid(f"{prefix}{key}", value, "an object" + (" or null" if null else ""))


def _optional(section: dict[str, Any], prefix: str, key: str, valid: Any, expected: str) -> None:
    """``section[key]`` passes ``valid`` when present."""
    if key in section and not valid(section[key]):
        raise _invalid(f"{prefix}{key}", section[key], expected)


def _check_fields(record: dict[str, Any]) -> None:
    """Every field the reports read (:class:`_Invalid` naming the first that they could not): the config keys
    and run facts of every record, and the metrics, timings, costs, per-example ranks and histogram of a finished
    one."""
    _check_config(record["config"])
    paradigm = (lambda v: v is None or v in PARADIGMS), f"one of {', '.join(PARADIGMS)}"
    _optional(record, "", "paradigm", *paradigm)
    identifier = _object(record, "identifier")
    _optional(identifier, "identifier.", "paradigm", *paradigm)
    for key in IDENTIFIER_NUMBERS:
        _optional(identifier, "identifier.", key, lambda v: _is_number(v, finite=False), "a number")
    _optional(identifier, "identifier.", "codebook_usage_per_level",
              lambda v: v is None or (isinstance(v, list) and all(_is_number(u, 0, 1) for u in v)),
              "a list of shares from 0 to 1 (one per level)")
    _object(record, "dataset", null=False)
    _object(record, "versions")
    _optional(record, "", "commit", lambda v: v is None or isinstance(v, str), "a commit hash (text) or null")
    hardware = _object(record, "hardware", null=False)
    _optional(hardware, "hardware.", "gpu", lambda v: v is None or isinstance(v, str), "a GPU name (text) or null")
    _optional(hardware, "hardware.", "processor", lambda v: v is None or isinstance(v, str), "text or null")
    _optional(hardware, "hardware.", "cpu_count", lambda v: v is None or _is_int(v, 1), "a count >= 1 or null")
    _optional(hardware, "hardware.", "processes", lambda v: _is_int(v, 1), "a process count >= 1")
    environment = _object(record, "environment")
    _optional(environment, "environment.", "jobs", lambda v: _is_int(v, 1), "a worker count >= 1")
    _check_times(record)
    if record["status"] == "ok":
        _check_finished(record)


def _check_config(config: dict[str, Any]) -> None:
    _optional(config, "config.", "seed", _is_int, "an integer seed")
    _optional(config, "config.", "ks", lambda v: isinstance(v, list) and v and all(_is_int(k, 1) for k in v),
              "a non-empty list of cut-offs K >= 1")
    _optional(config, "config.", "max_eval_users", lambda v: _is_int(v, 0), "an integer >= 0 (0: every user)")
    _optional(config, "config.", "candidates", lambda v: isinstance(v, str), "text (all or segment)")
    train = _object(config, "train", "config.")
    _optional(train, "config.train.", "epochs", lambda v: _is_int(v, 0), "an integer number of epochs")


def _check_times(record: dict[str, Any]) -> None:
    """``started_at`` / ``finished_at``: ISO 8601 text, both with a time zone or both without."""
    times = {}
    for key in ("started_at", "finished_at"):
        if key in record:
            try:
                times[key] = datetime.fromisoformat(record[key])
            except (TypeError, ValueError):
                raise _invalid(key, record[key], "an ISO 8601 date and time") from None
    if len(times) == 2:
        try:
            times["finished_at"] - times["started_at"]
        except TypeError:
            raise _Invalid("started_at and finished_at: one has a time zone, the other not") from None


def _check_finished(record: dict[str, Any]) -> None:
    """The fields of a finished (status ok) record."""
    for segment in SEGMENTS:
        values = record["metrics"][segment]
        if "count" not in values:
            raise _Invalid(f"metrics.{segment} lacks count (its number of test examples)")
        _optional(values, f"metrics.{segment}.", "count", lambda v: _is_int(v, 0), "a count >= 0")
        for key in values:
            if "@" in key:
                _optional(values, f"metrics.{segment}.", key, lambda v: _is_number(v, 0, 1 + 1e-9),
                          "a number from 0 to 1")
    timings = record["timings"]
    for key in TIMINGS:
        _optional(timings, "timings.", key, lambda v: _is_number(v, 0), "a number >= 0")
    memory = _object(record, "memory", null=False)
    for key in MEMORY:
        _optional(memory, "memory.", key, lambda v: _is_number(v, 0), "a number >= 0")
    training = _object(record, "training")
    _optional(training, "training.", "epochs_run", lambda v: _is_int(v, 0), "an integer >= 0")
    _optional(training, "training.", "best_epoch", lambda v: _is_int(v, -1), "an integer >= -1 (-1: none)")
    _optional(training, "training.", "resumed_from_epoch", lambda v: v is None or _is_int(v, 0),
              "an integer >= 0 or null")
    model = _object(record, "model")
    for key in PARAMETERS:
        _optional(model, "model.", key, lambda v: _is_int(v, 0), "a parameter count >= 0")
    _optional(model, "model.", "backbone_family", lambda v: v is None or isinstance(v, str), "text or null")
    for key in SECTIONS:
        _object(record, key)
    encoder = _object(_object(record, "components"), "text_encoder", "components.")
    _optional(encoder, "components.text_encoder.", "name", lambda v: isinstance(v, str), "an encoder name (text)")
    counts = _check_per_user(_object(record, "per_user"))
    _check_histogram(record, counts)


PER_EXAMPLE = {
    "ranks": (lambda v: _is_int(v, 0), "an integer rank >= 0"),
    "segment_ranks": (lambda v: _is_int(v, 0), "an integer rank >= 0"),
    "targets": (lambda v: _is_int(v) or isinstance(v, str), "an item id"),
    "warm": (lambda v: type(v) in (int, bool) and v in (0, 1), "a warm flag (0 or 1)"),
    "target_train_counts": (lambda v: _is_int(v, 0), "a training count >= 0"),
}
"""Per-target columns of ``per_user`` (:meth:`benchmark.evaluate.EvaluationResult.per_user`): one entry per test
example, a list (one per target) for each example of a multi-target split."""


def _check_per_user(per_user: dict[str, Any]) -> list[int] | None:
    """Columns of equal length, one entry per test example (``users`` one id each; the per-target columns, for
    a multi-target split, lists as long as the example's ``ranks``), of the types the reports compute with.
    Returns the flat target training counts (None when not recorded)."""
    if not per_user:
        return None
    if "ranks" not in per_user:
        raise _Invalid(f"per_user lacks ranks (it has {', '.join(map(str, per_user))})")
    ranks = per_user["ranks"]
    if not isinstance(ranks, list):
        raise _invalid("per_user.ranks", ranks, "a list (one entry per test example)")
    multi = bool(ranks) and isinstance(ranks[0], list)
    for i, entry in enumerate(ranks):
        if isinstance(entry, list) != multi or (multi and not entry):
            raise _invalid(f"per_user.ranks[{i}]", entry, "a non-empty list of target ranks, as per_user.ranks[0]"
                           if multi else "one rank, as per_user.ranks[0]")
    users = per_user.get("users")
    if users is not None:
        if not isinstance(users, list):
            raise _invalid("per_user.users", users, "a list (one user id per test example)")
        if len(users) != len(ranks):
            raise _Invalid(f"per_user.users has {len(users)} entries, per_user.ranks {len(ranks)}: expected one "
                           "per test example in each")
        for i, user in enumerate(users):
            if not (_is_int(user) or isinstance(user, str)):
                raise _invalid(f"per_user.users[{i}]", user, "a user id")
    flat_counts = None
    for name, (valid, expected) in PER_EXAMPLE.items():
        values = per_user.get(name)
        if values is None:
            continue
        if not isinstance(values, list):
            raise _invalid(f"per_user.{name}", values, "a list (one entry per test example)")
        if len(values) != len(ranks):
            raise _Invalid(f"per_user.{name} has {len(values)} entries, per_user.ranks {len(ranks)}: expected one "
                           "per test example in each")
        flat = []
        for i, (entry, example) in enumerate(zip(values, ranks)):
            if multi and not (isinstance(entry, list) and len(entry) == len(example)):
                raise _invalid(f"per_user.{name}[{i}]", entry,
                               f"a list of {len(example)} (one per target of per_user.ranks[{i}])")
            for j, value in enumerate(entry if multi else [entry]):
                if not valid(value):
                    raise _invalid(f"per_user.{name}[{i}]" + (f"[{j}]" if multi else ""), value, expected)
            flat += entry if multi else [entry]
        if name == "target_train_counts":
            flat_counts = flat
    return flat_counts


def _check_histogram(record: dict[str, Any], counts: list[int] | None) -> None:
    """``item_train_count_histogram``: equally long lists of training counts and item numbers, holding the
    training count of every test target (``per_user.target_train_counts``), as the popularity groups read it."""
    histogram = record.get("item_train_count_histogram")
    if not histogram:
        return
    if not isinstance(histogram, dict):
        raise _invalid("item_train_count_histogram", histogram, "an object with the lists train_count and items")
    for key in ("train_count", "items"):
        values = histogram.get(key)
        if not isinstance(values, list) or not all(_is_int(v, 0) for v in values):
            raise _invalid(f"item_train_count_histogram.{key}", values, "a list of integers >= 0")
    if len(histogram["train_count"]) != len(histogram["items"]):
        raise _Invalid(f"item_train_count_histogram has {len(histogram['train_count'])} train_count values and "
                       f"{len(histogram['items'])} items values, expected as many of each")
    unknown = sorted(set(counts or []) - set(histogram["train_count"]))
    if unknown:
        raise _Invalid(f"per_user.target_train_counts holds {unknown[:5]}, which item_train_count_histogram."
                       "train_count lacks (every test target's training count is in the histogram)")


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

    Temporary files of an atomic write (their names start with a dot) are not looked at. A folder that does not
    exist holds no records; a file in its place is :class:`ResultsDirError` (:func:`check_results_dir` also
    rejects a missing folder, as the leaderboard command wants). A record of the same run (config, seed included)
    as an earlier file (e.g. a copy left by merging two results folders) is counted once: later copies are listed
    as problems, not counted as further seeds.
    """
    if Path(results_dir).exists():
        check_input_dir(results_dir, "results folder", RESULTS_DIR, ResultsDirError)
    found, problems, runs = [], [], {}
    for path in sorted(Path(results_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = read_record(path)
        except RecordError as error:
            problems.append(str(error))
            continue
        run = json.dumps(record["config"], sort_keys=True)
        if run in runs:
            problems.append(f"{path}: the same run (config and seed) as {runs[run]}; counted once, from that file")
            continue
        runs[run] = path
        found.append((path, record))
    return RecordScan(Path(results_dir), found, problems)


RESULTS_DIR = "the folder of the run records (`python -m benchmark run --results-dir` wrote them; default: results)"
"""What a results folder given to read records from should be, for messages."""


def check_results_dir(path: str | os.PathLike, option: str = "--results-dir") -> Path:
    """``path`` checked to be an existing folder to read records from (nothing is created);
    :class:`ResultsDirError` naming ``option`` otherwise."""
    return check_input_dir(path, option, RESULTS_DIR, ResultsDirError)


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


def code_version() -> str:
    """The code a report was made with, for its heading: the short :func:`git_commit`, with "and uncommitted
    changes" when :func:`git_dirty` (e.g. a working tree copied onto another machine over an older checkout),
    "unknown" outside git."""
    commit = git_commit()
    if commit is None:
        return "unknown"
    return f"{commit[:7]} and uncommitted changes" if git_dirty() else commit[:7]


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def hardware(device: torch.device, processes: int) -> dict[str, Any]:
    """The machine a run used: platform, CPU model and count, device (and GPU name), torch threads, and the
    data-parallel processes that trained it (``accelerate launch --num_processes``; 1 without a launcher, and
    for records written before it was recorded)."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "device": str(device),
                            "torch_threads": torch.get_num_threads(), "processes": processes}
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
