"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder over the item history.

Used as a leaderboard baseline and as the collaborative-filtering (CF) encoder that E4SRec, LETTER and
SETRec build on. Default loss (``loss: ce``): **softmax cross-entropy over all items at every position** (as in
later re-implementations, e.g. RecBole's ``loss_type=CE``), not the paper's binary cross-entropy with one
sampled negative; the full softmax is markedly stronger on Amazon data, so state it when comparing.
``loss: bce`` is the paper's loss: at every position, ``-log sigma(h.e_pos) - log(1 - sigma(h.e_neg))`` with one
negative drawn uniformly from the items other than that position's target (the paper's code draws it from the
items outside the user's whole training sequence).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batches import HistoryBatch
from benchmark.config import ConfigError, TrainConfig, param
from benchmark.hashing import content_key
from benchmark.splits import Examples, TrainData, pad_left
from recommenders.base import IGNORE_INDEX, Recommender, masked_mean, padded_real_sizes

SASREC_LOSSES = ("ce", "bce")


@dataclass(frozen=True)
class SASRecParams:
    """SASRec hyper-parameters (paper values in brackets).

    hidden: int = 64 -- embedding and hidden size [50].
    layers: int = 2 -- self-attention blocks [2].
    heads: int = 1 -- attention heads [1].
    dropout: float = 0.3 -- dropout on embeddings and blocks [0.2 dense / 0.5 sparse data].
    loss: str = ce -- ce (softmax cross-entropy over all items) or bce (one sampled negative per position) [bce].
    Tunable (``python -m benchmark tune``): hidden 16-128 (log), layers 1-3, dropout 0-0.5.
    """

    hidden: int = param(64, low=1, tune=(16, 128, "int-log"))
    layers: int = param(2, low=1, tune=(1, 3, "int"))
    heads: int = param(1, low=1)
    dropout: float = param(0.3, low=0, high=1, high_open=True, tune=(0.0, 0.5, "linear"))
    loss: str = param("ce", choices=SASREC_LOSSES, added=True)

    def check(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")


class SASRec(Recommender):
    """Item + learned position embeddings, pre-norm causal Transformer blocks, dot-product item scores."""

    def __init__(self, n_items: int, max_len: int, params: SASRecParams = SASRecParams()) -> None:
        super().__init__(n_items)
        self.params = params
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, params.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, params.hidden)
        self.dropout = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(params.hidden, params.heads, dim_feedforward=params.hidden,
                                       dropout=params.dropout, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(params.layers))
        self.norm = nn.LayerNorm(params.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def item_embeddings(self) -> torch.Tensor:
        """``[n_items, hidden]`` item embedding table (the CF item representation)."""
        return self.item_emb.weight[1:]

    def encode_sequence(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, hidden]`` hidden state at each position of left-padded ``items``."""
        batch, length = items.shape
        x = self.item_emb(torch.where(mask, items + 1, torch.zeros_like(items)))
        x = x * self.params.hidden ** 0.5 + self.pos_emb(torch.arange(length, device=items.device))[None]
        x = self.dropout(x) * mask[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=items.device)
        allowed = causal[None] & (mask[:, None, :] | eye[None])
        attn_mask = (~allowed).repeat_interleave(self.params.heads, dim=0)
        for block in self.blocks:
            x = block(x, src_mask=attn_mask) * mask[..., None]
        return self.norm(x)

    def encode(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, hidden]`` user representation: the hidden state at the most recent item."""
        return self.encode_sequence(batch.items, batch.mask)[:, -1]

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return self.encode(batch) @ self.item_embeddings().T

    def training_examples(self, data: TrainData) -> Examples:
        """Windows of ``max_len`` inputs covering every training transition once (targets at all positions)."""
        rows, targets, users = [], [], []
        for user, seq in enumerate(data.sequences):
            for end in range(len(seq), 1, -self.max_len):
                rows.append(seq[max(0, end - 1 - self.max_len):end - 1])
                targets.append(seq[end - 1])
                users.append(user)
        return Examples(np.asarray(users, dtype=np.int64), pad_left(rows, self.max_len),
                        np.asarray(targets, dtype=np.int64))

    def host_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``real``: the real (non-pad) positions of the batch's histories."""
        return {"real": batch.real_count(batch.mask.shape[1])}

    def compiled_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``padded_real``: the real positions' count rounded up to a multiple of :data:`REAL_BUCKET` (at most
        every position); the compiled loss gathers that many positions, the padding ones masked out of every
        term, so its value is the exact count's up to float rounding, except that ``bce`` then draws negatives
        for the padding positions too (other draws than the eager loss's)."""
        return padded_real_sizes(batch, batch.mask.shape[1])

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        """Cross-entropy over all items (``ce``), or binary cross-entropy with one uniformly drawn negative other
        than the target (``bce``), at every non-padded position."""
        real, kept = batch.loss_positions(batch.mask.shape[1], self.sizes_of(batch))  # rows boolean indexing takes
        hidden = self.encode_sequence(batch.items, batch.mask).flatten(0, 1).index_select(0, real)
        targets = torch.cat([batch.items[:, 1:], batch.targets[:, None]], dim=1).flatten().index_select(0, real)
        if self.params.loss == "ce":
            labels = targets if kept is None else targets.masked_fill(~kept, IGNORE_INDEX)
            return F.cross_entropy((hidden @ self.item_embeddings().T).float(), labels, ignore_index=IGNORE_INDEX)
        offset = torch.randint(1, max(2, self.n_items), targets.shape, device=targets.device)
        negatives = (targets + offset) % self.n_items
        table = self.item_embeddings()
        positive = (hidden * table.index_select(0, targets)).sum(-1).float()  # index_select: see set.gather_rows
        negative = (hidden * table.index_select(0, negatives)).sum(-1).float()
        return masked_mean(F.softplus(-positive), kept) + masked_mean(F.softplus(negative), kept)


def cf_cache_key(data: TrainData, dataset: str, split: str, seed: int, params: SASRecParams,
                 train: TrainConfig) -> str:
    """Cache key of a trained CF encoder: everything that determines its weights (its loss is one of the
    ``params``), the training sequences themselves included (so a re-generated or replaced dataset of the same
    name never reuses stale weights)."""
    return content_key({"dataset": dataset, "split": split, "seed": seed, "n_items": data.n_items,
                        "max_len": data.max_history, "params": asdict(params), "train": train.to_dict()},
                       [np.asarray(seq, dtype=np.int64) for seq in data.sequences])
