"""Shared fixtures: small datasets built in memory, and isolated result/cache folders."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.data.dataset import Dataset, build_dataset
from benchmark.data.synthetic import SyntheticConfig, generate


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
