"""The embedded default dataset, generated deterministically from a seed.

It has the structure that identifier schemes exploit, so that differences between schemes mean something:

* a three-level category tree (4 roots x 3 x 3 leaves) with a word vocabulary per node;
* titles and brands drawn from the item's category vocabularies (semantic IDs can find the tree);
* long-tail (Zipf) item popularity;
* users who prefer one or two root categories;
* sequential habits: each leaf category has a successor leaf, and each item a companion item that
  often follows it (collaborative signal that text alone does not reveal);
* unix timestamps, and items released over time, so that a global temporal split has cold items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.data.dataset import Dataset, build_dataset

TREE: dict[str, dict[str, list[str]]] = {
    "Kitchen": {"Cookware": ["frying pan", "stock pot", "wok"],
                "Cutlery": ["chef knife", "fork set", "knife sharpener"],
                "Storage": ["glass jar", "food container", "spice rack"]},
    "Outdoors": {"Camping": ["dome tent", "sleeping bag", "camp lantern"],
                 "Cycling": ["bike helmet", "bike light", "tire pump"],
                 "Fishing": ["fishing rod", "spinning reel", "soft lure"]},
    "Electronics": {"Audio": ["headphones", "bluetooth speaker", "earbuds"],
                    "Computing": ["keyboard", "wireless mouse", "monitor"],
                    "Power": ["wall charger", "battery pack", "usb cable"]},
    "Beauty": {"Skincare": ["moisturizer", "facial cleanser", "vitamin serum"],
               "Hair": ["shampoo", "conditioner", "hair brush"],
               "Makeup": ["lipstick", "mascara", "liquid foundation"]},
}
ADJECTIVES: dict[str, list[str]] = {
    "Kitchen": ["stainless", "nonstick", "ceramic", "cast iron", "bamboo", "compact"],
    "Outdoors": ["waterproof", "lightweight", "rugged", "foldable", "reflective", "insulated"],
    "Electronics": ["wireless", "noise cancelling", "fast", "portable", "ergonomic", "slim"],
    "Beauty": ["hydrating", "organic", "gentle", "long lasting", "matte", "fragrance free"],
}
BRANDS: dict[str, list[str]] = {
    "Kitchen": ["Cookmaster", "Chefline", "Panora", "Kitchora", "Ironleaf"],
    "Outdoors": ["Trailpeak", "Rivermark", "Summitco", "Wildfern", "Pedalon"],
    "Electronics": ["Voltix", "Sonora", "Keyforge", "Ampere", "Pixelon"],
    "Beauty": ["Glowra", "Purelle", "Silkana", "Velvetine", "Lumiere"],
}
VARIANTS = ["mini", "pro", "plus", "classic", "xl", "2 pack", "deluxe", "travel size", "family size", "limited edition"]
PRICE_SCALE = {"Kitchen": 30.0, "Outdoors": 60.0, "Electronics": 45.0, "Beauty": 15.0}
EPOCH = 1_500_000_000
DAY = 86_400


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and behaviour knobs of the generator (defaults: about 1,000 users, 600 items, 14k interactions)."""

    seed: int = 2026
    n_users: int = 1000
    n_items: int = 600
    min_length: int = 6
    mean_extra_length: float = 8.0
    max_length: int = 40
    zipf_exponent: float = 0.9
    p_companion: float = 0.35
    p_successor_leaf: float = 0.3
    p_same_leaf: float = 0.15
    late_release_share: float = 0.25
    horizon_days: int = 720


