"""Top-K metrics computed from target ranks, for one or several held-out targets per example.

``rank`` is the number of items ranked above a target (0 = first place), i.e. its 0-based position in the
example's ranked list; a target outside the returned list has a rank of at least ``K`` and scores 0.

One target per example: ``ranks`` has shape ``[n]``. Several targets per example (a released split such as
SETRec's): ``ranks`` has shape ``[n, m]``, one row per example, padded with ``NO_TARGET`` where an example
has fewer than ``m`` targets (each row has at least one); every target is relevant and all are scored
against the same ranked list, as SETRec's ``computeTopNAccuracy`` does. With one target both forms give the same values.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

NO_TARGET = -1
"""Padding of a multi-target rank matrix: no target in this cell."""


class Metric(ABC):
    """A per-example top-K metric; the benchmark reports its mean over examples."""

    name: str

    @abstractmethod
    def __call__(self, ranks: np.ndarray, k: int) -> np.ndarray:
        """Per-example values for the 0-based target ``ranks`` (``[n]`` or ``[n, m]``) at cut-off ``k``."""


class Recall(Metric):
    """Recall@K = |targets ∩ top-K| / |targets| = (Σ_t 1[rank_t < K]) / n_targets.

    For one target this is 1[rank < K] (equal to HitRate@K).
    """

    name = "recall"

    def __call__(self, ranks: np.ndarray, k: int) -> np.ndarray:
        ranks = np.asarray(ranks)
        if ranks.ndim == 1:
            return (ranks < k).astype(np.float64)
        present = ranks != NO_TARGET
        return ((ranks < k) & present).sum(axis=1) / present.sum(axis=1)


class NDCG(Metric):
    """NDCG@K = DCG@K / IDCG@K with every target relevant (gain 1):
    DCG@K = Σ_t 1[rank_t < K] / log2(rank_t + 2) and IDCG@K = Σ_{i < min(K, n_targets)} 1 / log2(i + 2).

    For one target IDCG@K = 1, so NDCG@K = 1[rank < K] / log2(rank + 2).
    """

    name = "ndcg"

    def __call__(self, ranks: np.ndarray, k: int) -> np.ndarray:
        ranks = np.asarray(ranks, dtype=np.float64)
        if ranks.ndim == 1:
            return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
        present = ranks != NO_TARGET
        dcg = np.where(present & (ranks < k), 1.0 / np.log2(np.where(present, ranks, 0.0) + 2.0), 0.0).sum(axis=1)
        ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
        return dcg / ideal[np.minimum(present.sum(axis=1), k)]


METRICS: dict[str, Metric] = {m.name: m for m in (Recall(), NDCG())}


def metric_value(name: str, ranks: np.ndarray) -> float:
    """Mean of a metric named like ``ndcg@10`` over the examples of ``ranks`` (0.0 for no examples)."""
    metric, _, k = name.partition("@")
    if len(ranks) == 0:
        return 0.0
    return float(METRICS[metric](ranks, int(k)).mean())
