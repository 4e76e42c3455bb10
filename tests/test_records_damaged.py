"""Damaged run records: a file that parses but holds a field of the wrong type or shape is not a record. The
leaderboard lists it under "Files not read" (and warns), naming the file and the field, and still builds every
report from the other records; the runner runs its config again. A ``--results-dir`` that is missing or a file
is a usage error (exit code 2)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from benchmark.cli import EXIT_USAGE, main
from benchmark.evaluate import EvaluationResult
from benchmark.records import (
    SCHEMA_VERSION,
    RecordError,
    ResultsDirError,
    _record_problem,
    check_results_dir,
    read_record,
    scan_records,
    write_json_atomic,
)

KS = [5, 10, 20]
HISTOGRAM = {"train_count": [0, 1, 2, 5, 10, 40], "items": [2, 20, 10, 4, 2, 1]}
COUNTS = [40, 10, 5, 2, 1, 0] * 10
"""Training counts of the 60 test targets (one per user)."""


def finished(scheme: str, shift: int = 0, seed: int = 1, paradigm: str = "baseline") -> dict[str, Any]:
    """A finished record with every field the runner writes and the reports read, its metrics and per-example
    columns from an :class:`EvaluationResult` as in :func:`benchmark.runner` (ranks ``shift`` places lower)."""
    n = len(COUNTS)
    warm = np.asarray(COUNTS) > 0
    result = EvaluationResult(users=np.arange(n), targets=np.arange(n), ranks=(np.arange(n) % 25) + shift,
                              warm=warm, seconds=0.5)
    return {
        "schema": SCHEMA_VERSION, "run_name": f"toy__{scheme}", "config_hash": "0" * 12,
        "config": {"dataset": "toy", "scheme": scheme, "backbone": "none", "seed": seed, "profile": "quick",
                   "split": "loo", "ks": KS, "max_eval_users": 0, "train": {"epochs": 10, "lr": 0.001},
                   "params": {}},
        "paradigm": paradigm, "environment": {"device": "cpu", "threads": 1, "jobs": 1},
        "dataset": {"users": n, "items": 39, "interactions": 600, "fingerprint": "f" * 16},
        "split": {"protocol": "loo"}, "seed": seed,
        "versions": {"python": "3.11", "torch": "2.13.0", "transformers": "5.0"}, "commit": "abc123",
        "uncommitted_changes": False,
        "hardware": {"platform": "Linux", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2, "device": "cpu",
                     "torch_threads": 1},
        "started_at": "2026-01-01T00:00:00+00:00", "status": "ok", "reason": None,
        "identifier": {"paradigm": paradigm, "citation": "test", "new_tokens": 0, "code_length_max": 1,
                       "code_length_mean": 1.0, "collision_rate_before_dedup": 0.0, "collision_rate_after_dedup": 0.0,
                       "codebook_usage_per_level": [0.5, 1.0]},
        "components": {},
        "training": {"epochs_run": 4, "best_epoch": 2, "best_valid": 0.1, "curve": [], "seconds": 3.0,
                     "resumed_from_epoch": 0},
        "selection": {}, "evaluation": {"test_users": n}, "metrics": result.metrics(tuple(KS)),
        "valid_metrics": result.metrics(tuple(KS)), "inference": {},
        "timings": {"identifier_fit_s": 0.1, "train_s": 3.0, "inference_s": 0.5, "inference_ms_per_user": 8.3},
        "memory": {"process_peak_rss_mb": 400.0},
        "model": {"total_parameters": 1000, "trainable_parameters": 1000, "backbone_family": None},
        "per_user": result.per_user(target_train_counts=np.asarray(COUNTS)),
        "item_train_count_histogram": copy.deepcopy(HISTOGRAM),
        "finished_at": "2026-01-01T00:01:00+00:00",
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A damage: the field at dotted ``path`` (``[i]`` for a list index) set to ``value``."""
    def damage(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = record
        for key in parents:
            node = node[key]
        if last.endswith("]"):
            key, index = last[:-1].split("[")
            node[key][int(index)] = value
        else:
            node[last] = value
    return damage


def _apply(function: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    return function


DAMAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # kind: (damage, text the problem must contain: the field)
    "metric_string": (_set("metrics.all.ndcg@10", "high"), 'metrics.all.ndcg@10 is "high"'),
    "metric_nan": (_set("metrics.all.ndcg@10", math.nan), "metrics.all.ndcg@10 is NaN"),
    "metric_null": (_set("metrics.all.ndcg@10", None), "metrics.all.ndcg@10 is null"),
    "metric_out_of_range": (_set("metrics.warm.recall@5", 3.5), "metrics.warm.recall@5 is 3.5"),
    "metrics_segment_empty": (_set("metrics.all", {}), "metrics.all lacks count"),
    "count_string": (_set("metrics.cold.count", "7"), "metrics.cold.count"),
    "per_user_list": (_set("per_user", [1, 2]), "per_user is a list"),
    "ranks_shorter_than_users": (_apply(lambda r: r["per_user"].update(ranks=r["per_user"]["ranks"][:5])),
                                 "per_user.ranks 5"),
    "ranks_and_users_shorter_than_targets": (_apply(lambda r: r["per_user"].update(
        users=r["per_user"]["users"][:5], ranks=r["per_user"]["ranks"][:5])), "per_user.targets has 60 entries"),
    "ranks_strings": (_apply(lambda r: r["per_user"].update(ranks=["a"] * len(r["per_user"]["ranks"]))),
                      'per_user.ranks[0] is "a"'),
    "rank_negative": (_set("per_user.ranks[3]", -2), "per_user.ranks[3] is -2"),
    "rank_mixed_multi": (_set("per_user.ranks[2]", [1, 2]), "per_user.ranks[2] is a list"),
    "warm_flag": (_set("per_user.warm[1]", 2), "per_user.warm[1] is 2"),
    "count_outside_histogram": (_set("per_user.target_train_counts[0]", 7), "per_user.target_train_counts holds [7]"),
    "histogram_string": (_set("item_train_count_histogram", "x"), "item_train_count_histogram is"),
    "histogram_lengths": (_apply(lambda r: r["item_train_count_histogram"]["items"].pop()),
                          "item_train_count_histogram has 6 train_count values and 5 items values"),
    "timing_string": (_set("timings.train_s", "x"), 'timings.train_s is "x"'),
    "inference_string": (_set("timings.inference_ms_per_user", "fast"), "timings.inference_ms_per_user"),
    "memory_string": (_set("memory.process_peak_rss_mb", "big"), "memory.process_peak_rss_mb"),
    "memory_null": (_set("memory", None), "memory is null"),
    "training_string": (_set("training", "x"), "training is"),
    "best_epoch_string": (_set("training.best_epoch", "2"), "training.best_epoch"),
    "model_string": (_set("model", "x"), "model is"),
    "parameters_string": (_set("model.total_parameters", "1k"), "model.total_parameters"),
    "environment_string": (_set("environment", "x"), "environment is"),
    "jobs_string": (_set("environment.jobs", "2"), "environment.jobs"),
    "hardware_string": (_set("hardware", "x"), "hardware is"),
    "gpu_number": (_set("hardware.gpu", 5), "hardware.gpu is 5"),
    "processes_zero": (_set("hardware.processes", 0), "hardware.processes is 0"),
    "identifier_string": (_set("identifier", "x"), "identifier is"),
    "identifier_statistic": (_set("identifier.new_tokens", "many"), "identifier.new_tokens"),
    "text_encoder_string": (_set("components.text_encoder", "minilm"), "components.text_encoder is"),
    "text_encoder_number": (_set("components", {"text_encoder": {"name": 3}}), "components.text_encoder.name is 3"),
    "codebook_usage_string": (_set("identifier.codebook_usage_per_level", "x"), "identifier.codebook_usage_per_level"),
    "paradigm_unknown": (_set("paradigm", "weird"), 'paradigm is "weird", expected one of baseline'),
    "dataset_string": (_set("dataset", "x"), "dataset is"),
    "versions_string": (_set("versions", "x"), "versions is"),
    "commit_number": (_set("commit", 5), "commit is 5"),
    "evaluation_string": (_set("evaluation", "x"), "evaluation is"),
    "seed_string": (_set("config.seed", "x"), 'config.seed is "x"'),
    "ks_strings": (_set("config.ks", ["10"]), "config.ks"),
    "max_eval_users_null": (_set("config.max_eval_users", None), "config.max_eval_users is null"),
    "config_train_string": (_set("config.train", "x"), "config.train is"),
    "started_at_text": (_set("started_at", "yesterday"), 'started_at is "yesterday"'),
    "finished_at_naive": (_set("finished_at", "2026-01-01T00:01:00"), "started_at and finished_at"),
}


def damaged(kind: str) -> dict[str, Any]:
    record = finished("damaged")
    damage, _ = DAMAGES[kind]
    damage(record)
    return record


def test_the_undamaged_record_and_real_evaluation_results_are_complete() -> None:
    assert _record_problem(json.loads(json.dumps(finished("pop")))) is None
    # multi-target (a released split) with candidates: segment, as EvaluationResult.per_user writes them
    groups = np.repeat(np.arange(4), [1, 3, 2, 1])
    result = EvaluationResult(users=groups * 10, targets=np.arange(7), ranks=np.asarray([0, 3, 1, 25, 2, 2, 9]),
                              warm=np.asarray([1, 1, 0, 1, 0, 1, 1], dtype=bool), seconds=1.0, groups=groups,
                              segment_ranks=np.asarray([0, 2, 0, 20, 1, 1, 5]))
    record = finished("setrec", paradigm="set")
    record["config"]["candidates"] = "segment"
    record["metrics"] = result.metrics(tuple(KS))
    record["per_user"] = result.per_user(target_train_counts=np.asarray([40, 10, 0, 5, 0, 1, 2]))
    assert isinstance(record["per_user"]["ranks"][1], list)
    assert _record_problem(json.loads(json.dumps(record))) is None
    record["per_user"]["warm"][1] = [1, 1]
    assert _record_problem(record) == "per_user.warm[1] is a list of 2 ([1, 1]), expected a list of 3 (one per " \
                                      "target of per_user.ranks[1])"


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_record_is_not_read_and_its_field_is_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "toy" / f"{kind}.json"
    write_json_atomic(path, damaged(kind))
    with pytest.raises(RecordError) as error:
        read_record(path)
    assert str(error.value).startswith(f"{path}: not a complete run record: ")
    assert DAMAGES[kind][1] in str(error.value)


@pytest.fixture(scope="module")
def leaderboard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``leaderboard`` over two good records (two schemes) and every damaged record: exit code, stderr and
    the reports written."""
    root = tmp_path_factory.mktemp("damaged")
    results, reports = root / "results", root / "reports"
    write_json_atomic(results / "toy" / "pop.json", finished("pop"))
    write_json_atomic(results / "toy" / "sasrec.json", finished("sasrec", shift=3))
    paths = {}
    for kind in DAMAGES:
        paths[kind] = results / "toy" / f"{kind}.json"
        write_json_atomic(paths[kind], damaged(kind))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["leaderboard", "--results-dir", str(results), "--reports-dir", str(reports)])
    return {"code": code, "err": err.getvalue(), "reports": reports, "paths": paths}


def test_the_leaderboard_builds_every_report_from_the_other_records(leaderboard: dict[str, Any]) -> None:
    assert leaderboard["code"] == 0 and "Traceback" not in leaderboard["err"]
    reports = leaderboard["reports"]
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "identifiers.md", "costs.md", "groups.md",
                 "scaling.md", "index.html"):
        assert (reports / name).is_file(), name
    md = (reports / "leaderboard.md").read_text()
    table = md.split("## Files not read")[0]
    assert "| pop " in table and "| sasrec " in table and "| damaged " not in table
    assert "| damaged " not in (reports / "costs.md").read_text() and "| sasrec " in (reports / "costs.md").read_text()
    assert "| pop " in (reports / "groups.md").read_text()


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_the_leaderboard_lists_a_damaged_record_naming_the_field(leaderboard: dict[str, Any], kind: str) -> None:
    path, field = leaderboard["paths"][kind], DAMAGES[kind][1]
    [warning] = [line for line in leaderboard["err"].splitlines() if f"{path}:" in line]
    assert warning.startswith(f"warning: skipped {path}: not a complete run record: ") and field in warning
    listed = (leaderboard["reports"] / "leaderboard.md").read_text().split("## Files not read")[1]
    [line] = [line for line in listed.splitlines() if f"{path}:" in line]
    assert field in line
    assert str(path) in (leaderboard["reports"] / "index.html").read_text()


def test_a_missing_or_file_results_dir_is_an_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ResultsDirError, match=r"--results-dir .*missing: no such folder"):
        check_results_dir(tmp_path / "missing")
    with pytest.raises(ResultsDirError, match=r"--results-dir .*afile: is not a folder"):
        check_results_dir(afile)
    with pytest.raises(ResultsDirError, match="give the folder of the run records"):
        check_results_dir("")
    assert check_results_dir(tmp_path) == tmp_path
    with pytest.raises(ResultsDirError, match=r"afile: is not a folder"):
        scan_records(afile)
    assert scan_records(tmp_path / "missing").records == []  # the runner reads a results folder not made yet


def _leaderboard_cli(results: Path, reports: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["leaderboard", "--results-dir", str(results), "--reports-dir", str(reports)])
    return code, capsys.readouterr().err


def test_leaderboard_on_a_file_as_results_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _leaderboard_cli(afile, tmp_path / "reports", capsys)
    assert code == EXIT_USAGE and f"{afile}: is not a folder" in err and "Traceback" not in err
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_leaderboard_on_a_missing_results_dir_exits_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _leaderboard_cli(tmp_path / "missing", tmp_path / "reports", capsys)
    assert code == EXIT_USAGE and f"--results-dir {tmp_path / 'missing'}: no such folder" in err
    assert not (tmp_path / "reports").exists()


def test_a_copy_of_a_record_counts_once_and_is_listed(tmp_path: Path) -> None:
    """Two files of one run (config and seed), e.g. after merging two results folders, are one seed, not two."""
    write_json_atomic(tmp_path / "a" / "pop.json", finished("pop"))
    write_json_atomic(tmp_path / "b" / "pop.json", finished("pop"))
    write_json_atomic(tmp_path / "b" / "pop-seed-2.json", finished("pop", seed=2))
    scan = scan_records(tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path, _ in scan.records] == ["a/pop.json", "b/pop-seed-2.json"]
    assert scan.problems == [f"{tmp_path / 'b' / 'pop.json'}: the same run (config and seed) as "
                             f"{tmp_path / 'a' / 'pop.json'}; counted once, from that file"]
