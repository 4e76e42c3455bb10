"""A killed run resumes into the run it replaces: same batches, same curve, same metrics; nothing is lost."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark import runner
from benchmark.config import Environment, RunConfig, resolve
from benchmark.data.dataset import Dataset
from benchmark.splits import make_split
from identifiers.registry import get_scheme
from recommenders import trainer

WALL_CLOCK = frozenset({"started_at", "finished_at", "timings", "memory", "seconds", "resumed_from_epoch"})


class Killed(Exception):
    """Stands for the process being killed between two epochs."""


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def small_runs(small_synthetic: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs on the small synthetic dataset (registered name ``synthetic``), for speed."""
    monkeypatch.setattr(runner, "cached_dataset", lambda *args: small_synthetic)
    monkeypatch.setattr(runner, "cached_split", lambda name, data_dir, k_core, protocol, max_history:
                        make_split(small_synthetic, protocol, max_history))


def _setup(scheme: str, tmp_path: Path, epochs: int = 3, **train: Any) -> tuple[RunConfig, Environment]:
    config = resolve("synthetic", get_scheme(scheme), 0, "smoke", {"train": {"epochs": epochs, "patience": 5,
                                                                             **train}})
    env = Environment(device="cpu", results_dir=str(tmp_path / "results"), reports_dir=str(tmp_path / "reports"),
                      cache_dir=str(tmp_path / "cache"), progress=False)
    return config, env


def _kill_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """The run's training raises :class:`Killed` right after the checkpoint of ``epoch`` (1-based) is written."""
    save = trainer.save_tensors

    def save_then_die(path: Path, state: dict) -> None:
        save(path, state)
        if state["epoch"] + 1 == epoch:
            raise Killed

    monkeypatch.setattr(trainer, "save_tensors", save_then_die)


def _comparable(value: Any) -> Any:
    """``value`` without wall-clock fields (timings, dates, memory, whether a cache was hit)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()
                if k not in WALL_CLOCK and not k.endswith(("_s", "loaded_from_cache"))}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


@pytest.mark.parametrize("scheme", ["sasrec", "e4srec"])  # tiger passes too, in 80 s on 2 cores
def test_a_resumed_run_equals_the_uninterrupted_one(scheme: str, tmp_path: Path, small_runs,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config, env = _setup(scheme, tmp_path)
    [path] = runner.run_all([config], env)
    uninterrupted = json.loads(path.read_text())
    assert uninterrupted["training"]["epochs_run"] == 3 and uninterrupted["training"]["resumed_from_epoch"] == 0
    path.unlink()

    with monkeypatch.context() as patch:
        _kill_after_epoch(patch, 1)
        with pytest.raises(Killed):
            runner.run_all([config], env)
    checkpoint = runner.checkpoint_path(config, env)
    assert checkpoint.is_file() and not path.exists()
    capsys.readouterr()
    runner.run_all([config], env)
    out = capsys.readouterr().out
    assert f"{scheme}: resuming from checkpoint {checkpoint} after epoch 1 of 3" in out
    resumed = json.loads(path.read_text())
    assert resumed["training"]["resumed_from_epoch"] == 1 and not checkpoint.exists()
    assert resumed["training"]["curve"] == uninterrupted["training"]["curve"]
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert _comparable(resumed) == _comparable(uninterrupted)


@pytest.mark.parametrize("killed_after", [1, 2])  # an epoch that is not validated, and one that is
def test_resume_equals_the_uninterrupted_run_with_sparse_subset_validation_and_buckets(
        killed_after: int, tmp_path: Path, small_runs, monkeypatch: pytest.MonkeyPatch) -> None:
    config, env = _setup("sasrec", tmp_path, epochs=4, eval_every=2, valid_users=60, bucketing=True)
    [path] = runner.run_all([config], env)
    uninterrupted = json.loads(path.read_text())
    assert [sorted(entry) for entry in uninterrupted["training"]["curve"]][:2] == [["epoch", "loss"],
                                                                                  ["epoch", "loss", "ndcg@10"]]
    path.unlink()
    with monkeypatch.context() as patch:
        _kill_after_epoch(patch, killed_after)
        with pytest.raises(Killed):
            runner.run_all([config], env)
    runner.run_all([config], env)
    resumed = json.loads(path.read_text())
    assert resumed["training"]["resumed_from_epoch"] == killed_after
    assert _comparable(resumed) == _comparable(uninterrupted)


def test_the_checkpoint_survives_a_failed_record_write(tmp_path: Path, small_runs,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config, env = _setup("sasrec", tmp_path, epochs=2)

    def disk_full(path: Path, payload: dict) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_json_atomic", disk_full)
        with pytest.raises(OSError, match="No space left"):
            runner.run_all([config], env)
    checkpoint = runner.checkpoint_path(config, env)
    assert checkpoint.is_file()
    capsys.readouterr()
    [path] = runner.run_all([config], env)
    assert f"resuming from checkpoint {checkpoint} after epoch 2 of 2" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["training"]["resumed_from_epoch"] == 2 and record["status"] == "ok"
    assert not checkpoint.exists()


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint", "cannot be read"),
    ({"fingerprint": "x", "model": {}, "epoch": 0}, "lacks bad, best_state, finished, generators, optimizer, report"),
])
def test_an_unusable_checkpoint_is_named_and_ignored(content: bytes | dict, reason: str, tmp_path: Path,
                                                     small_synthetic: Dataset,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from recommenders.sasrec import SASRec, SASRecParams

    checkpoint = tmp_path / "ckpt.pt"
    if isinstance(content, bytes):
        checkpoint.write_bytes(content)
    else:
        torch.save(content, checkpoint)
    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke", {"train": {"epochs": 1}}).train
    report = trainer.fit(SASRec(split.train.n_items, 10, SASRecParams(hidden=16, layers=1)), split.train, split.valid,
                         split.warm, cfg, (10,), 256, torch.device("cpu"), 0, progress=False, checkpoint=checkpoint,
                         desc="sasrec")
    assert report.epochs_run == 1 and report.resumed_from_epoch == 0
    assert f"sasrec: checkpoint {checkpoint} {reason}" in capsys.readouterr().out
    assert set(torch.load(checkpoint, weights_only=True)) == trainer.CHECKPOINT_KEYS
