"""Batches of examples on a device: what every model reads and the evaluator iterates over."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from benchmark.splits import PAD, Examples


@dataclass
class HistoryBatch:
    """A batch of examples on a device: ``items[b]`` left-padded (pads are 0 where ``mask`` is False)."""

    users: torch.Tensor
    items: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def from_examples(cls, examples: Examples, index: np.ndarray, device: torch.device | str) -> "HistoryBatch":
        hist = torch.as_tensor(examples.histories[index], device=device)
        mask = hist != PAD
        return cls(users=torch.as_tensor(examples.users[index], device=device),
                   items=hist.clamp_min(0), mask=mask,
                   targets=torch.as_tensor(examples.targets[index], device=device))


def iterate(examples: Examples, batch_size: int, device: torch.device | str,
            rng: np.random.Generator | None = None, bucketing: bool = False) -> Iterator[HistoryBatch]:
    """Batches over ``examples``, shuffled when ``rng`` is given; with ``bucketing`` (and ``rng``) each batch is
    drawn from one length bucket (:func:`bucketed_batches`)."""
    if bucketing and rng is not None:
        for index in bucketed_batches(history_lengths(examples), batch_size, rng):
            yield HistoryBatch.from_examples(examples, index, device)
        return
    order = rng.permutation(len(examples)) if rng is not None else np.arange(len(examples))
    for start in range(0, len(order), batch_size):
        yield HistoryBatch.from_examples(examples, order[start:start + batch_size], device)


def history_lengths(examples: Examples) -> np.ndarray:
    """Real (non-pad) items of each example's history."""
    return (examples.histories != PAD).sum(axis=1)


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Length-bucketed batches of the examples with history ``lengths``: a random permutation (so examples of one
    length come in random order) stably sorted by length, cut into consecutive batches of ``batch_size`` (the
    shortest examples form the one smaller batch), whose order is shuffled. Every batch then spans one or two
    adjacent lengths, so a model that trims its input to the batch's longest history pads little; the draws
    come from ``rng`` only, so a seeded generator gives the same batches, and a restored one resumes them."""
    order = rng.permutation(len(lengths))
    order = order[np.argsort(-lengths[order], kind="stable")]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
