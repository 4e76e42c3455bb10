"""Readers for each source format; each builds raw items/interactions tables and calls ``build_dataset``.

Formats (see the README's Data section for the folder layout):

* P5 sequence files: ``user_sequence.txt`` and optional ``item_text.txt``, ``item_meta.jsonl`` (title, categories,
  brand) and ``timestamps.tsv`` (order only without it);
* SETRec's released splits: ``interactions.tsv`` with a train/valid/test column, item content by ASIN;
* LC-Rec json: ``X.inter.json`` and ``X.item.json`` (order only);
* RecBole atomic files: ``X.inter`` and optional ``X.item`` (timestamps when the header has ``timestamp``);
* raw Amazon 2014 (McAuley): ``reviews_<Category>_5.json.gz`` and optional ``meta_<Category>.json.gz``.

Every malformed input raises :class:`DataError` naming the file, the 1-based line and what was expected.
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import math
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.data.dataset import DataError, Dataset, build_dataset

P5_SEQUENCE_LINE = "'USER_ID ITEM_ID [ITEM_ID ...]'"
P5_ITEM_LINE = "'ITEM_ID TEXT'"
RECBOLE_CATEGORY_ROOT = "Movies"
RECBOLE_TITLE_FIELDS = ("movie_title", "title")
RECBOLE_YEAR_FIELDS = ("release_year", "year")
RECBOLE_GENRE_FIELDS = ("class", "genre")
P5_META_FILE = "item_meta.jsonl"
P5_META_LINE = 'a JSON object with a string "asin" and optional "title", "categories" and "brand"'
P5_TIMES_FILE = "timestamps.tsv"
P5_TIMES_HEADER = ("user_id", "asin", "timestamp")
SETREC_FILE = "interactions.tsv"
SETREC_HEADER = ("setrec_user_id", "reviewer_id", "setrec_item_id", "asin", "split", "timestamp")
SETREC_SPLITS = ("train", "valid", "test")
SETREC_CONTENT_DIR = "amazon2014-p5"
AMAZON_META_LINE = "a Python dict literal (or JSON object) with an 'asin' key"
_ASIN_KEY = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def load_p5(folder: Path, name: str) -> Dataset:
    """P5 files: ``user_sequence.txt`` (``USER_ID ITEM ITEM ...`` per line, chronological), optional
    ``item_text.txt`` (``ITEM_ID text``; the text becomes the title) and the optional extras beside them.

    * ``item_meta.jsonl`` (``{"asin", "title", "categories": [[path, ...], ...], "brand"}`` per line): the
      item's title (a null title falls back to ``item_text.txt``'s phrase), its first category path (root
      first, as given) and its brand. Lines of items outside the sequences are skipped with a warning.
    * ``timestamps.tsv`` (header ``user_id<TAB>asin<TAB>timestamp``, one row per interaction): unix seconds.
      Rows are matched to the sequences by user and item (a repeated item by occurrence); every interaction
      needs exactly one row and a user's timestamps must not decrease along the P5 order, which breaks ties.

    Without ``timestamps.tsv`` interactions carry positions only. Mismatched extras raise :class:`DataError`
    naming the file and line; :attr:`Dataset.extras` lists the extras that were read.
    """
    seq_path = _require(folder / "user_sequence.txt", f"P5 user sequences, one line per user: {P5_SEQUENCE_LINE}")
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    first_line: dict[str, int] = {}
    for lineno, line in _lines(seq_path):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise _bad_line(seq_path, lineno, P5_SEQUENCE_LINE, line)
        user = tokens[0]
        if user in first_line:
            raise DataError(f"{seq_path} line {lineno}: user '{user}' already has a sequence on line "
                            f"{first_line[user]}; expected one line per user")
        first_line[user] = lineno
        users.extend([user] * (len(tokens) - 1))
        items.extend(tokens[1:])
        positions.extend(range(len(tokens) - 1))
    interactions = pd.DataFrame({"user": users, "item": items, "position": positions})

    raw_ids: list[str] = []
    titles: list[str] = []
    text_path = folder / "item_text.txt"
    if text_path.is_file():
        for _, line in _lines(text_path):
            parts = line.split(maxsplit=1)
            if parts:
                raw_ids.append(parts[0])
                titles.append(parts[1] if len(parts) == 2 else "")
    catalogue = pd.DataFrame({"raw_id": raw_ids, "title": titles}, dtype=object)
    extras: list[str] = []
    meta_path = folder / P5_META_FILE
    if meta_path.is_file():
        catalogue = _p5_item_meta(meta_path, catalogue, set(items))
        extras.append(P5_META_FILE)
    time_path = folder / P5_TIMES_FILE
    if time_path.is_file():
        interactions["timestamp"] = _p5_timestamps(time_path, seq_path, users, items, first_line)
        extras.append(P5_TIMES_FILE)
    sources = ", ".join(str(p) for p in (text_path, meta_path) if p.is_file())
    return replace(_build(name, seq_path, catalogue, interactions, sources), extras=tuple(extras))


def _p5_item_meta(path: Path, catalogue: pd.DataFrame, known: set[str], warn_missing: bool = True) -> pd.DataFrame:
    """``catalogue`` (raw_id, title from ``item_text.txt``) completed with ``item_meta.jsonl``'s fields; lines
    of items outside ``known`` are skipped, and counted in a warning with the ``known`` items lacking a line."""
    rows: dict[str, dict] = {}
    skipped = 0
    for lineno, line, record in _json_lines(path, _lines(path)):
        if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
            raise _bad_line(path, lineno, P5_META_LINE, line)
        categories = record.get("categories") or []
        if not (isinstance(categories, list) and all(isinstance(c, list) for c in categories)):
            raise DataError(f"{path} line {lineno}: 'categories' must be a list of category paths (lists of "
                            f"str), got {_snippet(json.dumps(categories))}")
        asin = record["asin"]
        if asin in rows:
            raise DataError(f"{path} line {lineno}: item '{asin}' already has a line; expected one line per item")
        if asin not in known:
            skipped += 1
            continue
        where = f"{path} line {lineno}, field"
        rows[asin] = {"title": _text(record.get("title"), f"{where} 'title'"),
                      "brand": _text(record.get("brand"), f"{where} 'brand'"),
                      "categories": tuple(part for part in (_text(c, f"{where} 'categories'") for c in categories[0])
                                          if part) if categories else ()}
    without = len(known - set(rows))
    if (skipped or without) and warn_missing:
        _warn(f"{path}: {skipped} line(s) name items outside the sequences (ignored); {without} item(s) of the "
              "sequences have no line (title from item_text.txt only)")
    phrases = dict(zip(catalogue["raw_id"], catalogue["title"]))
    ids = list(dict.fromkeys([*phrases, *rows]))
    meta = [rows.get(raw, {}) for raw in ids]
    return pd.DataFrame({"raw_id": ids,
                         "title": [m.get("title") or phrases.get(raw, "") for raw, m in zip(ids, meta)],
                         "brand": [m.get("brand", "") for m in meta],
                         "categories": [m.get("categories", ()) for m in meta]})


def _p5_timestamps(path: Path, seq_path: Path, users: list[str], items: list[str],
                   first_line: dict[str, int]) -> list[float]:
    """Each interaction's timestamp from ``timestamps.tsv``, checked against the sequences (see ``load_p5``)."""
    lines = _lines(path)
    header = next((line for _, line in lines if line.strip()), "")
    if header.split("\t") != list(P5_TIMES_HEADER):
        raise DataError(f"{path} line 1: expected the header {chr(9).join(P5_TIMES_HEADER)!r} (tab-separated), "
                        f"got {_snippet(header)}")
    rows: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise _bad_line(path, lineno, "3 tab-separated fields: user_id, asin, timestamp", line)
        try:
            stamp = float(fields[2])
        except ValueError:
            stamp = float("nan")
        if not math.isfinite(stamp):
            raise DataError(f"{path} line {lineno}: expected a finite number in field 'timestamp', got {fields[2]!r}")
        rows.setdefault((fields[0], fields[1]), []).append((stamp, lineno))
    stamps: list[float] = []
    previous: tuple[str, float, int] = ("", float("-inf"), 0)
    for user, item in zip(users, items):
        queue = rows.get((user, item))
        if not queue:
            raise DataError(f"{path}: no timestamp for user '{user}' item '{item}' ({seq_path} line "
                            f"{first_line[user]}); expected one row per interaction")
        stamp, lineno = queue.pop(0)
        if user == previous[0] and stamp < previous[1]:
            raise DataError(f"{path} line {lineno}: user '{user}' item '{item}' at {stamp:.0f} is earlier than "
                            f"the user's previous item (line {previous[2]}, {previous[1]:.0f}), but follows it in "
                            f"{seq_path} line {first_line[user]}; expected timestamps that do not decrease")
        previous = (user, stamp, lineno)
        stamps.append(stamp)
    extra = next((queue[0] + (key,) for key, queue in rows.items() if queue), None)
    if extra is not None:
        raise DataError(f"{path} line {extra[1]}: user '{extra[2][0]}' item '{extra[2][1]}' is not an interaction "
                        f"of {seq_path} (or has more rows than occurrences); expected one row per interaction")
    return stamps


