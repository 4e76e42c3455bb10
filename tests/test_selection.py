"""Cheaper model selection (``train.eval_every``, ``train.valid_users``) and length-bucketed batches
(``train.bucketing``): their place in the config hash and what they do in training (their range checks are in
test_runner_cli.py with every other key's)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchmark.batches import bucketed_batches, history_lengths, iterate
from benchmark.config import TrainConfig, resolve
from benchmark.data.dataset import Dataset
from benchmark.evaluate import EvaluationResult
from benchmark.splits import make_split
from identifiers.registry import get_scheme
from recommenders import trainer
from recommenders.sasrec import SASRec, SASRecParams

pytestmark = pytest.mark.usefixtures("single_thread")
NEW_KEYS = {"eval_every": 3, "valid_users": 40, "bucketing": True}


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_off_values_stay_out_of_the_hash_and_others_enter_it(profile: str) -> None:
    scheme = get_scheme("tiger")
    for key, value in NEW_KEYS.items():
        off = resolve("synthetic", scheme, None, profile, {"train": {key: getattr(TrainConfig, key)}})
        changed = resolve("synthetic", scheme, None, profile, {"train": {key: value}})
        assert key not in off.to_dict()["train"] and changed.to_dict()["train"][key] == value
        assert changed.hash() != off.hash()


def _tiny_sasrec(n_items: int) -> SASRec:
    torch.manual_seed(0)
    return SASRec(n_items, 10, SASRecParams(hidden=16, layers=1))


def _cfg(**changes: object) -> TrainConfig:
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    return dataclasses.replace(cfg, **{"max_batches": 2, **changes})


def test_eval_every_validates_every_nth_and_the_last_epoch(small_synthetic: Dataset) -> None:
    split = make_split(small_synthetic, "loo", 10)
    seen: list[int] = []
    report = trainer.fit(_tiny_sasrec(split.train.n_items), split.train, split.valid, split.warm,
                         _cfg(epochs=5, patience=5, eval_every=2), (10,), 256, torch.device("cpu"), 0,
                         progress=False, on_epoch=lambda epoch, value: seen.append(epoch))
    assert seen == [2, 4, 5] and report.epochs_run == 5 and report.best_epoch in seen
    assert [sorted(entry) for entry in report.curve] == [["epoch", "loss"], ["epoch", "loss", "ndcg@10"]] * 2 + [
        ["epoch", "loss", "ndcg@10"]]


def test_patience_counts_validations_not_epochs(small_synthetic: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    split = make_split(small_synthetic, "loo", 10)
    monkeypatch.setattr(EvaluationResult, "value", lambda self, metric: 0.5)  # no validation improves on the first
    report = trainer.fit(_tiny_sasrec(split.train.n_items), split.train, split.valid, split.warm,
                         _cfg(epochs=20, patience=2, eval_every=3), (10,), 256, torch.device("cpu"), 0,
                         progress=False)
    assert (report.epochs_run, report.best_epoch) == (9, 3)


def test_valid_users_selects_on_every_example_of_a_fixed_user_subset(small_synthetic: Dataset) -> None:
    split = make_split(small_synthetic, "loo", 10)
    chosen = trainer.selection_examples(split.valid, _cfg(valid_users=30, max_valid_examples=0), 7)
    assert len(np.unique(chosen.users)) == 30 == len(chosen)
    again = trainer.selection_examples(split.valid, _cfg(valid_users=30, max_valid_examples=0), 7)
    assert np.array_equal(chosen.users, again.users)
    capped = trainer.selection_examples(split.valid, _cfg(valid_users=30, max_valid_examples=10), 7)
    assert len(capped) == 10 and set(capped.users) <= set(chosen.users)
    every = trainer.selection_examples(split.valid, _cfg(valid_users=0, max_valid_examples=25), 7)
    assert np.array_equal(every.users, split.valid.subset(25, 7).users)  # off: the selection of before


def test_bucketed_batches_cover_every_example_once_with_little_padding(small_synthetic: Dataset) -> None:
    examples = make_split(small_synthetic, "loo", 10).train.next_item_examples()
    lengths = history_lengths(examples)
    batches = bucketed_batches(lengths, 32, np.random.default_rng(3))
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
    assert sorted(len(b) for b in batches)[1:] == [32] * (len(batches) - 1)
    ranges = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    assert all(high <= low for (_, high), (low, _) in zip(ranges, ranges[1:]))  # length ranges never interleave
    plain = np.random.default_rng(3).permutation(len(lengths))
    plain_batches = [plain[s:s + 32] for s in range(0, len(plain), 32)]

    def padded(index_batches: list[np.ndarray]) -> int:
        return sum(len(b) * int(lengths[b].max()) for b in index_batches)

    assert padded(batches) < 0.8 * padded(plain_batches)
    again = bucketed_batches(lengths, 32, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = bucketed_batches(lengths, 32, np.random.default_rng(4))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))


def test_iterate_draws_bucketed_batches_from_the_generator_only(small_synthetic: Dataset) -> None:
    examples = make_split(small_synthetic, "loo", 10).train.next_item_examples()
    rng = np.random.default_rng(5)
    first = [batch.targets.tolist() for batch in iterate(examples, 16, "cpu", rng, bucketing=True)]
    state = rng.bit_generator.state
    second = [batch.targets.tolist() for batch in iterate(examples, 16, "cpu", rng, bucketing=True)]
    rng.bit_generator.state = state
    assert [batch.targets.tolist() for batch in iterate(examples, 16, "cpu", rng, bucketing=True)] == second
    assert first != second and sorted(sum(first, [])) == sorted(examples.targets.tolist())
    plain = [batch.targets.tolist() for batch in iterate(examples, 16, "cpu", np.random.default_rng(5))]
    order = np.random.default_rng(5).permutation(len(examples))
    assert plain == [examples.targets[order[s:s + 16]].tolist() for s in range(0, len(order), 16)]
