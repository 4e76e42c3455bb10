"""Statistics of the reports: t-intervals over seeds, per-user metrics from stored ranks, paired tests.

Caveats: a t-interval over few seeds is wide and assumes roughly normal seed-to-seed variation; it says how
much a number moves with the seed, not with the test users. The paired test compares two rows over the same
test examples (per-example metric averaged over each row's seeds), so it measures differences beyond the
noise of the test users for these trained models, not beyond the training seed's noise; the leaderboard
tests only rows whose every seed stored per-example ranks, against the row it shows as the column's best.
Holm's correction controls the family-wise error over the schemes compared with the best one in a column.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats

from benchmark.metrics import METRICS, NO_TARGET

CONFIDENCE = 0.95
"""Level of the t-intervals over seeds."""
ALPHA = 0.05
"""Family-wise level of the Holm-corrected paired tests."""
TEST_NAME = "one-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon, zero differences dropped)"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """``(mean, half-width, n)`` of the Student-t interval of the mean; half-width NaN for n < 2.

    half-width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n), s the sample standard deviation.
    """
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    n = len(array)
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2:
        return float(array[0]), math.nan, 1
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * array.std(ddof=1) / math.sqrt(n)
    return float(array.mean()), float(half), n


def per_example(ranks: Sequence[int] | Sequence[Sequence[int]], metric: str) -> np.ndarray:
    """Per-example values of a metric named like ``ndcg@10`` from 0-based target ranks: one rank per example,
    or a list of target ranks per example (a multi-target split), scored with the multi-target definition of
    :mod:`benchmark.metrics` as the evaluation does (the lists padded with ``NO_TARGET``)."""
    name, _, k = metric.partition("@")
    if len(ranks) and isinstance(ranks[0], (list, tuple)):
        matrix = np.full((len(ranks), max(map(len, ranks))), NO_TARGET, dtype=np.int64)
        for row, targets in enumerate(ranks):
            matrix[row, :len(targets)] = targets
        return METRICS[name](matrix, int(k))
    return METRICS[name](np.asarray(ranks), int(k))


def paired_p_value(best: np.ndarray, other: np.ndarray) -> float:
    """p-value of H0 "``other`` is not worse than ``best``" against "``best`` is larger", paired by example.

    1.0 when every difference is zero (nothing to test).
    """
    diff = np.asarray(best, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox", alternative="greater").pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values: p_(i) * (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, p[index] * (m - rank)))
        adjusted[index] = running
    return adjusted


def not_worse_than_best(values: dict[Hashable, np.ndarray], alpha: float = ALPHA,
                        best: Hashable | None = None) -> dict[Hashable, bool]:
    """For each row (per-example metric values on common examples): True when it is the ``best`` row (default:
    the one with the largest mean) or the Holm-corrected paired test over rows does not find it worse than the
    best at level ``alpha``."""
    if not values:
        return {}
    if best is None:
        means = {key: float(np.mean(v)) if len(v) else 0.0 for key, v in values.items()}
        best = max(means, key=means.get)
    others = [key for key in values if key != best]
    adjusted = holm([paired_p_value(values[best], values[key]) for key in others])
    return {best: True, **{key: bool(p >= alpha) for key, p in zip(others, adjusted)}}


def significance_note(alpha: float = ALPHA) -> str:
    """The sentence printed under every table that carries significance marks."""
    return (f"≈: not significantly worse than the column's best (bold) row by a {TEST_NAME} over the test "
            f"examples of the per-example metric (mean over the row's seeds), Holm-corrected over the rows of the "
            f"table, level {alpha}. Only rows whose every seed stored per-example ranks are tested; a column whose "
            f"bold row is not tested, or without a bold row (every value zero), has no marks. ± is the half-width "
            f"of the {int(CONFIDENCE * 100)}% Student-t interval over seeds (n seeds).")
