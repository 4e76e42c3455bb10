"""Source-format loaders, the registry's errors and the download logic, on small files written here."""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest

from benchmark.data import download as dl
from benchmark.data.dataset import DataError, Dataset, kcore
from benchmark.data.loaders import load_amazon2014, load_lcrec, load_p5, load_recbole
from benchmark.data.registry import load_raw

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def raw_sequences(dataset: Dataset) -> dict[str, list[str]]:
    """``{raw user id: [raw item id, ...]}`` in chronological order."""
    raw_items = dataset.items["raw_id"].to_numpy()
    return {str(dataset.user_ids[u]): [str(raw_items[i]) for i in seq] for u, seq in enumerate(dataset.sequences())}


def item(dataset: Dataset, raw_id: str) -> dict:
    return dataset.items.set_index("raw_id").loc[raw_id].to_dict()


# P5 ----------------------------------------------------------------------------------------------------------

def test_p5_sequences_titles_and_positions(tmp_path: Path) -> None:
    write(tmp_path / "user_sequence.txt", "U1 A B C\n\nU2 C A\r\nU3 D B E A\n")
    write(tmp_path / "item_text.txt", "A apple pie\nB banana split 2\nC cherry\nZ never used\n")
    data = load_p5(tmp_path, "p5")
    assert data.name == "p5"
    assert (data.n_users, data.n_items, len(data.interactions)) == (3, 5, 9)
    assert list(data.user_ids) == ["U1", "U2", "U3"]
    assert raw_sequences(data) == {"U1": ["A", "B", "C"], "U2": ["C", "A"], "U3": ["D", "B", "E", "A"]}
    assert list(data.items["raw_id"]) == ["A", "B", "C", "D", "E"]
    assert item(data, "B")["title"] == "banana split 2"
    assert item(data, "D")["title"] == "" and item(data, "D")["categories"] == ()
    assert not data.has_timestamps and data.interactions["timestamp"].isna().all()
    u3 = data.interactions[data.interactions["user"] == 2].sort_values("position")
    assert list(u3["position"]) == [0, 1, 2, 3]


def test_p5_item_text_is_optional(tmp_path: Path) -> None:
    write(tmp_path / "user_sequence.txt", "U1 A B\n")
    data = load_p5(tmp_path, "p5")
    assert list(data.items["title"]) == ["", ""]
    assert data.item_texts() == ["", ""]


def test_kcore_on_handmade_sequences(tmp_path: Path) -> None:
    # k=2: item E occurs once, so U4 (E, A) drops to one interaction and goes too; then every
    # survivor has >= 2 interactions and every item >= 2 users' interactions.
    write(tmp_path / "user_sequence.txt", "U1 A B C\nU2 A B\nU3 C A B\nU4 E A\nU5 C D\n")
    data = kcore(load_p5(tmp_path, "p5"), 2)
    assert raw_sequences(data) == {"U1": ["A", "B", "C"], "U2": ["A", "B"], "U3": ["C", "A", "B"]}
    assert set(data.items["raw_id"]) == {"A", "B", "C"}
    assert sorted(data.interactions.groupby("user")["position"].max()) == [1, 2, 2]


# LC-Rec ------------------------------------------------------------------------------------------------------

def test_lcrec_items_and_order(tmp_path: Path) -> None:
    write(tmp_path / "Shop.inter.json", json.dumps({"0": [2, 0, 1], "1": [1, 3]}))
    write(tmp_path / "Shop.item.json", json.dumps({
        "0": {"title": "Stapler", "description": "Red", "brand": "ACME", "categories": "Office, Desk, Staplers"},
        "1": {"title": "Pen &amp; cap", "description": "", "brand": "Bic", "categories": "Office, Writing"},
        "2": {"title": "Tape", "brand": "3M", "categories": ""},
    }))
    data = load_lcrec(tmp_path, "shop")
    assert raw_sequences(data) == {"0": ["2", "0", "1"], "1": ["1", "3"]}
    stapler = item(data, "0")
    assert (stapler["title"], stapler["brand"], stapler["description"]) == ("Stapler", "ACME", "Red")
    assert stapler["categories"] == ("Office", "Desk", "Staplers")
    assert item(data, "1")["title"] == "Pen & cap"
    assert item(data, "2")["description"] == "" and item(data, "2")["categories"] == ()
    assert item(data, "3")["title"] == "" and item(data, "3")["brand"] == ""
    assert data.has_categories and not data.has_timestamps


# RecBole -----------------------------------------------------------------------------------------------------

