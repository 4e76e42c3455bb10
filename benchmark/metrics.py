"""Top-K metrics for one held-out target per example, computed from the target's 0-based rank.

``rank`` is the number of items ranked above the target (0 = first place); a target outside the
returned list has a rank of at least ``K`` and scores 0.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Metric(ABC):
    """A per-example top-K metric; the benchmark reports its mean over examples."""

    name: str

    @abstractmethod
    def __call__(self, ranks: np.ndarray, k: int) -> np.ndarray:
        """Per-example values for the 0-based target ``ranks`` at cut-off ``k``."""


class Recall(Metric):
    """Recall@K = |{target} ∩ top-K| / |{target}| = 1[rank < K] (equal to HitRate@K for one target)."""

    name = "recall"

    def __call__(self, ranks: np.ndarray, k: int) -> np.ndarray:
        return (np.asarray(ranks) < k).astype(np.float64)


class NDCG(Metric):
    """NDCG@K = DCG@K / IDCG@K = 1[rank < K] / log2(rank + 2), since IDCG@K = 1 for a single target."""

    name = "ndcg"

    def __call__(self, ranks: np.ndarray, k: int) -> np.ndarray:
        ranks = np.asarray(ranks, dtype=np.float64)
        return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


METRICS: dict[str, Metric] = {m.name: m for m in (Recall(), NDCG())}


def metric_value(name: str, ranks: np.ndarray) -> float:
    """Mean of a metric named like ``ndcg@10`` over ``ranks`` (0.0 for no examples)."""
    metric, _, k = name.partition("@")
    if len(ranks) == 0:
        return 0.0
    return float(METRICS[metric](ranks, int(k)).mean())
