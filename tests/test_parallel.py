"""Data-parallel training under ``accelerate launch`` with two CPU processes (gloo)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_run_writes_exactly_one_complete_record(tmp_path: Path) -> None:
    config = tmp_path / "short.yaml"
    config.write_text("train: {epochs: 2}\n")
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "benchmark", "run",
               "--identifiers", "sasrec", "--datasets", "synthetic", "--profile", "smoke", "--device", "cpu",
               "--config", str(config), "--results-dir", str(tmp_path / "results"),
               "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("sasrec epoch 1:") == 2, "both processes train"
    records = list((tmp_path / "results").rglob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "ok" and record["training"]["epochs_run"] == 2
    assert record["hardware"]["processes"] == 2 and "processes" not in record["config"]
    for value in record["metrics"]["all"].values():
        assert math.isfinite(value) and value >= 0
    assert not list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
