"""Leave-one-out and temporal splits, warm/cold labels, and the no-leakage guarantees."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.splits import PAD, SplitError, leave_one_out, make_split, temporal
from tests.conftest import make_dataset


def _raw(dataset, items) -> list[str]:
    return [dataset.items["raw_id"][i] for i in items if i != PAD]


def test_leave_one_out_protocol() -> None:
    ds = make_dataset({"u1": ["a", "b", "c", "d"], "u2": ["b", "c"], "u3": ["c", "a", "e"]})
    split = leave_one_out(ds, max_history=2)
    train = {ds.user_ids[u]: _raw(ds, s) for u, s in enumerate(split.train.sequences)}
    assert train == {"u1": ["a", "b"], "u2": ["b", "c"], "u3": ["c"]}
    assert _raw(ds, split.valid.targets) == ["c", "a"]
    assert _raw(ds, split.test.targets) == ["d", "e"]
    assert _raw(ds, split.test.histories[0]) == ["b", "c"]  # truncated to max_history, most recent last
    assert split.test.histories.shape == (2, 2)
    assert not split.warm[ds.items.index[ds.items.raw_id == "e"][0]]
    assert split.stats()["cold_test_share"] == 1.0  # d and e never occur in training
    assert split.stats()["cold_valid_share"] == 0.0


def test_temporal_protocol_cuts_globally_by_time() -> None:
    seqs = {"u1": ["a", "b", "c", "d", "e"], "u2": ["a", "b", "c", "f", "g"]}
    times = {"u1": [1, 2, 3, 4, 19], "u2": [5, 6, 7, 8, 20]}
    ds = make_dataset(seqs, times)
    split = temporal(ds, max_history=10)
    # 10 interactions: 8 train (t <= 8), 1 valid (t=19), 1 test (t=20)
    assert sum(len(s) for s in split.train.sequences) == 8
    assert _raw(ds, split.valid.targets) == ["e"]
    assert _raw(ds, split.test.targets) == ["g"]
    assert _raw(ds, split.test.histories[0]) == ["a", "b", "c", "f"]
    assert not split.warm[split.test.targets].any()


def test_temporal_requires_timestamps() -> None:
    ds = make_dataset({"u1": ["a", "b", "c"]})
    with pytest.raises(SplitError, match="no timestamps"):
        temporal(ds, max_history=5)
    with pytest.raises(SplitError, match="choose from"):
        make_split(ds, "random", 5)


@pytest.mark.parametrize("protocol", ["loo", "temporal"])
def test_nothing_from_valid_or_test_reaches_training(small_synthetic, protocol: str) -> None:
    split = make_split(small_synthetic, protocol, max_history=20)
    seqs = small_synthetic.sequences()
    inter = small_synthetic.interactions
    for examples in (split.valid, split.test):
        for user, target, hist in zip(examples.users, examples.targets, examples.histories):
            train = split.train.sequences[user]
            n_hist = int((hist != PAD).sum())
            full = seqs[user]
            # the target's position in the user's sequence is after every training interaction
            position = len(full) - 1 - np.flatnonzero(full[::-1] == target)[0]
            assert position >= len(train)
            assert full[position] == target
            assert n_hist <= position
    counts = np.zeros(small_synthetic.n_items, dtype=int)
    for s in split.train.sequences:
        np.add.at(counts, s, 1)
    assert (split.train.item_counts() == counts).all()
    assert (split.warm == (counts > 0)).all()
    if protocol == "temporal":
        cut = np.sort(inter["timestamp"].to_numpy())[int(round(0.8 * len(inter))) - 1]
        train_times = [inter[(inter.user == u)].sort_values("position").timestamp.to_numpy()[:len(s)]
                       for u, s in enumerate(split.train.sequences)]
        assert max(t.max() for t in train_times if len(t)) <= cut
        assert split.stats()["cold_test_share"] > 0


def test_training_examples_come_from_training_sequences_only(small_synthetic) -> None:
    split = make_split(small_synthetic, "loo", max_history=5)
    examples = split.train.next_item_examples()
    assert len(examples) == sum(max(0, len(s) - 1) for s in split.train.sequences)
    for user, hist, target in zip(examples.users[:50], examples.histories[:50], examples.targets[:50]):
        seq = list(split.train.sequences[user])
        real = [int(i) for i in hist if i != PAD]
        assert target in seq and real == seq[seq.index(target) - len(real):seq.index(target)]