def generate(config: SyntheticConfig = SyntheticConfig(), name: str = "synthetic") -> Dataset:
    """Generate the dataset; the same config always gives the same dataset."""
    rng = np.random.default_rng(config.seed)
    leaves = [(root, sub, leaf) for root, subs in TREE.items() for sub, names in subs.items() for leaf in names]
    n_leaves = len(leaves)
    roots = list(TREE)

    item_leaf = np.concatenate([np.arange(n_leaves), rng.integers(0, n_leaves, config.n_items - n_leaves)])
    rng.shuffle(item_leaf)
    popularity = 1.0 / np.arange(1, config.n_items + 1) ** config.zipf_exponent
    popularity = popularity[rng.permutation(config.n_items)]
    horizon = config.horizon_days * DAY
    release = np.where(rng.random(config.n_items) < config.late_release_share,
                       rng.uniform(0.3 * horizon, 0.95 * horizon, config.n_items), 0.0)
    items = _item_table(rng, leaves, item_leaf)

    leaf_items = [np.flatnonzero(item_leaf == c) for c in range(n_leaves)]
    successor = np.array([(c // 3) * 3 + (c % 3 + 1) % 3 if rng.random() < 0.5 else (c + 3) % n_leaves
                          for c in range(n_leaves)])
    companion = np.array([rng.choice(leaf_items[successor[item_leaf[i]]]) for i in range(config.n_items)])
    root_of_leaf = np.array([roots.index(root) for root, _, _ in leaves])

    rows = []
    for user in range(config.n_users):
        length = min(config.max_length, config.min_length + int(rng.geometric(1.0 / config.mean_extra_length)) - 1)
        liked_roots = rng.choice(len(roots), size=1 + int(rng.random() < 0.4), replace=False)
        liked_leaves = np.flatnonzero(np.isin(root_of_leaf, liked_roots))
        t = rng.uniform(0, 0.75 * horizon)
        gap = (horizon - t) / (length + 1)
        seen: set[int] = set()
        last = -1
        for _ in range(length):
            t += rng.exponential(gap)
            item = _next_item(rng, config, t, last, seen, companion, item_leaf, successor, liked_leaves,
                              leaf_items, release, popularity)
            if item < 0:
                break
            rows.append((f"u{user:05d}", items["raw_id"][item], EPOCH + int(t)))
            seen.add(item)
            last = item
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return build_dataset(name, items, inter)


def _next_item(rng: np.random.Generator, config: SyntheticConfig, t: float, last: int, seen: set[int],
               companion: np.ndarray, item_leaf: np.ndarray, successor: np.ndarray, liked_leaves: np.ndarray,
               leaf_items: list[np.ndarray], release: np.ndarray, popularity: np.ndarray) -> int:
    """Companion item, else an item of the successor leaf, the same leaf or a liked leaf, by popularity."""
    draw = rng.random()
    if last >= 0 and draw < config.p_companion:
        nxt = companion[last]
        if release[nxt] <= t and nxt not in seen:
            return int(nxt)
    if last >= 0 and draw < config.p_companion + config.p_successor_leaf:
        leaf = successor[item_leaf[last]]
    elif last >= 0 and draw < config.p_companion + config.p_successor_leaf + config.p_same_leaf:
        leaf = item_leaf[last]
    else:
        leaf = rng.choice(liked_leaves)
    candidates = leaf_items[leaf]
    candidates = candidates[(release[candidates] <= t) & ~np.isin(candidates, list(seen))]
    if len(candidates) == 0:
        candidates = np.flatnonzero(release <= t)
        candidates = candidates[~np.isin(candidates, list(seen))]
        if len(candidates) == 0:
            return -1
    weights = popularity[candidates]
    return int(rng.choice(candidates, p=weights / weights.sum()))


def _item_table(rng: np.random.Generator, leaves: list[tuple[str, str, str]], item_leaf: np.ndarray) -> pd.DataFrame:
    records = []
    for index, leaf_id in enumerate(item_leaf):
        root, sub, leaf = leaves[leaf_id]
        brand = str(rng.choice(BRANDS[root]))
        adjective = str(rng.choice(ADJECTIVES[root]))
        variant = str(rng.choice(VARIANTS))
        title = f"{brand} {adjective} {leaf} {variant}"
        description = f"A {adjective} {leaf} for {sub.lower()} from {brand}, part of our {root.lower()} range."
        price = round(float(PRICE_SCALE[root] * rng.lognormal(0.0, 0.5)), 2)
        records.append({"raw_id": f"i{index:05d}", "title": title, "description": description, "brand": brand,
                        "categories": (root, sub, leaf.title()), "price": price})
    return pd.DataFrame.from_records(records)
