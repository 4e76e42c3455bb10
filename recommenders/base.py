"""The recommender contract shared by baselines and all three identifier paradigms."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from benchmark.batches import HistoryBatch
from benchmark.evaluate import EvaluationResult
from benchmark.splits import Examples, TrainData

IGNORE_INDEX = -100
"""Target of a position no loss term counts (``F.cross_entropy``'s ``ignore_index``)."""
REAL_BUCKET = 256
"""Counts of real positions a compiled loss sees are multiples of this (:meth:`Recommender.compiled_sizes`)."""


def rounded_up(value: int, step: int, most: int) -> int:
    """``value`` rounded up to a multiple of ``step``, but at most ``most`` (or ``value`` itself if larger)."""
    return min(-(-value // step) * step, max(value, most))


def padded_real_sizes(batch: HistoryBatch, last: int) -> dict[str, int | None]:
    """A compiled loss's sizes for the real positions among the last ``last`` history columns
    (:meth:`Recommender.compiled_sizes`): ``padded_real``, their count rounded up to a multiple of
    :data:`REAL_BUCKET`, at most every such position; ``real: None`` for a batch without host-side histories."""
    count = batch.real_count(last)
    if count is None:
        return {"real": None}
    return {"padded_real": rounded_up(count, REAL_BUCKET, len(batch.mask) * min(last, batch.mask.shape[1]))}


def masked_mean(values: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` over the entries ``kept`` marks (all when None), without a host-device sync."""
    if kept is None:
        return values.mean()
    return (values * kept).sum() / kept.sum()


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

    def host_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """The sizes :meth:`loss` needs that the host knows from ``batch.histories`` without waiting for the
        device (default: none). A compiled training loss gets them precomputed in ``batch.sizes``, so that
        ``torch.compile`` never traces the NumPy that computes them (that would break the graph)."""
        return {}

    def compiled_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """The sizes a compiled training loss is given (:func:`recommenders.trainer.compiled_loss`): the
        :meth:`host_sizes`, those that set a tensor's shape rounded up to few values (:func:`rounded_up`; a width
        that only adds masked padding, a count of real positions padded with masked ones), so that the loss
        compiles to, and on CUDA is recorded as, a graph for each of few shapes: a size that changed with every
        batch would be a new recording almost every step (default: the host sizes unchanged)."""
        return self.host_sizes(batch)

    def sizes_of(self, batch: HistoryBatch) -> dict[str, int | None]:
        """:meth:`host_sizes` of ``batch``: those it carries, else computed now."""
        return batch.sizes or self.host_sizes(batch)

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

    def identifier_statistics(self) -> dict[str, Any]:
        """Statistics of the identifiers that only the trained model can tell (e.g. STORE's text-to-token
        accuracy), added to the record's identifier statistics after training (default: none)."""
        return {}

    def select_on_validation(self, evaluate_valid: Callable[[Recommender], EvaluationResult]) -> dict[str, Any]:
        """Tune inference-time knobs after training (default: none); returns what it chose. ``evaluate_valid``
        ranks validation examples only (test examples never reach a model before its final evaluation)."""
        return {}


def select_on_grid(grid: Iterable[float], apply: Callable[[float], Recommender],
                   evaluate_valid: Callable[[Recommender], EvaluationResult],
                   metric: str) -> tuple[float, dict[str, float]]:
    """An inference-time knob chosen on validation: the first value of ``grid`` (in grid order) whose model
    ``apply(value)`` (the recommender with the knob set to it) scores best by ``metric``, and every value's score,
    keyed by the value as text (as records store it)."""
    values: dict[float, float] = {}
    best = None
    for value in map(float, grid):
        values[value] = evaluate_valid(apply(value)).value(metric)
        if best is None or values[value] > values[best]:
            best = value
    return best, {str(value): score for value, score in values.items()}
