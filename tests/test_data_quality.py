"""Thin data is reported, not silently scored: content coverage, refusals, empty splits, duplicates, odd ids."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.data.dataset import DataError, build_dataset
from benchmark.data.quality import MIN_COVERAGE, check_content, data_warnings, malformed_ids
from benchmark.splits import SplitError, make_split
from identifiers.registry import get_scheme


def _p5(root: Path, sequences: list[str], texts: list[str]) -> Path:
    """A P5 folder for the registered name ``beauty`` under ``root``; returns its item text file."""
    folder = root / "amazon2014-p5" / "beauty"
    folder.mkdir(parents=True)
    (folder / "user_sequence.txt").write_text("\n".join(sequences) + "\n")
    (folder / "item_text.txt").write_text("\n".join(texts) + "\n")
    return folder / "item_text.txt"


def _long_users(n_items: int = 10, n_users: int = 6) -> list[str]:
    return [f"U{u} " + " ".join(f"I{(u + i) % n_items}" for i in range(n_items)) for u in range(n_users)]


def test_stats_reports_coverage_and_warns_on_thin_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text_file = _p5(tmp_path, _long_users(), ["I0 red apple", "I1 green pear", "I2 plum"])
    assert main(["stats", "--datasets", "beauty", "--data-dir", str(tmp_path), "--k-core", "1"]) == 0
    captured = capsys.readouterr()
    assert f"item content: text 30.0%, categories 0.0%, brand 0.0% of 10 items (from {text_file})" in captured.out
    assert (f"warning: beauty: only 3 items (30.0%) have a title or description in {text_file}; below the warning "
            "threshold 90%") in captured.err
    assert "categories" not in captured.err  # a field the source lacks entirely is no warning


def test_a_text_scheme_refuses_thin_text_naming_the_file(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    text_file = _p5(tmp_path, _long_users(), ["I0 red apple", "I1 green pear"])
    code = main(["run", "--identifiers", "pop,tiger", "--datasets", "beauty", "--data-dir", str(tmp_path),
                 "--k-core", "1", "--profile", "smoke", "--results-dir", str(tmp_path / "results"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert (f"error: tiger needs a title or description per item, but only 2 of 10 items (20.0%) of dataset "
            f"'beauty' have it in {text_file}; the minimum is 50%") in err
    assert not list((tmp_path / "results").rglob("*.json"))  # refused before any run


@pytest.mark.parametrize("scheme, params, needs", [
    ("tiger", {}, ("text",)), ("letter", {}, ("text",)), ("bigrec", {}, ("text",)), ("idgenrec", {}, ("text",)),
    ("store", {}, ("text",)), ("semid", {}, ("categories",)), ("setrec", {"use_semantic": True}, ("text",)),
    ("setrec", {"use_semantic": False}, ()), ("sasrec", {}, ()), ("e4srec", {}, ()), ("cid", {}, ()),
])
def test_schemes_declare_the_content_they_need(scheme: str, params: dict, needs: tuple[str, ...]) -> None:
    assert get_scheme(scheme).required_content(params) == needs


def test_check_content_thresholds() -> None:
    def dataset(n_titled: int, n_items: int = 10):
        items = pd.DataFrame({"raw_id": [f"i{k}" for k in range(n_items)],
                              "title": [f"title {k}" if k < n_titled else "" for k in range(n_items)]})
        inter = pd.DataFrame({"user": ["u"] * n_items, "item": items["raw_id"]})
        return build_dataset("toy", items, inter, item_source="toy/items.txt")

    assert MIN_COVERAGE["text"] == 0.5
    assert check_content(dataset(5), "tiger", ("text",)) is None
    with pytest.raises(DataError, match=r"only 4 of 10 items \(40.0%\) of dataset 'toy' have it in toy/items.txt"):
        check_content(dataset(4), "tiger", ("text",))
    assert "no item text" in check_content(dataset(0), "tiger", ("text",))
    assert check_content(dataset(0), "sasrec", ()) is None


def test_a_split_without_validation_or_test_examples_is_an_error(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _p5(tmp_path, [f"U{u} I{u} I{u + 1}" for u in range(8)], [f"I{i} item {i}" for i in range(9)])
    code = main(["run", "--identifiers", "pop", "--datasets", "beauty", "--data-dir", str(tmp_path),
                 "--k-core", "1", "--profile", "smoke", "--results-dir", str(tmp_path / "results"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert ("error: dataset 'beauty': the loo split has no validation and no test examples (8 users, "
            "16 interactions, longest history 2); leave-one-out needs users with at least 3 interactions") in err
    assert not list((tmp_path / "results").rglob("*.json"))
    assert main(["stats", "--datasets", "beauty", "--data-dir", str(tmp_path), "--k-core", "1"]) == 0
    assert "loo       not available: dataset 'beauty': the loo split has no validation" in capsys.readouterr().out


def test_a_temporal_split_without_test_examples_is_an_error() -> None:
    inter = pd.DataFrame({"user": ["a", "a", "a", "b"], "item": ["x", "y", "z", "w"], "timestamp": [1, 2, 3, 4]})
    dataset = build_dataset("late", pd.DataFrame({"raw_id": ["x", "y", "z", "w"]}), inter)
    with pytest.raises(SplitError, match="dataset 'late': the temporal split has no validation and no test examples"):
        make_split(dataset, "temporal", 5)


def test_duplicate_item_text_lines_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text_file = _p5(tmp_path, _long_users(),
                    [f"I{i} item {i}" for i in range(10)] + ["I3 item three again", "I3 item 3", "I7 x"])
    assert main(["stats", "--datasets", "beauty", "--data-dir", str(tmp_path), "--k-core", "1"]) == 0
    assert (f"warning: beauty: 3 duplicate item line(s) in {text_file} repeat an earlier line's item id; the first "
            "line of each id is used") in capsys.readouterr().err


def test_malformed_ids_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "movielens-100k"
    folder.mkdir()
    items = [str(i) for i in range(1, 9)] + ["abc", "x1.5", "-3"]
    rows = [f"{u}\t{item}\t{t}" for u in (1, 2, 3) for t, item in enumerate(items)]
    (folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    assert main(["stats", "--datasets", "ml-100k", "--data-dir", str(tmp_path), "--k-core", "1"]) == 0
    assert ("warning: ml-100k: 3 item id(s) are not non-negative integers although most item ids are, e.g. 'abc', "
            "'x1.5', '-3'") in capsys.readouterr().err
    assert malformed_ids(["B00A", "B00B", "0123"]) == []  # ASIN-like ids are not numeric ids


def test_clean_data_has_no_warnings(small_synthetic) -> None:
    assert data_warnings(small_synthetic) == []
    assert set(small_synthetic.stats()["content_coverage"]) == {"text", "categories", "brand"}
