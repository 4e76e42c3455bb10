"""Fetch datasets from their public sources into the data-directory layout the registry reads.

``download(name, data_dir)`` writes each file to ``<file>.part`` and renames it when complete, so an
interrupted download never leaves a truncated file behind; files already present are skipped. Sources:

* ``beauty``, ``sports``: P5 sequence files from IDGenRec (commit a297185), in the users' chronological
  order as P5 made them (Beauty checked against its review timestamps; Sports not checked);
* ``toys``: IDGenRec's Toys ``user_sequence.txt`` lists every user's items sorted by ASIN, not by time, so
  ``user_sequence.txt`` is built from P5's own ``sequential.txt`` (integer ids, chronological) and
  ``datamaps.json`` (``id2user``, ``id2item``) as copied in RDRec (commit 4055c30), keeping P5's order;
  the item text still comes from IDGenRec;
* ``office``: LC-Rec json from APAO (commit aa08fcf);
* ``ml-100k``: RecBole atomic files from the RecBole repository;
* ``amazon2014:<Category>``: raw Amazon 2014 5-core reviews and metadata (McAuley, SNAP).

The P5 extras (``item_meta.jsonl``, ``timestamps.tsv``) and SETRec's splits (``setrec-splits/``) are not
downloaded: they were made by aligning other repositories' files with P5's (see the data folder's README).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.error import URLError
from urllib.request import urlopen

from tqdm import tqdm

from benchmark.data.dataset import DataError
from benchmark.data.registry import AMAZON_RAW_PREFIX, SPECS
from benchmark.safeio import atomic_write

AMAZON2014_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
IDGENREC_URL = "https://raw.githubusercontent.com/agiresearch/IDGenRec/a297185/rec_datasets/"
RDREC_URL = "https://raw.githubusercontent.com/WangXFng/RDRec/4055c30/data/"
APAO_URL = "https://raw.githubusercontent.com/yuyq18/APAO/aa08fcf/data/"
RECBOLE_URL = "https://raw.githubusercontent.com/RUCAIBox/RecBole/master/recbole/dataset_example/ml-100k/"
AMAZON2014_SUBDIR = "amazon2014"
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its URL, its name on disk, whether the loader needs it, and an optional check
    ``accept(downloaded_file, folder)`` that decides whether to keep it."""

    url: str
    filename: str
    required: bool = True
    accept: Callable[[Path, Path], bool] | None = None


@dataclass(frozen=True)
class Derived:
    """A file made from files fetched before it: ``build(folder, part)`` writes it to ``part``."""

    filename: str
    build: Callable[[Path, Path], None]


@dataclass(frozen=True)
class Source:
    """Where a dataset's files go (relative to the data directory) and where they come from, in order."""

    subdir: str
    files: tuple[RemoteFile | Derived, ...]


def _is_p5_item_text(path: Path, folder: Path) -> bool:
    """True when every line of ``path`` is ``ITEM_ID text`` with an item id from ``user_sequence.txt``."""
    try:
        sequences = (folder / "user_sequence.txt").read_text(encoding="utf-8")
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    items = {item for line in sequences.splitlines() for item in line.split()[1:]}
    rows = [line.split(maxsplit=1) for line in lines if line.strip()]
    return bool(rows) and all(len(row) == 2 and row[0] in items for row in rows)


def _p5(folder: str) -> tuple[RemoteFile, ...]:
    return (RemoteFile(f"{IDGENREC_URL}{folder}/user_sequence.txt", "user_sequence.txt"), _p5_item_text(folder))


def _p5_item_text(folder: str) -> RemoteFile:
    return RemoteFile(f"{IDGENREC_URL}{folder}/item_generative_indexing_phase_0.txt", "item_text.txt",
                      required=False, accept=_is_p5_item_text)


