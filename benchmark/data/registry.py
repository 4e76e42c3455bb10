"""Datasets by name: where their files live under a data directory and which loader reads them."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmark.data import loaders
from benchmark.data.dataset import DataError, Dataset, kcore
from benchmark.data.synthetic import SyntheticConfig, generate

DATA_DIR_ENV = "GENREC_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its source format, its folder relative to the data directory, its origin, and whether
    ``python -m benchmark download`` fetches it from a public source (:mod:`benchmark.data.download`)."""

    name: str
    fmt: str
    subdir: str
    description: str
    reader: Callable[[Path, str], Dataset]
    downloadable: bool = False


SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", "synthetic", "", "embedded generator (category tree, long tail, habits, releases)",
                    lambda _folder, name: generate(SyntheticConfig(), name=name)),
        DatasetSpec("beauty", "p5", "amazon2014-p5/beauty", "Amazon 2014 Beauty 5-core (P5 split files)",
                    loaders.load_p5, downloadable=True),
        DatasetSpec("toys", "p5", "amazon2014-p5/toys", "Amazon 2014 Toys_and_Games 5-core (P5)", loaders.load_p5,
                    downloadable=True),
        DatasetSpec("sports", "p5", "amazon2014-p5/sports", "Amazon 2014 Sports_and_Outdoors 5-core (P5)",
                    loaders.load_p5, downloadable=True),
        DatasetSpec("office", "lcrec", "amazon-lcrec/office", "Amazon 2014 Office_Products 5-core (LC-Rec json)",
                    loaders.load_lcrec, downloadable=True),
        DatasetSpec("scientific", "lcrec", "amazon-lcrec/scientific",
                    "Amazon 2018 Industrial_and_Scientific (LC-Rec json)", loaders.load_lcrec),
        DatasetSpec("ml-100k", "recbole", "movielens-100k", "MovieLens 100K (RecBole atomic files)",
                    loaders.load_recbole, downloadable=True),
        DatasetSpec("setrec-beauty", "setrec", "setrec-splits/beauty",
                    "SETRec's released temporal split of Amazon 2014 Beauty (fixed; item content from P5's)",
                    loaders.load_setrec),
        DatasetSpec("setrec-toys", "setrec", "setrec-splits/toys",
                    "SETRec's released split of Amazon 2014 Toys_and_Games (fixed; item content from P5's)",
                    loaders.load_setrec),
    )
}
AMAZON_RAW_PREFIX = "amazon2014:"
CATEGORY = re.compile(r"[A-Za-z0-9_&-]+")
"""The characters an ``amazon2014:`` category may hold (no path separators, no dots)."""
SETREC_PREFIX = "setrec-"
SETREC_SUBDIR = "setrec-splits"


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered name, or of ``setrec-<folder>`` for any folder under ``setrec-splits/``."""
    if name in SPECS:
        return SPECS[name]
    if not name.startswith(SETREC_PREFIX):
        raise KeyError(f"unknown dataset '{name}'")
    folder = name[len(SETREC_PREFIX):]
    return DatasetSpec(name, "setrec", f"{SETREC_SUBDIR}/{folder}", f"SETRec's released split '{folder}'",
                       loaders.load_setrec)


def dataset_names() -> list[str]:
    """Every name ``load_dataset`` accepts (plus ``amazon2014:<Category>`` for raw Amazon files)."""
    return list(SPECS)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory: the argument, else ``$GENREC_DATA_DIR``, else ``./datasets``."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or "datasets")


def has_released_split(name: str) -> bool:
    """Whether the dataset ``name`` comes with a fixed train / valid / test split (SETRec's)."""
    return name.startswith(SETREC_PREFIX)


def check_dataset_name(name: str) -> None:
    """Raise ``KeyError`` with the valid choices when ``name`` is not a known dataset; an ``amazon2014:``
    category may hold letters, digits, ``_``, ``-`` and ``&`` only, so it never names a path outside the data
    folder."""
    if name in SPECS:
        return
    if name.startswith(AMAZON_RAW_PREFIX) and len(name) > len(AMAZON_RAW_PREFIX):
        category = name[len(AMAZON_RAW_PREFIX):]
        if CATEGORY.fullmatch(category):
            return
        raise KeyError(f"dataset '{name}': an {AMAZON_RAW_PREFIX} category may hold letters, digits, _, - and & "
                       f"only (e.g. {AMAZON_RAW_PREFIX}Beauty or {AMAZON_RAW_PREFIX}Clothing_Shoes_and_Jewelry), got "
                       f"{category!r}")
    if name.startswith(SETREC_PREFIX) and re.fullmatch(r"[A-Za-z0-9_.-]+", name[len(SETREC_PREFIX):]) \
            and name[len(SETREC_PREFIX):].strip("."):
        return
    raise KeyError(f"unknown dataset '{name}'; choose from {', '.join(SPECS)}, {AMAZON_RAW_PREFIX}<Category> "
                   f"or {SETREC_PREFIX}<folder under {SETREC_SUBDIR}/>")


def is_present(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether the folder of the registered dataset ``name`` exists (the embedded synthetic one always does)."""
    spec = get_spec(name)
    return spec.fmt == "synthetic" or (resolve_data_dir(data_dir) / spec.subdir).is_dir()


def load_raw(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Read a dataset as its source has it, without k-core filtering."""
    check_dataset_name(name)
    root = resolve_data_dir(data_dir)
    if name.startswith(AMAZON_RAW_PREFIX):
        category = name[len(AMAZON_RAW_PREFIX):]
        return loaders.load_amazon2014(root / "amazon2014", category, name)
    spec = get_spec(name)
    folder = root / spec.subdir
    if not is_present(name, data_dir):
        fetch = (f"run `python -m benchmark download {name}`" if spec.downloadable else
                 "place its files there by hand (it has no download source; datasets/README.md shows the layout)")
        raise DataError(f"dataset '{name}': folder {folder} not found; pass --data-dir (or set {DATA_DIR_ENV}) "
                        f"to a directory holding {spec.subdir}/, or {fetch}")
    return spec.reader(folder, name)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, k_core: int = 5) -> Dataset:
    """Read a dataset and apply ``k_core`` filtering to users and items (not to a released split)."""
    return kcore(load_raw(name, data_dir), k_core)
