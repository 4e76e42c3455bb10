"""Popularity groups, t-intervals, significance marks, scaling/efficiency figures and the HTML page."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.records import SCHEMA_VERSION, scan_records, write_json_atomic
from benchmark.reports.groups import build_group_report, make_groups
from benchmark.reports.leaderboard import build_leaderboard, leaderboard_frame
from benchmark.reports.scaling import build_scaling_report, pareto_front
from benchmark.reports.stats import holm, not_worse_than_best, t_interval

HISTOGRAM = {"train_count": [0, 1, 2, 5, 10, 40], "items": [2, 20, 10, 4, 2, 1]}
"""40 interactions in the head item, 20 in the two next, 20 in four, 20 in ten, 20 in twenty, two cold items."""
TARGET_COUNTS = [40, 10, 5, 2, 1, 0] * 20
"""120 test targets, 20 per count value."""


def record(scheme: str, ranks: list[int], *, seed: int = 1, backbone: str = "none", params: int | None = None,
           ms: float = 1.0, paradigm: str = "baseline", fields: bool = True) -> dict[str, Any]:
    """A finished record whose metrics follow from ``ranks`` (one per test target of :data:`TARGET_COUNTS`)."""
    ranks_array = np.asarray(ranks)
    warm = (np.asarray(TARGET_COUNTS) > 0).astype(int)

    def segment(mask: np.ndarray) -> dict[str, float]:
        r = ranks_array[mask]
        values = {f"recall@{k}": float((r < k).mean()) if len(r) else 0.0 for k in (5, 10, 20)}
        values |= {f"ndcg@{k}": float(np.where(r < k, 1 / np.log2(r + 2), 0).mean()) if len(r) else 0.0
                   for k in (5, 10, 20)}
        return {**values, "count": int(mask.sum())}

    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "status": "ok", "reason": None, "seed": seed,
        "config": {"dataset": "toy", "scheme": scheme, "backbone": backbone, "seed": seed, "profile": "quick",
                   "split": "loo", "ks": [5, 10, 20]},
        "identifier": {"paradigm": paradigm},
        "metrics": {"all": segment(warm >= 0), "warm": segment(warm == 1), "cold": segment(warm == 0)},
        "timings": {"inference_ms_per_user": ms}, "hardware": {"cpu_count": 2, "processor": "x86_64"},
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
        "commit": "abc123", "versions": {"torch": "2.13.0", "python": "3.11"},
        "per_user": {"users": list(range(len(ranks))), "targets": list(range(len(ranks))), "ranks": list(ranks),
                     "warm": warm.tolist()}}
    if fields:
        out["per_user"]["target_train_counts"] = TARGET_COUNTS
        out["item_train_count_histogram"] = HISTOGRAM
    if params is not None:
        out["model"] = {"total_parameters": params, "trainable_parameters": params, "backbone_family": "t5"}
    return out


def write(results: Path, rec: dict[str, Any]) -> None:
    config = rec["config"]
    write_json_atomic(results / "toy" / f"{config['scheme']}__{config['backbone']}__s{config['seed']}.json", rec)


def good(n: int = 120) -> list[int]:
    """Ranks that put every target first."""
    return [0] * n


def test_t_interval_and_holm() -> None:
    mean, half, n = t_interval([0.1, 0.3])
    assert (mean, n) == (pytest.approx(0.2), 2) and half == pytest.approx(12.7062 * 0.1, abs=1e-3)
    assert t_interval([0.5])[0] == 0.5 and np.isnan(t_interval([0.5])[1])
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_groups_split_interactions_or_items_evenly() -> None:
    by_interactions = make_groups(HISTOGRAM["train_count"], HISTOGRAM["items"], "interactions")
    assert by_interactions.interactions == [40, 20, 20, 20, 20] and by_interactions.items == [1, 2, 4, 10, 22]
    assert by_interactions.group_of_count[0] == 4  # cold items fall in the last group
    by_items = make_groups(HISTOGRAM["train_count"], HISTOGRAM["items"], "items")
    assert sum(by_items.items) == 39 and by_items.group_of_count[40] == 0
    # 17 items before the 20 one-count items, which stay together (G4 is left empty), then the 2 cold ones
    assert by_items.items == [17, 0, 20, 0, 2] and by_items.count_range[1] is None


def test_group_report_counts_targets_and_lists_old_records(tmp_path: Path) -> None:
    results = tmp_path / "results"
    ranks = [0 if c >= 10 else 50 for c in TARGET_COUNTS]  # hits only on the popular targets
    write(results, record("pop", ranks, seed=1))
    write(results, record("pop", ranks, seed=2))
    write(results, record("sasrec", good(), fields=False))
    paths = build_group_report(scan_records(results), tmp_path / "reports")
    names = [p.name for p in paths]
    assert names[:2] == ["groups.md", "groups.csv"] and "groups_toy_loo_quick_none.png" in names
    assert "groups_toy_loo_quick_none.pdf" in names
    csv = pd.read_csv(tmp_path / "reports" / "groups.csv").set_index("scheme")
    assert csv.loc["pop", "n"] == 2 and csv.loc["pop", "G1_recall@10"] == 1.0 and csv.loc["pop", "G3_recall@10"] == 0
    assert csv.loc["pop", "G1_targets"] == 20 and csv.loc["pop", "G5_targets"] == 40
    md = (tmp_path / "reports" / "groups.md").read_text()
    assert "G1 (train count 40; 1 items, 40 interactions), 20 test targets" in md
    assert "## Records without popularity fields" in md and "sasrec__none__s1.json" in md
    assert "sasrec" not in csv.index
    by_items = build_group_report(scan_records(results), tmp_path / "items", "items")
    assert "equal number of items" in by_items[0].read_text()


def test_significance_marks_and_single_seed_label(tmp_path: Path) -> None:
    results = tmp_path / "results"
    rng = np.random.default_rng(0)
    best = rng.integers(0, 3, 120).tolist()
    write(results, record("sasrec", best, seed=1))
    write(results, record("sasrec", best, seed=2))
    write(results, record("pop", [r if i % 40 else r + 1 for i, r in enumerate(best)]))  # 3 of 120 one rank lower
    write(results, record("bad", [30] * 120, paradigm="sequence"))
    frame = leaderboard_frame(scan_records(results).records).set_index("scheme")
    assert frame.loc["pop", "all_ndcg@10_similar"] and frame.loc["sasrec", "all_ndcg@10_similar"]
    assert not frame.loc["bad", "all_ndcg@10_similar"]
    md = build_leaderboard(scan_records(results), tmp_path / "reports")[0].read_text()
    [pop] = [line for line in md.splitlines() if line.startswith("| pop ")]
    assert "≈" in pop.split("|")[4] and "1 (single seed)" in pop
    assert "Wilcoxon signed-rank" in md and "Holm-corrected" in md and "level 0.05" in md
    values = {"a": np.ones(50), "b": np.zeros(50), "c": np.ones(50)}
    assert not_worse_than_best(values) == {"a": True, "b": False, "c": True}


def test_scaling_and_efficiency_need_two_backbones_of_a_family(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write(results, record("e4srec", good(), backbone="t5-tiny", params=1000, ms=1.0, paradigm="embedding"))
    write(results, record("e4srec", [3] * 120, backbone="t5-small", params=60000, ms=9.0, paradigm="embedding"))
    write(results, record("tiger", good(), backbone="t5-tiny", params=2000, ms=5.0, paradigm="sequence"))
    write(results, record("pop", [50] * 120))
    paths = build_scaling_report(scan_records(results), tmp_path / "reports")
    names = {p.name for p in paths}
    assert {"scaling.md", "scaling_toy_loo_quick.png", "efficiency_toy_loo_quick.pdf"} <= names
    csv = pd.read_csv(tmp_path / "reports" / "scaling.csv")
    assert csv["scheme"].tolist() == ["e4srec", "e4srec"] and csv["parameters"].tolist() == [1000, 60000]
    assert "| e4srec | t5-small | 60,000 |" in (tmp_path / "reports" / "scaling.md").read_text()
    assert pareto_front(np.array([1.0, 10.0, 5.0]), np.array([0.9, 0.1, 0.05])).tolist() == [1, 0]


def test_leaderboard_command_writes_every_analysis(tmp_path: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    write(results, record("pop", [50] * 120))
    assert main(["leaderboard", "--results-dir", str(results), "--reports-dir", str(reports), "--groups",
                 "items"]) == 0
    for name in ("leaderboard.md", "groups.md", "groups.csv", "scaling.md", "index.html"):
        assert (reports / name).stat().st_size > 0
    assert sorted(p.suffix for p in (reports / "figures").iterdir()) == [".pdf", ".pdf", ".png", ".png"]
    page = (reports / "index.html").read_text()
    assert "How these numbers were made" in page and "Commit: abc123" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_page_renders_and_sorts_in_headless_chromium(tmp_path: Path) -> None:
    """Open index.html in headless Chromium: no console errors, tables present, a header click reorders rows."""
    executable = chromium()
    if executable is None or not _has_playwright():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium and the playwright package (.ci/run installs both)")
        pytest.skip("chromium or the playwright package is not installed")
    from playwright.sync_api import sync_playwright

    results, reports = tmp_path / "results", tmp_path / "reports"
    write(results, record("pop", [50] * 120))
    write(results, record("sasrec", good()))
    write(results, record("tiger", [5] * 120, paradigm="sequence"))
    assert main(["leaderboard", "--results-dir", str(results), "--reports-dir", str(reports)]) == 0
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else (errors.append(f"network request {route.request.url}"), route.abort()))
        page.goto((reports / "index.html").as_uri())
        assert page.locator("table.sortable").count() == 1
        order = lambda: page.locator("table.sortable tbody tr td:first-child").all_inner_texts()  # noqa: E731
        assert order() == ["pop", "sasrec", "tiger"]
        header = page.locator("table.sortable th", has_text="All N@10")
        header.click()
        assert order() == ["pop", "tiger", "sasrec"]
        header.click()
        assert order() == ["sasrec", "tiger", "pop"]
        assert page.locator("img[src^='data:image/png;base64,']").count() >= 2
        browser.close()
    assert errors == []


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True
