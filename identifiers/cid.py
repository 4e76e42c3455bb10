"""Collaborative Indexing (CID) of Hua et al., "How to Index Item IDs for Recommendation Foundation
Models", SIGIR-AP 2023 (arXiv:2305.06569), as in the authors' public code (LLM-RecSys-ID, OpenP5).

Items that co-occur in users' histories should share identifier tokens. The method:

1. **Co-occurrence graph** on the *training* sequences only: the weight ``A[i, j]`` is the number of
   position pairs of one training sequence holding ``i`` and ``j`` (pairs with ``i`` first plus pairs with
   ``j`` first; ``window`` > 0 keeps only pairs at most that many positions apart). The public code counts
   every pair of a user's training sequence (``itertools.combinations``). OpenP5 (``generate_collaborative_id``)
   adds each pair to both entries, the same sum. LLM-RecSys-ID (``CID_generation.py``) counts the two orders
   separately and writes both counts into both entries in decreasing order, so ``A[i, j]`` ends up the
   smaller of the two directional counts when both occur (the one count when only one does). Both keep
   self-loops from an item repeated in one sequence (OpenP5 only in the root graph); here the diagonal is
   zero.
2. **Recursive spectral clustering**: the item set is split into ``n_clusters`` clusters (paper N) by
   spectral clustering of the induced sub-graph (scikit-learn ``SpectralClustering(affinity="precomputed")``:
   embedding by the leading eigenvectors of the normalised Laplacian ``L = I - D^{-1/2} A D^{-1/2}``, labels
   by ``assign_labels``; the public code uses ``cluster_qr``); every cluster with more than ``max_leaf``
   items (paper k) is split again on its own induced sub-graph, until every leaf holds at most ``max_leaf``.
3. **Identifier** = the path of cluster tokens from the root to the item's leaf, plus one leaf token that
   tells apart the items of that leaf, e.g. ``<CI3><CI0><CL17>``.

Token layout (scheme vocabulary): **one token per node of the cluster tree** (ids ``0 .. T-1``, numbered
breadth-first, children of a node largest first), so two clusters share a token only when they are the same
cluster; the leaf tokens ``<CL0> .. <CL{k-1}>`` (ids ``T ..``) form a separate set, as in the authors'
``compute_index``. This follows the authors' code: LLM-RecSys-ID (``CF_index.py``, ``compute_index``) names the
token of level ``l`` after the whole label path ``c1-c2-..-cl``, i.e. one token per tree node, and OpenP5's
``generate_collaborative_id`` (``src/src_t5/utils/indexing.py``) numbers clusters with one counter that runs on over
the whole breadth-first pass (``index_now``), reset to 0 only past ``token_size`` (k) clusters. (An earlier
version of this module named a child by its rank among its siblings, shared by every parent, and wrongly said
that the authors' ``<CI*>`` tokens were shared that way.) Differences: OpenP5 wraps the counter at k and draws
the leaf tokens from the same ``<CI*>`` set, so with more than k clusters, or a leaf token equal to a cluster
token, tokens are reused; here every node keeps its own token and leaf tokens are their own set. Because
every code ends with its only leaf token, no code is a prefix of another, whatever the depths. Siblings are
ranked by size (largest first; ties by smallest item id); items within a leaf get leaf indices in a random
order drawn from the run seed. LLM-RecSys-ID numbers them in item-id order (``compute_index``, and the
indexing sections of ``CID_generation.py``); OpenP5 by default in the order its grouping lists them
(``--collaborative_last_token sequential``, ``src/src_t5/data/MultiTaskDataset.py``), with ``random`` as
an option. Codes of different depths are right-padded with -1.

**CID+IID** (``leaf: iid``; the paper's hybrid indexing, its best-performing collaborative variant): the leaf
token is the item's own independent ID token (``<IID{i}>``, one new token per item, ids ``T .. T+n-1``)
instead of its index inside the leaf, so the code is the cluster path followed by a token no other item has.
The released ``CID_generation.py`` (its CID+IID section, saved as ``computed_no_repetition_*`` and read by
``construct_indices_from_cluster`` under ``--last_token_no_repetition``, which the README's CID+IID command
passes; the logs name such runs ``CID_10_500_IID``) appends a token named after the item id, but only to
items whose leaf holds more than one item: an item alone in its leaf keeps the bare cluster path. Here every
item gets its IID token, so every code has the same structure.

Recommender: the authors' P5 adds whole-word embeddings (every README command of LLM-RecSys-ID passes
``--whole_word_embedding shijie``; see :mod:`identifiers.semid`); the suite's sequence recommender has none.

Graphs that are not connected (the authors' code leaves this to the eigensolver) are handled by a
deterministic rule that coincides with spectral clustering when the sub-graph is connected:

* *Isolated items* (no co-occurrence inside the node: cold items, items seen only in length-1 training
  sequences) form their own child, the last one, and the other items share the remaining ``N - 1`` clusters.
  A node of isolated items only carries no collaborative signal and is cut into ``N`` equal runs of item ids.
  Items absent from the training sequences thus get a cluster path and a leaf token like any item. The
  authors' code leaves them out of the clustering: OpenP5 gives each a lone leaf token (``<CI{i}>``, numbered
  over the list of such items, ``generate_collaborative_id``), LLM-RecSys-ID a single token named after its
  item id (``CF_representation`` in ``item_rep_method.py``).
* *Several connected components*: with at least as many components as clusters, whole components are
  packed into the clusters (largest first, each into the currently smallest cluster); with fewer, every
  component gets one cluster and the remaining ones go to the largest components by the highest-averages
  (D'Hondt) rule, and a component with several clusters is split by spectral clustering.
* A spectral split that puts everything into one cluster (numerically degenerate) falls back to equal runs
  of item ids, so every split makes progress.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import SpectralClustering

from benchmark.config import param
from benchmark.splits import TrainData
from identifiers.base import SequenceScheme
from identifiers.registry import register
from recommenders.contracts import ItemCodes

ASSIGN_LABELS = ("cluster_qr", "kmeans", "discretize")
EIGEN_SOLVERS = ("lobpcg", "arpack")
LEAF_TOKENS = ("index", "iid")
"""Last token of a code: the item's index inside its leaf, or its own independent token (hybrid +IID)."""


