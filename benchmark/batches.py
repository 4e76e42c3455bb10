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
            rng: np.random.Generator | None = None) -> Iterator[HistoryBatch]:
    """Batches over ``examples``, shuffled when ``rng`` is given."""
    order = rng.permutation(len(examples)) if rng is not None else np.arange(len(examples))
    for start in range(0, len(order), batch_size):
        yield HistoryBatch.from_examples(examples, order[start:start + batch_size], device)
