"""One evaluator for every model: full ranking over all items, metrics on all / warm / cold targets.

Models that score every item and models that return a ranked list (beam search) both reduce to the
target's rank, so they share the metric code. Ranks are capped at ``max(ks)``: a capped rank means "not
in the top ``max(ks)``". Score ties are broken by a fixed random order of the items (:func:`tie_priority`), not
by item id: ids follow an item's first appearance in the data, so a lower id tends to mean a more popular, warm
item, and breaking ties by id would hand such items every tie (a model scoring every item alike would then
beat chance several times over). A NaN score ranks below every number, and a target scored NaN is ranked
last.

An example with several targets (:class:`~benchmark.splits.Examples` ``groups``) is scored once; each
target's rank is its position in that one ranked list, and the metrics score all targets together
(:mod:`benchmark.metrics`). The warm (cold) metrics keep each example's warm (cold) targets and the examples
that have any.

``candidates`` (``run.candidates``): ``all`` ranks every target among all items; ``segment`` also ranks each
warm target among warm items only and each cold target among cold items only, and the warm / cold metrics use
those ranks, as SETRec's evaluation does (``inference_t5.py`` masks the other segment's scores); the "all"
metrics stay full ranking. Caveat: a ranking model (beam search) returns ``max(ks)`` items of the whole
catalogue, so its segment rank is the target's position among that list's items of its segment, and a target
not in the list is a miss even when fewer than ``K`` items of its segment were listed (a lower bound).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from benchmark.batches import HistoryBatch, iterate
from benchmark.metrics import METRICS, NO_TARGET, metric_value
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

CANDIDATES = ("all", "segment")
TIE_SEED = 20260
"""Seed of the item order that breaks score ties (:func:`tie_priority`); fixed, so every run and scheme breaks
ties alike."""


def tie_priority(n_items: int, device: torch.device | str) -> torch.Tensor:
    """``[n_items]`` each item's place in the order that breaks score ties (lower wins): a random permutation
    drawn with :data:`TIE_SEED`, unrelated to item ids and hence to popularity."""
    generator = torch.Generator().manual_seed(TIE_SEED)
    return torch.randperm(n_items, generator=generator).to(device)


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor | None = None,
                      priority: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each target: items scoring higher, plus equal-scoring items earlier in the tie order
    ``priority`` (:func:`tie_priority`, made here when not given).

    A NaN score counts as ``-inf``, so a NaN never lifts an item above others; a target whose own score is
    NaN is ranked last. ``candidates`` (bool, ``[batch, n_items]``) restricts the items counted, and "last"
    then means last among the candidates.
    """
    nan = scores.isnan()
    scores = scores.masked_fill(nan, float("-inf"))
    target_scores = scores.gather(1, targets[:, None])
    priority = tie_priority(scores.shape[1], scores.device) if priority is None else priority
    ahead = (scores > target_scores) | ((scores == target_scores) & (priority[None, :] < priority[targets][:, None]))
    if candidates is None:
        ranks = ahead.sum(dim=1)
        last = torch.full_like(ranks, scores.shape[1] - 1)
    else:
        ranks = (ahead & candidates).sum(dim=1)
        last = candidates.sum(dim=1) - 1
    return torch.where(nan.gather(1, targets[:, None])[:, 0], last, ranks)


def ranks_from_lists(ranked: torch.Tensor, targets: torch.Tensor,
                     candidates: torch.Tensor | None = None) -> torch.Tensor:
    """0-based position of each target in its ranked list, or the list length when absent.

    ``candidates`` (bool, same shape as ``ranked``) keeps only some list entries: the position is then
    counted among those.
    """
    hits = ranked == targets[:, None]
    found = hits.any(dim=1)
    position = hits.float().argmax(dim=1)
    if candidates is not None:
        before = torch.cumsum(candidates.long(), dim=1) - candidates.long()
        position = before.gather(1, position[:, None])[:, 0]
    return torch.where(found, position, torch.full_like(position, ranked.shape[1]))