def _p5_from_datamaps(folder: Path, part: Path) -> None:
    """``user_sequence.txt`` from P5's ``sequential.txt`` (``user item item ...`` as integer ids, chronological)
    and ``datamaps.json`` (``id2user``, ``id2item``), line by line in the same order."""
    maps_path, seq_path = folder / P5_DATAMAPS, folder / P5_SEQUENTIAL
    try:
        maps = json.loads(maps_path.read_text(encoding="utf-8"))
        users, items = maps["id2user"], maps["id2item"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{maps_path}: expected P5's datamaps.json with 'id2user' and 'id2item' ({error})") from error
    lines = []
    for lineno, line in enumerate(seq_path.read_text(encoding="utf-8").splitlines(), start=1):
        ids = line.split()
        if not ids:
            continue
        try:
            lines.append(" ".join([users[ids[0]], *(items[i] for i in ids[1:])]))
        except KeyError as error:
            raise DataError(f"{seq_path} line {lineno}: id {error.args[0]!r} is not in {maps_path.name}") from error
    part.write_text("\n".join(lines) + "\n", encoding="utf-8")


P5_SEQUENTIAL = "p5_sequential.txt"
P5_DATAMAPS = "p5_datamaps.json"


DOWNLOADABLE: dict[str, Source] = {
    "beauty": Source(SPECS["beauty"].subdir, _p5("Beauty")),
    "toys": Source(SPECS["toys"].subdir, (
        RemoteFile(f"{RDREC_URL}toys/sequential.txt", P5_SEQUENTIAL),
        RemoteFile(f"{RDREC_URL}toys/datamaps.json", P5_DATAMAPS),
        Derived("user_sequence.txt", _p5_from_datamaps),
        _p5_item_text("Toys"),
    )),
    "sports": Source(SPECS["sports"].subdir, _p5("Sports")),
    "office": Source(SPECS["office"].subdir, (
        RemoteFile(f"{APAO_URL}Office/Office.inter.json", "Office.inter.json"),
        RemoteFile(f"{APAO_URL}Office/Office.item.json", "Office.item.json"),
    )),
    "ml-100k": Source(SPECS["ml-100k"].subdir, (
        RemoteFile(f"{RECBOLE_URL}ml-100k.inter", "ml-100k.inter"),
        RemoteFile(f"{RECBOLE_URL}ml-100k.item", "ml-100k.item", required=False),
        RemoteFile(f"{RECBOLE_URL}ml-100k.user", "ml-100k.user", required=False),
    )),
}


def downloadable_names() -> list[str]:
    """Every name ``download`` accepts (``<Category>`` stands for any Amazon 2014 category)."""
    return [*DOWNLOADABLE, f"{AMAZON_RAW_PREFIX}<Category>"]


def amazon2014_source(category: str) -> Source:
    """The raw Amazon 2014 5-core reviews (required) and metadata (optional) of one category."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", category):
        raise DataError(f"invalid Amazon 2014 category '{category}'; expected a name like Beauty or Toys_and_Games")
    return Source(AMAZON2014_SUBDIR, (
        RemoteFile(f"{AMAZON2014_URL}reviews_{category}_5.json.gz", f"reviews_{category}_5.json.gz"),
        RemoteFile(f"{AMAZON2014_URL}meta_{category}.json.gz", f"meta_{category}.json.gz", required=False),
    ))


def source(name: str) -> Source:
    """The download source of a dataset name; ``DataError`` listing the valid names otherwise."""
    if name.startswith(AMAZON_RAW_PREFIX):
        return amazon2014_source(name[len(AMAZON_RAW_PREFIX):])
    if name not in DOWNLOADABLE:
        raise DataError(f"no download source for '{name}'; downloadable: {', '.join(downloadable_names())}")
    return DOWNLOADABLE[name]


def download(name: str, data_dir: Path) -> Path:
    """Fetch the files of ``name`` into its folder under ``data_dir`` and return that folder.

    Files already present are kept. A failed required file raises ``DataError``; a failed optional file
    (item text, metadata) only prints a warning, and the loader then gives items empty text.
    """
    spec = source(name)
    folder = Path(data_dir) / spec.subdir
    folder.mkdir(parents=True, exist_ok=True)
    for remote in spec.files:
        target = folder / remote.filename
        if target.exists():
            continue
        if isinstance(remote, Derived):
            part = target.with_name(target.name + ".part")
            remote.build(folder, part)
            os.replace(part, target)
            continue
        try:
            fetch(remote, target)
        except DataError as error:
            if remote.required:
                raise
            print(f"warning: optional file skipped: {error}", file=sys.stderr)
    return folder


def fetch(remote: RemoteFile, target: Path) -> None:
    """Stream ``remote.url`` into a temporary file beside ``target`` with a progress bar, check it, then rename it to
    ``target`` (:func:`~benchmark.safeio.atomic_write`: an interrupted download leaves no file)."""
    def write(tmp: Path) -> None:
        try:
            with urlopen(remote.url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
                          disable=None) as bar:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        bar.update(len(chunk))
        except (URLError, OSError, http.client.HTTPException) as error:
            raise DataError(f"could not download {remote.url} ({error}); download it by hand and place it in "
                            f"{target.parent} as {target.name}") from error
        if remote.accept is not None and not remote.accept(tmp, target.parent):
            raise DataError(f"{remote.url} is not in the expected format; not saved as {target}")

    atomic_write(target, write)
