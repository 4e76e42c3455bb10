"""The loop over dataset x scheme x seed: dataset -> split -> identifiers -> model -> training -> evaluation.

Each finished run is one atomic JSON record; a run whose complete record exists is skipped unless ``force``,
so a killed sweep resumes where it stopped (and a killed training resumes from its last epoch checkpoint, which
is deleted only once the run's record is durably on disk). Under ``accelerate launch`` every process runs every
config data-parallel (:mod:`recommenders.parallel`) and only the main process writes records. A
file that is not a complete record (truncated, of another schema) is reported and its run done again. A
diverged training raises :class:`~recommenders.trainer.DivergenceError` naming the run; finished records stay.

Several processes may share one results folder (a grid split over machines): a run is done under a lock file
beside its record (``filelock``, an OS lock the kernel releases when its process dies, so a killed worker's
lock is taken over), and a config whose lock another process holds is skipped and reported. A ``max_eval_users``
cap (the smoke profile) evaluates a fixed random subset of users; the record's ``evaluation`` section counts them.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from tqdm import tqdm

from benchmark.config import Environment, RunConfig, resolve
from benchmark.data.dataset import Dataset
from benchmark.data.registry import load_dataset
from benchmark.evaluate import evaluate
from benchmark.interrupts import Interrupted, Terminated, signal_name
from benchmark.records import (
    SCHEMA_VERSION,
    RecordError,
    git_commit,
    git_dirty,
    hardware,
    now,
    peak_memory_mb,
    read_record,
    record_path,
    versions,
    write_json_atomic,
)
from benchmark.safeio import WriteError
from benchmark.splits import Split, make_split
from identifiers.base import RunContext
from identifiers.registry import get_scheme
from recommenders import parallel, trainer

DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; otherwise the named CPU or CUDA device, which must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device '{name}'; choose from {DEVICES}") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device '{name}' is not supported; choose from {DEVICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}': CUDA is not available on this machine; use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


@lru_cache(maxsize=8)
def cached_dataset(name: str, data_dir: str | None, k_core: int) -> Dataset:
    return load_dataset(name, data_dir, k_core)


@lru_cache(maxsize=16)
def cached_split(name: str, data_dir: str | None, k_core: int, protocol: str, max_history: int) -> Split:
    return make_split(cached_dataset(name, data_dir, k_core), protocol, max_history)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(config: RunConfig, env: Environment) -> Path:
    """Where the training of ``config`` keeps its epoch checkpoint; :func:`run_all` deletes it after the record."""
    return Path(env.cache_dir) / "checkpoints" / f"{config.hash()}.pt"


def lock_path(record: Path) -> Path:
    """The lock file of the run whose record is ``record``: ``.<record name>.lock`` beside it."""
    return record.with_name(f".{record.stem}.lock")


def _existing(path: Path, report: bool = True) -> dict[str, Any] | None:
    """The complete record in ``path``; None when there is none (a file that is not one is reported, to be run
    again)."""
    if not path.exists():
        return None
    try:
        return read_record(path)
    except RecordError as error:
        if report:
            tqdm.write(f"warning: {error}; running it again")
        return None


def _holds(record: dict[str, Any], annotate: dict[str, Any]) -> bool:
    """Whether ``record`` holds every field of ``annotate`` with the same (JSON) value."""
    return all(record.get(key) == value for key, value in json.loads(json.dumps(annotate)).items())


def records_on_other_data(configs: list[RunConfig], env: Environment,
                          datasets: dict[tuple[str, int], Dataset]) -> list[str]:
    """The existing records of ``configs`` (which a run would skip) made on data other than ``datasets[(name,
    k_core)]``, by their dataset fingerprint, one line each naming the file and both fingerprints; records
    without a fingerprint (written before it was recorded) are not checked."""
    lines = []
    fingerprints = {key: dataset.fingerprint() for key, dataset in datasets.items()}
    for config in configs:
        path = record_path(env.results_dir, config)
        try:
            record = read_record(path)
        except RecordError:  # missing or not a complete record: the run will (re)make it
            continue
        recorded = (record.get("dataset") or {}).get("fingerprint")
        current = fingerprints[config.dataset, config.k_core]
        if recorded is not None and recorded != current:
            lines.append(f"{path}: made on data with fingerprint {recorded}, the data read now has {current}")
    return lines


def run_all(configs: list[RunConfig], env: Environment, force: bool = False,
            annotate: dict[str, Any] | None = None) -> list[Path]:
    """Run every config whose record is missing (all with ``force``); return the paths of the records written or
    found. A config whose lock another process holds (it is running it) is skipped and reported; a SIGINT or
    SIGTERM raises :class:`~benchmark.interrupts.Interrupted` naming the runs finished before it. ``annotate``
    adds fields to every record written (e.g. ``tuned_from``, the tuning study a config came from), and to every
    record found that lacks them or holds other values: the same config and seed are the same run, so its record
    is reused, and rewritten (atomically, under the run's lock) to say what it now stands for."""
    paths: list[Path] = []
    done: list[str] = []
    config = None
    annotate = annotate or {}
    git_commit(), git_dirty()  # the code this process loaded, before any run
    bar = tqdm(configs, desc="runs", disable=not env.progress)
    try:
        for config in bar:
            path = record_path(env.results_dir, config)
            found = None if force else _existing(path)
            if found is not None and _holds(found, annotate):
                tqdm.write(f"skip {config.run_name}: record exists ({path})")
                paths.append(path)
                continue
            lock = None if parallel.launched() else FileLock(lock_path(path), timeout=0)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if lock is not None:
                    lock.acquire()
            except Timeout:
                tqdm.write(f"skip {config.run_name}: another process is running it (it holds {lock_path(path)})")
                continue
            except OSError as error:
                raise WriteError(f"cannot write {lock_path(path)}: {error.strerror or error}") from error
            try:
                found = None if force else _existing(path, report=False)  # another process may have finished it
                if found is not None:
                    added = "" if _holds(found, annotate) else f"; reused and given this {', '.join(annotate)}"
                    if added and parallel.is_main():
                        write_json_atomic(path, {**found, **annotate})
                    tqdm.write(f"skip {config.run_name}: record exists ({path}){added}")
                    paths.append(path)
                    continue
                bar.set_postfix_str(config.run_name)
                try:
                    record = run_one(config, env)
                except trainer.DivergenceError as error:
                    raise trainer.DivergenceError(f"{config.run_name}: {error}") from error
                if parallel.is_main():
                    write_json_atomic(path, {**record, **annotate})
                    checkpoint_path(config, env).unlink(missing_ok=True)
                parallel.barrier()
            finally:
                if lock is not None:
                    lock.release()
            paths.append(path)
            done.append(config.run_name)
            summary = record["metrics"]["all"] if record["status"] == "ok" else {}
            tqdm.write(f"done {config.run_name}: " + (
                ", ".join(f"{k} {summary[k]:.4f}" for k in ("recall@10", "ndcg@10")) if summary
                else f"not applicable ({record['reason']})"))
    except (KeyboardInterrupt, Terminated) as error:
        raise Interrupted(signal_name(error), _interrupted_message(signal_name(error), done, config, env)) from None
    return paths


def _interrupted_message(name: str, done: list[str], current: RunConfig | None, env: Environment) -> str:
    finished = (f"{len(done)} run(s) finished in this process and their records are kept under {env.results_dir}/: "
                + ", ".join(done)) if done else "no run finished in this process"
    if current is None:
        return f"interrupted by {name} before any run started. Run the same command again to start."
    checkpoint = checkpoint_path(current, env)
    kept = (f"its checkpoint of the last finished epoch is kept ({checkpoint})" if checkpoint.is_file()
            else "its training had no finished epoch to keep (a component fit in progress, such as an RQ-VAE, "
            f"keeps its own checkpoint under {Path(env.cache_dir) / 'checkpoints'})")
    return (f"interrupted by {name} during {current.run_name}; {kept}. {finished}. Run the same command again to "
            "resume: finished runs are skipped, an interrupted training continues from its checkpoint.")


def run_one(config: RunConfig, env: Environment) -> dict[str, Any]:
    """Execute one experiment and return its record."""
    device = resolve_device(env.device)
    seed_everything(config.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dataset = cached_dataset(config.dataset, env.data_dir, config.k_core)
    split = cached_split(config.dataset, env.data_dir, config.k_core, config.split, config.max_history)
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "run_name": config.run_name, "config_hash": config.hash(),
        "config": config.to_dict(), "paradigm": get_scheme(config.scheme).paradigm, "environment": asdict(env),
        "dataset": {**dataset.stats(), "fingerprint": dataset.fingerprint()}, "split": split.stats(),
        "seed": config.seed, "versions": versions(), "commit": git_commit(), "uncommitted_changes": git_dirty(),
        "hardware": hardware(device, parallel.state().num_processes),
        "started_at": now(),
    }
    cf_config = resolve(config.dataset, get_scheme("sasrec"), config.seed, config.profile)
    ctx = RunContext(config=config, dataset=dataset, valid=split.valid, warm=split.warm, device=device,
                     cf_config=cf_config,
                     cache_dir=Path(env.cache_dir), progress=env.progress)
    scheme = get_scheme(config.scheme)(config.params, ctx)
    reason = scheme.not_applicable(dataset)
    if reason:
        return {**record, "status": "not_applicable", "reason": reason, "identifier": {"paradigm": scheme.paradigm},
                "finished_at": now()}

    start = time.perf_counter()
    built = scheme.build(split.train)
    model = built.model
    fit_seconds = time.perf_counter() - start
    report = trainer.fit(model, split.train, split.valid, split.warm, config.train, config.ks, config.eval_batch_size,
                         device, config.seed, env.progress, checkpoint=checkpoint_path(config, env),
                         desc=config.scheme, compiled=config.compile)
    selection_examples = trainer.selection_examples(split.valid, config.train, config.seed)
    selection = model.select_on_validation(
        lambda m: evaluate(m, selection_examples, split.warm, config.ks, config.eval_batch_size, device))
    valid_examples = split.valid.of_users(config.max_eval_users, config.seed)
    test_examples = split.test.of_users(config.max_eval_users, config.seed)
    valid = evaluate(model, valid_examples, split.warm, config.ks, config.eval_batch_size, device, env.progress,
                     desc="validation", candidates=config.candidates)
    model.reset_inference_statistics()
    test = evaluate(model, test_examples, split.warm, config.ks, config.eval_batch_size, device, env.progress,
                    desc="test", candidates=config.candidates)
    n_test = max(1, test_examples.n_examples)
    item_counts = split.train.item_counts()
    values, items = np.unique(item_counts, return_counts=True)
    return {
        **record, "status": "ok", "reason": None,
        "identifier": {"paradigm": scheme.paradigm, "citation": scheme.citation, **built.statistics,
                       **model.identifier_statistics()},
        "components": ctx.components,
        "training": asdict(report), "selection": selection,
        "evaluation": {"max_eval_users": config.max_eval_users,
                       "test_users": len(np.unique(test_examples.users)), "test_examples": len(test_examples),
                       "test_examples_total": len(split.test), "valid_examples": len(valid_examples),
                       "valid_examples_total": len(split.valid)},
        "metrics": test.metrics(config.ks), "valid_metrics": valid.metrics(config.ks),
        "inference": model.inference_statistics(),
        "timings": {"identifier_fit_s": fit_seconds, "train_s": report.seconds, "inference_s": test.seconds,
                    "inference_ms_per_user": 1000.0 * test.seconds / n_test},
        "memory": peak_memory_mb(device), "model": model_size(model, config),
        "per_user": test.per_user(target_train_counts=item_counts[test.targets]),
        "item_train_count_histogram": {"train_count": values.tolist(), "items": items.tolist()},
        "finished_at": now(),
    }


def model_size(model: torch.nn.Module, config: RunConfig) -> dict[str, Any]:
    """Parameter counts of the whole recommender (backbone, heads, identifier buffers excluded) and the family
    (``config.model_type``, e.g. ``t5``) of its first transformers sub-model, None for backbone-free models;
    with a backbone also its own counts (``backbone_parameters``, counted as ``peft``'s
    ``get_nb_trainable_parameters`` does), the fine-tuning it got (``lora`` when LoRA adapters were injected,
    else ``full``) and, for LoRA, the settings."""
    backbone = next((m for m in model.modules() if hasattr(getattr(m, "config", None), "model_type")), None)
    size: dict[str, Any] = {"total_parameters": sum(p.numel() for p in model.parameters()),
                            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                            "backbone_family": backbone.config.model_type if backbone is not None else None}
    if backbone is None:
        return size
    lora = any("lora_" in name for name, _ in backbone.named_parameters())
    return {**size, "backbone_parameters": {"total": sum(p.numel() for p in backbone.parameters()),
                                            "trainable": sum(p.numel() for p in backbone.parameters()
                                                             if p.requires_grad)},
            "finetune": "lora" if lora else "full",
            "lora": asdict(config.lora) if lora and config.lora is not None else None}
