"""The recommender contract shared by baselines and all three identifier paradigms."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from benchmark.splits import PAD, Examples, Split, TrainData


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


class Recommender(nn.Module):
    """A model that ranks all ``n_items`` items for a user history.

    Subclasses set ``output`` to ``"scores"`` and implement :meth:`score` (one score per item; the
    evaluator ranks them) or to ``"ranking"`` and implement :meth:`rank` (a top-K list, e.g. beam search).
    Trainable models implement :meth:`loss`; ``trainable = False`` models are only fitted in :meth:`prepare`.
    """

    output: str = "scores"
    trainable: bool = True

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items

    def prepare(self, data: TrainData) -> None:
        """Fit anything that is not learned by gradient descent (default: nothing)."""

    def training_examples(self, data: TrainData) -> Examples:
        """Examples for one epoch (default: every next-item prefix of the training sequences)."""
        return data.next_item_examples()

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not trainable by gradient descent")

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, n_items]`` scores, higher is better."""
        raise NotImplementedError

    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        """``[B, k]`` item ids, best first; -1 marks an empty slot."""
        return torch.topk(self.score(batch), min(k, self.n_items), dim=1).indices

    def reset_inference_statistics(self) -> None:
        """Forget what :meth:`inference_statistics` has counted so far (default: nothing is counted)."""

    def inference_statistics(self) -> dict[str, Any]:
        """What ranking did since the last reset, for the run record (e.g. invalid generations)."""
        return {}

    def select_on_validation(self, split: Split, evaluate_fn: Any) -> dict[str, Any]:
        """Tune inference-time knobs on validation after training (default: none); returns what it chose."""
        return {}