def test_recbole_columns_by_name_and_timestamps(tmp_path: Path) -> None:
    write(tmp_path / "ml.inter", "timestamp:float\trating:float\titem_id:token\tuser_id:token\textra:token\n"
                                 "300\t4\t1\t7\tx\n100\t5\t2\t7\tx\n200\t3\t1\t8\tx\n\n150\t1\t3\t8\tx\n")
    write(tmp_path / "ml.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tHeat\t1995\tAction\n")
    data = load_recbole(tmp_path, "ml")
    assert data.has_timestamps
    assert raw_sequences(data) == {"7": ["2", "1"], "8": ["3", "1"]}
    toy = item(data, "1")
    assert toy["title"] == "Toy Story"
    assert toy["categories"] == ("Movies", "Animation")
    assert toy["description"] == "Genres: Animation, Children's, Comedy. Year: 1995"
    assert item(data, "3")["title"] == "" and item(data, "3")["categories"] == ()
    assert sorted(data.interactions["timestamp"]) == [100.0, 150.0, 200.0, 300.0]


def test_recbole_without_timestamp_or_item_file(tmp_path: Path) -> None:
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\nu\ta\nu\tb\n")
    data = load_recbole(tmp_path, "x")
    assert not data.has_timestamps
    assert raw_sequences(data) == {"u": ["a", "b"]}


# Amazon 2014 -------------------------------------------------------------------------------------------------

def review(user: str, asin: str, time: int) -> str:
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": time, "overall": 5.0})


def write_amazon_reviews(folder: Path) -> None:
    write_gz(folder / "reviews_Beauty_5.json.gz", [review("R1", "A1", 300), review("R1", "A2", 100),
                                                   review("R2", "A3", 200), review("R2", "A1", 250)])


def test_amazon2014_reviews_and_meta(tmp_path: Path) -> None:
    write_amazon_reviews(tmp_path)
    write_gz(tmp_path / "meta_Beauty.json.gz", [
        "{'asin': 'A1', 'title': 'Lip &amp; Cheek', 'brand': 'Glow', 'price': 12.5, "
        "'categories': [['Beauty', 'Makeup', 'Lips'], ['Beauty', 'Sale']], 'description': 'Tint'}",
        "{'asin': 'A2', 'categories': [['Beauty', 'Skin Care']], 'related': {'also_bought': ['A1']}}",
        "{'asin': 'UNREVIEWED', 'title': 'never parsed', 'categories': [['Health', 'x']]}",
        '{"asin": "A3", "title": "JSON line", "price": null, "categories": [["Health & Personal Care", "Soap"]], '
        '"inStock": true}',
    ])
    data = load_amazon2014(tmp_path, "Beauty", "amazon2014:Beauty")
    assert data.has_timestamps
    assert raw_sequences(data) == {"R1": ["A2", "A1"], "R2": ["A3", "A1"]}
    lip = item(data, "A1")
    assert (lip["title"], lip["brand"], lip["price"], lip["description"]) == ("Lip & Cheek", "Glow", 12.5, "Tint")
    assert lip["categories"] == ("Makeup", "Lips")
    assert item(data, "A2")["categories"] == ("Skin Care",)
    assert item(data, "A3")["categories"] == ("Health & Personal Care", "Soap")
    assert math.isnan(item(data, "A3")["price"]) and item(data, "A2")["title"] == ""
    assert "UNREVIEWED" not in set(data.items["raw_id"])


def test_amazon2014_meta_is_optional(tmp_path: Path) -> None:
    write_amazon_reviews(tmp_path)
    data = load_amazon2014(tmp_path, "Beauty", "amazon2014:Beauty")
    assert data.n_items == 3 and set(data.item_texts()) == {""}
    assert not data.has_categories and data.items["price"].isna().all()


# Errors ------------------------------------------------------------------------------------------------------

def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"user_sequence\.txt not found; expected P5 user sequences"):
        load_p5(tmp_path, "p5")
    with pytest.raises(DataError, match=r"\*\.inter\.json not found"):
        load_lcrec(tmp_path, "lc")
    with pytest.raises(DataError, match=r"\*\.inter not found; expected one file of RecBole"):
        load_recbole(tmp_path, "rb")
    write(tmp_path / "a.inter.json", "{}")
    with pytest.raises(DataError, match=r"\*\.item\.json not found"):
        load_lcrec(tmp_path, "lc")
    with pytest.raises(DataError) as error:
        load_amazon2014(tmp_path, "Toys_and_Games", "amazon2014:Toys_and_Games")
    assert str(tmp_path / "reviews_Toys_and_Games_5.json.gz") in str(error.value)
    assert "python -m benchmark download amazon2014:Toys_and_Games" in str(error.value)


