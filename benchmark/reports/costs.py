"""What each leaderboard row cost to produce, from the run records.

One row per (dataset, split, profile, backbone, scheme, config without the seed), mean over seeds: wall
time of the whole run, identifier fitting, recommender training with the epochs run and the epoch selected
on validation, test inference per user, peak memory and the hardware it ran on; each table ends with the
summed wall time of its runs. A best epoch marked with a dagger is the epoch cap (``train.epochs``) in at
least one seed: early stopping never fired, so the model may be under-trained. A run time marked with a double
dagger belongs to a run that, in at least one seed, resumed from the epoch checkpoint of an earlier, killed
process (its record's ``training.resumed_from_epoch``; for records without it, a training time longer than the
run's wall time by more than :data:`RESUME_MARGIN_S`, the rounding of the run's timestamps):
wall time, and fit time where a component came from the cache, count only the last process, while the
training time counts every epoch. Rows of one scheme with different configs are named with the keys where
they differ (:mod:`benchmark.reports.configs`).
Caveats: times are only comparable between rows run on the same hardware (the column says which, by GPU or CPU
model, :mod:`benchmark.reports.hardware`, over how many data-parallel processes it trained, and how many ``run
--jobs`` workers shared it; seeds of one row on different
hardware list each distinct label, separated by "; "; a total over such overlapping runs exceeds the command's
wall time); the process's peak resident memory is a running maximum, so when one command runs several schemes it is an
upper bound for all but the first.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from benchmark.records import RecordScan, now
from benchmark.reports.configs import LEGEND, config_id, flat_configs, row_label, variant_labels
from benchmark.reports.hardware import NO_MODEL, machine
from benchmark.reports.markdown import SECTION_KEYS, markdown_sections
from benchmark.safeio import write_text

KEYS = (*SECTION_KEYS, "scheme")
GROUP = (*KEYS, "config_id")
CAPPED = "†"
"""Mark of a best epoch that is the epoch cap in at least one seed."""
RESUMED = "‡"
"""Mark of a run time that counts only the last process of a resumed run in at least one seed."""
RESUME_MARGIN_S = 1.0
"""How much longer than the run's wall time (from timestamps rounded to the second) the training time of a
record without ``training.resumed_from_epoch`` must be for the run to count as resumed."""
HARDWARE_SEPARATOR = "; "
"""Separator of the distinct hardware labels of one row's seeds."""
COSTS = {
    "run_s": "Run s",
    "identifier_fit_s": "Fit s",
    "train_s": "Train s",
    "epochs_run": "Epochs",
    "best_epoch": "Best epoch",
    "inference_ms_per_user": "Inference ms/user",
    "process_peak_rss_mb": "Peak RSS MB",
    "gpu_peak_allocated_mb": "GPU peak MB",
}


def cost_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The costs of finished runs (:meth:`RecordScan.finished`), averaged over the seeds of each config, with the
    summed run time, the run count, ``capped_runs``, the runs whose best epoch is the epoch cap (early
    stopping never fired), and ``resumed_runs``, the runs that resumed from an earlier process's checkpoint."""
    return _per_config(_record_frame(records), flat_configs(records))


def _per_config(frame: pd.DataFrame, configs: dict[str, dict[str, str]]) -> pd.DataFrame:
    """:func:`cost_frame` of the per-record ``frame`` (:func:`_record_frame`); ``configs``: the records'
    :func:`~benchmark.reports.configs.flat_configs`."""
    if frame.empty:
        return frame
    grouped = frame.groupby(list(GROUP), sort=True)
    summary = grouped.agg(hardware=("hardware", lambda h: HARDWARE_SEPARATOR.join(sorted(set(h)))),
                          runs=("run_s", "size"), total_run_s=("run_s", "sum"), capped_runs=("capped", "sum"),
                          resumed_runs=("resumed", "sum"))
    frame = summary.join(grouped[list(COSTS)].mean()).reset_index()
    frame.insert(len(KEYS), "variant", variant_labels(frame, KEYS, configs))
    return frame


