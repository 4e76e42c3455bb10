"""A killed run resumes into the run it replaces: same batches, same curve, same metrics; nothing is lost."""
from __future__ import annotations

import errno
import functools
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
from tests.conftest import make_context

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
        if state.get("epoch", -2) + 1 == epoch:  # a component fit's checkpoint has no "epoch"
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


# Component fits (RQ-VAE, MQ-Tokenizer, LightGCN) ---------------------------------------------------------------

def _fast_fit_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Component fits write their checkpoint after every epoch (not every 30 s)."""
    from identifiers import lightgcn, mq_tokenizer, quantizers

    for module in (quantizers, mq_tokenizer, lightgcn):
        monkeypatch.setattr(module, "FitCheckpoint", functools.partial(trainer.FitCheckpoint, every_s=0.0))


def _component_fit(component: str, checkpoint: Path | None, split_data: Any) -> tuple[list[torch.Tensor], list, int]:
    """The fitted tensors, the per-epoch losses and the resumed epochs of one fit of ``component``."""
    from identifiers.lightgcn import LightGCNConfig, fit_lightgcn
    from identifiers.mq_tokenizer import MQTokenizer
    from identifiers.quantizers import RQVAE, FitConfig

    if component == "lightgcn":
        result = fit_lightgcn(split_data, LightGCNConfig(dim=8, layers=2, epochs=4, batch_size=256),
                              torch.device("cpu"), 0, False, checkpoint)
        return [result.users, result.items], result.losses, result.resumed_from_epoch
    x = torch.nn.functional.normalize(torch.randn(100, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    torch.manual_seed(0)
    model = RQVAE(16, 4, (8,), 2, 4) if component == "rq-vae" else MQTokenizer(16, 2, 4, 4, (8,), 0.2, 0.25)
    report = model.fit(x, FitConfig(epochs=4, batch_size=32, lr=1e-3, optimizer="adam", seed=0), False, checkpoint)
    return list(model.state_dict().values()), report.history, report.resumed_from_epoch


@pytest.mark.parametrize("component", ["rq-vae", "mq-tokenizer", "lightgcn"])
def test_a_resumed_component_fit_equals_the_uninterrupted_one(component: str, tmp_path: Path, tiny,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _fast_fit_checkpoints(monkeypatch)
    train = tiny[1].train
    tensors, losses, resumed = _component_fit(component, None, train)
    assert resumed == 0
    checkpoint = tmp_path / "fit.pt"
    save = trainer.save_tensors

    def save_then_die(path: Path, state: dict) -> None:
        save(path, state)
        if len(state["history"]) == 2:
            raise Killed

    monkeypatch.setattr(trainer, "save_tensors", save_then_die)
    with pytest.raises(Killed):
        _component_fit(component, checkpoint, train)
    monkeypatch.setattr(trainer, "save_tensors", save)
    again, again_losses, resumed = _component_fit(component, checkpoint, train)
    assert resumed == 2 and again_losses == losses
    assert all(torch.equal(a, b) for a, b in zip(tensors, again, strict=True))
    assert f"resuming from checkpoint {checkpoint} after epoch 2 of 4" in capsys.readouterr().out


def test_an_unusable_fit_checkpoint_is_named_and_the_fit_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from identifiers.quantizers import RQVAE, FitConfig

    _fast_fit_checkpoints(monkeypatch)
    x = torch.nn.functional.normalize(torch.randn(100, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    fit = FitConfig(epochs=2, batch_size=32, lr=1e-3, optimizer="adam", seed=0)
    checkpoint = tmp_path / "fit.pt"
    RQVAE(16, 8, (8,), 2, 4).fit(x, fit, False, checkpoint)  # another latent width
    report = RQVAE(16, 4, (8,), 2, 4).fit(x, fit, False, checkpoint)
    assert report.resumed_from_epoch == 0 and len(report.history) == 2
    assert f"rq-vae: checkpoint {checkpoint} holds weights of another shape; fitting from the start" in \
        capsys.readouterr().out
    letter_like = tmp_path / "regularised.pt"
    RQVAE(16, 4, (8,), 2, 4).fit(x, fit, False, letter_like, extra_loss_fn=lambda model, out, index: {})
    assert not letter_like.exists()  # a fit with an extra loss (LETTER) keeps no checkpoint


def test_a_cached_fit_removes_its_checkpoint_once_the_component_is_saved(tmp_path: Path, tiny,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from identifiers.quantizers import RQVAE, FitConfig, cached_fit
    from identifiers.tiger import TIGER

    _fast_fit_checkpoints(monkeypatch)
    ctx = make_context(TIGER, tiny[0], tmp_path, split=tiny[1])
    x = torch.nn.functional.normalize(torch.randn(100, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    fit = FitConfig(epochs=2, batch_size=32, lr=1e-3, optimizer="adam", seed=0)
    model, seen = RQVAE(16, 4, (8,), 2, 4), []

    def fitting(checkpoint: Path):
        seen.append(checkpoint)
        report = model.fit(x, fit, False, checkpoint)
        assert checkpoint.is_file()
        return report

    cached_fit(ctx, "rqvae", model, {"latent": 4}, fit, (x,), fitting)
    assert seen and seen[0].parent == tmp_path / "checkpoints" and seen[0].name.startswith("rqvae-")
    assert not seen[0].exists() and len(list((tmp_path / "rqvae").glob("*.pt"))) == 1