@dataclass
class EvaluationResult:
    """Per-target ranks (capped at ``max_k``) with users, targets and warm flags, plus timing.

    One row per target; ``groups`` (None when every example has one target) maps rows to examples as in
    :class:`~benchmark.splits.Examples`. ``segment_ranks`` (``candidates: segment`` only) rank each target
    among the items of its own segment (warm or cold).
    """

    users: np.ndarray
    targets: np.ndarray
    ranks: np.ndarray
    warm: np.ndarray
    seconds: float
    groups: np.ndarray | None = None
    segment_ranks: np.ndarray | None = None

    def value(self, name: str) -> float:
        """Metric ``name`` (e.g. ``ndcg@10``) over all examples, a multi-target example scored on all its targets
        at once as in :meth:`metrics`: the "all" value a record reports, and what selection compares."""
        return metric_value(name, self.ranks if self.groups is None else _rank_matrix(self.ranks, self.groups))

    def metrics(self, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
        """``{segment: {"recall@5": ..., "ndcg@5": ..., "count": n}}`` for all, warm and cold targets;
        ``count`` is the number of examples (with at least one target of the segment)."""
        out = {}
        segment_ranks = self.ranks if self.segment_ranks is None else self.segment_ranks
        for segment, mask, ranks in (("all", np.ones_like(self.warm), self.ranks), ("warm", self.warm, segment_ranks),
                                     ("cold", ~self.warm, segment_ranks)):
            ranks = ranks[mask] if self.groups is None else _rank_matrix(ranks[mask], self.groups[mask])
            values = {f"{m}@{k}": metric_value(f"{m}@{k}", ranks) for m in METRICS for k in ks}
            values["count"] = int(len(ranks))
            out[segment] = values
        return out

    def per_user(self, **per_target: np.ndarray) -> dict[str, list]:
        """Compact per-example record (metric values follow from the ranks): one entry per example, and for
        multi-target examples lists of their targets, ranks and warm flags; ``per_target`` adds columns aligned
        with :attr:`targets` (e.g. each target's training count), grouped the same way."""
        columns = {"targets": self.targets, "ranks": self.ranks, "warm": self.warm.astype(int), **per_target}
        if self.segment_ranks is not None:
            columns["segment_ranks"] = self.segment_ranks
        if self.groups is None:
            return {"users": self.users.tolist(), **{name: value.tolist() for name, value in columns.items()}}
        starts = np.flatnonzero(np.r_[True, self.groups[1:] != self.groups[:-1]]) if len(self.groups) else []
        return {"users": self.users[starts].tolist(),
                **{name: [part.tolist() for part in np.split(value, starts[1:])] if len(starts) else []
                   for name, value in columns.items()}}


def _rank_matrix(ranks: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[n_examples, max_targets]`` ranks padded with ``NO_TARGET``, one row per group present."""
    if len(ranks) == 0:
        return np.zeros((0, 1), dtype=np.int64)
    _, row, counts = np.unique(groups, return_inverse=True, return_counts=True)
    column = np.arange(len(groups)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.full((len(counts), counts.max()), NO_TARGET, dtype=np.int64)
    out[row, column] = ranks
    return out


def _target_matrix(examples: Examples) -> tuple[Examples, np.ndarray, np.ndarray]:
    """One input row per example, its targets as ``[n_examples, max_targets]`` (padded with ``NO_TARGET``),
    and each target row's ``(example, column)`` flat index into that matrix."""
    if examples.groups is None:
        return examples, examples.targets[:, None], np.arange(len(examples))
    groups = examples.groups
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    counts = np.diff(np.r_[starts, len(groups)])
    width = int(counts.max())
    column = np.arange(len(groups)) - np.repeat(starts, counts)
    matrix = np.full((len(starts), width), NO_TARGET, dtype=np.int64)
    matrix[groups, column] = examples.targets
    inputs = Examples(examples.users[starts], examples.histories[starts], examples.targets[starts])
    return inputs, matrix, groups * width + column


@torch.no_grad()
def evaluate(model: Ranker, examples: Examples, warm_items: np.ndarray, ks: tuple[int, ...],
             batch_size: int, device: torch.device | str, progress: bool = False,
             desc: str = "evaluate", candidates: str = "all") -> EvaluationResult:
    """Rank all items for every example and collect the target ranks (see the module docstring)."""
    if candidates not in CANDIDATES:
        raise ValueError(f"unknown candidates '{candidates}'; choose from {', '.join(CANDIDATES)}")
    max_k = max(ks)
    was_training = model.training
    model.eval()
    full, segment = [], []
    start = time.perf_counter()
    if len(examples):
        inputs, matrix, flat = _target_matrix(examples)
    else:
        inputs, matrix, flat = examples, np.zeros((0, 1), dtype=np.int64), np.zeros(0, dtype=np.int64)
    warm = torch.as_tensor(warm_items, device=device)
    priority = tie_priority(len(warm_items), device)
    batches = iterate(inputs, batch_size, device)
    total = (len(inputs) + batch_size - 1) // batch_size
    offset = 0
    for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        n = len(batch.targets)
        targets = torch.as_tensor(matrix[offset:offset + n], device=device)
        offset += n
        if model.output == "scores":
            scores, ranked = model.score(batch).float(), None
        else:
            scores, ranked = None, model.rank(batch, max_k)
        full_columns, segment_columns = [], []
        for column in targets.T:
            column = torch.where(column != NO_TARGET, column, batch.targets)
            if ranked is None:
                full_columns.append(ranks_from_scores(scores, column, priority=priority))
            else:
                full_columns.append(ranks_from_lists(ranked, column))
            if candidates == "segment" and ranked is None:
                same = warm[None, :] == warm[column][:, None]
                segment_columns.append(ranks_from_scores(scores, column, same, priority))
            elif candidates == "segment":
                same = (warm[ranked.clamp_min(0)] == warm[column][:, None]) & (ranked >= 0)
                segment_columns.append(ranks_from_lists(ranked, column, same))
        full.append(torch.stack(full_columns, dim=1).clamp_max(max_k).cpu())
        if candidates == "segment":
            segment.append(torch.stack(segment_columns, dim=1).clamp_max(max_k).cpu())
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.train(was_training)
    width = matrix.shape[1]
    ranks = _flat_ranks(full, width)[flat]
    segment_ranks = _flat_ranks(segment, width)[flat] if candidates == "segment" else None
    return EvaluationResult(users=examples.users, targets=examples.targets, ranks=ranks,
                            warm=warm_items[examples.targets], seconds=seconds, groups=examples.groups,
                            segment_ranks=segment_ranks)


def _flat_ranks(parts: list[torch.Tensor], width: int) -> np.ndarray:
    return (torch.cat(parts).numpy() if parts else np.zeros((0, width), dtype=np.int64)).reshape(-1).astype(np.int64)