@dataclass
class CIDParams:
    """Collaborative Indexing hyper-parameters (defaults = quick profile).

    n_clusters: clusters per split, N in the paper (paper 20 on Amazon Beauty/Sports/Toys and Yelp; the
        public scripts also try 10). Default 10: our catalogues have hundreds to a few thousand items
        instead of 12-20k.
    max_leaf: most items in a leaf cluster, k in the paper; also bounds the number of leaf tokens (paper
        500 on Amazon, 200 on Yelp). Default 50: codes of 2-5 tokens on the synthetic data and Office (mean
        2.3 and 3.5), close to the 2-4 tokens (mean 3.1) that N = 20, k = 500 give on Beauty. With the
        paper's k = 500 a catalogue under 500 items is one leaf (one token per item, no clustering).
    window: co-occurrence window in positions; 0 counts every pair of items of a training sequence (the
        paper's choice), w > 0 only pairs at most w positions apart. Default 0.
    assign_labels: how scikit-learn turns the spectral embedding into clusters: ``cluster_qr`` (the
        public code's choice, deterministic), ``kmeans`` or ``discretize``. Default ``cluster_qr``.
    eigen_solver: scikit-learn eigensolver of the spectral embedding: ``lobpcg`` (default) or ``arpack``
        (scikit-learn's default, which the public code used). Both give the same root clusters on Office;
        arpack's shift-invert factorisation makes CID take about 10 minutes on Amazon Beauty (12k items)
        where lobpcg takes 12-18 s. Small sub-graphs use a dense solver either way.
    beam_size: beams of the constrained beam search that decodes recommendations. Paper: 20 (the public
        code generates with 20 beams over a trie of valid IDs).
    leaf: last token of a code: ``index`` (the item's index inside its leaf, CID) or ``iid`` (the item's
        own token, the CID+IID hybrid). Default ``index``.
    Tunable (``python -m benchmark tune``): n_clusters 4-32, max_leaf 10-500 (log), leaf.
    """

    n_clusters: int = param(10, low=2, tune=(4, 32, "int"))
    max_leaf: int = param(50, low=1, tune=(10, 500, "int-log"))
    window: int = param(0, low=0)
    assign_labels: str = param("cluster_qr", choices=ASSIGN_LABELS)
    eigen_solver: str = param("lobpcg", choices=EIGEN_SOLVERS)
    beam_size: int = param(20, low=1, option=True)
    leaf: str = param("index", choices=LEAF_TOKENS, tune=True)