def load_setrec(folder: Path, name: str) -> Dataset:
    """SETRec's released split (``<data>/setrec-splits/<name>/interactions.tsv``): header
    ``setrec_user_id reviewer_id setrec_item_id asin split timestamp`` (tab-separated), ``split`` one of
    train / valid / test, ``timestamp`` unix seconds or empty. Rows of a user are in chronological order and
    their splits must run train, then valid, then test. Users are reviewer ids; a row without one (SETRec
    users that could not be mapped back) uses ``setrec:<setrec_user_id>``, with a warning counting them.

    Item content is joined by ASIN from the P5 folder of the same name (``<data>/amazon2014-p5/<name>/``:
    ``item_text.txt`` and ``item_meta.jsonl``, as :func:`load_p5` reads them); an ASIN missing there is an
    error, a missing folder only a warning (items then have no text). The interactions keep a ``split``
    column: the split is used as released (see :func:`benchmark.splits.fixed`), never re-derived.
    """
    path = _require(folder / SETREC_FILE, f"SETRec split rows with the header {' '.join(SETREC_HEADER)!r}")
    lines = _lines(path)
    header = next((line for _, line in lines if line.strip()), "")
    if header.split("\t") != list(SETREC_HEADER):
        raise DataError(f"{path} line 1: expected the tab-separated header {' '.join(SETREC_HEADER)!r}, "
                        f"got {_snippet(header)}")
    users: list[str] = []
    items: list[str] = []
    splits: list[str] = []
    stamps: list[float] = []
    rows_of: dict[str, int] = {}
    last: dict[str, tuple[int, float, int]] = {}
    reviewer_of: dict[str, tuple[str, int]] = {}
    asin_of: dict[str, tuple[str, int]] = {}
    unmapped: set[str] = set()
    unmapped_rows = 0
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(SETREC_HEADER):
            raise _bad_line(path, lineno, f"{len(SETREC_HEADER)} tab-separated fields ({', '.join(SETREC_HEADER)})",
                            line)
        setrec_user, reviewer, setrec_item, asin, split, stamp_text = (field.strip() for field in fields)
        if not setrec_user or not setrec_item or not asin:
            raise _bad_line(path, lineno, "non-empty setrec_user_id, setrec_item_id and asin", line)
        if split not in SETREC_SPLITS:
            raise DataError(f"{path} line {lineno}: unknown split {split!r}; expected one of "
                            f"{', '.join(SETREC_SPLITS)}")
        for key, value, seen, what in ((setrec_user, reviewer, reviewer_of, "setrec_user_id"),
                                       (setrec_item, asin, asin_of, "setrec_item_id")):
            first = seen.setdefault(key, (value, lineno))
            if first[0] != value:
                raise DataError(f"{path} line {lineno}: {what} {key} is {value!r} here but {first[0]!r} on line "
                                f"{first[1]}; expected one id per {what}")
        try:
            stamp = float(stamp_text) if stamp_text else float("nan")
        except ValueError:
            raise DataError(f"{path} line {lineno}: expected a number or nothing in field 'timestamp', "
                            f"got {stamp_text!r}") from None
        user = reviewer or f"setrec:{setrec_user}"
        if not reviewer:
            unmapped.add(setrec_user)
            unmapped_rows += 1
        order = SETREC_SPLITS.index(split)
        prev_order, prev_stamp, prev_line = last.get(user, (0, float("-inf"), 0))
        if order < prev_order:
            raise DataError(f"{path} line {lineno}: user {user!r} has a {split} row after a "
                            f"{SETREC_SPLITS[prev_order]} row (line {prev_line}); expected train, then valid, "
                            "then test")
        if stamp < prev_stamp:
            raise DataError(f"{path} line {lineno}: user {user!r} at {stamp:.0f} is earlier than the user's previous "
                            f"row (line {prev_line}, {prev_stamp:.0f}); expected rows in chronological order")
        last[user] = (order, stamp if stamp == stamp else prev_stamp, lineno)
        rows_of[user] = rows_of.get(user, 0) + 1
        users.append(user)
        items.append(asin)
        splits.append(split)
        stamps.append(stamp)
    if unmapped:
        _warn(f"{path}: {len(unmapped)} user(s) ({unmapped_rows} rows) have no reviewer_id; they are named "
              "setrec:<setrec_user_id>")
    interactions = pd.DataFrame({"user": users, "item": items, "timestamp": stamps, "split": splits})
    partial = interactions["timestamp"].isna().groupby(interactions["user"], sort=False).agg(["any", "all"])
    partial = partial.index[partial["any"] & ~partial["all"]]
    if len(partial):
        raise DataError(f"{path}: user {partial[0]!r} has a timestamp on some rows and none on others; expected "
                        "all or none of a user's rows timestamped")
    interactions["position"] = interactions.groupby("user", sort=False).cumcount()

    content = folder.parent.parent / SETREC_CONTENT_DIR / folder.name
    catalogue = pd.DataFrame({"raw_id": []}, dtype=object)
    extras: list[str] = []
    if not content.is_dir():
        _warn(f"{path}: no item content folder {content}; items have no text")
    else:
        text_path = content / "item_text.txt"
        if text_path.is_file():
            rows = [line.split(maxsplit=1) for _, line in _lines(text_path) if line.strip()]
            catalogue = pd.DataFrame({"raw_id": [r[0] for r in rows], "title": [r[1] if len(r) == 2 else ""
                                                                              for r in rows]}, dtype=object)
            extras.append(str(text_path.relative_to(folder.parent.parent)))
        meta_path = content / P5_META_FILE
        if meta_path.is_file():
            catalogue = _p5_item_meta(meta_path, catalogue, set(items), warn_missing=False)
            extras.append(str(meta_path.relative_to(folder.parent.parent)))
        known = set(catalogue["raw_id"])
        missing = next((i for i, asin in enumerate(items) if asin not in known), None)
        if missing is not None:
            raise DataError(f"{path}: item {items[missing]!r} (row {missing + 1}) is not in the item content of "
                            f"{content} (item_text.txt / item_meta.jsonl); expected every ASIN there")
    sources = ", ".join(str(folder.parent.parent / extra) for extra in extras)
    return replace(_build(name, path, catalogue, interactions, sources), extras=tuple(extras))


