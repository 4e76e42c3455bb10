"""``python -m benchmark tune``: declared search spaces, two workers on one SQLite study, pruning, the final run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from benchmark.cli import main
from benchmark.config import Environment, param, resolve, search_space
from benchmark.tuning import TuneError, TuneSettings, open_study, run_trials, tunable_space
from identifiers.registry import get_scheme, schemes

ROOT = Path(__file__).resolve().parents[1]
FAST = "train: {epochs: 2, patience: 2}\n"
"""Two epochs per trial keep the smoke-profile SASRec trials to seconds."""


def test_every_declared_search_space_is_valid() -> None:
    spaces = {name: search_space(cls.Params) for name, cls in schemes().items()}
    assert [dim.name for dim in spaces["sasrec"]] == ["hidden", "layers", "dropout"]
    for name, space in spaces.items():
        for dim in space:
            assert dim.choices or dim.low < dim.high, (name, dim)


def test_a_bad_tune_declaration_is_refused() -> None:
    @dataclass
    class Outside:
        rate: float = param(0.5, low=0, high=1, tune=(0.0, 2.0, "linear"))

    @dataclass
    class LogFromZero:
        rate: float = param(0.5, low=0, tune=(0.0, 1.0, "log"))

    @dataclass
    class Choices:
        flag: bool = param(True, tune=True)
        kind: str = param("a", choices=("a", "b"), tune=True)

    with pytest.raises(ValueError, match=r"out of range"):
        search_space(Outside)
    with pytest.raises(ValueError, match="log scale needs low > 0"):
        search_space(LogFromZero)
    assert [dim.choices for dim in search_space(Choices)] == [(False, True), ("a", "b")]


def test_a_scheme_without_a_search_space_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TuneError, match="declares no tunable parameter"):
        tunable_space("pop")
    assert main(["tune", "--identifiers", "pop", "--trials", "1", "--profile", "smoke"]) == 2
    assert "declares no tunable parameter" in capsys.readouterr().err


def test_two_workers_share_one_sqlite_study_and_the_best_run_names_it(tmp_path: Path) -> None:
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    results, storage = tmp_path / "results", f"sqlite:///{tmp_path / 'study.db'}"
    command = [sys.executable, "-m", "benchmark", "tune", "--identifiers", "sasrec", "--profile", "smoke",
               "--trials", "2", "--storage", storage, "--study-name", "shared", "--config", str(config),
               "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([*command, "--no-final-run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))) == 4
    assert not list(results.glob("synthetic/*.json"))  # no test run before the final one

    final = subprocess.run([*command[:9], "0", *command[10:]], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    [record_path] = results.glob("synthetic/*.json")
    record = json.loads(record_path.read_text())
    assert record["tuned_from"]["study"] == "shared"
    assert record["tuned_from"]["best_trial"] == study.best_trial.number
    assert record["config"]["params"] | study.best_params == record["config"]["params"]
    best_yaml = results / "tuning" / "shared.yaml"
    assert main(["run", "--identifiers", "sasrec", "--profile", "smoke", "--config", str(best_yaml),
                 "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert list(results.glob("synthetic/*.json")) == [record_path]  # the same config: the record is reused


def test_a_study_of_another_config_is_refused(tmp_path: Path) -> None:
    base = resolve("synthetic", get_scheme("sasrec"), 1, "smoke")
    settings = TuneSettings(trials=0, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="one")
    open_study(base, settings, str(tmp_path))
    other = resolve("synthetic", get_scheme("sasrec"), 2, "smoke")
    with pytest.raises(TuneError, match="made for another config .*seed"):
        open_study(other, settings, str(tmp_path))


def test_trials_below_the_threshold_are_pruned_after_an_epoch(tmp_path: Path) -> None:
    base = resolve("synthetic", get_scheme("sasrec"), 1, "smoke")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    env = Environment(device="cpu", results_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), progress=False)
    run_trials(study, base, {"train": {"epochs": 3, "patience": 3}}, {}, env, trials=1)
    [trial] = study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped after its first epoch