@dataclass
class _Tree:
    """The cluster tree as per-item paths (node ids from the root's child down, breadth-first numbering) plus
    per-leaf members."""

    paths: list[tuple[int, ...]]
    leaves: list[np.ndarray]
    nodes_per_level: list[int]
    n_nodes: int


@register("cid")
class CID(SequenceScheme):
    """Collaborative Indexing: recursive spectral clustering of the item co-occurrence graph (Hua et al.)."""

    citation = ("Hua, Xu, Ge & Zhang, How to Index Item IDs for Recommendation Foundation Models, "
                "SIGIR-AP 2023 (collaborative indexing, CID).")
    Params = CIDParams
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"n_clusters": 4, "max_leaf": 40},
        "paper": {"n_clusters": 20, "max_leaf": 500},
    }
    train_profiles: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"epochs": 20}}

    def tokenize(self, data: TrainData) -> ItemCodes:
        start = time.perf_counter()
        adjacency = cooccurrence_graph(data.sequences, data.n_items, self.params.window)
        tree = self._cluster_tree(adjacency)
        n_cluster_tokens = tree.n_nodes
        priority = np.random.default_rng(self.ctx.seed).permutation(data.n_items)
        leaf_index = np.zeros(data.n_items, dtype=np.int64)
        for leaf in tree.leaves:
            leaf_index[leaf[np.argsort(priority[leaf], kind="stable")]] = np.arange(len(leaf))
        if self.params.leaf == "iid":
            leaf_index = np.arange(data.n_items)
        leaf_tokens = int(leaf_index.max()) + 1
        depth = max(len(path) for path in tree.paths)
        raw = torch.full((data.n_items, max(depth, 1)), -1, dtype=torch.long)
        codes = torch.full((data.n_items, depth + 1), -1, dtype=torch.long)
        for item, path in enumerate(tree.paths):
            raw[item, :len(path)] = torch.tensor(path, dtype=torch.long)
            codes[item, :len(path)] = raw[item, :len(path)]
            codes[item, len(path)] = n_cluster_tokens + int(leaf_index[item])
        sizes = np.array([len(leaf) for leaf in tree.leaves])
        n_components, _ = connected_components(adjacency, directed=False)
        details = {
            "cluster_tokens": n_cluster_tokens,
            "leaf_tokens": leaf_tokens,
            "leaf": self.params.leaf,
            "levels": depth,
            "clusters_per_level": tree.nodes_per_level,
            "leaf_clusters": len(tree.leaves),
            "leaf_size_max": int(sizes.max()),
            "leaf_size_mean": float(sizes.mean()),
            "graph_edges": int(adjacency.nnz // 2),
            "graph_components": int(n_components),
            "isolated_items": int((np.diff(adjacency.indptr) == 0).sum()),
            "tokenize_seconds": time.perf_counter() - start,
        }
        return ItemCodes(codes=codes, vocab_size=n_cluster_tokens + leaf_tokens, raw_codes=raw, details=details)

    def _cluster_tree(self, adjacency: sp.csr_matrix) -> _Tree:
        """Split clusters larger than ``max_leaf`` until none is left; breadth-first for level counts."""
        n_items = adjacency.shape[0]
        paths: list[tuple[int, ...]] = [()] * n_items
        leaves: list[np.ndarray] = []
        nodes_per_level: list[int] = []
        n_nodes = 0
        frontier: list[tuple[tuple[int, ...], np.ndarray]] = [((), np.arange(n_items))]
        while frontier:
            next_frontier = []
            for path, items in frontier:
                if len(items) <= self.params.max_leaf:
                    leaves.append(items)
                    for item in items:
                        paths[item] = path
                    continue
                groups = self._split(items, adjacency[items][:, items])
                next_frontier += [(path + (n_nodes + rank,), group) for rank, group in enumerate(groups)]
                n_nodes += len(groups)
            if next_frontier:
                nodes_per_level.append(len(next_frontier))
            frontier = next_frontier
        return _Tree(paths, leaves, nodes_per_level, n_nodes)

    def _split(self, items: np.ndarray, adjacency: sp.csr_matrix) -> list[np.ndarray]:
        """Partition ``items`` (induced sub-graph ``adjacency``) into at least two non-empty children."""
        n = min(self.params.n_clusters, len(items))
        isolated = np.diff(adjacency.indptr) == 0
        if isolated.all():
            return equal_runs(items, n)
        connected = ~isolated
        if not isolated.any():
            return self._split_connected(items, adjacency, n)
        rest = items[connected]
        groups = [rest] if n == 2 else self._split_connected(rest, adjacency[connected][:, connected], n - 1)
        return groups + [items[isolated]]

    def _split_connected(self, items: np.ndarray, adjacency: sp.csr_matrix, n: int) -> list[np.ndarray]:
        """Split items without isolated nodes into ``n`` clusters, respecting connected components."""
        n = min(n, len(items))
        n_components, labels = connected_components(adjacency, directed=False)
        components = sorted((np.flatnonzero(labels == c) for c in range(n_components)), key=lambda c: (-len(c), c[0]))
        if n_components >= n:
            bins: list[list[np.ndarray]] = [[] for _ in range(n)]
            totals = np.zeros(n, dtype=np.int64)
            for component in components:
                target = int(np.argmin(totals))
                bins[target].append(component)
                totals[target] += len(component)
            return _ranked([items[np.sort(np.concatenate(b))] for b in bins])
        shares = np.ones(n_components, dtype=np.int64)
        sizes = np.array([len(c) for c in components])
        for _ in range(n - n_components):
            quotient = np.where(shares < sizes, sizes / (shares + 1), -1.0)
            shares[int(np.argmax(quotient))] += 1
        groups = []
        for component, k in zip(components, shares):
            if k == 1:
                groups.append(items[component])
            else:
                groups += [items[component][g] for g in self._spectral(adjacency[component][:, component], int(k))]
        return _ranked(groups)

    def _spectral(self, adjacency: sp.csr_matrix, k: int) -> list[np.ndarray]:
        """Spectral clustering of a connected graph into ``k`` clusters, as local index groups."""
        size = adjacency.shape[0]
        if k >= size:
            return [np.array([i]) for i in range(size)]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The problem size .* too small", category=UserWarning)
            clustering = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=self.ctx.seed,
                                            assign_labels=self.params.assign_labels,
                                            eigen_solver=self.params.eigen_solver)
            labels = clustering.fit(adjacency).labels_
        groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
        return groups if len(groups) > 1 else equal_runs(np.arange(size), k)


