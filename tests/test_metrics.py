"""Metrics and the evaluator against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.batches import HistoryBatch
from benchmark.evaluate import EvaluationResult, evaluate, ranks_from_lists, ranks_from_scores, tie_priority
from benchmark.metrics import NDCG, NO_TARGET, Recall, metric_value
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


def test_ranks_from_scores_breaks_ties_by_the_fixed_random_order() -> None:
    order = tie_priority(4, "cpu")
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    tied = ranks_from_scores(scores, torch.tensor([2, 3])).tolist()
    assert tied == [1 + int(order[2] > order[3]), int(order[3])]
    assert ranks_from_scores(scores, torch.tensor([3, 0])).tolist() == [1 + int(order[3] > order[2]), int(order[0])]
    assert sorted(ranks_from_scores(scores[1:].expand(4, -1), torch.arange(4)).tolist()) == [0, 1, 2, 3]


def test_ties_do_not_favour_low_ids() -> None:
    """Ids follow first appearance, so low ids are the popular items: a model scoring every item alike must not
    hit them more often than chance (breaking ties by id would put the 100 lowest ids' 10 first in the top 10)."""
    n_items, targets = 1000, torch.arange(100)
    ranks = ranks_from_scores(torch.zeros(100, n_items), targets)
    assert ranks.tolist() == tie_priority(n_items, "cpu")[targets].tolist()
    assert metric_value("recall@10", ranks.numpy()) < 0.05


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


# Several targets per example (SETRec's released splits) ---------------------------------------------------------

def test_multi_target_metrics_hand_worked() -> None:
    """Example A: targets at ranks 0 and 3; example B: targets at ranks 7, 1 and 4 (-1 pads the row)."""
    ranks = np.array([[0, 3, NO_TARGET], [7, 1, 4]])
    assert Recall()(ranks, 5).tolist() == pytest.approx([2 / 2, 2 / 3])
    assert Recall()(ranks, 2).tolist() == pytest.approx([1 / 2, 1 / 3])
    ideal_2 = 1 + 1 / math.log2(3)
    ideal_3 = ideal_2 + 1 / math.log2(4)
    assert NDCG()(ranks, 5).tolist() == pytest.approx([(1 + 1 / math.log2(5)) / ideal_2,
                                                       (1 / math.log2(3) + 1 / math.log2(6)) / ideal_3])
    assert NDCG()(ranks, 2).tolist() == pytest.approx([1 / ideal_2, (1 / math.log2(3)) / ideal_2])
    assert NDCG()(ranks, 1).tolist() == pytest.approx([1.0, 0.0])


def test_one_target_matrix_equals_the_single_target_form() -> None:
    ranks = np.array([0, 1, 4, 9, 30])
    for metric in (Recall(), NDCG()):
        assert metric(ranks[:, None], 5).tolist() == metric(ranks, 5).tolist()


class _Untied(_Fixed):
    """_Fixed with ties broken towards the lower id inside the scores, so that top-k lists have no ties."""

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return super().score(batch) - 0.01 * torch.arange(self.n_items)[None].float()


class _UntiedListing(_Untied):
    output = "ranking"

    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        return torch.topk(self.score(batch), k, dim=1).indices


def _grouped() -> tuple[Examples, np.ndarray]:
    """User 0 (history ends with 5) has targets 6, 8, 0; user 1 (history ends with 1) has target 2; item 8 cold.

    _Untied ranks 6, 5, 7, 4, 8, 3, 9, 2, 1, 0 after history item 5 and puts 2 first after history item 1.
    """
    examples = Examples(np.array([0, 0, 0, 1]), np.array([[2, 5]] * 3 + [[PAD, 1]]), np.array([6, 8, 0, 2]),
                        np.array([0, 0, 0, 1]))
    warm = np.ones(10, dtype=bool)
    warm[8] = False
    return examples, warm


@pytest.mark.parametrize("model_cls", [_Untied, _UntiedListing])
def test_multi_target_evaluation_scores_all_targets_of_an_example(model_cls: type) -> None:
    examples, warm = _grouped()
    result = evaluate(model_cls(10), examples, warm, (1, 5), 3, "cpu")
    assert result.ranks.tolist() == [0, 4, 5, 0]
    metrics = result.metrics((1, 5))
    assert metrics["all"]["count"] == 2
    assert metrics["all"]["recall@5"] == pytest.approx((2 / 3 + 1) / 2)
    ideal_3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["all"]["ndcg@5"] == pytest.approx(((1 + 1 / math.log2(6)) / ideal_3 + 1) / 2)
    assert metrics["warm"]["recall@5"] == pytest.approx((1 / 2 + 1) / 2) and metrics["warm"]["count"] == 2
    assert metrics["cold"]["ndcg@5"] == pytest.approx(1 / math.log2(6)) and metrics["cold"]["count"] == 1
    per_user = result.per_user()
    assert per_user == {"users": [0, 1], "targets": [[6, 8, 0], [2]], "ranks": [[0, 4, 5], [0]],
                        "warm": [[1, 0, 1], [1]]}
    padded = np.array([row + [NO_TARGET] * (3 - len(row)) for row in per_user["ranks"]])
    assert metric_value("ndcg@5", padded) == metrics["all"]["ndcg@5"]


@pytest.mark.parametrize("model_cls", [_Untied, _UntiedListing])
def test_segment_candidates_rank_cold_targets_among_cold_items(model_cls: type) -> None:
    examples, warm = _grouped()
    everything = evaluate(model_cls(10), examples, warm, (1, 5), 3, "cpu").metrics((1, 5))
    result = evaluate(model_cls(10), examples, warm, (1, 5), 3, "cpu", candidates="segment")
    assert result.segment_ranks.tolist() == [0, 0, 5, 0]
    metrics = result.metrics((1, 5))
    assert metrics["all"] == everything["all"]
    assert metrics["cold"]["ndcg@1"] == 1.0 and everything["cold"]["ndcg@1"] == 0.0
    assert result.per_user()["segment_ranks"] == [[0, 0, 5], [0]]


def test_grouped_subset_keeps_whole_examples() -> None:
    examples, _ = _grouped()
    part = examples.subset(1, seed=3)
    assert part.n_examples == 1 and set(part.groups.tolist()) == {0}
    assert len(part) in (1, 3) and len(set(part.users.tolist())) == 1


def test_value_scores_a_multi_target_example_as_the_record_does() -> None:
    """Selection (early stopping, inference-time knobs, tuning) compares :meth:`EvaluationResult.value`: one user with
    one hit at rank 0, one with four misses, is 0.5 as the record says, not 1 hit in 5 targets."""
    result = EvaluationResult(np.array([0, 1, 1, 1, 1]), np.array([1, 2, 3, 4, 5]), np.array([0, 30, 30, 30, 30]),
                              np.ones(5, dtype=bool), 0.0, groups=np.array([0, 1, 1, 1, 1]))
    assert result.value("ndcg@10") == result.metrics((10,))["all"]["ndcg@10"] == 0.5
    assert result.value("recall@10") == 0.5


class _GapListing(Recommender):
    """Lists the history's last item, then two empty slots (-1), then every other item in id order."""

    output = "ranking"
    trainable = False

    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        last = batch.items[:, -1:]
        rest = torch.arange(self.n_items)[None].expand(len(last), -1)
        rest = rest[rest != last].view(len(last), -1)
        return torch.cat([last, torch.full((len(last), 2), -1), rest], dim=1)[:, :k]


def test_empty_list_slots_count_in_neither_segment() -> None:
    """An empty slot (-1: an invalid generation) is no item, so it pushes no target down its segment's list,
    whatever the warm flag of item 0."""
    examples = Examples(np.arange(2), np.array([[PAD, 1], [PAD, 1]]), np.array([0, 2]))
    for warm_zero in (True, False):
        warm = np.array([warm_zero, True, warm_zero, True])
        result = evaluate(_GapListing(4), examples, warm, (5,), 2, "cpu", candidates="segment")
        assert result.ranks.tolist() == [3, 4]
        assert result.segment_ranks.tolist() == ([1, 2] if warm_zero else [0, 1])
