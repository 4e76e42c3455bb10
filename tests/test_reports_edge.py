"""Report edge cases: multi-target and candidate-set significance tests, partial seeds, all-zero columns,
popularity groups over different training data, per-level codebook usage and the variant legend."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluate import EvaluationResult
from benchmark.records import SCHEMA_VERSION, scan_records, write_json_atomic
from benchmark.reports.configs import LEGEND
from benchmark.reports.groups import HISTOGRAM, build_group_report, group_frame
from benchmark.reports.identifiers import identifier_frame
from benchmark.reports.leaderboard import (
    LATEX,
    MARKDOWN,
    SIMILAR,
    _segment_ranks,
    leaderboard_frame,
    table_cells,
    to_markdown,
)
from benchmark.reports.stats import per_example

KS = (5, 10)


def result(ranks: list[list[int]] | list[int], warm: list[list[bool]] | list[bool],
           segment_ranks: list | None = None) -> EvaluationResult:
    """An evaluation result as :func:`benchmark.evaluate.evaluate` returns it: one row per target; lists of
    lists are several targets per example (``groups`` then maps target rows to examples)."""
    multi = bool(ranks) and isinstance(ranks[0], list)
    flat = (lambda xs: [x for part in xs for x in part]) if multi else list  # noqa: E731
    groups = np.repeat(np.arange(len(ranks)), [len(r) for r in ranks]) if multi else None
    n = len(flat(ranks))
    return EvaluationResult(users=np.asarray(groups if multi else np.arange(n)), targets=np.arange(n),
                            ranks=np.asarray(flat(ranks)), warm=np.asarray(flat(warm), dtype=bool), seconds=1.0,
                            groups=groups,
                            segment_ranks=None if segment_ranks is None else np.asarray(flat(segment_ranks)))


def record(scheme: str, evaluation: EvaluationResult, *, seed: int = 1, per_user: bool = True,
           config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished record whose metrics and per-user fields come from ``evaluation`` as the runner writes them."""
    return {"schema": SCHEMA_VERSION, "status": "ok", "reason": None,
            "config": {"dataset": "toy", "scheme": scheme, "backbone": "none", "seed": seed, "profile": "quick",
                       "split": "fixed", "ks": list(KS), **(config or {})},
            "identifier": {"paradigm": "baseline"}, "metrics": evaluation.metrics(KS),
            "timings": {"inference_ms_per_user": 1.0}, "per_user": evaluation.per_user() if per_user else {}}


def frame_of(*records: dict[str, Any]) -> pd.DataFrame:
    return leaderboard_frame([(Path(f"r{i}.json"), r) for i, r in enumerate(records)]).set_index("scheme")


def multi_target(equal: bool, rng: np.random.Generator, n: int = 80) -> tuple[list[list[int]], list[list[bool]]]:
    """Ranks and warm flags of ``n`` examples with two targets each (``equal``) or one to four."""
    sizes = np.full(n, 2) if equal else rng.integers(1, 5, n)
    ranks = [rng.integers(0, 4, size).tolist() for size in sizes]
    warm = [(rng.random(size) < 0.7).tolist() for size in sizes]
    return ranks, warm


@pytest.mark.parametrize("equal", [True, False])
def test_multi_target_rows_are_tested_with_the_tables_metric(equal: bool) -> None:
    rng = np.random.default_rng(1)
    ranks, warm = multi_target(equal, rng)
    best = result(ranks, warm)
    close = result([[r + (1 if i == 0 and j % 40 == 0 else 0) for i, r in enumerate(rs)]
                    for j, rs in enumerate(ranks)], warm)
    worse = result([[r + 30 for r in rs] for rs in ranks], warm)
    for segment in ("all", "warm", "cold"):  # per-example values average to exactly the table's value
        stored = best.per_user()
        values = per_example(_segment_ranks(stored, stored["warm"], segment), "ndcg@10")
        assert values.mean() == pytest.approx(best.metrics(KS)[segment]["ndcg@10"])
        assert len(values) == best.metrics(KS)[segment]["count"]
    frame = frame_of(record("aaa", best), record("bbb", close), record("ccc", worse))
    for column in ("all_ndcg@10", "warm_recall@5", "cold_ndcg@5"):
        assert frame.loc["aaa", f"{column}_similar"] and frame.loc["bbb", f"{column}_similar"]
        assert not frame.loc["ccc", f"{column}_similar"]


def test_rows_with_a_candidate_set_are_tested_and_segments_use_segment_ranks() -> None:
    rng = np.random.default_rng(2)
    ranks = rng.integers(0, 4, 120).tolist()
    warm = (rng.random(120) < 0.5).tolist()
    segment = {"candidates": "segment"}
    # equal ranks among all items; within the segments "bbb" ranks every target 30 places lower
    good = record("aaa", result(ranks, warm, segment_ranks=ranks), config=segment)
    bad = record("bbb", result(ranks, warm, segment_ranks=[r + 30 for r in ranks]), config=segment)
    frame = frame_of(good, bad)
    assert set(frame["split"]) == {"fixed, candidates segment"}
    assert frame.loc["bbb", "all_ndcg@10_similar"] and frame.loc["aaa", "warm_ndcg@10_similar"]
    assert not frame.loc["bbb", "warm_ndcg@10_similar"] and not frame.loc["bbb", "cold_recall@10_similar"]