def _ranked(groups: list[np.ndarray]) -> list[np.ndarray]:
    """Non-empty groups, largest first, ties by smallest item."""
    return sorted((g for g in groups if len(g)), key=lambda g: (-len(g), int(g.min())))


def equal_runs(items: np.ndarray, n: int) -> list[np.ndarray]:
    """``items`` cut into ``n`` consecutive runs of (almost) equal size."""
    return [run for run in np.array_split(items, n) if len(run)]


def cooccurrence_graph(sequences: list[np.ndarray], n_items: int, window: int) -> sp.csr_matrix:
    """Symmetric item co-occurrence counts of the training sequences, zero diagonal.

    ``window == 0``: ``A[i, j]`` = number of position pairs of one sequence holding ``i`` and ``j``, i.e.
    ``sum_u c_ui c_uj`` (``X^T X`` of the user-item count matrix ``X``). ``window > 0``: only position
    pairs at most ``window`` apart count.
    """
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences if len(s)]
    if not sequences:
        return sp.csr_matrix((n_items, n_items))
    flat = np.concatenate(sequences)
    owner = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    if window == 0:
        counts = sp.csr_matrix((np.ones(len(flat)), (owner, flat)), shape=(len(sequences), n_items))
        graph = (counts.T @ counts).tocsr()
    else:
        rows, cols = [], []
        for d in range(1, window + 1):
            same = owner[:-d] == owner[d:]
            rows.append(flat[:-d][same])
            cols.append(flat[d:][same])
        rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
        pairs = sp.csr_matrix((np.ones(len(rows_all)), (rows_all, cols_all)), shape=(n_items, n_items))
        graph = (pairs + pairs.T).tocsr()
    graph = (graph - sp.diags(graph.diagonal())).tocsr()
    graph.eliminate_zeros()
    return graph