def load_lcrec(folder: Path, name: str) -> Dataset:
    """LC-Rec json: exactly one ``*.inter.json`` (``{"user": [item, ...]}``, chronological) and one
    ``*.item.json`` (``{"item": {"title", "description", "brand", "categories"}}``). Ids become strings."""
    inter_path = _single(folder, "*.inter.json", 'LC-Rec interactions {"USER_ID": [ITEM_ID, ...]}')
    item_path = _single(folder, "*.item.json",
                        'LC-Rec item text {"ITEM_ID": {"title", "description", "brand", "categories"}}')
    sequences = _load_json(inter_path)
    if not isinstance(sequences, dict):
        raise DataError(f"{inter_path}: expected a JSON object mapping user ids to item lists, "
                        f"got {type(sequences).__name__}")
    users: list[str] = []
    items: list[str] = []
    for user, sequence in sequences.items():
        if not user.strip():
            raise DataError(f"{inter_path}: a user id is empty ({_snippet(user)}); every user needs an id")
        if not isinstance(sequence, list) or not all(_is_id(item) for item in sequence):
            raise DataError(f"{inter_path}: user '{user}': expected a list of item ids (int or non-empty str), "
                            f"got {_snippet(json.dumps(sequence))}")
        users.extend([str(user)] * len(sequence))
        items.extend(str(item) for item in sequence)
    interactions = pd.DataFrame({"user": users, "item": items})
    interactions["position"] = interactions.groupby("user", sort=False).cumcount()

    metadata = _load_json(item_path)
    if not isinstance(metadata, dict):
        raise DataError(f"{item_path}: expected a JSON object mapping item ids to their fields, "
                        f"got {type(metadata).__name__}")
    rows = []
    for raw_id, fields in metadata.items():
        if not isinstance(fields, dict):
            raise DataError(f"{item_path}: item '{raw_id}': expected an object with title, description, brand, "
                            f"categories, got {_snippet(json.dumps(fields))}")
        categories = fields.get("categories")
        where = f"{item_path}: item '{raw_id}', field"
        if categories is not None and not isinstance(categories, (str, list)):
            raise DataError(f"{where} 'categories': expected a comma-separated path or a list, "
                            f"got {_snippet(json.dumps(categories, default=str))}")
        rows.append({"raw_id": str(raw_id), "title": _text(fields.get("title"), f"{where} 'title'"),
                     "description": _text(fields.get("description"), f"{where} 'description'"),
                     "brand": _text(fields.get("brand"), f"{where} 'brand'"), "categories": categories or ""})
    return _build(name, inter_path, pd.DataFrame(rows, columns=["raw_id", "title", "description", "brand",
                                                                "categories"]), interactions, item_path)


