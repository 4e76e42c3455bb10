"""Metrics and the evaluator against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.batches import HistoryBatch
from benchmark.evaluate import EvaluationResult, evaluate, ranks_from_lists, ranks_from_scores
from benchmark.metrics import NDCG, Recall, metric_value
from benchmark.splits import PAD, Examples
from recommenders.base import Recommender


def test_recall_is_hit_within_k() -> None:
    assert Recall()(np.array([0, 4, 5, 20]), 5).tolist() == [1, 1, 0, 0]


def test_ndcg_hand_computed() -> None:
    values = NDCG()(np.array([0, 1, 2, 9, 10]), 10)
    expected = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(11), 0.0]
    assert values == pytest.approx(expected)


def test_metric_value_means_and_empty() -> None:
    assert metric_value("recall@2", np.array([0, 1, 2, 3])) == 0.5
    assert metric_value("ndcg@10", np.array([], dtype=int)) == 0.0


def test_ranks_from_scores_breaks_ties_by_item_id() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    assert ranks_from_scores(scores, torch.tensor([2, 3])).tolist() == [1, 3]
    assert ranks_from_scores(scores, torch.tensor([3, 0])).tolist() == [2, 0]


def test_nan_scores_never_lift_an_item_and_a_nan_target_ranks_last() -> None:
    nan = float("nan")
    scores = torch.tensor([[nan, nan, nan, nan], [nan, 0.2, 0.9, nan], [0.5, nan, 0.1, 0.7]])
    assert ranks_from_scores(scores, torch.tensor([0, 1, 2])).tolist() == [3, 1, 2]
    assert ranks_from_scores(scores, torch.tensor([3, 3, 3])).tolist() == [3, 3, 0]


def test_ranks_from_lists_absent_is_list_length() -> None:
    ranked = torch.tensor([[5, 3, 1], [2, 0, -1]])
    assert ranks_from_lists(ranked, torch.tensor([1, 7])).tolist() == [2, 3]


class _Fixed(Recommender):
    """Scores item i as -|i - last history item - 1|: the next id is always first."""

    trainable = False

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        ids = torch.arange(self.n_items)[None].float()
        return -(ids - batch.items[:, -1:].float() - 1).abs()


class _Listing(_Fixed):
    output = "ranking"

    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        return torch.topk(self.score(batch), k, dim=1).indices


@pytest.mark.parametrize("model_cls", [_Fixed, _Listing])
def test_scores_and_lists_give_the_same_result(model_cls: type) -> None:
    hist = np.array([[PAD, 1], [PAD, 3], [2, 5]])
    examples = Examples(np.arange(3), hist, np.array([2, 9, 5]))
    warm = np.ones(10, dtype=bool)
    warm[9] = False
    result = evaluate(model_cls(10), examples, warm, (1, 5), 2, "cpu")
    assert result.ranks.tolist() == [0, 5, 1]
    metrics = result.metrics((1, 5))
    assert metrics["all"]["recall@1"] == pytest.approx(1 / 3)
    assert metrics["warm"]["recall@5"] == 1.0 and metrics["warm"]["count"] == 2
    assert metrics["cold"]["recall@5"] == 0.0 and metrics["cold"]["count"] == 1


def test_per_user_record_recomputes_metrics() -> None:
    result = EvaluationResult(np.array([0, 1]), np.array([3, 4]), np.array([0, 20]), np.array([True, False]), 0.1)
    per_user = result.per_user()
    assert metric_value("ndcg@10", np.array(per_user["ranks"])) == result.metrics((10,))["all"]["ndcg@10"]
