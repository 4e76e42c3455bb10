"""Evaluation protocols: leave-one-out, global temporal and released (fixed) splits, with warm/cold labels.

Caveats (state them when comparing numbers): every split ranks the target against **all** items, history
items included (``run.candidates: segment`` ranks warm and cold targets within their own segment instead,
see :mod:`benchmark.evaluate`); a target is *warm* when the item occurs in the training interactions, *cold*
otherwise. A fixed split may give an example several targets (:class:`Examples`).
Examples whose history is empty are dropped (no personalised ranking is possible).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.data.dataset import Dataset

PAD = -1


@dataclass(frozen=True)
class Examples:
    """Next-item examples: ``histories[i]`` (left-padded with ``PAD``, most recent last) -> ``targets[i]``.

    ``groups`` is None when every row is its own example (one target each). Otherwise rows with the same
    ``groups`` value (consecutive, numbered ``0..n_examples-1``) are one multi-target example: the same user
    and history, one row per target, evaluated together (:mod:`benchmark.metrics`). ``len`` counts rows.
    """

    users: np.ndarray
    histories: np.ndarray
    targets: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def n_examples(self) -> int:
        """Examples (users with their targets); equals ``len`` when every example has one target."""
        return len(self) if self.groups is None else (int(self.groups[-1]) + 1 if len(self) else 0)

    def subset(self, n: int, seed: int) -> "Examples":
        """A fixed random subset of ``n`` examples, all targets of each (all when ``n`` is 0 or not smaller)."""
        if n <= 0 or n >= self.n_examples:
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(self.n_examples, n, replace=False))
        if self.groups is None:
            return Examples(self.users[chosen], self.histories[chosen], self.targets[chosen])
        index = np.flatnonzero(np.isin(self.groups, chosen))
        groups = np.searchsorted(chosen, self.groups[index])
        return Examples(self.users[index], self.histories[index], self.targets[index], groups)

    def of_users(self, n: int, seed: int) -> "Examples":
        """Every example of a fixed random subset of ``n`` users (all when ``n`` is 0 or not smaller)."""
        users = np.unique(self.users)
        if n <= 0 or n >= len(users):
            return self
        chosen = np.random.default_rng(seed).choice(users, n, replace=False)
        index = np.flatnonzero(np.isin(self.users, chosen))
        if self.groups is None:
            return Examples(self.users[index], self.histories[index], self.targets[index])
        groups = np.unique(self.groups[index], return_inverse=True)[1]
        return Examples(self.users[index], self.histories[index], self.targets[index], groups)


@dataclass(frozen=True)
class TrainData:
    """What identifier fitting and model training may see: training sequences and the item catalogue.

    Built only from training interactions, so nothing from validation or test targets can leak in.
    """

    sequences: list[np.ndarray]
    n_items: int
    max_history: int

    def next_item_examples(self) -> Examples:
        """Every (prefix, next item) pair of the training sequences, prefix truncated to ``max_history``."""
        users, targets, rows = [], [], []
        for user, seq in enumerate(self.sequences):
            for t in range(1, len(seq)):
                users.append(user)
                targets.append(seq[t])
                rows.append(seq[max(0, t - self.max_history):t])
        return Examples(np.asarray(users, dtype=np.int64), pad_left(rows, self.max_history),
                        np.asarray(targets, dtype=np.int64))

    def item_counts(self) -> np.ndarray:
        """Training interactions per item."""
        if not self.sequences:
            return np.zeros(self.n_items, dtype=np.int64)
        return np.bincount(np.concatenate(self.sequences), minlength=self.n_items)


@dataclass(frozen=True)
class Split:
    """A dataset split under one protocol. ``warm[i]`` is True when item ``i`` is in the training data."""

    protocol: str
    train: TrainData
    valid: Examples
    test: Examples
    warm: np.ndarray

    def stats(self) -> dict[str, float]:
        """Split sizes; ``valid_examples`` / ``test_examples`` count targets (rows), and a split with multi-target
        examples adds ``valid_users`` / ``test_users``, the number of examples."""
        grouped = {f"{name}_users": examples.n_examples for name, examples in (("valid", self.valid),
                                                                                ("test", self.test))
                   if examples.groups is not None}
        return {
            "protocol": self.protocol,
            "train_interactions": int(sum(len(s) for s in self.train.sequences)),
            "valid_examples": len(self.valid),
            "test_examples": len(self.test),
            "warm_items": int(self.warm.sum()),
            "cold_valid_share": float(np.mean(~self.warm[self.valid.targets])) if len(self.valid) else 0.0,
            "cold_test_share": float(np.mean(~self.warm[self.test.targets])) if len(self.test) else 0.0,
            **grouped,
        }


class SplitError(ValueError):
    """The dataset cannot be split under the requested protocol."""


def pad_left(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Stack sequences into ``[n, width]`` keeping the last ``width`` items, padding on the left with ``PAD``."""
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[-width:]
        if len(row):
            out[i, width - len(row):] = row
    return out