def load_recbole(folder: Path, name: str) -> Dataset:
    """RecBole atomic files: exactly one ``*.inter`` (``user_id``, ``item_id``, optional ``timestamp``; other
    columns such as ratings are ignored) and an optional ``.item`` file of the same stem. Columns are found by
    header name. Items get title ``movie_title``, categories ``("Movies", first genre)`` and a description
    listing all genres and the release year."""
    inter_path = _single(folder, "*.inter", "RecBole interactions with a header like "
                                            "'user_id:token<TAB>item_id:token<TAB>timestamp:float'")
    columns, linenos = _read_atomic(inter_path)
    interactions = pd.DataFrame({"user": _ids(columns, "user_id", linenos, inter_path),
                                 "item": _ids(columns, "item_id", linenos, inter_path)})
    if "timestamp" in columns:
        interactions["timestamp"] = _numbers(columns["timestamp"], linenos, inter_path, "timestamp")

    item_path = inter_path.with_suffix(".item")
    items = pd.DataFrame({"raw_id": []})
    if item_path.is_file():
        item_columns, item_linenos = _read_atomic(item_path)
        raw_ids = _ids(item_columns, "item_id", item_linenos, item_path)
        titles = _first_field(item_columns, RECBOLE_TITLE_FIELDS, len(raw_ids))
        years = _first_field(item_columns, RECBOLE_YEAR_FIELDS, len(raw_ids))
        genres = [value.split() for value in _first_field(item_columns, RECBOLE_GENRE_FIELDS, len(raw_ids))]
        items = pd.DataFrame({"raw_id": raw_ids, "title": titles,
                              "description": [_movie_description(g, year) for g, year in zip(genres, years)],
                              "categories": [(RECBOLE_CATEGORY_ROOT, g[0]) if g else () for g in genres]})
    return _build(name, inter_path, items, interactions, item_path if item_path.is_file() else None)