def test_rows_with_a_seed_without_ranks_are_not_tested_and_the_bold_row_is_the_reference() -> None:
    rng = np.random.default_rng(3)
    ranks = rng.integers(0, 30, 300)
    warm = [True] * 300
    frame = frame_of(record("aaa", result(ranks.tolist(), warm)),  # mean over both seeds below "bbb"
                     record("aaa", result((ranks + 20).tolist(), warm), seed=2, per_user=False),
                     record("bbb", result((ranks + 2).tolist(), warm)),
                     record("ccc", result((ranks + 25).tolist(), warm)))
    assert frame.loc["bbb", "all_ndcg@10"] == frame["all_ndcg@10"].max()
    assert pd.isna(frame.loc["aaa", "all_ndcg@10_similar"]) and frame.loc["bbb", "all_ndcg@10_similar"]
    assert not frame.loc["ccc", "all_ndcg@10_similar"]
    md = to_markdown(frame.reset_index(), "banner")
    assert "Only rows whose every seed stored per-example ranks are tested" in md


def test_a_column_without_a_best_value_has_no_marks() -> None:
    warm = [True] * 50
    frame = frame_of(record("aaa", result([50] * 50, warm)), record("bbb", result([60] * 50, warm)))
    assert frame["all_ndcg@10_similar"].isna().all()
    cells = table_cells(frame.reset_index(), MARKDOWN)
    assert not any(SIMILAR in cell for row in cells for cell in row)


def test_a_value_missing_in_some_seeds_says_over_how_many_seeds_it_is() -> None:
    warm = [True] * 40
    records = [record("aaa", result([seed] * 40, warm), seed=seed) for seed in (1, 2, 3)]
    del records[2]["metrics"]["all"]["ndcg@10"]
    frame = frame_of(*records, record("bbb", result([9] * 40, warm)))
    row = frame.loc["aaa"]
    assert row["n"] == 3 and row["all_ndcg@10_n"] == 2 and row["all_recall@10_n"] == 3
    assert row["all_ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 2)
    assert row["all_ndcg@10_ci95"] == pytest.approx(12.7062 * np.std([1 / np.log2(3), 1 / np.log2(4)], ddof=1)
                                                    / np.sqrt(2), rel=1e-4)
    [md_row, _] = table_cells(frame.reset_index(), MARKDOWN)
    [tex_row, _] = table_cells(frame.reset_index(), LATEX)
    # cells: scheme, All R@5, R@10, N@5, N@10, ...
    assert md_row[4].endswith("±" + f"{row['all_ndcg@10_ci95']:.4f} (2 of 3 seeds)")
    assert "±" in md_row[3] and "seeds)" not in md_row[3]
    assert tex_row[4].endswith("(2 of 3 seeds)")
    assert "recorded by only k of the row's n finished seeds" in to_markdown(frame.reset_index(), "banner")


def group_record(scheme: str, counts: list[int], items: list[int], targets: list[int],
                 config: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "config": {"dataset": "toy", "scheme": scheme, "backbone": "none", "seed": 1,
                                       "profile": "quick", "split": "loo", "ks": [10], **config},
            "per_user": {"ranks": [0] * len(targets), "target_train_counts": targets},
            "item_train_count_histogram": {"train_count": counts, "items": items}}


def test_a_section_with_different_training_data_gets_groups_per_histogram(tmp_path: Path) -> None:
    five = group_record("pop", [100, 10, 1], [1, 10, 100], [100, 10, 1], {"k_core": 5})
    ten = group_record("sasrec", [200, 20, 2], [1, 10, 100], [200, 20, 2], {"k_core": 10})
    frame, sections = group_frame([five, ten])
    assert frame[HISTOGRAM].nunique() == 2 and len(sections) == 2
    targets = frame.set_index("scheme")[[f"G{g}_targets" for g in range(1, 6)]]
    assert targets.loc["pop"].tolist() == targets.loc["sasrec"].tolist() == [1, 1, 0, 1, 0]
    for i, rec in enumerate((five, ten)):
        write_json_atomic(tmp_path / "results" / "toy" / f"r{i}.json",
                          {**rec, "schema": SCHEMA_VERSION, "reason": None, "identifier": {"paradigm": "baseline"},
                           "metrics": {"all": {"count": 3}, "warm": {"count": 3}, "cold": {"count": 0}},
                           "timings": {"inference_ms_per_user": 1.0}})
    paths = build_group_report(scan_records(tmp_path / "results"), tmp_path / "reports")
    md = paths[0].read_text()
    assert md.count("training data ") == 2 and "(k_core=5)" in md and "(k_core=10)" in md
    assert len([p for p in paths if p.suffix == ".png"]) == 2


def test_a_target_count_outside_its_histogram_is_an_error() -> None:
    broken = group_record("pop", [10, 1], [1, 10], [10, 7], {})
    with pytest.raises(ValueError, match=r"toy/pop/none seed 1: test target training counts \[7\]"):
        group_frame([broken])


def test_codebook_usage_per_level_is_the_mean_over_seeds() -> None:
    records = [{"status": "ok", "config": {"dataset": "toy", "scheme": "cid", "backbone": "t5", "seed": seed,
                                           "profile": "quick", "split": "loo"},
                "identifier": {"paradigm": "sequence", "codebook_usage_per_level": usage}}
               for seed, usage in ((1, [0.2, 1.0]), (2, [0.6, 0.5]))]
    [row] = identifier_frame(records).to_dict("records")
    assert row["codebook_usage_per_level"] == "0.40 / 0.75" and row["codebook_usage_mean"] == pytest.approx(0.575)


def test_the_legend_explains_a_key_absent_from_a_config() -> None:
    warm = [True] * 10
    frame = frame_of(record("aaa", result([0] * 10, warm), config={"train": {"bucketing": True}}),
                     record("aaa", result([1] * 10, warm), config={"train": {}}))
    assert sorted(frame["variant"]) == ["train.bucketing=-", "train.bucketing=true"]
    assert "key=- means that record's config lacks the key" in LEGEND
    assert LEGEND in to_markdown(frame.reset_index(), "banner")