def leave_one_out(dataset: Dataset, max_history: int) -> Split:
    """Last item of each user is the test target, the one before it the validation target.

    Training sequences are everything before the validation item. Users with fewer than 3 interactions
    contribute only training data.
    """
    sequences = dataset.sequences()
    train, valid, test = [], [], []
    for user, seq in enumerate(sequences):
        if len(seq) < 3:
            train.append(seq)
            continue
        train.append(seq[:-2])
        valid.append((user, seq[:-2], seq[-2]))
        test.append((user, seq[:-1], seq[-1]))
    return _make_split("loo", dataset.n_items, train, valid, test, max_history)


def temporal(dataset: Dataset, max_history: int, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Global temporal split: interactions are cut at the 80% and 90% timestamp quantiles.

    Each validation (test) interaction is an example whose history is the user's earlier interactions of
    any period; training sequences hold only interactions at or before the first cut.
    """
    if not dataset.has_timestamps:
        raise SplitError(f"dataset '{dataset.name}' has no timestamps (order only); the temporal split needs "
                         "them: use --split loo")
    inter = dataset.interactions.sort_values(["timestamp", "user", "position"], kind="stable")
    n = len(inter)
    cut_valid, cut_test = int(round(n * ratios[0])), int(round(n * (ratios[0] + ratios[1])))
    period = np.empty(n, dtype=np.int8)
    period[:cut_valid], period[cut_valid:cut_test], period[cut_test:] = 0, 1, 2
    inter = inter.assign(period=period).sort_values(["user", "position"], kind="stable")
    users, items, periods = inter["user"].to_numpy(), inter["item"].to_numpy(), inter["period"].to_numpy()
    bounds = np.searchsorted(users, np.arange(dataset.n_users + 1))
    train, valid, test = [], [], []
    for user in range(dataset.n_users):
        seq, per = items[bounds[user]:bounds[user + 1]], periods[bounds[user]:bounds[user + 1]]
        train.append(seq[per == 0])
        for t in np.flatnonzero(per > 0):
            if t == 0:
                continue
            (valid if per[t] == 1 else test).append((user, seq[:t], seq[t]))
    return _make_split("temporal", dataset.n_items, train, valid, test, max_history)


def _make_split(protocol: str, n_items: int, train: list[np.ndarray], valid: list, test: list,
                max_history: int) -> Split:
    data = TrainData(sequences=train, n_items=n_items, max_history=max_history)
    warm = data.item_counts() > 0
    return Split(protocol, data, _examples(valid, max_history), _examples(test, max_history), warm)


def _examples(rows: list[tuple[int, np.ndarray, int]], max_history: int) -> Examples:
    return Examples(np.asarray([r[0] for r in rows], dtype=np.int64), pad_left([r[1] for r in rows], max_history),
                    np.asarray([r[2] for r in rows], dtype=np.int64))


def fixed(dataset: Dataset, max_history: int) -> Split:
    """The split a source released (its ``split`` column, e.g. SETRec's), used as is.

    Following SETRec's released code (``utils/data_utils.py``, ``SequentialDataset``): training sequences
    are each user's train interactions; the test example of a user has the train and valid interactions as
    history and **all** of the user's test items as targets. Differences: the validation example takes all of
    the user's valid items as targets (SETRec validates on its first one only), with the train interactions as
    history as in SETRec.
    Several targets per user are scored at once (multi-target Recall/NDCG, :mod:`benchmark.metrics`).
    """
    if not dataset.has_fixed_split:
        raise SplitError(f"dataset '{dataset.name}' has no released split (no split column); use --split loo "
                         "or temporal")
    inter = dataset.interactions.sort_values(["user", "position"], kind="stable")
    users, items, labels = inter["user"].to_numpy(), inter["item"].to_numpy(), inter["split"].to_numpy()
    bounds = np.searchsorted(users, np.arange(dataset.n_users + 1))
    train, valid, test = [], [], []
    for user in range(dataset.n_users):
        seq, label = items[bounds[user]:bounds[user + 1]], labels[bounds[user]:bounds[user + 1]]
        seen = seq[label == "train"]
        train.append(seen)
        held_valid = seq[label == "valid"]
        for rows, history, targets in ((valid, seen, held_valid),
                                       (test, np.concatenate([seen, held_valid]), seq[label == "test"])):
            if len(history) and len(targets):
                rows.append((user, history, targets))
    data = TrainData(sequences=train, n_items=dataset.n_items, max_history=max_history)
    warm = data.item_counts() > 0
    return Split("fixed", data, _grouped_examples(valid, max_history), _grouped_examples(test, max_history), warm)


def _grouped_examples(rows: list[tuple[int, np.ndarray, np.ndarray]], max_history: int) -> Examples:
    """One row per target, grouped by example (see :class:`Examples`)."""
    counts = [len(r[2]) for r in rows]
    group = np.repeat(np.arange(len(rows)), counts).astype(np.int64)
    histories = pad_left([r[1] for r in rows], max_history)
    return Examples(np.asarray([r[0] for r in rows], dtype=np.int64)[group], histories[group],
                    np.concatenate([r[2] for r in rows]).astype(np.int64) if rows else np.zeros(0, dtype=np.int64),
                    group)


SPLITTERS = {"loo": leave_one_out, "temporal": temporal, "fixed": fixed}


def make_split(dataset: Dataset, protocol: str, max_history: int) -> Split:
    """Split ``dataset`` under ``protocol`` (``loo``, ``temporal``, or ``fixed`` for a released split); a split
    without validation or test examples is a :class:`SplitError` naming the reason (it would be scored as 0)."""
    if protocol not in SPLITTERS:
        raise SplitError(f"unknown split '{protocol}'; choose from {', '.join(SPLITTERS)}")
    if dataset.has_fixed_split and protocol != "fixed":
        raise SplitError(f"dataset '{dataset.name}' comes with its released split; use --split fixed, not {protocol}")
    split = SPLITTERS[protocol](dataset, max_history)
    empty = [name for name, examples in (("validation", split.valid), ("test", split.test)) if not len(examples)]
    if empty:
        longest = max((len(s) for s in dataset.sequences()), default=0)
        reason = {"loo": "leave-one-out needs users with at least 3 interactions: raise --k-core or use more data",
                  "temporal": "the temporal split needs users with interactions before and after its cuts: raise "
                              "--k-core or use more data",
                  "fixed": "the released split's file labels no interaction valid / test with a training history "
                           "before it (--k-core does not apply to a released split)"}[protocol]
        raise SplitError(f"dataset '{dataset.name}': the {protocol} split has no {' and no '.join(empty)} examples "
                         f"({dataset.n_users:,} users, {len(dataset.interactions):,} interactions, longest history "
                         f"{longest}); {reason}")
    return split
