"""The embedding paradigm: one continuous vector per item, a linear item head, on a T5 or decoder-only backbone.

As in E4SRec (Li et al., 2023, Sec. 3): the history is the sequence of its items' vectors, each linearly
projected into the backbone's width (the ID-injection step) and fed to the encoder as ``inputs_embeds``
with the padding mask; the decoder runs one step from its start token and its last hidden state is
scored against every item by a linear item head, trained with softmax cross-entropy over all items, so
every item gets a score in one forward pass and no identifier has to be decoded. The optional text
prompt of the paper is left out.

On a decoder-only backbone (E4SRec's own setting, LLaMA in the released code) the projected history is the
left-padded input and the user representation is the last position's hidden state.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batches import HistoryBatch
from recommenders.backbones import BackboneSpec, build_backbone, user_state
from recommenders.base import Recommender
from recommenders.contracts import ItemVectors


@dataclass(frozen=True)
class EmbeddingOptions:
    """Options of :class:`EmbeddingRecommender` (a scheme's ``Params`` may carry any of them).

    freeze_vectors: keep the item vectors fixed (E4SRec freezes its SASRec ID embeddings); when False they
        are fine-tuned with the model. Default True.
    """

    freeze_vectors: bool = True


class EmbeddingRecommender(Recommender):
    """Item vectors -> linear projection -> T5 encoder and one decoder step, or a decoder-only model's last
    position -> linear head over all items."""

    def __init__(self, vectors: ItemVectors, backbone: str | BackboneSpec, max_history: int,
                 options: EmbeddingOptions = EmbeddingOptions()) -> None:
        super().__init__(vectors.n_items)
        self.options = options
        self.max_history = max_history
        self.backbone = build_backbone(backbone)
        d_model = self.backbone.config.hidden_size
        self.item_vectors = nn.Embedding.from_pretrained(vectors.vectors.float().clone(),
                                                         freeze=options.freeze_vectors)
        self.input_proj = nn.Linear(vectors.dim, d_model)
        self.item_head = nn.Linear(d_model, vectors.n_items, bias=False)

    def encode(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, d_model]`` user representation: the decoder's hidden state after its start token (T5), or the
        last position's hidden state (decoder-only).

        The history is the last ``max_history`` items of the batch.
        """
        items, mask = batch.items[:, -self.max_history:], batch.mask[:, -self.max_history:]
        inputs = self.input_proj(self.item_vectors(items)) * mask[..., None]
        return user_state(self.backbone, inputs, mask)

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return self.item_head(self.encode(batch))

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        """Softmax cross-entropy of the target over all items."""
        return F.cross_entropy(self.score(batch).float(), batch.targets)
