"""``python -m benchmark tune``: declared search spaces, two workers on one SQLite study, pruning, the final run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import pytest
from filelock import FileLock

from benchmark import tuning
from benchmark.cli import main
from benchmark.config import Environment, param, resolve, search_space
from benchmark.interrupts import Terminated
from benchmark.tuning import TuneError, TuneSettings, open_study, plan_study, run_trials, study_name, tunable_space
from identifiers.registry import get_scheme, schemes
from recommenders.backbones import BackboneError

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


def test_a_scheme_without_a_search_space_is_refused_before_anything_is_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TuneError, match="declares no tunable parameter"):
        tunable_space("pop")
    results = tmp_path / "results"
    assert main(["tune", "--identifiers", "pop", "--trials", "1", "--profile", "smoke", "--results-dir", str(results),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "declares no tunable parameter" in capsys.readouterr().err
    base = resolve("synthetic", get_scheme("pop"), 1, "smoke")
    with pytest.raises(TuneError, match="declares no tunable parameter"):
        open_study(base, TuneSettings(trials=0), str(results))
    assert not list(tmp_path.iterdir())  # no study file, lock or folder


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
    settings = TuneSettings(trials=1, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="one")
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


def tune_cli(tmp_path: Path, *options: str) -> list[str]:
    """A smoke ``tune`` command line with its folders under ``tmp_path`` (unless ``options`` give them)."""
    folders = {"--results-dir": str(tmp_path / "results"), "--cache-dir": str(tmp_path / "cache")}
    given = [folder for folder in folders if folder in options]
    return ["tune", "--identifiers", "sasrec", "--profile", "smoke", "--trials", "1", "--no-final-run",
            "--no-progress", *[item for key, value in folders.items() if key not in given for item in (key, value)],
            *options]


def test_a_storage_folder_that_cannot_hold_the_lock_exits_instead_of_hanging(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for storage, folder in (("sqlite:////proc/x.db", "/proc"), (f"sqlite:///{blocker / 'sub' / 'x.db'}", "sub")):
        done = subprocess.run([sys.executable, "-m", "benchmark", *tune_cli(tmp_path, "--storage", storage)],
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=60)  # the lock used to be retried for ever: a regression fails, not hangs
        assert done.returncode == 2, done.stderr
        assert "--storage" in done.stderr and folder in done.stderr and "Traceback" not in done.stderr
    assert not [path for path in tmp_path.rglob("*") if path.is_file() and path != blocker]  # no study, no lock


def test_a_lock_that_stays_taken_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "LOCK_TIMEOUT", 0.2)
    base = resolve("synthetic", get_scheme("sasrec"), 1, "smoke")
    database = tmp_path / "s.db"
    with FileLock(f"{database}.lock"), pytest.raises(TuneError, match=r"s\.db\.lock was not free"):
        open_study(base, TuneSettings(trials=1, storage=f"sqlite:///{database}"), str(tmp_path))
    assert not database.exists()


@pytest.mark.parametrize(("options", "says"), [
    (("--results-dir", "{file}"), "--results-dir {file}: is not a folder"),
    (("--results-dir", "{file}/results"), "--results-dir {file}/results: cannot be created"),
    (("--cache-dir", "{file}"), "--cache-dir {file}: is not a folder"),
    (("--output", "{dir}"), "--output {dir}: is a folder; give a file path"),
    (("--output", "{file}/best.yaml"), "--output {file}/best.yaml: its folder {file}: is not a folder"),
])
def test_unusable_output_folders_exit_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         options: tuple[str, str], says: str) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    paths = {"file": str(tmp_path / "a-file"), "dir": str(tmp_path / "a-dir")}
    option, value = options[0], options[1].format(**paths)
    assert main(tune_cli(tmp_path, option, value)) == 2
    assert says.format(**paths) in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.db")) and not list(tmp_path.rglob("*.yaml"))
    assert not (tmp_path / "cache").exists()  # checked before the cache, the dataset and any trial
    assert list((tmp_path / "a-dir").iterdir()) == []


def test_a_cut_off_above_the_catalogue_exits_2_before_any_trial(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ks.yaml"
    config.write_text("run: {ks: [10, 100000]}\n")
    assert main(tune_cli(tmp_path, "--config", str(config))) == 2
    assert "run.ks: cut-off 100000 exceeds the 457 items of dataset 'synthetic'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.db"))


@pytest.mark.parametrize(("storage", "says"), [
    ("notaurl", "not a database URL"),
    ("garbage://x", "unknown database kind 'garbage'"),
])
def test_an_invalid_storage_url_exits_2_with_the_valid_forms(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             storage: str, says: str) -> None:
    assert main(tune_cli(tmp_path, "--storage", storage)) == 2
    err = capsys.readouterr().err
    assert f"--storage '{storage}': {says}" in err and "sqlite:///" in err and "postgresql://" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_a_config_naming_an_unknown_scheme_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("schemes: {nosuch: {hidden: 8}}\n")
    assert main(tune_cli(tmp_path, "--config", str(config))) == 2
    err = capsys.readouterr().err
    assert f"config file {config}: schemes: unknown scheme(s) nosuch; choose from" in err and "sasrec" in err
    assert list(tmp_path.iterdir()) == [config]


def test_a_config_fixing_a_searched_field_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    searched = tunable_space("sasrec")[0].name
    config = tmp_path / "pinned.yaml"
    config.write_text(f"schemes: {{sasrec: {{{searched}: {getattr(get_scheme('sasrec').Params(), searched)!r}}}}}\n")
    assert main(tune_cli(tmp_path, "--config", str(config))) == 2
    err = capsys.readouterr().err
    assert f"--config: schemes.sasrec sets {searched}, which tune searches" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [config]


@pytest.mark.parametrize("name", ["../../escape", "a?b=c", ".hidden", "a/b", ""])
def test_an_unsafe_study_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert main(tune_cli(tmp_path, "--study-name", name)) == 2
    assert f"--study-name '{name}': use letters, digits, '_', '-' and '.' only" in capsys.readouterr().err
    assert not list(tmp_path.parent.glob("escape*")) and not list(tmp_path.iterdir())


def test_safe_study_names_stay_inside_the_tuning_folder(tmp_path: Path) -> None:
    base = resolve("synthetic", get_scheme("sasrec"), 1, "smoke")
    plan = plan_study(base, TuneSettings(trials=0, study_name="v1.2_run-3"), str(tmp_path))
    assert plan.url == f"sqlite:///{tmp_path}/tuning/v1.2_run-3.db"
    assert plan.output == tmp_path / "tuning" / "v1.2_run-3.yaml"
    for other in (replace(base, backbone="../models/my-qwen"), replace(base, dataset="amazon2014:Beauty")):
        name = study_name(other)
        assert tuning.SAFE_NAME.fullmatch(name), name


def test_tune_checks_lora_targets_as_run_does_before_any_study(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lora.yaml"
    config.write_text("run: {finetune: lora, lora: {target_modules: [q, nosuch_layer]}}\n")
    assert main(tune_cli(tmp_path, "--identifiers", "semid", "--config", str(config))) == 2
    err = capsys.readouterr().err
    assert "run.lora: lora.target_modules: nosuch_layer name(s) no module of backbone" in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == [config]


def test_a_backbone_error_during_a_trial_exits_2_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def misfit(*_: object) -> float:
        raise BackboneError("backbone 't5-tiny' does not fit")

    monkeypatch.setattr(tuning, "validation_value", misfit)
    assert main(tune_cli(tmp_path)) == 2
    assert "error: backbone: backbone 't5-tiny' does not fit" in capsys.readouterr().err


def test_no_trial_on_a_study_that_does_not_exist_is_refused_before_any_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tune_cli(tmp_path, "--trials", "0")) == 2
    assert "--trials 0: there is no study 'synthetic__sasrec__" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no results folder, SQLite file or lock
    storage = f"sqlite:///{tmp_path / 's.db'}"
    open_study(resolve("synthetic", get_scheme("sasrec"), 1, "smoke"),
               TuneSettings(trials=1, storage=storage, study_name="one"), str(tmp_path))
    assert main(tune_cli(tmp_path, "--trials", "0", "--storage", storage, "--study-name", "two")) == 2
    assert "there is no study 'two' in sqlite:///" in capsys.readouterr().err
    assert optuna.get_all_study_names(storage) == ["one"]


def test_the_final_run_reuses_a_plain_record_of_its_config_and_names_the_study(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    folders = ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(tune_cli(tmp_path, "--config", str(config), "--study-name", "s")) == 0
    best_yaml = tmp_path / "results" / "tuning" / "s.yaml"
    assert main(["run", "--identifiers", "sasrec", "--profile", "smoke", "--config", str(best_yaml), *folders]) == 0
    [path] = (tmp_path / "results").glob("synthetic/*.json")
    plain = json.loads(path.read_text())
    assert "tuned_from" not in plain
    capsys.readouterr()
    tune_final = [*tune_cli(tmp_path, "--config", str(config), "--study-name", "s", "--trials", "0")]
    tune_final.remove("--no-final-run")
    assert main(tune_final) == 0
    out = capsys.readouterr().out
    assert f"record exists ({path}); reused and given this tuned_from" in out and f"test record: {path}" in out
    record = json.loads(path.read_text())
    assert record["tuned_from"]["study"] == "s" and record["tuned_from"]["best_trial"] == 0
    assert {key: value for key, value in record.items() if key != "tuned_from"} == plain  # the same run
    assert list((tmp_path / "results").glob("synthetic/*.json")) == [path]

    path.write_text(json.dumps({**record, "dataset": {**record["dataset"], "fingerprint": "other"}}))
    assert main(tune_final) == 2  # a record made on other data is not taken as the tuned run's
    assert "the best config's test record exists but was made on other data" in capsys.readouterr().err


def test_a_stale_running_trial_is_failed_and_its_parameters_retried(tmp_path: Path) -> None:
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    killed, alive = study.ask(), study.ask()  # two workers' trials: one was SIGKILLed long ago, one is running
    params = tuning.suggest(killed, tunable_space("sasrec"))
    killed.set_user_attr("heartbeat", time.time() - tuning.STALE_AFTER - 1)
    assert main(tune_cli(tmp_path, "--config", str(config), "--storage", storage, "--study-name", "s")) == 0
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    states = [trial.state.name for trial in trials]
    assert states[:2] == ["FAIL", "RUNNING"] and trials[1].number == alive.number
    assert states[2] in ("COMPLETE", "PRUNED") and len(trials) == 3  # the planned trial is the retry
    assert trials[2].params == params and trials[2].user_attrs["retry_of"] == killed.number
    assert "heartbeat" in trials[2].user_attrs


def test_sigterm_during_a_trial_names_it_and_the_resumed_study_retries_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def terminated(*_: object) -> float:
        raise Terminated

    storage = f"sqlite:///{tmp_path / 's.db'}"
    options = ("--storage", storage, "--study-name", "s")
    with monkeypatch.context() as patch:
        patch.setattr(tuning, "validation_value", terminated)
        assert main(tune_cli(tmp_path, *options)) == 143
    err = capsys.readouterr().err
    assert "stopped: interrupted by SIGTERM during trial 0 ({'hidden'" in err and "of study 's'" in err
    assert "its parameters are queued" in err and "Run the same command again to resume" in err
    assert "no run" not in err
    monkeypatch.setattr(tuning, "validation_value", lambda *_: 0.5)
    assert main(tune_cli(tmp_path, *options)) == 0
    first, retried = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert first.state.name == "FAIL" and first.user_attrs["failure"] == "interrupted by SIGTERM"
    assert retried.state.name == "COMPLETE" and retried.params == first.params
    assert retried.user_attrs["retry_of"] == 0
