"""Shared fixtures: small datasets built in memory, and isolated result/cache folders."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from threadpoolctl import threadpool_limits

from benchmark.config import resolve
from benchmark.data.dataset import Dataset, build_dataset
from benchmark.data.synthetic import SyntheticConfig, generate
from benchmark.splits import Split, make_split
from identifiers.base import RunContext
from identifiers.registry import get_scheme


def make_dataset(sequences: dict[str, list[str]], timestamps: dict[str, list[int]] | None = None,
                 name: str = "toy") -> Dataset:
    """A dataset from ``{user: [item, ...]}`` with optional per-interaction timestamps."""
    rows = []
    for user, items in sequences.items():
        for pos, item in enumerate(items):
            ts = timestamps[user][pos] if timestamps else np.nan
            rows.append((user, item, ts, pos))
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp", "position"])
    items = pd.DataFrame({"raw_id": sorted({i for s in sequences.values() for i in s})})
    items["title"] = "item " + items["raw_id"]
    return build_dataset(name, items, inter)


@pytest.fixture(scope="session")
def small_synthetic() -> Dataset:
    """A small synthetic dataset (fast, same structure as the default one)."""
    return generate(SyntheticConfig(n_users=150, n_items=120), name="synthetic-small")


@pytest.fixture(scope="session")
def tiny(small_synthetic: Dataset) -> tuple[Dataset, Split]:
    """The small synthetic dataset with its leave-one-out split (history 10, as the smoke profile)."""
    return small_synthetic, make_split(small_synthetic, "loo", 10)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by a module's tests, so CF encoders and embeddings are fitted once."""
    return tmp_path_factory.mktemp("cache")


def make_context(scheme: type, dataset: Dataset, cache_dir: Path, seed: int = 0, split: Split | None = None,
                 **run: object) -> RunContext:
    """A CPU :class:`RunContext` for ``scheme`` in the smoke profile (leave-one-out split, history 10 unless
    ``split`` is given); ``run`` overrides run-level keys such as ``backbone``."""
    split = split or make_split(dataset, "loo", 10)
    return RunContext(config=resolve("synthetic", scheme, seed, "smoke", cli=dict(run)), dataset=dataset,
                      valid=split.valid, warm=split.warm, device=torch.device("cpu"), cache_dir=cache_dir,
                      progress=False, cf_config=resolve("synthetic", get_scheme("sasrec"), seed, "smoke"))


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One torch and BLAS thread for tiny workloads (no OpenMP/BLAS oversubscription on a busy 2-core machine);
    a module opts in with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)
