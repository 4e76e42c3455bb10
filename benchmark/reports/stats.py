"""Statistics of the reports: t-intervals over seeds, per-user metrics from stored ranks, paired tests.

Caveats: a t-interval over few seeds is wide and assumes roughly normal seed-to-seed variation; it says how
much a number moves with the seed, not with the test users. The paired test compares two rows over the same
test examples (per-example metric averaged over each row's seeds), so it measures differences beyond the
noise of the test users for these trained models, not beyond the training seed's noise. Holm's correction
controls the family-wise error over the schemes compared with the best one in a column.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from benchmark.metrics import METRICS

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


def per_example(ranks: Sequence[int], metric: str) -> np.ndarray:
    """Per-example values of a metric named like ``ndcg@10`` from 0-based target ranks."""
    name, _, k = metric.partition("@")
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


def not_worse_than_best(values: dict[str, np.ndarray], alpha: float = ALPHA) -> dict[str, bool]:
    """For each row (per-example metric values on common examples): True when its mean is the best or the
    Holm-corrected paired test over rows does not find it worse than the best at level ``alpha``."""
    if not values:
        return {}
    means = {key: float(np.mean(v)) if len(v) else 0.0 for key, v in values.items()}
    best = max(means, key=means.get)
    others = [key for key in values if key != best]
    adjusted = holm([paired_p_value(values[best], values[key]) for key in others])
    return {best: True, **{key: bool(p >= alpha) for key, p in zip(others, adjusted)}}


def significance_note(alpha: float = ALPHA) -> str:
    """The sentence printed under every table that carries significance marks."""
    return (f"≈: not significantly worse than the column's best row by a {TEST_NAME} over the test examples of "
            f"the per-example metric (mean over the row's seeds), Holm-corrected over the rows of the table, "
            f"level {alpha}; rows without stored per-example ranks are not tested. ± is the half-width of the "
            f"{int(CONFIDENCE * 100)}% Student-t interval over seeds (n seeds).")