def test_malformed_p5_line(tmp_path: Path) -> None:
    write(tmp_path / "user_sequence.txt", "U1 A B\nU2\nU3 C\n")
    with pytest.raises(DataError, match=r"user_sequence\.txt line 2: expected 'USER_ID ITEM_ID \[ITEM_ID \.\.\.\]', "
                                        r"got 'U2'"):
        load_p5(tmp_path, "p5")
    write(tmp_path / "user_sequence.txt", "U1 A B\nU1 C\n")
    with pytest.raises(DataError, match=r"line 2: user 'U1' already has a sequence on line 1"):
        load_p5(tmp_path, "p5")


def test_bad_json_reports_line_and_column(tmp_path: Path) -> None:
    write(tmp_path / "a.inter.json", '{\n  "0": [1, 2],\n  "1": [3,, 4]\n}')
    write(tmp_path / "a.item.json", "{}")
    with pytest.raises(DataError, match=r"a\.inter\.json line 3 column 11: invalid JSON"):
        load_lcrec(tmp_path, "lc")
    write(tmp_path / "a.inter.json", '{"0": [1, {"x": 2}]}')
    with pytest.raises(DataError, match=r"a\.inter\.json: user '0': expected a list of item ids"):
        load_lcrec(tmp_path, "lc")


def test_recbole_header_and_rows(tmp_path: Path) -> None:
    write(tmp_path / "x.inter", "user_id:token\tmovie:token\trating:float\nu\ta\t1\n")
    with pytest.raises(DataError, match=r"x\.inter: header lacks the field 'item_id'; "
                                        r"fields present: user_id, movie, rating"):
        load_recbole(tmp_path, "rb")
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\n")
    with pytest.raises(DataError, match=r"x\.inter line 3: expected 3 tab-separated fields .*found 2"):
        load_recbole(tmp_path, "rb")
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\tsoon\n")
    with pytest.raises(DataError, match=r"x\.inter line 3: expected a finite number in field 'timestamp', got 'soon'"):
        load_recbole(tmp_path, "rb")


@pytest.mark.parametrize("line", ["this is not a dict", "{'asin': 'A1', 'title': 'cut off"])
def test_amazon_meta_garbage_line(tmp_path: Path, line: str) -> None:
    write_amazon_reviews(tmp_path)
    write_gz(tmp_path / "meta_Beauty.json.gz", ["{'asin': 'A2', 'title': 'fine'}", line])
    with pytest.raises(DataError, match=r"meta_Beauty\.json\.gz line 2: expected a Python dict literal"):
        load_amazon2014(tmp_path, "Beauty", "amazon2014:Beauty")


