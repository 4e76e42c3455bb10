"""One evaluator for every model: full ranking over all items, metrics on all / warm / cold targets.

Models that score every item and models that return a ranked list (beam search) both reduce to the
target's rank, so they share the metric code. Ranks are capped at ``max(ks)``: a capped rank means "not
in the top ``max(ks)``". Score ties are broken by item id (lower id first), deterministically; a NaN score
ranks below every number, and a target scored NaN is ranked last.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from benchmark.batches import HistoryBatch, iterate
from benchmark.metrics import METRICS, metric_value
from benchmark.splits import Examples


class Ranker(Protocol):
    """What the evaluator needs of a model (:class:`recommenders.base.Recommender` is one): ``output`` is
    ``"scores"`` (``score`` gives ``[B, n_items]``, higher is better) or ``"ranking"`` (``rank`` gives ``[B, k]``
    item ids, best first)."""

    output: str
    training: bool

    def score(self, batch: HistoryBatch) -> torch.Tensor: ...

    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> object: ...

    def eval(self) -> object: ...


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target: items scoring higher, plus equal-scoring items with a lower id.

    A NaN score counts as ``-inf``, so a NaN never lifts an item above others; a target whose own score is
    NaN is ranked last.
    """
    nan = scores.isnan()
    scores = scores.masked_fill(nan, float("-inf"))
    target_scores = scores.gather(1, targets[:, None])
    ids = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > target_scores) | ((scores == target_scores) & (ids[None, :] < targets[:, None]))
    ranks = ahead.sum(dim=1)
    return torch.where(nan.gather(1, targets[:, None])[:, 0], torch.full_like(ranks, scores.shape[1] - 1), ranks)


def ranks_from_lists(ranked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each target in its ranked list, or the list length when absent."""
    hits = ranked == targets[:, None]
    found = hits.any(dim=1)
    position = hits.float().argmax(dim=1)
    return torch.where(found, position, torch.full_like(position, ranked.shape[1]))


@dataclass
class EvaluationResult:
    """Per-example ranks (capped at ``max_k``) with users, targets and warm flags, plus timing."""

    users: np.ndarray
    targets: np.ndarray
    ranks: np.ndarray
    warm: np.ndarray
    seconds: float

    def metrics(self, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
        """``{segment: {"recall@5": ..., "ndcg@5": ..., "count": n}}`` for all, warm and cold targets."""
        out = {}
        for segment, mask in (("all", np.ones_like(self.warm)), ("warm", self.warm), ("cold", ~self.warm)):
            ranks = self.ranks[mask]
            values = {f"{m}@{k}": metric_value(f"{m}@{k}", ranks) for m in METRICS for k in ks}
            values["count"] = int(mask.sum())
            out[segment] = values
        return out

    def per_user(self) -> dict[str, list[int]]:
        """Compact per-example record (metric values follow from the ranks)."""
        return {"users": self.users.tolist(), "targets": self.targets.tolist(), "ranks": self.ranks.tolist(),
                "warm": self.warm.astype(int).tolist()}


@torch.no_grad()
def evaluate(model: Ranker, examples: Examples, warm_items: np.ndarray, ks: tuple[int, ...],
             batch_size: int, device: torch.device | str, progress: bool = False,
             desc: str = "evaluate") -> EvaluationResult:
    """Rank all items for every example and collect the target ranks."""
    max_k = max(ks)
    was_training = model.training
    model.eval()
    ranks = []
    start = time.perf_counter()
    batches = iterate(examples, batch_size, device)
    total = (len(examples) + batch_size - 1) // batch_size
    for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        if model.output == "scores":
            rank = ranks_from_scores(model.score(batch).float(), batch.targets)
        else:
            rank = ranks_from_lists(model.rank(batch, max_k), batch.targets)
        ranks.append(rank.clamp_max(max_k).cpu())
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.train(was_training)
    all_ranks = torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)
    return EvaluationResult(users=examples.users, targets=examples.targets, ranks=all_ranks.astype(np.int64),
                            warm=warm_items[examples.targets], seconds=seconds)
