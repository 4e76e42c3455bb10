"""Batches of examples on a device: what every model reads and the evaluator iterates over."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from benchmark.splits import PAD, Examples


@dataclass
class HistoryBatch:
    """A batch of examples on a device: ``items[b]`` left-padded (pads are 0 where ``mask`` is False).

    ``histories`` and ``host_users`` are the same histories and users on the host (NumPy, ``PAD`` in the
    padding) when the batch was built from examples: what a model needs to know of the batch's shape (e.g. how
    many positions are real) is read from them without waiting for the device. None for a batch made on the
    device (then such models read the device tensors, which makes the host wait for a GPU). ``sizes``: the
    host-side sizes a model's loss reads from them (``Recommender.host_sizes``), filled in before the loss runs
    under ``torch.compile`` so that the compiled graph never traces NumPy; empty otherwise (the model then
    computes them itself).
    """

    users: torch.Tensor
    items: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor
    histories: np.ndarray | None = None
    host_users: np.ndarray | None = None
    sizes: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def from_examples(cls, examples: Examples, index: np.ndarray, device: torch.device | str) -> "HistoryBatch":
        """The examples ``index``, copied to ``device`` from page-locked memory without blocking on a GPU."""
        histories = examples.histories[index]
        hist = to_device(histories, device)
        mask = hist != PAD
        return cls(users=to_device(examples.users[index], device), items=hist.clamp_min(0), mask=mask,
                   targets=to_device(examples.targets[index], device), histories=histories,
                   host_users=examples.users[index])

    def real_count(self, last: int) -> int | None:
        """The True entries of ``mask[:, -last:]``, counted on the host (None when :attr:`histories` is unknown)."""
        return None if self.histories is None else int(np.count_nonzero(self.histories[:, -last:] != PAD))

    def real_positions(self, last: int, count: int | None) -> torch.Tensor:
        """Flat indices into ``mask[:, -last:]`` of its True entries, row by row (the order of boolean indexing);
        without a device sync when their ``count`` (:meth:`real_count`) is given (it sizes ``nonzero_static``)."""
        mask = self.mask[:, -last:].flatten()
        if count is None:
            return mask.nonzero().flatten()
        return torch.nonzero_static(mask, size=count).flatten()

    def padded_positions(self, last: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`real_positions` padded to ``size`` entries (at least their count), so that the shape is ``size``
        whatever the batch: the positions, the padding ones 0 (a valid index), and which entries are real."""
        positions = torch.nonzero_static(self.mask[:, -last:].flatten(), size=size, fill_value=-1).flatten()
        return positions.clamp_min(0), positions >= 0

    def loss_positions(self, last: int, sizes: dict[str, int | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The positions among ``mask[:, -last:]`` a loss gathers, given a model's sizes: for a compiled loss's
        ``padded_real``, :meth:`padded_positions` and which of them are real; else :meth:`real_positions` of
        ``real``, and None (all are)."""
        if "padded_real" in sizes:
            return self.padded_positions(last, sizes["padded_real"])
        return self.real_positions(last, sizes["real"]), None


def to_device(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``array`` as a tensor on ``device``; to a GPU through page-locked memory, asynchronously."""
    tensor = torch.as_tensor(np.ascontiguousarray(array))
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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
