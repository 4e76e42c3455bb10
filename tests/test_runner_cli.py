"""Runs, records and resume; the CLI's subcommands and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import records
from benchmark.cli import main
from benchmark.config import ConfigError, resolve
from benchmark.splits import make_split
from identifiers.registry import get_scheme
from recommenders import trainer
from recommenders.sasrec import SASRec, SASRecParams


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", "--identifiers", "pop", "--datasets", "synthetic", "--profile", "smoke",
                 "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", *extra])


def test_run_writes_a_complete_record_and_resumes(tmp_path: Path) -> None:
    assert _run(tmp_path) == 0
    [(path, record)] = list(records.iter_records(tmp_path / "results"))
    assert record["status"] == "ok"
    assert record["config"]["scheme"] == "pop" and record["config"]["seed"] == 2026
    assert record["config_hash"] in path.name
    assert record["dataset"]["users"] > 0 and "cold_test_share" in record["split"]
    assert set(record["metrics"]) == {"all", "warm", "cold"}
    assert {"recall@5", "ndcg@10", "recall@20"} <= set(record["metrics"]["all"])
    assert len(record["per_user"]["ranks"]) == record["split"]["test_examples"]
    assert {"torch", "python"} <= set(record["versions"])
    assert {"identifier_fit_s", "train_s", "inference_ms_per_user"} <= set(record["timings"])
    assert "process_peak_rss_mb" in record["memory"]
    stamp = path.stat().st_mtime_ns
    assert _run(tmp_path) == 0
    assert path.stat().st_mtime_ns == stamp  # finished config skipped
    assert _run(tmp_path, "--force") == 0
    assert path.stat().st_mtime_ns != stamp


def test_seed_is_part_of_the_config(tmp_path: Path) -> None:
    assert _run(tmp_path, "--seed", "1,2") == 0
    seeds = sorted(r["seed"] for _, r in records.iter_records(tmp_path / "results"))
    assert seeds == [1, 2]


def test_atomic_write_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r" / "x.json"

    def boom(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(KeyboardInterrupt):
        records.write_json_atomic(target, {"schema": 1})
    assert list(target.parent.iterdir()) == []
    monkeypatch.undo()
    records.write_json_atomic(target, {"schema": 1})
    assert json.loads(target.read_text()) == {"schema": 1} and target.stat().st_mode & 0o777 == 0o644


def test_training_resumes_from_the_last_finished_epoch(tmp_path: Path, small_synthetic) -> None:
    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    checkpoint = tmp_path / "ckpt.pt"

    def fit(epochs: int, codes: int = 0) -> trainer.TrainReport:
        torch.manual_seed(0)
        model = SASRec(split.train.n_items, 10, SASRecParams(hidden=16, layers=1))
        model.register_buffer("codes", torch.full((3,), codes))
        run_cfg = type(cfg)(**{**cfg.__dict__, "epochs": epochs, "patience": 10})
        return trainer.fit(model, split.train, split.valid, split.warm, run_cfg, (10,), 256, torch.device("cpu"),
                           0, progress=False, checkpoint=checkpoint)

    first = fit(1)
    assert first.epochs_run == 1 and checkpoint.is_file()
    resumed = fit(3)
    assert resumed.epochs_run == 3 and [c["epoch"] for c in resumed.curve] == [1, 2, 3]
    assert resumed.curve[0] == first.curve[0]
    other_identifiers = fit(2, codes=1)
    assert [c["epoch"] for c in other_identifiers.curve] == [1, 2]


def test_sasrec_beats_popularity_after_short_training(tmp_path: Path) -> None:
    assert main(["run", "--identifiers", "pop,sasrec", "--datasets", "synthetic", "--profile", "smoke",
                 "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    ndcg = {r["config"]["scheme"]: r["metrics"]["all"]["ndcg@10"] for _, r in records.iter_records(tmp_path)}
    assert ndcg["sasrec"] > ndcg["pop"]


def test_list_and_stats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sasrec" in out and "synthetic" in out and "t5-tiger" in out
    assert main(["stats", "--datasets", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "cold test targets" in out and "temporal" in out
    assert main(["list", "--params", "sasrec"]) == 0
    assert "profile smoke" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "--identifiers", "nope"], "unknown identifier scheme 'nope'; choose from pop, sasrec"),
    (["run", "--identifiers", "pop", "--datasets", "nowhere"], "unknown dataset 'nowhere'; choose from synthetic"),
    (["stats", "--datasets", "beauty", "--data-dir", "/nonexistent"],
     "folder /nonexistent/amazon2014-p5/beauty not found"),
    (["run", "--identifiers", "pop", "--device", "cuda:7"], "--device"),
    (["run", "--identifiers", "pop", "--backbone", "gpt-17"], "unknown backbone 'gpt-17'; choose from t5-tiny"),
    (["list", "--params", "nope"], "unknown identifier scheme"),
])
def test_cli_errors_exit_2_with_choices(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_choices_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--identifiers", "pop", "--profile", "huge"])
    assert exit_info.value.code == 2
    assert "smoke" in capsys.readouterr().err


def test_config_file_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    assert main(["run", "--identifiers", "pop", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "epochz" in err and "epochs" in err
    bad.write_text("schemes:\n  sasrec: {hiden: 3}\n")
    with pytest.raises(ConfigError, match="hiden"):
        resolve("synthetic", get_scheme("sasrec"), 0, "quick", {"schemes": {"sasrec": {"hiden": 3}}})
    assert main(["run", "--identifiers", "pop", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_config_precedence(tmp_path: Path) -> None:
    sasrec = get_scheme("sasrec")
    smoke = resolve("synthetic", sasrec, None, "smoke")
    assert smoke.train.epochs == 15 and smoke.params["hidden"] == 32
    user = {"train": {"epochs": 7}, "schemes": {"sasrec": {"hidden": 48}}, "run": {"max_history": 12}}
    cfg = resolve("synthetic", sasrec, 3, "smoke", user, {"max_history": 9})
    assert (cfg.train.epochs, cfg.params["hidden"], cfg.max_history, cfg.seed) == (7, 48, 9, 3)
    assert cfg.hash() != smoke.hash() and cfg.hash() == resolve("synthetic", sasrec, 3, "smoke", user,
                                                                {"max_history": 9}).hash()
    assert np.isclose(resolve("synthetic", sasrec, 0, "quick").train.lr, 0.001)
