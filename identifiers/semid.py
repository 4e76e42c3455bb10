"""Semantic (content-based) Indexing (SemID) of Hua et al., "How to Index Item IDs for Recommendation
Foundation Models", SIGIR-AP 2023 (arXiv:2305.06569), as in the authors' public code (LLM-RecSys-ID).

An item's identifier is its category path from the root to the leaf category, one token per category,
followed by a leaf token that tells apart the items sharing that full path, e.g. ``<Makeup><Lips><Lip
Liners><5>`` in the paper. Only item content is used (categories are known at catalogue time), so cold
items get codes like any other item.

Mapping used here:

* **Path tokens**: one token per node of the category tree, i.e. per (depth, path prefix). ``Hair`` under
  ``Beauty`` and ``Hair`` under ``Pets`` are different tokens because their paths differ; two items share a
  token exactly when they share the path up to that depth. (The public code names a token after the
  category string alone; on a tree whose node names are unique, the two mappings coincide.) Token ids
  ``0 .. T-1`` are ordered by depth, then path.
* **Shared root**: the public code always drops the first level of every Amazon path (the dataset's own
  category, e.g. ``Beauty``, which every item shares: ``build_category_map`` in ``item_rep_method.py`` reads
  ``categories[0][1:]``). Here ``drop_shared_root`` drops the leading levels shared by every categorised
  item, always keeping at least one level per categorised item; it drops nothing when roots differ (the
  synthetic data, LC-Rec Office), and nothing either when some categorised item's path is the shared root
  alone: then every categorised item's code keeps that root as a constant first token.
* **Leaf tokens** ``<0> .. <m-1>`` (ids ``T ..``), shared by all paths, m = most items on one path; every
  item gets one, also when alone on its path (as in the public code). Items of a path get leaf indices in
  a random order drawn from the run seed (the public code shuffles items "to avoid data leakage").
* **Items without categories** on a dataset that has categories share the path ``(<unknown>,)``, a root
  level node of its own, and get leaf tokens like any path. The public code instead gives each such item a
  category token of its own, named after its item id, and no leaf token (``build_category_map`` and
  ``content_based_representation``). A dataset without any category is not applicable.

**SemID+IID** (``leaf: iid``; the paper's hybrid indexing): the leaf token is the item's own independent ID
token (one new token per item) instead of its index on the path, as for CID+IID (see :mod:`identifiers.cid`).
This is what the released ``content_based_representation`` (``item_rep_method.py``) does in place of the leaf
index: on Amazon as a commented-out alternative line, on Yelp as the active branch (the leaf is a token named
after the item id), so the released Yelp SemID codes already end with the item's own token.

Recommender: the authors' P5 adds whole-word embeddings (every README command passes
``--whole_word_embedding shijie``: an embedding of the index of the whole word each input token belongs to is
added to its token embedding, ``modeling_p5.py`` and ``calculate_whole_word_ids`` in ``data.py``); the suite's
sequence recommender has none (as for CID).

Every code ends with its only leaf token and leaf tokens appear nowhere else, so no code is a prefix of
another; codes of different depths are right-padded with -1.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.config import param
from benchmark.splits import TrainData
from identifiers.base import SequenceScheme
from identifiers.cid import LEAF_TOKENS
from identifiers.registry import register
from recommenders.contracts import ItemCodes

UNKNOWN = "<unknown>"


@dataclass
class SemIDParams:
    """Semantic Indexing hyper-parameters (defaults = quick profile = paper).

    drop_shared_root: drop the leading category levels that every categorised item shares (keeping at
        least one level per item, so nothing is dropped when some item's path is the shared root alone), as
        the public code always drops the dataset's own top category of Amazon paths. Default True (paper:
        True).
    beam_size: beams of the constrained beam search that decodes recommendations. Paper: 20 (the public
        code generates with 20 beams over a trie of valid IDs).
    leaf: last token of a code: ``index`` (the item's index on its path, SemID) or ``iid`` (the item's own
        token, the SemID+IID hybrid). Default ``index``. Tunable (``python -m benchmark tune``): leaf.
    """

    drop_shared_root: bool = True
    beam_size: int = param(20, low=1, option=True)
    leaf: str = param("index", choices=LEAF_TOKENS, tune=True, added=True)


@register("semid")
class SemID(SequenceScheme):
    """Semantic Indexing: category path tokens + a leaf index token (Hua et al.)."""

    citation = ("Hua, Xu, Ge & Zhang, How to Index Item IDs for Recommendation Foundation Models, "
                "SIGIR-AP 2023 (semantic indexing, SemID).")
    Params = SemIDParams
    needs_content = ("categories",)
    train_profiles = {"quick": {"epochs": 20}}

    def tokenize(self, data: TrainData) -> ItemCodes:
        start = time.perf_counter()
        paths = item_paths(list(self.ctx.items["categories"]), self.params.drop_shared_root)
        if len(paths) != data.n_items:
            raise ValueError(f"semid: the catalogue has {len(paths)} items, the training data {data.n_items}")
        nodes = sorted({(depth, path[:depth + 1]) for path in paths for depth in range(len(path))})
        token = {node: i for i, node in enumerate(nodes)}
        members: dict[tuple[str, ...], list[int]] = {}
        for item, path in enumerate(paths):
            members.setdefault(path, []).append(item)
        priority = np.random.default_rng(self.ctx.seed).permutation(len(paths))
        leaf_index = np.zeros(len(paths), dtype=np.int64)
        for items in members.values():
            ordered = sorted(items, key=lambda item: priority[item])
            leaf_index[ordered] = np.arange(len(ordered))
        if self.params.leaf == "iid":
            leaf_index = np.arange(len(paths))
        depth = max(len(path) for path in paths)
        leaf_tokens = int(leaf_index.max()) + 1
        raw = torch.full((len(paths), depth), -1, dtype=torch.long)
        codes = torch.full((len(paths), depth + 1), -1, dtype=torch.long)
        for item, path in enumerate(paths):
            ids = [token[(d, path[:d + 1])] for d in range(len(path))]
            raw[item, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            codes[item, :len(ids)] = raw[item, :len(ids)]
            codes[item, len(ids)] = len(nodes) + int(leaf_index[item])
        per_path = np.array([len(items) for items in members.values()])
        lengths = np.array([len(path) for path in paths])
        details = {
            "path_tokens": len(nodes),
            "path_tokens_per_level": [int(n) for _, n in sorted(Counter(d for d, _ in nodes).items())],
            "leaf_tokens": leaf_tokens,
            "leaf": self.params.leaf,
            "distinct_paths": len(members),
            "max_items_per_path": int(per_path.max()),
            "mean_items_per_path": float(per_path.mean()),
            "category_depth_max": int(lengths.max()),
            "category_depth_mean": float(lengths.mean()),
            "unknown_path_items": sum(path == (UNKNOWN,) for path in paths),
            "tokenize_seconds": time.perf_counter() - start,
        }
        return ItemCodes(codes=codes, vocab_size=len(nodes) + leaf_tokens, raw_codes=raw, details=details)


def item_paths(categories: list[tuple[str, ...]], drop_shared_root: bool) -> list[tuple[str, ...]]:
    """Each item's category path (root first) as used for its code; empty paths become ``(<unknown>,)``."""
    known = [tuple(path) for path in categories if len(path)]
    shared = 0
    if drop_shared_root and known:
        shortest = min(len(path) for path in known)
        while shared < shortest - 1 and len({path[shared] for path in known}) == 1:
            shared += 1
    return [tuple(path)[shared:] if len(path) else (UNKNOWN,) for path in categories]
