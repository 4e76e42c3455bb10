"""LightGCN (He, Deng, Wang, Li, Zhang & Wang, "LightGCN: Simplifying and Powering Graph Convolution Network
for Recommendation", SIGIR 2020) on the training interactions, as the CF encoder of TokenRec.

The graph is the user-item bipartite graph of the **training** sequences only (:func:`interaction_pairs`;
repeated interactions count once). Its adjacency ``A = [[0, R], [R^T, 0]]`` is normalised symmetrically,
``A_hat = D^{-1/2} A D^{-1/2}`` (Eq. 6-7; a node without edges gets a zero row), and stored as a
``torch.sparse`` tensor. Propagation has no weights and no non-linearity (Eq. 3): ``E^{(k+1)} = A_hat E^{(k)}``,
and the final representation is the layer mean ``E = 1 / (K + 1) * sum_k E^{(k)}`` (Eq. 4 with
``alpha_k = 1 / (K + 1)``). Training minimises BPR (Eq. 15): ``-ln sigma(y_ui - y_uj)`` over each training
pair ``(u, i)`` with one item ``j`` drawn uniformly among those ``u`` did not interact with in training, plus
``reg`` times the squared norm of the batch's layer-0 embeddings (averaged over the batch, as the authors'
code), Adam at ``lr``. The released code (gusye1234/LightGCN-PyTorch, ``utils.UniformSample_original_python``)
draws instead as many users uniformly as there are training pairs, each with one of its items, which weights
every user alike; here every training pair is used once per epoch, so a user weighs as many pairs as it has.
Items without training interactions keep their (scaled) random layer-0 embedding.

With ``layers = 0`` there is no propagation and the model is BPR-MF (Rendle, Freudenthaler, Gantner &
Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009): the same BPR training
of plain user and item embeddings, scored by their dot product.

**Fold-in** (:func:`fold_in`, our inductive rule for a user without training interactions, who has no
trained layer-0 embedding): one propagation step (Eq. 3, with the training degrees) of the items' *final*
representations over the user's distinct history items, ``e_u = sum_i e_i / sqrt(|N_u| |N_i|)``. As ``e_i``
is the layer mean of the item's layers 0..K, this is the layer mean of the user's layers 1..K+1: LightGCN's
own user representation with the missing layer-0 term replaced by one more hop. History items without
training interactions (untrained vectors) are left out of ``N_u``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batches import HistoryBatch
from benchmark.hashing import content_key, without_off_values
from benchmark.splits import TrainData
from recommenders.base import Recommender
from recommenders.trainer import FitCheckpoint, train_epochs

NEGATIVE_RESAMPLING_ROUNDS = 10
"""Redraws of negatives that hit a training positive; the rare survivors after that are kept."""


@dataclass(frozen=True)
class LightGCNConfig:
    """LightGCN settings (paper values in brackets): embedding ``dim`` [64], propagation ``layers`` K [3; 0 is
    BPR-MF], BPR ``epochs`` [up to 1,000 with early stopping], ``batch_size`` [2,048], Adam ``lr`` [0.001], L2
    ``reg`` on the layer-0 embeddings [1e-4], ``init_std`` of their normal initialisation [0.1 in the authors'
    code]; ``max_steps > 0`` stops after that many BPR steps in all epochs together (``run.max_fit_steps``)."""

    dim: int = 64
    layers: int = 3
    epochs: int = 200
    batch_size: int = 2048
    lr: float = 0.001
    reg: float = 1e-4
    init_std: float = 0.1
    max_steps: int = 0


@dataclass
class LightGCNResult:
    """Final (layer-mean) representations ``users [n_users, dim]`` and ``items [n_items, dim]`` on the CPU, the
    layer-0 embeddings ``ego_users`` and ``ego_items`` (the learned table, which the TokenRec authors' code
    reads as ``embedding_user.weight`` / ``embedding_item.weight``), the mean BPR loss per epoch and the seconds
    spent (those of earlier, killed processes included; ``resumed_from_epoch`` epochs came from their checkpoint)."""

    users: torch.Tensor
    items: torch.Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    ego_users: torch.Tensor | None = None
    ego_items: torch.Tensor | None = None


def interaction_pairs(data: TrainData) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(user, item)`` pairs of the training sequences (user = sequence index), sorted by user, item."""
    lengths = [len(seq) for seq in data.sequences]
    if sum(lengths) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    users = np.repeat(np.arange(len(data.sequences), dtype=np.int64), lengths)
    items = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in data.sequences])
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^{-1/2} A D^{-1/2}`` of the bipartite graph, a sparse CSR ``[n_users + n_items]^2`` tensor (symmetric).

    Users are nodes ``0 .. n_users - 1``, item ``i`` is node ``n_users + i``; the pairs must be unique. CSR because
    its product with a dense matrix is about four times faster than COO's on a CPU, with the same sums.
    """
    n_nodes = n_users + n_items
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    inv_sqrt = np.zeros(n_nodes)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = torch.as_tensor(inv_sqrt[rows] * inv_sqrt[cols], dtype=torch.float32)
    index = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)
    coo = torch.sparse_coo_tensor(index, values, (n_nodes, n_nodes), check_invariants=True).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return coo.to_sparse_csr()


class SymmetricSparseProduct(torch.autograd.Function):
    """``A @ X`` for a fixed symmetric sparse ``A``, whose backward is ``A @ grad`` (``A^T = A``).

    Autograd's own backward of a CSR product builds ``A^T`` every call (slower than the forward); this one reuses
    ``A``. The results are the same sums as ``torch.sparse.mm`` of the COO matrix, forward and backward."""

    @staticmethod
    def forward(ctx: Any, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


class LightGCN(nn.Module):
    """Layer-0 embeddings of all users and items, propagated ``layers`` times over a fixed normalised graph."""

    def __init__(self, adjacency: torch.Tensor, n_users: int, n_items: int, config: LightGCNConfig) -> None:
        super().__init__()
        self.n_users, self.n_items, self.config = n_users, n_items, config
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.embedding = nn.Embedding(n_users + n_items, config.dim)
        nn.init.normal_(self.embedding.weight, std=config.init_std)

    def propagate(self) -> torch.Tensor:
        """``[n_users + n_items, dim]`` layer mean ``1 / (K + 1) sum_k A_hat^k E^{(0)}`` (Eq. 3-4)."""
        layer = self.embedding.weight
        total = layer
        for _ in range(self.config.layers):
            layer = SymmetricSparseProduct.apply(self.adjacency, layer)
            total = total + layer
        return total / (self.config.layers + 1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user ``[n_users, dim]`` and item ``[n_items, dim]`` representations."""
        return self.propagate().split([self.n_users, self.n_items])

    def bpr_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Eq. 15: mean BPR loss of the triples plus ``reg`` * squared layer-0 norms / batch size."""
        user_final, item_final = self()
        u, pos, neg = user_final[users], item_final[positives], item_final[negatives]
        ranking = -F.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()
        ego = self.embedding.weight
        squared = (ego[users].pow(2).sum() + ego[self.n_users + positives].pow(2).sum()
                   + ego[self.n_users + negatives].pow(2).sum())
        return ranking + self.config.reg * 0.5 * squared / len(users)


def sample_negatives(users: np.ndarray, n_items: int, positive_keys: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """One item per user drawn uniformly, redrawn while it is one of the user's training items.

    ``positive_keys`` are the sorted ``user * n_items + item`` keys of the training pairs.
    """
    negatives = rng.integers(0, n_items, len(users))
    for _ in range(NEGATIVE_RESAMPLING_ROUNDS):
        hit = np.isin(users * n_items + negatives, positive_keys, assume_unique=False)
        if not hit.any():
            break
        negatives[hit] = rng.integers(0, n_items, int(hit.sum()))
    return negatives


def fit_lightgcn(data: TrainData, config: LightGCNConfig, device: torch.device, seed: int,
                 progress: bool = True, checkpoint: Path | None = None) -> LightGCNResult:
    """Train LightGCN with BPR on the training interactions of ``data``; return the final representations.
    The fit resumes from and keeps a :class:`~recommenders.trainer.FitCheckpoint` at ``checkpoint`` when given."""
    start = time.perf_counter()
    users, items = interaction_pairs(data)
    n_users, n_items = len(data.sequences), data.n_items
    torch.manual_seed(seed)
    model = LightGCN(normalized_adjacency(users, items, n_users, n_items), n_users, n_items, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(seed)
    keys = np.sort(users * n_items + items)
    result = LightGCNResult(users=torch.empty(0), items=torch.empty(0))

    def batches():
        order = rng.permutation(len(users))
        negatives = sample_negatives(users[order], n_items, keys, rng)
        for begin in range(0, len(order), config.batch_size):
            index = order[begin:begin + config.batch_size]
            yield len(index), [torch.as_tensor(a, device=device) for a in
                               (users[index], items[index], negatives[begin:begin + config.batch_size])]

    resume = FitCheckpoint(checkpoint, model, rng) if checkpoint is not None else None
    epochs = train_epochs(optimizer, config.epochs if len(users) else 0, batches,
                          lambda batch: {"bpr": model.bpr_loss(*batch)}, "lightgcn", "its learning rate (lightgcn_lr)",
                          progress, max_steps=config.max_steps, checkpoint=resume)
    result.losses = [epoch["bpr"] for epoch in epochs.history]
    result.resumed_from_epoch = epochs.resumed_from_epoch
    model.eval()
    with torch.no_grad():
        user_final, item_final = model()
    result.users, result.items = user_final.cpu().clone(), item_final.cpu().clone()
    result.ego_users, result.ego_items = (part.detach().cpu().clone() for part in
                                          model.embedding.weight.split([n_users, n_items]))
    result.seconds = epochs.earlier_seconds + time.perf_counter() - start
    return result


def item_degrees(data: TrainData) -> np.ndarray:
    """``[n_items]`` training users per item (the item's degree in the training graph)."""
    return np.bincount(interaction_pairs(data)[1], minlength=data.n_items)


def fold_in(items: torch.Tensor, mask: torch.Tensor, representations: torch.Tensor,
            degrees: torch.Tensor) -> torch.Tensor:
    """``[B, d]`` fold-in representations ``sum_i e_i / sqrt(|N_u| |N_i|)`` of users from their histories.

    ``items`` ``[B, L]`` are item ids, valid where ``mask`` is True; ``representations`` ``[n_items, d]`` are the
    final item vectors and ``degrees`` ``[n_items]`` the training degrees (:func:`item_degrees`). Repeated items
    count once, items of degree 0 not at all; a history without such items gives a zero vector.
    """
    trained = (degrees > 0).float()
    member = torch.zeros(len(items), len(degrees), device=items.device)
    member.scatter_add_(1, items, mask.float()).clamp_(max=1.0)
    member = member * trained
    weights = representations.float() * (degrees.float().clamp_min(1.0).rsqrt() * trained)[:, None]
    return member @ weights / member.sum(dim=1, keepdim=True).clamp_min(1.0).sqrt()


def lightgcn_cache_key(data: TrainData, config: LightGCNConfig, seed: int, with_ego: bool = False) -> str:
    """A key naming everything that determines the trained representations: the training interactions,
    the catalogue size, the settings (``layers = 0`` for BPR-MF) and the seed; ``with_ego`` names an entry that
    also holds the layer-0 embeddings (entries written before they were stored keep their key)."""
    sequences = [np.asarray(seq, dtype=np.int64) for seq in data.sequences]
    named = {"n_items": data.n_items, "users": len(sequences),
             "config": without_off_values(asdict(config), {"max_steps": 0}), "seed": seed}
    return content_key({**named, "with_ego": True} if with_ego else named, sequences)


class FixedScores(Recommender):
    """A fixed scoring rule over all items, nothing trained: to judge CF vectors as retrieval models."""

    trainable = False

    def __init__(self, n_items: int, rule: Callable[[HistoryBatch], torch.Tensor]) -> None:
        super().__init__(n_items)
        self.rule = rule

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return self.rule(batch)


def cf_rankings(users: torch.Tensor, items: torch.Tensor,
                popularity: torch.Tensor) -> dict[str, Callable[[HistoryBatch], torch.Tensor]]:
    """Scoring rules from CF vectors alone, beside popularity: ``pop`` (training counts), ``user_dot``
    ``<e_u, e_i>`` (LightGCN's own score), ``user_cosine`` ``cos(e_u, e_i)`` (TokenRec's cosine retrieval with
    the user's own vector as the generated one) and ``last_item_cosine`` ``cos(e_last, e_i)`` (the last history
    item's vector; histories are left-padded). A user outside ``users`` gets the zero vector."""
    unit_users, unit_items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)

    def user_rows(table: torch.Tensor, batch: HistoryBatch) -> torch.Tensor:
        known = (batch.users >= 0) & (batch.users < len(table))
        return table[batch.users.clamp(0, len(table) - 1)] * known[:, None]

    return {
        "pop": lambda batch: popularity[None].expand(len(batch.targets), -1),
        "user_dot": lambda batch: user_rows(users, batch) @ items.T,
        "user_cosine": lambda batch: user_rows(unit_users, batch) @ unit_items.T,
        "last_item_cosine": lambda batch: unit_items[batch.items[:, -1]] @ unit_items.T,
    }
