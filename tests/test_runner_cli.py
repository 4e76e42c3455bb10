"""Runs, records and resume; the CLI's subcommands and its errors."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import cli, records, runner, workers
from benchmark.cli import EXIT_DIVERGED, main
from benchmark.config import LATER_TRAIN_KEYS, ConfigError, check_value, resolve
from benchmark.splits import make_split
from identifiers.registry import get_scheme
from recommenders import trainer
from recommenders.sasrec import SASRec, SASRecParams
from tests.conftest import make_context


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
    assert len(record["per_user"]["ranks"]) == record["evaluation"]["test_examples"] == 300  # smoke cap
    assert {"torch", "python"} <= set(record["versions"])
    assert {"identifier_fit_s", "train_s", "inference_ms_per_user"} <= set(record["timings"])
    assert "process_peak_rss_mb" in record["memory"]
    stamp = path.stat().st_mtime_ns
    assert _run(tmp_path) == 0
    assert path.stat().st_mtime_ns == stamp  # finished config skipped
    assert _run(tmp_path, "--force") == 0
    assert path.stat().st_mtime_ns != stamp


def test_jobs_share_the_runs_and_do_each_once(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "default_threads", lambda: 2)  # a 2-core machine: auto gives two one-thread jobs
    monkeypatch.setattr(workers, "available_memory", lambda: 8 * 2**30)
    assert _run(tmp_path, "--identifiers", "pop,sasrec", "--seed", "1,2", "--jobs", "auto", "--device", "cpu") == 0
    out = capfd.readouterr().out
    found = [record for _, record in records.iter_records(tmp_path / "results")]
    assert len(found) == 4 and "4 record(s) under" in out
    assert "--jobs auto: 2 process(es) of 1 torch thread(s) each" in out
    assert all(r["environment"]["jobs"] == 2 and r["hardware"]["torch_threads"] == 1 for r in found)
    for record in found:
        assert out.count(f"done {record['run_name']}:") == 1, out


def _jobs_args(tmp_path: Path, **options: object) -> argparse.Namespace:
    return argparse.Namespace(**{"jobs": "auto", "force": False, "device": "cpu", "threads": None,
                                 "results_dir": str(tmp_path / "results"), **options})


def test_auto_jobs_are_one_per_core_for_the_configs_without_a_record(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [resolve("synthetic", get_scheme("pop"), seed, "smoke") for seed in (1, 2, 3)]
    monkeypatch.setattr(cli, "default_threads", lambda: 4)
    monkeypatch.setattr(workers, "available_memory", lambda: 64 * 2**30)
    assert cli._jobs(_jobs_args(tmp_path), configs) == 3  # at most one per config
    assert cli._jobs(_jobs_args(tmp_path, threads=2), configs) == 2  # 4 cores of 2 threads each
    assert cli._jobs(_jobs_args(tmp_path, threads=8), configs) == 1
    assert cli._jobs(_jobs_args(tmp_path, force=True), configs) == 1  # --force re-runs all: no workers
    assert cli._jobs(_jobs_args(tmp_path, jobs=5), configs) == 5  # a number is taken as given
    path = records.record_path(tmp_path / "results", configs[0])
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    assert cli._jobs(_jobs_args(tmp_path), configs) == 2  # one config has its record
    monkeypatch.setattr(workers, "available_memory", lambda: 4 * 2**30)
    assert cli._jobs(_jobs_args(tmp_path), configs) == 1  # 3 GiB of memory per worker
    monkeypatch.setattr(workers, "available_memory", lambda: None)
    assert cli._jobs(_jobs_args(tmp_path), configs) == 2  # memory unknown: not capped
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli._jobs(_jobs_args(tmp_path), configs) == 1  # under accelerate launch its processes share the runs
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(runner, "resolve_device", lambda name: torch.device("cuda"))
    assert cli._jobs(_jobs_args(tmp_path, device="auto"), configs) == 1  # the runs would share one GPU


def test_available_memory_is_meminfo_within_the_cgroup_limit(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:       32000000 kB\nMemAvailable:   8000000 kB\n")
    monkeypatch.setattr(workers, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(workers, "CGROUP_MEMORY", tmp_path / "cgroup")
    assert workers.available_memory() == 8_000_000 * 1024  # no cgroup files: MemAvailable alone
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "cgroup" / "memory.max").write_text("max\n")
    assert workers.available_memory() == 8_000_000 * 1024
    (tmp_path / "cgroup" / "memory.max").write_text(f"{4 * 2**30}\n")
    (tmp_path / "cgroup" / "memory.current").write_text(f"{2**30}\n")
    assert workers.available_memory() == 3 * 2**30
    monkeypatch.setattr(workers, "MEMINFO", tmp_path / "absent")
    (tmp_path / "cgroup" / "memory.max").unlink()
    assert workers.available_memory() is None


def test_bad_jobs_exit_2_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--identifiers", "pop", "--jobs", "many"])
    assert exit_info.value.code == 2
    assert "argument --jobs: expected an integer >= 1 or auto, got 'many'" in capsys.readouterr().err


def test_jobs_refuse_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--jobs", "2", "--force") == 2
    assert "--force: not with --jobs above 1" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


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
    assert first.epochs_run == 1 and first.resumed_from_epoch == 0 and checkpoint.is_file()
    resumed = fit(3)
    assert resumed.epochs_run == 3 and [c["epoch"] for c in resumed.curve] == [1, 2, 3]
    assert resumed.curve[0] == first.curve[0] and resumed.resumed_from_epoch == 1
    other_identifiers = fit(2, codes=1)
    assert [c["epoch"] for c in other_identifiers.curve] == [1, 2] and other_identifiers.resumed_from_epoch == 0


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
    (["stats", "--datasets", "beauty", "--data-dir", "/proc/self"],
     "folder /proc/self/amazon2014-p5/beauty not found"),
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


def _tiny_sasrec(split) -> SASRec:
    torch.manual_seed(0)
    return SASRec(split.train.n_items, 10, SASRecParams(hidden=16, layers=1))


def test_an_early_stopped_checkpoint_trains_no_further(tmp_path: Path, small_synthetic,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    cfg = type(cfg)(**{**cfg.__dict__, "epochs": 5, "patience": 1})
    flat = trainer.evaluate(_tiny_sasrec(split), split.valid.subset(5, 0), split.warm, (10,), 256, "cpu")
    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: flat)  # no epoch ever improves on the first
    checkpoint = tmp_path / "ckpt.pt"

    def fit(model: SASRec) -> trainer.TrainReport:
        return trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cpu"), 0,
                           progress=False, checkpoint=checkpoint)

    first = fit(_tiny_sasrec(split))
    assert (first.epochs_run, first.best_epoch) == (2, 1) and torch.load(checkpoint, weights_only=True)["finished"]
    model = _tiny_sasrec(split)
    monkeypatch.setattr(model, "loss", lambda batch: pytest.fail("trained past early stopping"))
    resumed = fit(model)
    assert resumed.epochs_run == 2 and resumed.curve == first.curve


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path: Path, small_synthetic,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    model = _tiny_sasrec(split)
    monkeypatch.setattr(model, "loss", lambda batch: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(trainer.DivergenceError, match=r"sasrec: the training loss is nan at epoch 1, batch 1; .*"
                                                      rf"lower train.lr \(now {cfg.lr:g}\)$"):
        trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cpu"), 0,
                    progress=False, desc="sasrec")


def test_a_diverging_run_exits_with_its_name_and_writes_no_record(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nan.yaml"
    config.write_text("train: {lr: 1.0e+30, epochs: 2, grad_clip: 0}\n")
    code = main(["run", "--identifiers", "sasrec", "--profile", "smoke", "--config", str(config), "--results-dir",
                 str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == EXIT_DIVERGED and "synthetic__sasrec__none__loo__smoke__s2026: sasrec:" in err
    assert "epoch 1" in err and "lower train.lr (now 1e+30) or set train.grad_clip > 0" in err
    assert not list(records.iter_records(tmp_path / "results"))


def test_a_broken_record_is_reported_and_run_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path) == 0
    [(path, _)] = list(records.iter_records(tmp_path / "results"))
    path.write_text(path.read_text()[:100])
    with pytest.raises(records.RecordError, match="not readable JSON"):
        records.read_record(path)
    capsys.readouterr()
    assert _run(tmp_path) == 0
    assert f"warning: {path}: not readable JSON" in capsys.readouterr().out
    assert records.read_record(path)["status"] == "ok"
    path.write_text(json.dumps({"schema": records.SCHEMA_VERSION, "status": "ok", "config": {}}))
    with pytest.raises(records.RecordError, match="config lacks one of dataset"):
        records.read_record(path)


@pytest.mark.parametrize("yaml_text, message", [
    ('train: {epochs: "ten"}', "train.epochs: expected an integer, got 'ten'"),
    ('train: {lr: "fast"}', "train.lr: expected a finite number, got 'fast'"),
    ("train: {lr: -0.1}", "train.lr: expected a number > 0"),
    ('run: {k_core: "five"}', "run.k_core: expected an integer"),
    ("run: {ks: 10}", "run.ks: expected a list of integers, got 10"),
    ("run: {ks: []}", "run.ks: expected a non-empty list of distinct positive integers"),
    ("run: {ks: [5, 0]}", "run.ks: expected a non-empty list of distinct positive integers"),
    ("train: [1, 2]", "section 'train' must be a mapping"),
    ("train: {batch_size: 0}", "train.batch_size: expected a value >= 1, got 0"),
    ("train: {patience: 0}", "train.patience: expected a value >= 1"),
    ("train: {eval_every: 0}", "train.eval_every: expected a value >= 1, got 0"),
    ("train: {eval_every: 1.5}", "train.eval_every: expected an integer, got 1.5"),
    ("train: {valid_users: -1}", "train.valid_users: expected a value >= 0, got -1"),
    ('train: {valid_users: "all"}', "train.valid_users: expected an integer, got 'all'"),
    ('train: {bucketing: "yes"}', "train.bucketing: expected true or false, got 'yes'"),
    ("run: {eval_batch_size: 0}", "run.eval_batch_size: expected a value >= 1"),
    ("run: {max_history: 0}", "run.max_history: expected a value >= 1"),
    ("run: {k_core: -3}", "run.k_core: expected a value >= 1"),
    ("run: {seed: -1}", "run.seed: expected a value >= 0"),
    ("run: {amp: true}", "unknown key 'amp'"),
    ('run: {constrained_decoding: "no"}', "run.constrained_decoding: expected true or false"),
    ('schemes: {sasrec: {hidden: "big"}}', "schemes.sasrec.hidden: expected an integer, got 'big'"),
    ("schemes: {sasrec: [1]}", "schemes.sasrec: expected a mapping"),
    ("schemes: {sasrek: {hidden: 3}}", "unknown scheme(s) sasrek"),
    ("run: {backbone: nope}", "run.backbone: unknown backbone 'nope'"),
])
def test_config_values_are_checked_and_name_the_key(yaml_text: str, message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text + "\n")
    assert main(["run", "--identifiers", "sasrec,cid", "--config", str(config), "--results-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))


def test_check_value_follows_the_annotation() -> None:
    assert check_value(3, int, "k") == 3 and check_value(3, float, "k") == 3.0
    assert check_value("1e-3", float, "k") == 0.001  # YAML 1.1 reads 1e-3 (no dot) as a string
    assert check_value([1, 2], tuple[int, ...], "k") == (1, 2) and check_value(None, int | None, "k") is None
    assert check_value(2, int | None, "k") == 2 and check_value(False, bool, "k") is False
    for value, annotation, message in ((True, int, "k: expected an integer, got True"),
                                       ("nan", float, "k: expected a finite number"),
                                       ([1, "a"], tuple[int, ...], r"k\[1\]: expected an integer"),
                                       ("x", int | None, "k: expected an integer or null"),
                                       (1, str, "k: expected a string")):
        with pytest.raises(ConfigError, match=message):
            check_value(value, annotation, "k")


@pytest.mark.parametrize("argv, message", [
    (["run", "--identifiers", "pop", "--seed", "a"], "--seed: expected integers from 0 to"),
    (["run", "--identifiers", "pop", "--seed", "1,,2"], "got '1,,2'"),
    (["run", "--identifiers", "pop", "--seed", "-1"], "got '-1'"),
    (["run", "--identifiers", ","], "--identifiers: give at least one name; choose from all, pop"),
    (["run", "--identifiers", "pop", "--device", "mps"], "--device: device 'mps' is not supported; choose from auto"),
    (["run", "--identifiers", "pop", "--device", "gpu"], "--device: unknown device 'gpu'"),
    (["stats", "--datasets", "scientific", "--data-dir", "/proc/self"], "it has no download source"),
    (["stats", "--datasets", "scientific", "--data-dir", "/nonexistent"], "--data-dir /nonexistent: no such folder"),
])
def test_cli_value_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "--identifiers", "pop", "--max-history", "0"],
                                  ["run", "--identifiers", "pop", "--max-history", "-1"],
                                  ["run", "--identifiers", "pop", "--k-core", "-3"],
                                  ["stats", "--datasets", "synthetic", "--k-core", "0"],
                                  ["stats", "--datasets", "synthetic", "--max-history", "x"]])
def test_history_and_k_core_must_be_at_least_one(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    expected = "expected an integer from 1 to 1024" if "--max-history" in argv else "expected an integer >= 1"
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_datasets_all_skips_absent_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--datasets", "all", "--data-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("synthetic:") and "beauty" not in out
    assert ("skips beauty, toys, sports, office, scientific, ml-100k, setrec-beauty, setrec-toys: no folder under "
            f"{tmp_path}/") in err


def test_download_uses_the_data_dir_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.data import download

    folders = []
    monkeypatch.setattr(download, "download", lambda name, data_dir: folders.append(data_dir) or data_dir)
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path))
    assert main(["download", "ml-100k"]) == 0 and folders == [tmp_path]


def test_constrained_decoding_and_the_paper_backbone() -> None:
    tiger = get_scheme("tiger")
    assert resolve("synthetic", tiger, 0, "quick").constrained_decoding is True
    assert not resolve("synthetic", tiger, 0, "quick", {"run": {"constrained_decoding": False}}).constrained_decoding
    assert resolve("synthetic", tiger, 0, "paper").backbone == "t5-tiger"
    assert resolve("synthetic", tiger, 0, "paper", cli={"backbone": "t5-small"}).backbone == "t5-small"
    assert resolve("synthetic", get_scheme("sasrec"), 0, "paper").backbone == "none"


def test_a_cached_component_leaves_the_random_state_as_it_found_it(small_synthetic, tmp_path: Path) -> None:
    ctx = make_context(get_scheme("tiger"), small_synthetic, tmp_path)

    def compute() -> dict[str, torch.Tensor]:
        random.random(), np.random.rand(), torch.rand(4)
        return {"weights": torch.ones(2)}

    def draws_after() -> tuple[tuple[float, float, list[float]], bool]:
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        saved, cached = ctx.load_or_compute("demo", "key", compute)
        assert torch.equal(saved["weights"], torch.ones(2))
        return (random.random(), float(np.random.rand()), torch.rand(2).tolist()), cached

    fitted, loaded = draws_after(), draws_after()
    assert (fitted[1], loaded[1]) == (False, True) and fitted[0] == loaded[0]


CHANGED_ON_PURPOSE = {("office", "cid")}
"""(dataset, scheme) of the reference records made before their scheme's default method changed on purpose
(docs/reference/README.md says how)."""


def test_the_reference_records_keep_their_config_hashes() -> None:
    """A key added later (``max_fit_steps``, ``compile``, a scheme option with ``added=True``) at its off value
    leaves the default configs of the reference records where they were, so their re-runs find them. A record is
    resolved with the values its config gives the later keys a profile may set (off where it lacks them: the
    records made before the quick profile set ``train.bucketing`` and ``run.backbone_dropout``)."""
    checked = 0
    for path in sorted((Path(__file__).parent.parent / "docs" / "reference" / "results").glob("*/*.json")):
        record = json.loads(path.read_text())
        config = record["config"]
        if (config["dataset"], config["scheme"]) in CHANGED_ON_PURPOSE:
            continue
        user = {"train": {key: config["train"].get(key, off) for key, off in LATER_TRAIN_KEYS.items()},
                "run": {"backbone_dropout": config.get("backbone_dropout")}}
        resolved = resolve(config["dataset"], get_scheme(config["scheme"]), config["seed"], config["profile"], user)
        assert resolved.hash() == record["config_hash"], path.name
        checked += 1
    assert checked >= 10


def test_a_record_made_on_other_data_is_not_skipped_silently(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A record names its data's fingerprint; when the dataset's files change, a run that would skip the record
    stops before any work (exit 2) naming it, and --force runs it again on the new data."""
    folder = tmp_path / "data" / "amazon2014-p5" / "beauty"
    folder.mkdir(parents=True)
    sequences = "".join(f"U{u} " + " ".join(f"I{(3 * u + i) % 24}" for i in range(6)) + "\n" for u in range(8))
    (folder / "user_sequence.txt").write_text(sequences)
    argv = ["run", "--identifiers", "pop", "--datasets", "beauty", "--profile", "smoke", "--k-core", "1",
            "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(argv) == 0
    [(path, record)] = list(records.iter_records(tmp_path / "results"))
    assert len(record["dataset"]["fingerprint"]) == 16 and record["uncommitted_changes"] in (True, False, None)
    assert record["hardware"]["cpu_model"]
    assert main(argv) == 0  # same data: skipped
    (folder / "user_sequence.txt").write_text(sequences.replace("U0 I0", "U0 I7"))
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "made on data with fingerprint" in error and "--force" in error
    runner.cached_dataset.cache_clear()  # a process reads a dataset once; this test changes it within one
    runner.cached_split.cache_clear()
    assert main([*argv, "--force"]) == 0
    assert records.read_record(path)["dataset"]["fingerprint"] != record["dataset"]["fingerprint"]


@pytest.mark.parametrize(("commit", "dirty", "shown"), [
    ("60d13e8a" * 5, False, "60d13e8"), ("60d13e8a" * 5, True, "60d13e8 and uncommitted changes"),
    (None, None, "unknown")])
def test_a_report_names_its_code_with_uncommitted_changes(monkeypatch, commit, dirty, shown) -> None:
    """A script's report names the commit and says when the tree differed from it (a working tree copied onto a
    GPU machine over an older checkout ran code its HEAD does not name)."""
    monkeypatch.setattr(records, "git_commit", lambda: commit)
    monkeypatch.setattr(records, "git_dirty", lambda: dirty)
    assert records.code_version() == shown
