"""The one in-memory form of every data source: an items table and an interactions table."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from benchmark.hashing import content_key

ITEM_COLUMNS = ("raw_id", "title", "description", "brand", "categories", "price")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file, line and expectation."""


@dataclass
class Dataset:
    """Items and interactions with contiguous integer ids.

    ``items`` is indexed ``0..n_items-1`` with columns ``raw_id`` (the source's id, str), ``title``,
    ``description``, ``brand`` (str, possibly empty), ``categories`` (tuple of str, root first) and
    ``price`` (float, NaN when unknown). ``interactions`` has integer ``user`` and ``item`` columns, a
    float ``timestamp`` (NaN when the source only gives order) and ``position``, the 0-based index of
    the interaction in its user's chronological sequence. Users are ``0..n_users-1``.
    ``item_source`` names the file(s) the item content was read from (empty: none, or generated), for messages;
    ``duplicate_item_rows`` counts item rows of the source that repeated an earlier row's id (the first is
    kept). A dataset with a released split (SETRec's) has a ``split`` column (train / valid / test), which
    k-core filtering leaves alone. ``extras`` names the optional files read beside the source's main files
    (e.g. ``item_meta.jsonl``, ``timestamps.tsv``).
    """

    name: str
    items: pd.DataFrame
    interactions: pd.DataFrame
    user_ids: np.ndarray = field(repr=False)
    item_source: str = ""
    duplicate_item_rows: int = 0
    extras: tuple[str, ...] = ()

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def has_timestamps(self) -> bool:
        return bool(self.interactions["timestamp"].notna().all()) and len(self.interactions) > 0

    @property
    def has_fixed_split(self) -> bool:
        """Whether the source fixes the train / valid / test split (a ``split`` column)."""
        return "split" in self.interactions

    @property
    def has_categories(self) -> bool:
        return bool(self.items["categories"].map(len).gt(0).any())

    def sequences(self) -> list[np.ndarray]:
        """Each user's items in chronological order (index = user id)."""
        ordered = self.interactions.sort_values(["user", "position"], kind="stable")
        bounds = np.searchsorted(ordered["user"].to_numpy(), np.arange(self.n_users + 1))
        items = ordered["item"].to_numpy()
        return [items[bounds[u]:bounds[u + 1]] for u in range(self.n_users)]

    def item_texts(self, fields: tuple[str, ...] = ("title", "brand", "categories", "description")) -> list[str]:
        """One text per item for semantic encoders, joining the requested non-empty fields."""
        texts = []
        for row in self.items.itertuples(index=False):
            parts = []
            for name in fields:
                value = getattr(row, name)
                if name == "categories":
                    value = " > ".join(value)
                if isinstance(value, str) and value.strip():
                    parts.append(value.strip())
            texts.append(". ".join(parts))
        return texts

    def content_coverage(self) -> dict[str, float]:
        """Share of items with text (a title or a description), with categories and with a brand."""
        items, n = self.items, max(1, self.n_items)
        has_text = items["title"].str.len().gt(0) | items["description"].str.len().gt(0)
        return {"text": float(has_text.sum()) / n, "categories": float(items["categories"].map(len).gt(0).sum()) / n,
                "brand": float(items["brand"].str.len().gt(0).sum()) / n}

    def fingerprint(self) -> str:
        """Content hash of what a run reads: every interaction (user, item, timestamp, position and a released
        split's labels), the raw user and item ids and every item field. Two datasets of one name with different
        data (a re-download, an edited file, another k-core) get different fingerprints."""
        items = self.items.assign(categories=self.items["categories"].map(" > ".join))
        return content_key(pd.util.hash_pandas_object(self.interactions, index=False).to_numpy(),
                           pd.util.hash_pandas_object(items, index=False).to_numpy(),
                           [str(user) for user in self.user_ids])

    def shared_texts(self) -> int:
        """Items whose non-empty text (:meth:`item_texts`) is identical to another item's."""
        texts = pd.Series(self.item_texts())
        texts = texts[texts.str.len() > 0]
        return int(texts.duplicated(keep=False).sum())

    def stats(self) -> dict[str, object]:
        """Users, items, interactions, density, mean history length and item-content coverage and the extras read."""
        n_inter = len(self.interactions)
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "density": n_inter / max(1, self.n_users * self.n_items),
            "mean_history_length": n_inter / max(1, self.n_users),
            "has_timestamps": self.has_timestamps,
            "has_categories": self.has_categories,
            "content_coverage": self.content_coverage(),
            "extras": list(self.extras),
        }


