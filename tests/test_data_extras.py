"""P5 extras (item_meta.jsonl, timestamps.tsv), SETRec's released splits and the real shared files' checks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.config import ConfigError, resolve
from benchmark.data.dataset import DataError
from benchmark.data.registry import check_dataset_name, load_dataset, load_raw
from benchmark.splits import SPLITTERS, SplitError, make_split
from identifiers.registry import get_scheme

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TIMES_HEADER = "user_id\tasin\ttimestamp\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def p5(root: Path, name: str = "beauty") -> Path:
    folder = root / "amazon2014-p5" / name
    write(folder / "user_sequence.txt", "U1 A B C\nU2 B C\n")
    write(folder / "item_text.txt", "A apple phrase\nB bean phrase\nC corn phrase\nZ unused\n")
    return folder


def meta_line(asin: str, title: str | None, categories: list[list[str]], brand: str | None = None) -> str:
    return json.dumps({"asin": asin, "title": title, "categories": categories, "brand": brand}) + "\n"


# P5 extras ---------------------------------------------------------------------------------------------------

def test_item_meta_gives_title_brand_and_categories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = p5(tmp_path)
    write(folder / "item_meta.jsonl", meta_line("A", "Apple Deluxe", [["Beauty", "Fruit", "Red"], ["Beauty", "X"]],
                                                "Orchard") + meta_line("B", None, [["Beauty", "Legumes"]])
          + meta_line("Q", "Not sold here", [["Beauty"]]))
    dataset = load_raw("beauty", tmp_path)
    items = dataset.items.set_index("raw_id")
    assert items.loc["A", "title"] == "Apple Deluxe" and items.loc["A", "brand"] == "Orchard"
    assert items.loc["A", "categories"] == ("Beauty", "Fruit", "Red")
    assert items.loc["B", "title"] == "bean phrase" and items.loc["B", "brand"] == ""
    assert items.loc["C", "title"] == "corn phrase" and items.loc["C", "categories"] == ()
    assert dataset.item_texts()[0] == "Apple Deluxe. Orchard. Beauty > Fruit > Red"
    assert dataset.has_categories and dataset.extras == ("item_meta.jsonl",) and not dataset.has_timestamps
    warning = capsys.readouterr().err
    assert "item_meta.jsonl: 1 line(s) name items outside the sequences" in warning and "1 item(s)" in warning


@pytest.mark.parametrize("text, message", [
    ('{"asin": "A", "title": \n', "item_meta.jsonl line 1 column"),
    ('{"title": "no asin"}\n', "item_meta.jsonl line 1: expected a JSON object with a string \"asin\""),
    ('{"asin": "A", "categories": "Beauty"}\n', "item_meta.jsonl line 1: 'categories' must be a list"),
    (meta_line("A", "a", []) + meta_line("A", "b", []), "item_meta.jsonl line 2: item 'A' already has a line"),
])
def test_bad_item_meta_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    write(p5(tmp_path) / "item_meta.jsonl", text)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_raw("beauty", tmp_path)


def test_timestamps_give_time_and_enable_the_temporal_split(tmp_path: Path) -> None:
    folder = p5(tmp_path)
    write(folder / "timestamps.tsv", TIMES_HEADER + "U2\tC\t300\nU1\tA\t100\nU1\tB\t100\nU1\tC\t200\nU2\tB\t50\n")
    dataset = load_raw("beauty", tmp_path)
    assert dataset.has_timestamps and dataset.extras == ("timestamps.tsv",)
    assert [dataset.items["raw_id"][s].tolist() for s in dataset.sequences()] == [["A", "B", "C"], ["B", "C"]]
    assert dataset.interactions.sort_values(["user", "position"])["timestamp"].tolist() == [100, 100, 200, 50, 300]
    with pytest.raises(SplitError, match="temporal split has no validation"):  # two users are too few to cut
        make_split(dataset, "temporal", 5)
    assert SPLITTERS["temporal"](dataset, 5).protocol == "temporal"


@pytest.mark.parametrize("rows, message", [
    ("U1\tA\t100\nU1\tB\t100\nU2\tB\t50\nU2\tC\t60\n", "timestamps.tsv: no timestamp for user 'U1' item 'C'"),
    ("U1\tA\t100\nU1\tB\t100\nU1\tC\t200\nU2\tB\t50\nU2\tC\t60\nU2\tA\t70\n",
     "timestamps.tsv line 7: user 'U2' item 'A' is not an interaction"),
    ("U1\tA\t100\nU1\tB\t90\nU1\tC\t200\nU2\tB\t50\nU2\tC\t60\n",
     "timestamps.tsv line 3: user 'U1' item 'B' at 90 is earlier than the user's previous item"),
    ("U1\tA\tsoon\n", "timestamps.tsv line 2: expected a finite number in field 'timestamp', got 'soon'"),
    ("U1\tA\n", "timestamps.tsv line 2: expected 3 tab-separated fields"),
])
def test_mismatched_timestamps_name_file_and_line(tmp_path: Path, rows: str, message: str) -> None:
    write(p5(tmp_path) / "timestamps.tsv", TIMES_HEADER + rows)
    with pytest.raises(DataError, match=message):
        load_raw("beauty", tmp_path)


def test_timestamps_header_is_checked(tmp_path: Path) -> None:
    write(p5(tmp_path) / "timestamps.tsv", "user\titem\ttime\nU1\tA\t1\n")
    with pytest.raises(DataError, match="timestamps.tsv line 1: expected the header"):
        load_raw("beauty", tmp_path)


# SETRec's released splits ------------------------------------------------------------------------------------

SETREC_HEADER = "setrec_user_id\treviewer_id\tsetrec_item_id\tasin\tsplit\ttimestamp\n"


def setrec(root: Path, rows: str, name: str = "beauty") -> Path:
    p5(root, name)
    return write(root / "setrec-splits" / name / "interactions.tsv", SETREC_HEADER + rows)


GOOD_ROWS = ("0\tU1\t0\tA\ttrain\t10\n0\tU1\t1\tB\ttrain\t20\n0\tU1\t2\tC\tvalid\t30\n0\tU1\t0\tA\ttest\t40\n"
             "0\tU1\t1\tB\ttest\t40\n1\t\t1\tB\ttrain\t\n1\t\t2\tC\ttest\t\n2\tU3\t2\tC\ttest\t50\n")


def test_setrec_split_is_used_as_released(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setrec(tmp_path, GOOD_ROWS)
    dataset = load_dataset("setrec-beauty", tmp_path, k_core=5)
    assert dataset.n_users == 3 and dataset.n_items == 3 and dataset.has_fixed_split
    assert "no reviewer_id" in capsys.readouterr().err
    assert dataset.user_ids.tolist() == ["U1", "setrec:1", "U3"]
    assert dataset.items.set_index("raw_id").loc["C", "title"] == "corn phrase"
    split = make_split(dataset, "fixed", 4)
    a, b, c = (int(np.flatnonzero(dataset.items["raw_id"] == raw)[0]) for raw in "ABC")
    assert [s.tolist() for s in split.train.sequences] == [[a, b], [b], []]
    assert split.valid.targets.tolist() == [c] and split.valid.histories[0].tolist() == [-1, -1, a, b]
    assert split.test.users.tolist() == [0, 0, 1] and split.test.groups.tolist() == [0, 0, 1]
    assert split.test.targets.tolist() == [a, b, c]
    assert split.test.histories[0].tolist() == [-1, a, b, c] and split.test.histories[2].tolist() == [-1, -1, -1, b]
    assert split.stats()["test_users"] == 2 and split.stats()["test_examples"] == 3
    assert split.warm.tolist() == [True, True, False]
    with pytest.raises(SplitError, match="comes with its released split; use --split fixed"):
        make_split(dataset, "loo", 4)


def test_a_released_split_without_held_out_rows_names_its_file_not_k_core(tmp_path: Path) -> None:
    setrec(tmp_path, "0\tU1\t0\tA\ttrain\t10\n0\tU1\t1\tB\ttrain\t20\n")
    dataset = load_dataset("setrec-beauty", tmp_path, k_core=5)
    with pytest.raises(SplitError, match="no validation and no test examples .* the released split's file labels "
                                         r"no interaction valid / test .*\(--k-core does not apply"):
        make_split(dataset, "fixed", 4)


@pytest.mark.parametrize("rows, message", [
    ("0\tU1\t0\tA\tholdout\t1\n", "interactions.tsv line 2: unknown split 'holdout'"),
    ("0\tU1\t0\tA\tvalid\t1\n0\tU1\t1\tB\ttrain\t2\n", "line 3: user 'U1' has a train row after a valid"),
    ("0\tU1\t0\tA\ttrain\t5\n0\tU1\t1\tB\ttrain\t2\n", "interactions.tsv line 3: user 'U1' at 2 is earlier"),
    ("0\tU1\t0\tA\ttrain\t1\n1\tU2\t0\tB\ttrain\t1\n", "line 3: setrec_item_id 0 is 'B' here but 'A' on line 2"),
    ("0\tU1\t0\tA\ttrain\t1\n0\tU1\t5\tQ\ttest\t2\n", "item 'Q' \\(row 2\\) is not in the item content"),
    ("0\tU1\t0\tA\ttrain\n", "line 2: expected 6 tab-separated fields"),
])
def test_bad_setrec_rows_name_file_and_line(tmp_path: Path, rows: str, message: str) -> None:
    setrec(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        load_raw("setrec-beauty", tmp_path)


def test_any_setrec_folder_is_a_dataset_and_its_split_is_fixed(tmp_path: Path) -> None:
    setrec(tmp_path, GOOD_ROWS, name="garden")
    check_dataset_name("setrec-garden")
    assert load_raw("setrec-garden", tmp_path).n_users == 3
    with pytest.raises(KeyError, match="setrec-<folder under setrec-splits/>"):
        check_dataset_name("setrec-../x/")
    sasrec = get_scheme("sasrec")
    assert resolve("setrec-garden", sasrec, 0, "smoke").split == "fixed"
    with pytest.raises(ConfigError, match="comes with its released split; use split fixed"):
        resolve("setrec-garden", sasrec, 0, "smoke", cli={"split": "loo"})
    with pytest.raises(ConfigError, match="has no released split"):
        resolve("synthetic", sasrec, 0, "smoke", cli={"split": "fixed"})
    with pytest.raises(ConfigError, match="run.candidates: unknown value 'warm'; choose from all, segment"):
        resolve("synthetic", sasrec, 0, "smoke", {"run": {"candidates": "warm"}})
    default = resolve("synthetic", sasrec, 0, "smoke")
    segment = resolve("synthetic", sasrec, 0, "smoke", {"run": {"candidates": "segment"}})
    assert default.candidates == "all" and segment.hash() != default.hash()


def test_stats_shows_extras_and_the_released_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setrec(tmp_path, GOOD_ROWS)
    assert main(["stats", "--datasets", "setrec-beauty", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "extras amazon2014-p5/beauty/item_text.txt" in out
    assert "fixed     train interactions 3, valid 1 (1 users), test 3 (2 users)" in out


# The shared data (skipped where ../shared/data is absent) ----------------------------------------------------

P5_DIR = SHARED_DATA / "amazon2014-p5"


@pytest.mark.skipif(not (P5_DIR / "toys").is_dir(), reason="shared Toys data not present")
def test_real_toys_is_chronological() -> None:
    """The Toys file once had every user's items sorted by ASIN; P5's chronological file starts like this."""
    first = (P5_DIR / "toys" / "user_sequence.txt").read_text(encoding="utf-8").split("\n", 1)[0].split()
    assert first[:4] == ["AQW172A5SG5OC", "B001RNFQNK", "158978068X", "B004S8F7QM"]
    assert first[1:] != sorted(first[1:])


@pytest.mark.skipif(not (SHARED_DATA / "setrec-splits" / "beauty").is_dir(), reason="shared SETRec data not present")
def test_real_setrec_beauty_sizes() -> None:
    dataset = load_dataset("setrec-beauty", SHARED_DATA)
    split = make_split(dataset, "fixed", 20).stats()
    assert (dataset.n_users, dataset.n_items) == (18_136, 12_024)
    assert (split["train_interactions"], split["valid_examples"], split["test_examples"]) == (132_990, 16_641, 17_579)


@pytest.mark.skipif(not (P5_DIR / "beauty" / "timestamps.tsv").is_file(), reason="shared Beauty extras not present")
def test_real_beauty_extras() -> None:
    dataset = load_raw("beauty", SHARED_DATA)
    assert dataset.extras == ("item_meta.jsonl", "timestamps.tsv") and dataset.has_timestamps
    assert dataset.has_categories and (dataset.items["title"] != "").all()


def test_leaderboard_heading_names_segment_candidates(tmp_path: Path) -> None:
    from benchmark.records import scan_records
    from benchmark.reports.leaderboard import build_leaderboard
    from tests.test_leaderboard import write_record

    write_record(tmp_path / "results", "pop", 0.2)
    write_record(tmp_path / "results", "pop", 0.3, config={"candidates": "segment"}, name="_segment")
    [md, *_] = build_leaderboard(scan_records(tmp_path / "results"), tmp_path / "reports")
    headings = [line for line in md.read_text().splitlines() if line.startswith("## toy_data")]
    assert [h.split(" — ")[1] for h in headings] == ["backbone none, split loo, profile quick",
                                                    "backbone none, split loo, candidates segment, profile quick"]