def _record_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: its section and scheme keys, config id, hardware, marks and costs."""
    return pd.DataFrame([_row(record) for record in records],
                        columns=[*GROUP, "hardware", "capped", "resumed", *COSTS])


def _row(record: dict[str, Any]) -> dict[str, Any]:
    config, timings, training = record["config"], record.get("timings", {}), record.get("training") or {}
    memory = record.get("memory", {})
    row: dict[str, Any] = {**{key: config[key] for key in KEYS}, "config_id": config_id(config)}
    row["hardware"] = machine(record)
    row["run_s"] = (datetime.fromisoformat(record["finished_at"]) - datetime.fromisoformat(record["started_at"])
                    ).total_seconds() if "finished_at" in record and "started_at" in record else np.nan
    for key in ("identifier_fit_s", "train_s", "inference_ms_per_user"):
        row[key] = timings.get(key, np.nan)
    row["epochs_run"] = training.get("epochs_run", np.nan)
    row["best_epoch"] = training["best_epoch"] if training.get("best_epoch", -1) >= 0 else np.nan
    row["capped"] = row["best_epoch"] == (config.get("train") or {}).get("epochs")
    resumed_from = training.get("resumed_from_epoch")
    row["resumed"] = (resumed_from > 0 if resumed_from is not None
                      else bool(row["train_s"] > row["run_s"] + RESUME_MARGIN_S))
    for key in ("process_peak_rss_mb", "gpu_peak_allocated_mb"):
        row[key] = memory.get(key, np.nan)
    return row


def build_cost_report(scan: RecordScan, reports_dir: Path) -> list[Path]:
    """Write ``costs.md`` and ``costs.csv`` under ``reports_dir`` ([] without finished runs)."""
    records = scan.finished()
    per_record = _record_frame(records)
    frame = _per_config(per_record, flat_configs(records))
    if frame.empty:
        return []
    reports_dir.mkdir(parents=True, exist_ok=True)
    md, csv = reports_dir / "costs.md", reports_dir / "costs.csv"
    write_text(csv, frame.to_csv(index=False))
    lines = ["# Costs\n",
             f"Generated by `python -m benchmark leaderboard` from the records in {scan.results_dir} at {now()}; "
             "do not edit by hand. Mean over seeds; Run s is the wall time of the whole run (data, identifiers, "
             "training, selection, test); Epochs / Best epoch: epochs trained and the one kept by validation. "
             "Times compare only between rows on the same hardware. Peak RSS is the process's running maximum, "
             f"an upper bound when one command ran several schemes. Best epoch {CAPPED}: in at least one seed the "
             "best epoch is the epoch cap (train.epochs), i.e. early stopping never fired and the model may be "
             f"under-trained (the csv's capped_runs counts those seeds). Run s {RESUMED}: in at least one seed the "
             "run resumed from the epoch checkpoint of an earlier, killed process, so Run s (and Fit s, for "
             "components loaded from the cache) counts only the last process while Train s counts every epoch "
             "(the csv's resumed_runs counts those seeds; a record without training.resumed_from_epoch counts as "
             f"resumed when its Train s exceeds its Run s by more than {RESUME_MARGIN_S:g} s). Hardware: the "
             f"GPU, or the CPU's cores and model as the record gives it ('{NO_MODEL}' for records made before it "
             "was recorded; a virtual machine may report a generic model name, so one label can still cover "
             "machines of different speed). Hardware "
             "'(P processes)': the run trained data-parallel over P processes (`accelerate launch --num_processes "
             "P`; records without the count read as one). Hardware '(N jobs)': "
             "the run was one of N worker processes of `run --jobs N` sharing the machine, so its times include the "
             "others' contention, and a total of such runs sums overlapping runs (more than the command's wall "
             "time); a row whose seeds ran on different hardware lists each, separated by "
             f"'{HARDWARE_SEPARATOR.strip()}'. {LEGEND}\n"]
    header = ["Scheme", *COSTS.values(), "Hardware", "Runs"]
    lines += markdown_sections(frame, header, lambda row: [
        row_label(row["scheme"], row["variant"]),
        *(_cell(key, row[key]) + _mark(key, row) for key in COSTS),
        row["hardware"], str(row["runs"])], _total)
    lines += _totals(per_record)
    write_text(md, "\n".join(lines))
    return [md, csv]


def _mark(key: str, row: pd.Series) -> str:
    if key == "best_epoch" and row["capped_runs"]:
        return CAPPED
    return RESUMED if key == "run_s" and row["resumed_runs"] else ""


def _total(table: pd.DataFrame) -> list[str]:
    seconds = float(table["total_run_s"].sum())
    return [f"Total wall time of these {int(table['runs'].sum())} runs: {seconds:.0f} s "
            f"({seconds / 60:.1f} min).\n"]


def _totals(records: pd.DataFrame) -> list[str]:
    """Summed wall time per dataset, split, profile and machine, all backbones and baselines together, over the
    records of each machine (a row whose seeds ran on several machines counts in each)."""
    keys = ["dataset", "split", "profile", "hardware"]
    totals = records.groupby(keys, sort=True).agg(runs=("run_s", "size"), seconds=("run_s", "sum"))
    lines = ["## Totals\n", "| Dataset | Split | Profile | Hardware | Runs | Wall time s | Wall time min |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {row.dataset} | {row.split} | {row.profile} | {row.hardware} | {row.runs} | {row.seconds:.0f} | "
              f"{row.seconds / 60:.1f} |" for row in totals.reset_index().itertuples(index=False)]
    return [*lines, ""]


def _cell(key: str, value: float) -> str:
    if pd.isna(value):
        return ""
    if key == "inference_ms_per_user":
        return f"{value:.3g}"
    return f"{value:.0f}" if key != "run_s" or value >= 10 else f"{value:.1f}"
