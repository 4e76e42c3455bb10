"""Collaborative Indexing (CID) and Semantic Indexing (SemID) of Hua et al. (SIGIR-AP 2023) on hand cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.config import ConfigError, resolve
from benchmark.data.dataset import Dataset, build_dataset
from benchmark.splits import TrainData, make_split
from identifiers.base import RunContext
from identifiers.cid import CID, cooccurrence_graph
from identifiers.registry import get_scheme
from identifiers.semid import UNKNOWN, SemID, item_paths
from recommenders.contracts import ItemCodes
from tests.conftest import make_context


def cid_codes(ctx: RunContext, data: TrainData, **params) -> tuple[CID, ItemCodes]:
    scheme = CID({**ctx.config.params, **params}, ctx)
    return scheme, scheme.tokenize(data)


def assert_prefix_free(codes: ItemCodes) -> None:
    rows = [tuple(int(t) for t in row if t >= 0) for row in codes.codes]
    assert len(set(rows)) == len(rows)
    full = set(rows)
    for row in rows:
        assert all(row[:cut] not in full for cut in range(1, len(row)))


def community_sequences(rng: np.random.Generator, groups: list[range], users: int, length: int) -> list[np.ndarray]:
    return [rng.choice(np.array(groups[u % len(groups)]), size=length) for u in range(users)]


def test_cooccurrence_counts_pairs_of_training_sequences() -> None:
    sequences = [np.array([0, 1, 2, 1]), np.array([3]), np.array([2, 0])]
    whole = cooccurrence_graph(sequences, 5, window=0).toarray()
    assert whole[0, 1] == 2 and whole[1, 2] == 2 and whole[0, 2] == 2
    assert np.allclose(whole, whole.T) and np.all(np.diag(whole) == 0)
    assert whole[3].sum() == 0 and whole[4].sum() == 0
    near = cooccurrence_graph(sequences, 5, window=1).toarray()
    assert near[0, 1] == 1 and near[1, 2] == 2 and near[0, 2] == 1


@pytest.mark.parametrize("solver", ["lobpcg", "arpack"])
def test_cid_separates_two_communities_and_codes_cold_items(small_synthetic: Dataset, tmp_path: Path,
                                                            solver: str) -> None:
    rng = np.random.default_rng(0)
    groups = [range(0, 10), range(10, 20)]
    sequences = community_sequences(rng, groups, users=40, length=6)
    sequences += [np.array([3, 14]), np.array([22])]
    data = TrainData(sequences=sequences, n_items=23, max_history=10)
    ctx = make_context(CID, small_synthetic, tmp_path)
    scheme, codes = cid_codes(ctx, data, n_clusters=3, max_leaf=10, eigen_solver=solver)
    first = codes.codes[:, 0]
    assert len(set(first[:10].tolist())) == 1 and len(set(first[10:20].tolist())) == 1
    assert first[0] != first[10]
    isolated = first[20:]
    assert len(set(isolated.tolist())) == 1 and int(isolated[0]) not in (int(first[0]), int(first[10]))
    assert_prefix_free(codes)
    assert codes.codes.shape == (23, 2) and int(codes.codes.min()) >= 0
    stats = codes.statistics()
    assert stats["isolated_items"] == 3 and stats["levels"] == 1 and stats["clusters_per_level"] == [3]
    assert stats["cluster_tokens"] == 3 and stats["leaf_tokens"] == 10 and codes.vocab_size == 13
    assert stats["collision_rate_after_dedup"] == 0.0 and stats["collision_rate_before_dedup"] == 1.0


def test_cid_uses_only_the_training_sequences(small_synthetic: Dataset, tmp_path: Path) -> None:
    split = make_split(small_synthetic, "loo", 10)
    scheme, codes = cid_codes(make_context(CID, small_synthetic, tmp_path), split.train)
    assert codes.statistics()["isolated_items"] >= int((~split.warm).sum())
    other_dataset = semid_dataset([("A",), ("B",), ("C",)])
    _, same = cid_codes(make_context(CID, other_dataset, tmp_path), split.train)
    assert torch.equal(codes.codes, same.codes)


def test_cid_recursive_levels_disconnected_graph_and_determinism(small_synthetic: Dataset, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    groups = [range(0, 30), range(30, 60), range(60, 64)]
    sequences = community_sequences(rng, groups, users=90, length=8)
    data = TrainData(sequences=sequences, n_items=70, max_history=10)
    ctx = make_context(CID, small_synthetic, tmp_path)
    scheme, codes = cid_codes(ctx, data, n_clusters=4, max_leaf=8)
    assert_prefix_free(codes)
    stats = codes.statistics()
    assert stats["levels"] >= 2 and stats["leaf_size_max"] <= 8 and stats["isolated_items"] == 6
    assert stats["graph_components"] == 3 + 6
    for group in groups[:2]:
        assert len(set(codes.codes[list(group), 0].tolist())) == 1
    _, again = cid_codes(ctx, data, n_clusters=4, max_leaf=8)
    assert torch.equal(codes.codes, again.codes)


def test_cid_on_synthetic_split_and_parameter_checks(small_synthetic: Dataset, tmp_path: Path) -> None:
    ctx = make_context(CID, small_synthetic, tmp_path)
    split = make_split(small_synthetic, "loo", 10)
    scheme, codes = cid_codes(ctx, split.train)
    assert codes.n_items == small_synthetic.n_items
    assert_prefix_free(codes)
    assert codes.statistics()["leaf_size_max"] <= ctx.config.params["max_leaf"]
    _, windowed = cid_codes(ctx, split.train, window=2)
    assert_prefix_free(windowed)
    for bad in ({"n_clusters": 1}, {"max_leaf": 0}, {"window": -1}, {"assign_labels": "agglomerative"},
                {"eigen_solver": "amg"}):
        with pytest.raises(ConfigError, match=f"schemes.cid.{next(iter(bad))}"):
            CID.resolve_params("smoke", bad)


def semid_dataset(paths: list[tuple[str, ...]]) -> Dataset:
    raw = [f"i{k}" for k in range(len(paths))]
    items = pd.DataFrame({"raw_id": raw, "title": raw, "categories": paths})
    order = raw + raw[::-1] + raw
    inter = pd.DataFrame({"user": [f"u{k // 3}" for k in range(len(order))], "item": order})
    return build_dataset("toy-categories", items, inter)


def semid_codes(dataset: Dataset, tmp_path: Path, **params) -> tuple[SemID, ItemCodes]:
    ctx = make_context(SemID, dataset, tmp_path)
    scheme = SemID({**ctx.config.params, **params}, ctx)
    assert scheme.not_applicable(dataset) is None
    return scheme, scheme.tokenize(make_split(dataset, "loo", 10).train)


def test_semid_tokens_follow_category_tree_nodes(tmp_path: Path) -> None:
    paths = [("A", "B", "x"), ("A", "B", "y"), ("A", "C", "x"), ("A", "B", "x"), ()]
    dataset = semid_dataset(paths)
    assert list(dataset.items["categories"]) == paths
    scheme, codes = semid_codes(dataset, tmp_path)
    # "A" is shared by every categorised item and dropped; tokens by (depth, path):
    # <unknown>=0, B=1, C=2, B>x=3, B>y=4, C>x=5; leaf tokens 6, 7.
    rows = codes.codes.tolist()
    assert rows[0][:2] == [1, 3] and rows[3][:2] == [1, 3]
    assert sorted([rows[0][2], rows[3][2]]) == [6, 7]
    assert rows[1] == [1, 4, 6] and rows[2] == [2, 5, 6] and rows[4] == [0, 6, -1]
    assert codes.vocab_size == 8
    assert_prefix_free(codes)
    stats = codes.statistics()
    assert stats["distinct_paths"] == 4 and stats["max_items_per_path"] == 2 and stats["unknown_path_items"] == 1
    assert stats["path_tokens_per_level"] == [3, 3] and stats["collision_rate_before_dedup"] == pytest.approx(0.4)
    _, full = semid_codes(dataset, tmp_path, drop_shared_root=False)
    assert full.codes.shape == (5, 4) and len(set(full.codes[:4, 0].tolist())) == 1
    _, hybrid = semid_codes(dataset, tmp_path, leaf="iid")  # SemID+IID: the item's own token ends its code
    assert hybrid.codes.tolist() == [[1, 3, 6], [1, 4, 7], [2, 5, 8], [1, 3, 9], [0, 10, -1]]
    assert hybrid.vocab_size == 11


def test_semid_item_paths_keep_one_level() -> None:
    assert item_paths([("Beauty", "Hair"), ("Beauty",), ()], True) == [("Beauty", "Hair"), ("Beauty",), (UNKNOWN,)]
    assert item_paths([("Beauty", "Hair", "x"), ("Beauty", "Hair", "y")], True) == [("x",), ("y",)]
    assert item_paths([("Pets", "Hair"), ("Beauty", "Hair")], True) == [("Pets", "Hair"), ("Beauty", "Hair")]


def test_semid_not_applicable_without_categories(tmp_path: Path) -> None:
    items = pd.DataFrame({"raw_id": ["a", "b", "c"], "title": ["x", "y", "z"]})
    inter = pd.DataFrame({"user": ["u"] * 3 + ["v"] * 3, "item": ["a", "b", "c", "c", "b", "a"]})
    dataset = build_dataset("titles-only", items, inter)
    reason = SemID({}, make_context(SemID, dataset, tmp_path)).not_applicable(dataset)
    assert reason and "categories" in reason


def test_registry_contract() -> None:
    for name, cls in (("cid", CID), ("semid", SemID)):
        assert get_scheme(name) is cls and cls.paradigm == "sequence" and cls.citation
    assert resolve("synthetic", CID, 0, "paper").params == {"n_clusters": 20, "max_leaf": 500, "window": 0,
                                                           "assign_labels": "cluster_qr", "eigen_solver": "lobpcg",
                                                           "beam_size": 20, "leaf": "index"}
    assert resolve("synthetic", SemID, 0, "paper").params == {"drop_shared_root": True, "beam_size": 20}
    assert SemID.Params().leaf == "index", "an added field at its default stays out of the config (and its hash)"


def test_cid_gives_every_tree_node_its_own_token_and_the_iid_hybrid(small_synthetic: Dataset, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    groups = [range(0, 30), range(30, 60)]
    data = TrainData(sequences=community_sequences(rng, groups, users=90, length=8), n_items=60, max_history=10)
    ctx = make_context(CID, small_synthetic, tmp_path)
    _, codes = cid_codes(ctx, data, n_clusters=2, max_leaf=8)
    stats = codes.statistics()
    assert stats["cluster_tokens"] == sum(stats["clusters_per_level"])  # one token per non-root node
    parents: dict[int, set[tuple[int, ...]]] = {}
    for row in codes.raw_codes.tolist():
        path = [token for token in row if token >= 0]
        for depth, token in enumerate(path):
            parents.setdefault(token, set()).add(tuple(path[:depth]))
    assert all(len(prefixes) == 1 for prefixes in parents.values())  # a token names one node under one parent
    _, hybrid = cid_codes(ctx, data, n_clusters=2, max_leaf=8, leaf="iid")
    last = hybrid.codes.gather(1, ((hybrid.codes >= 0).sum(1, keepdim=True) - 1)).squeeze(1)
    assert torch.equal(last, stats["cluster_tokens"] + torch.arange(60))
    assert hybrid.vocab_size == stats["cluster_tokens"] + 60
    assert_prefix_free(hybrid)