def load_amazon2014(folder: Path, category: str, name: str) -> Dataset:
    """Raw Amazon 2014 (McAuley) files in ``folder``: ``reviews_<category>_5.json.gz`` (JSON lines with
    ``reviewerID``, ``asin``, ``unixReviewTime``) and optional ``meta_<category>.json.gz`` (Python dict
    literals with ``asin``, ``title``, ``description``, ``brand``, ``price``, ``categories``).

    The first category list is the item's path. Its root (the most common first element, i.e. the dataset's
    own top category such as "Beauty") is dropped because it is the same for nearly every item, and LC-Rec
    files omit it too; items filed under another root keep their full path. Meta lines of items nobody
    reviewed are only checked for an ``asin`` key, not parsed, which keeps loading fast.
    """
    reviews_path = folder / f"reviews_{category}_5.json.gz"
    if not reviews_path.is_file():
        raise DataError(f"{name}: Amazon 2014 5-core reviews file {reviews_path} not found; run "
                        f"`python -m benchmark download amazon2014:{category}` or place the file there")
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    for lineno, line, record in _json_lines(reviews_path, _gzip_lines(reviews_path)):
        try:
            user, item, time = str(record["reviewerID"]), str(record["asin"]), float(record["unixReviewTime"])
            if not user.strip() or not item.strip():
                raise ValueError("empty id")
        except (TypeError, KeyError, ValueError) as error:
            raise _bad_line(reviews_path, lineno, "a JSON object with non-empty 'reviewerID' and 'asin' and a "
                                                  "numeric 'unixReviewTime'", line) from error
        users.append(user)
        items.append(item)
        times.append(time)
    interactions = pd.DataFrame({"user": users, "item": items, "timestamp": times})

    meta_path = folder / f"meta_{category}.json.gz"
    rows = []
    if meta_path.is_file():
        wanted = set(items)
        for lineno, line in _gzip_lines(meta_path):
            if not line.strip():
                continue
            match = _ASIN_KEY.search(line)
            if match is None:
                raise _bad_line(meta_path, lineno, AMAZON_META_LINE, line)
            if match.group(1) not in wanted:
                continue
            record = _parse_meta(meta_path, lineno, line)
            where = f"{meta_path} line {lineno}, field"
            rows.append({"raw_id": str(record["asin"]), "title": _text(record.get("title"), f"{where} 'title'"),
                         "description": _text(record.get("description"), f"{where} 'description'"),
                         "brand": _text(record.get("brand"), f"{where} 'brand'"),
                         "price": record.get("price"),
                         "categories": _first_path(record.get("categories"), f"{where} 'categories'")})
    metadata = pd.DataFrame(rows, columns=["raw_id", "title", "description", "brand", "price", "categories"])
    metadata["categories"] = _drop_common_root(list(metadata["categories"]))
    return _build(name, reviews_path, metadata, interactions, meta_path if meta_path.is_file() else None)


