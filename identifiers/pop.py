"""Popularity baseline: every user gets the items most often interacted with in the training split."""
from __future__ import annotations

import torch

from benchmark.batches import HistoryBatch
from benchmark.splits import TrainData
from identifiers.base import BaselineScheme
from identifiers.registry import register
from recommenders.base import Recommender


class Popularity(Recommender):
    """Scores each item by its training interaction count (ties broken by the evaluator's fixed random item order)."""

    trainable = False

    def __init__(self, n_items: int) -> None:
        super().__init__(n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def prepare(self, data: TrainData) -> None:
        self.counts.copy_(torch.as_tensor(data.item_counts(), dtype=torch.float32))

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return self.counts[None].expand(len(batch.targets), -1)


@register("pop")
class Pop(BaselineScheme):
    """Most-popular items; the floor every scheme should clear."""

    citation = "Popularity ranking (standard non-personalised baseline)."
    uses_backbone = False

    def recommender(self, data: TrainData) -> Recommender:
        return Popularity(data.n_items)
