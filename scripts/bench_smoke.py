"""Wall-clock time of a smoke-profile run of each scheme on a dataset, as a user starts it.

Each scheme runs as its own ``python -m benchmark run --profile smoke`` process (imports, data loading, identifier
fitting, training, evaluation and the record: everything a user waits for), one after the other, sharing one
fresh cache folder, so the first scheme that needs the item-text embeddings also encodes them (once per dataset
and cache) and the rows below it read them from the cache. Reports each run's wall and CPU seconds and the
record's identifier-fitting, training and inference seconds, as a Markdown table on stdout; exits with code 1
when a run failed. Example:

    python scripts/bench_smoke.py --datasets beauty --data-dir ../shared/data --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _options  # noqa: E402

from benchmark.data.dataset import DataError  # noqa: E402
from benchmark.data.registry import load_raw  # noqa: E402
from benchmark.records import code_version, cpu_model  # noqa: E402
from identifiers.registry import schemes  # noqa: E402


def identifiers(text: str) -> list[str]:
    """The type of ``--identifiers``: ``all``, or registered scheme names, none twice."""
    return list(schemes()) if text.strip() == "all" else _options.comma_list(_options.choice(schemes()))(text)


def cpu_seconds_of_children() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def smoke_run(scheme: str, dataset: str, args: argparse.Namespace, work: Path) -> dict[str, object]:
    """One smoke run in a child process: its exit code, wall and CPU seconds, and the record's timings."""
    results = work / "results"
    command = [sys.executable, "-m", "benchmark", "run", "--identifiers", scheme, "--datasets", dataset,
               "--profile", "smoke", "--seed", str(args.seed), "--threads", str(args.threads), "--no-progress",
               "--results-dir", str(results), "--cache-dir", str(work / "cache")]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    cpu, start = cpu_seconds_of_children(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    row: dict[str, object] = {"scheme": scheme, "rc": done.returncode, "wall": time.perf_counter() - start,
                              "cpu": cpu_seconds_of_children() - cpu}
    found = sorted((results / dataset).glob(f"{scheme}__*smoke*.json"))
    if found:
        record = json.loads(found[-1].read_text())
        row.update(record.get("timings", {}), status=record["status"])
    elif done.returncode != 0:
        row["status"] = (done.stderr.strip().splitlines() or ["failed"])[-1][:100]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=_options.comma_list(_options.dataset), default="synthetic",
                        help="comma-separated dataset names")
    parser.add_argument("--identifiers", type=identifiers, default="all", help="comma-separated schemes, or all")
    parser.add_argument("--data-dir", type=_options.data_dir, default=None,
                        help="folder of the datasets (as for `benchmark run`)")
    parser.add_argument("--threads", type=_options.at_least(1), default=2, help="--threads of every run")
    parser.add_argument("--seed", type=_options.seed, default=2026)
    args = parser.parse_args(argv)
    try:  # a missing or damaged dataset is reported once, before any run
        for dataset in args.datasets:
            load_raw(dataset, args.data_dir)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"# Smoke-profile runs, timed\n\nOutput of `scripts/bench_smoke.py` at commit "
          f"{code_version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, on "
          f"{cpu_model()} with {os.cpu_count()} CPUs visible: smoke profile, seed "
          f"{args.seed}, `--threads {args.threads}`, one fresh cache folder per dataset, schemes run in the order "
          "below. Wall = what the user waits for (process start to exit); CPU = user + system seconds of the run.\n")
    print("| dataset | scheme | status | wall s | CPU s | identifier fit s | train s | inference s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    failed = 0
    for dataset in args.datasets:
        with tempfile.TemporaryDirectory(prefix="bench-smoke-") as folder:
            for scheme in args.identifiers:
                row = smoke_run(scheme, dataset, args, Path(folder))
                failed += row["rc"] != 0
                cells = [f"{row.get(key, float('nan')):.1f}" for key in
                         ("wall", "cpu", "identifier_fit_s", "train_s", "inference_s")]
                print(f"| {dataset} | {scheme} | {row.get('status', row['rc'])} | {' | '.join(cells)} |", flush=True)
    if failed:
        print(f"error: {failed} run(s) failed (their status is in the table)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