def _build(name: str, source: Path, items: pd.DataFrame, interactions: pd.DataFrame,
           item_source: Path | str | None = None) -> Dataset:
    if interactions.empty:
        raise DataError(f"{source}: no interactions found; expected at least one user with an item")
    return build_dataset(name, items, interactions, str(item_source) if item_source else "")


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path} not found; expected {what}")
    return path


def _single(folder: Path, pattern: str, what: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if not matches:
        raise DataError(f"{folder / pattern} not found; expected one file of {what}")
    if len(matches) > 1:
        raise DataError(f"{folder}: expected exactly one {pattern} file, found {', '.join(m.name for m in matches)}")
    return matches[0]


def _decode(data: bytes, path: Path) -> str:
    """``data`` as UTF-8 text, without a leading byte-order mark (some editors write one; it would otherwise
    become part of the first id); a ``DataError`` naming the line otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        lineno = data[:error.start].count(b"\n") + 1
        raise DataError(f"{path} line {lineno}: expected UTF-8 text ({error.reason})") from error


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line)`` for a UTF-8 text file, line endings stripped."""
    for lineno, line in enumerate(_decode(path.read_bytes(), path).split("\n"), start=1):
        yield lineno, line.rstrip("\r")


def _json_lines(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str, Any]]:
    """``(line number, line, parsed JSON)`` for the non-blank ``lines`` of the JSON-lines file ``path``; invalid
    JSON is a :class:`DataError` naming the file, line and column."""
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} line {lineno} column {error.colno}: invalid JSON ({error.msg})") from error
        yield lineno, line, record