def test_amazon_reviews_bad_lines(tmp_path: Path) -> None:
    write_gz(tmp_path / "reviews_Beauty_5.json.gz", [review("R1", "A1", 1), '{"reviewerID": "R2", "asin": }'])
    with pytest.raises(DataError, match=r"reviews_Beauty_5\.json\.gz line 2 column \d+: invalid JSON"):
        load_amazon2014(tmp_path, "Beauty", "b")
    write_gz(tmp_path / "reviews_Beauty_5.json.gz", [review("R1", "A1", 1), '{"reviewerID": "R2", "asin": "A1"}'])
    with pytest.raises(DataError, match=r"line 2: expected a JSON object with non-empty 'reviewerID' and 'asin'"):
        load_amazon2014(tmp_path, "Beauty", "b")
    (tmp_path / "reviews_Beauty_5.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"expected a complete gzip file"):
        load_amazon2014(tmp_path, "Beauty", "b")


# Registry ----------------------------------------------------------------------------------------------------

def test_registry_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_raw("beauty", tmp_path)
    assert str(tmp_path / "amazon2014-p5" / "beauty") in str(error.value)
    assert "python -m benchmark download beauty" in str(error.value)
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        load_raw("nope", tmp_path)


def test_registry_reads_each_layout(tmp_path: Path) -> None:
    write(tmp_path / "amazon2014-p5" / "toys" / "user_sequence.txt", "U1 A B\n")
    write(tmp_path / "movielens-100k" / "ml-100k.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\n")
    write_amazon_reviews(tmp_path / "amazon2014")
    assert load_raw("toys", tmp_path).n_items == 2
    assert load_raw("ml-100k", tmp_path).has_timestamps
    assert load_raw("amazon2014:Beauty", tmp_path).n_users == 2


@pytest.mark.skipif(not (SHARED_DATA / "amazon2014-p5" / "beauty").is_dir(), reason="shared Beauty data not present")
def test_real_beauty_counts() -> None:
    stats = load_raw("beauty", SHARED_DATA).stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (22_363, 12_101, 198_502)


# Download ----------------------------------------------------------------------------------------------------

@dataclass
class FakeRemote:
    """URL -> local file, served through ``file://`` instead of the network; every requested URL is logged."""

    files: dict[str, Path] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def urlopen(self, url: str, timeout: float) -> object:
        self.calls.append(url)
        if url not in self.files:
            raise URLError("network unreachable")
        return urlopen(self.files[url].as_uri(), timeout=timeout)


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> FakeRemote:
    fake = FakeRemote()
    monkeypatch.setattr(dl, "urlopen", fake.urlopen)
    return fake


def test_download_p5_layout_and_item_text_check(tmp_path: Path, remote: FakeRemote) -> None:
    base = f"{dl.IDGENREC_URL}Beauty/"
    remote.files[base + "user_sequence.txt"] = write(tmp_path / "src" / "seq", "U1 A B\nU2 B C\n")
    remote.files[base + "item_generative_indexing_phase_0.txt"] = write(tmp_path / "src" / "text",
                                                                       "A apple\nB bean\nC corn\n")
    folder = dl.download("beauty", tmp_path / "data")
    assert folder == tmp_path / "data" / "amazon2014-p5" / "beauty"
    assert sorted(p.name for p in folder.iterdir()) == ["item_text.txt", "user_sequence.txt"]
    assert load_raw("beauty", tmp_path / "data").items.set_index("raw_id").loc["C", "title"] == "corn"

    remote.files[f"{dl.RDREC_URL}toys/sequential.txt"] = write(tmp_path / "src" / "sequential", "1 1 2\n2 2 1 3\n")
    remote.files[f"{dl.RDREC_URL}toys/datamaps.json"] = write(tmp_path / "src" / "maps", json.dumps(
        {"id2user": {"1": "U1", "2": "U2"}, "id2item": {"1": "Z", "2": "A", "3": "M"}}))
    not_text = write(tmp_path / "src" / "ids", "A 17 4\nB\n")
    remote.files[f"{dl.IDGENREC_URL}Toys/item_generative_indexing_phase_0.txt"] = not_text
    folder = dl.download("toys", tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == [dl.P5_DATAMAPS, dl.P5_SEQUENTIAL, "user_sequence.txt"]
    assert (folder / "user_sequence.txt").read_text() == "U1 Z A\nU2 A Z M\n"
    assert f"{dl.IDGENREC_URL}Toys/user_sequence.txt" not in remote.calls


def test_download_skips_present_files_and_reports_failures(tmp_path: Path, remote: FakeRemote) -> None:
    folder = tmp_path / "data" / "amazon2014"
    write(folder / "reviews_Beauty_5.json.gz", "already here")
    assert dl.download("amazon2014:Beauty", tmp_path / "data") == folder
    assert remote.calls == [f"{dl.AMAZON2014_URL}meta_Beauty.json.gz"]
    assert sorted(p.name for p in folder.iterdir()) == ["reviews_Beauty_5.json.gz"]

    with pytest.raises(DataError) as error:
        dl.download("office", tmp_path / "data")
    message = str(error.value)
    assert f"{dl.APAO_URL}Office/Office.inter.json" in message and "by hand" in message
    assert str(tmp_path / "data" / "amazon-lcrec" / "office") in message
    assert not list((tmp_path / "data" / "amazon-lcrec" / "office").iterdir())


def test_download_names(tmp_path: Path) -> None:
    assert {"beauty", "toys", "sports", "office", "ml-100k", "amazon2014:<Category>"} <= set(dl.downloadable_names())
    with pytest.raises(DataError, match="no download source for 'synthetic'; downloadable: beauty"):
        dl.download("synthetic", tmp_path)
    with pytest.raises(DataError, match="invalid Amazon 2014 category"):
        dl.download("amazon2014:../etc", tmp_path)


def test_toys_sequences_from_p5_maps_name_a_missing_id(tmp_path: Path, remote: FakeRemote) -> None:
    remote.files[f"{dl.RDREC_URL}toys/sequential.txt"] = write(tmp_path / "src" / "sequential", "1 1 9\n")
    remote.files[f"{dl.RDREC_URL}toys/datamaps.json"] = write(tmp_path / "src" / "maps", json.dumps(
        {"id2user": {"1": "U1"}, "id2item": {"1": "Z"}}))
    with pytest.raises(DataError, match="p5_sequential.txt line 1: id '9' is not in p5_datamaps.json"):
        dl.download("toys", tmp_path / "data")
    assert not (tmp_path / "data" / "amazon2014-p5" / "toys" / "user_sequence.txt").exists()


def test_a_byte_order_mark_does_not_become_part_of_the_first_id(tmp_path: Path) -> None:
    folder = tmp_path / "amazon2014-p5" / "beauty"
    folder.mkdir(parents=True)
    (folder / "user_sequence.txt").write_bytes("\ufeffU1 A B C\nU2 B C A\n".encode())
    dataset = load_p5(folder, "beauty")
    assert list(dataset.user_ids) == ["U1", "U2"]