def build_dataset(name: str, items: pd.DataFrame, interactions: pd.DataFrame, item_source: str = "") -> Dataset:
    """Re-index raw tables into a :class:`Dataset` (``item_source``: the file(s) ``items`` was read from).

    ``items`` needs ``raw_id`` and may carry any of the other item columns; ``interactions`` needs
    ``user`` and ``item`` (raw ids) and either ``timestamp`` or ``position`` (or both). Interactions
    whose item is missing from ``items`` get an item row with empty content. A ``split`` column is kept.
    Items nobody interacted with are dropped. Ties in timestamp keep the source order.
    """
    for column in ("user", "item"):
        if column not in interactions:
            raise DataError(f"{name}: interactions lack the column '{column}'")
    inter = interactions.copy()
    inter["user"] = inter["user"].astype(str)
    inter["item"] = inter["item"].astype(str)
    if "timestamp" not in inter:
        inter["timestamp"] = np.nan
    inter["timestamp"] = inter["timestamp"].astype(float)
    if "position" not in inter:
        inter["position"] = np.arange(len(inter))
    inter["_source_order"] = np.arange(len(inter))
    inter = inter.sort_values(["user", "timestamp", "position", "_source_order"], kind="stable", na_position="last")

    items = items.copy()
    items["raw_id"] = items["raw_id"].astype(str)
    n_rows = len(items)
    items = items.drop_duplicates("raw_id", keep="first")
    duplicates = n_rows - len(items)
    used = pd.Index(inter["item"].unique())
    missing = used.difference(pd.Index(items["raw_id"]))
    if len(missing):
        items = pd.concat([items, pd.DataFrame({"raw_id": missing})], ignore_index=True)
    items = items[items["raw_id"].isin(used)]
    items = _normalise_items(items)
    first_seen = {raw: i for i, raw in enumerate(pd.unique(inter.sort_values("_source_order")["item"]))}
    items = items.assign(_first=items["raw_id"].map(first_seen)).sort_values("_first").drop(columns="_first")
    items = items.reset_index(drop=True)

    item_index = pd.Series(np.arange(len(items)), index=items["raw_id"])
    user_ids = pd.unique(inter.sort_values("_source_order")["user"])
    user_index = pd.Series(np.arange(len(user_ids)), index=user_ids)
    out = pd.DataFrame({
        "user": user_index.loc[inter["user"]].to_numpy(),
        "item": item_index.loc[inter["item"]].to_numpy(),
        "timestamp": inter["timestamp"].to_numpy(),
    })
    out["position"] = out.groupby("user").cumcount()
    if "split" in inter:
        out["split"] = inter["split"].to_numpy()
    out = out.reset_index(drop=True)
    return Dataset(name=name, items=items, interactions=out, user_ids=np.asarray(user_ids, dtype=object),
                   item_source=item_source, duplicate_item_rows=duplicates)


def _normalise_items(items: pd.DataFrame) -> pd.DataFrame:
    items = items.copy()
    for column in ("title", "description", "brand"):
        if column not in items:
            items[column] = ""
        items[column] = items[column].fillna("").astype(str).str.strip()
    if "categories" not in items:
        items["categories"] = [() for _ in range(len(items))]
    items["categories"] = items["categories"].map(_as_path)
    if "price" not in items:
        items["price"] = np.nan
    items["price"] = pd.to_numeric(items["price"], errors="coerce").astype(float)
    return items[list(ITEM_COLUMNS)]


def _as_path(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")] if ">" not in value else [p.strip() for p in value.split(">")]
        return tuple(p for p in parts if p)
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(str(p).strip() for p in value if str(p).strip())
    return ()


def kcore(dataset: Dataset, k: int) -> Dataset:
    """Iteratively drop users and items with fewer than ``k`` interactions, then re-index.

    A dataset with a released split (a ``split`` column) is returned as it is: filtering would change that split.
    """
    if k <= 1 or dataset.has_fixed_split:
        return dataset
    inter = dataset.interactions
    while True:
        user_counts = inter["user"].map(inter["user"].value_counts())
        item_counts = inter["item"].map(inter["item"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            break
        inter = inter[keep]
    if len(inter) == len(dataset.interactions):
        return dataset
    if inter.empty:
        raise DataError(f"{dataset.name}: no interactions survive {k}-core filtering")
    items = dataset.items.loc[np.sort(inter["item"].unique())]
    raw = pd.DataFrame({
        "user": dataset.user_ids[inter["user"].to_numpy()],
        "item": dataset.items["raw_id"].to_numpy()[inter["item"].to_numpy()],
        "timestamp": inter["timestamp"].to_numpy(),
        "position": inter["position"].to_numpy(),
    })
    filtered = build_dataset(dataset.name, items, raw, dataset.item_source)
    return replace(filtered, duplicate_item_rows=dataset.duplicate_item_rows, extras=dataset.extras)