def _gzip_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line)`` for a gzip-compressed UTF-8 text file."""
    try:
        with gzip.open(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(f"{path} line {lineno}: expected UTF-8 text ({error.reason})") from error
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: expected a complete gzip file ({error}); delete it and download it again") from error


def _load_json(path: Path) -> object:
    """The JSON document in ``path``; an object that repeats a key is an error (json keeps the last silently)."""
    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise DataError(f"{path}: key(s) {', '.join(map(repr, repeated[:5]))} appear more than once in one "
                            "object; each user or item must appear once")
        return dict(pairs)

    try:
        return json.loads(_decode(path.read_bytes(), path), object_pairs_hook=unique)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} line {error.lineno} column {error.colno}: invalid JSON ({error.msg})") from error


def _read_atomic(path: Path) -> tuple[dict[str, list[str]], list[int]]:
    """Columns of a RecBole atomic file by field name (``:type`` stripped), and each row's line number."""
    lines = _lines(path)
    header = next((line for _, line in lines if line.strip()), None)
    if header is None:
        raise DataError(f"{path}: file is empty; expected a tab-separated header like "
                        "'user_id:token<TAB>item_id:token'")
    names = [field.split(":", 1)[0].strip() for field in header.split("\t")]
    rows: list[list[str]] = []
    linenos: list[int] = []
    for lineno, line in lines:
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(names):
            raise _bad_line(path, lineno, f"{len(names)} tab-separated fields ({', '.join(names)}), "
                                          f"found {len(values)}", line)
        rows.append(values)
        linenos.append(lineno)
    columns = [list(column) for column in zip(*rows)] if rows else [[] for _ in names]
    return dict(zip(names, columns)), linenos


def _field(columns: dict[str, list[str]], name: str, path: Path) -> list[str]:
    if name not in columns:
        raise DataError(f"{path}: header lacks the field '{name}'; fields present: {', '.join(columns)}")
    return columns[name]


def _ids(columns: dict[str, list[str]], name: str, linenos: list[int], path: Path) -> list[str]:
    """The id field ``name``, every value non-blank (an empty id would silently become a user or item)."""
    values = _field(columns, name, path)
    blank = next((lineno for lineno, value in zip(linenos, values) if not value.strip()), None)
    if blank is not None:
        raise DataError(f"{path} line {blank}: field '{name}' is empty; every row needs a {name}")
    return values


def _first_field(columns: dict[str, list[str]], names: tuple[str, ...], length: int) -> list[str]:
    """The first present column among ``names``, else empty strings."""
    return next((columns[name] for name in names if name in columns), [""] * length)


def _numbers(values: list[str], linenos: list[int], path: Path, field: str) -> pd.Series:
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float)
    bad = (~numbers.map(math.isfinite)).to_numpy().nonzero()[0]
    if len(bad):
        row = bad[0]
        raise DataError(f"{path} line {linenos[row]}: expected a finite number in field '{field}', "
                        f"got {values[row]!r}")
    return numbers


def _parse_meta(path: Path, lineno: int, line: str) -> dict:
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _bad_line(path, lineno, AMAZON_META_LINE, line) from error
    if not isinstance(record, dict) or "asin" not in record:
        raise _bad_line(path, lineno, AMAZON_META_LINE, line)
    return record


def _first_path(value: object, where: str) -> tuple[str, ...]:
    """The first list of a 2014 ``categories`` field (a list of category paths); ``where`` names it in errors."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        return tuple(part for part in (_text(name, where) for name in value[0]) if part)
    return ()


def _drop_common_root(paths: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    roots = Counter(path[0] for path in paths if path)
    if not roots:
        return paths
    root = roots.most_common(1)[0][0]
    return [path[1:] if len(path) > 1 and path[0] == root else path for path in paths]


def _movie_description(genres: list[str], year: str) -> str:
    parts = [f"Genres: {', '.join(genres)}" if genres else "", f"Year: {year.strip()}" if year.strip() else ""]
    return ". ".join(part for part in parts if part)


def _text(value: object, where: str) -> str:
    """A text field as one string: lists are joined, ``None`` is empty, numbers are written out, HTML entities
    are decoded; anything else (an object) is a ``DataError`` naming ``where`` (file, line or item, and field)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(part for part in (_text(item, where) for item in value) if part)
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: expected text, got {_snippet(json.dumps(value, default=str))}")
    return html.unescape(str(value)).strip()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _is_id(value: object) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (isinstance(value, int) and not isinstance(value, bool))


def _snippet(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _bad_line(path: Path, lineno: int, expected: str, line: str) -> DataError:
    return DataError(f"{path} line {lineno}: expected {expected}, got {_snippet(line.rstrip())}")
