"""The set paradigm on a T5 backbone, as in SETRec (Lin et al., "Order-agnostic Identifier for Large
Language Model-based Generative Recommendation", SIGIR 2025, Sec. 3).

Every item is an unordered set of continuous tokens, one per dimension: a CF token (the item's
collaborative embedding through a linear projection) and N semantic tokens from one shared autoencoder
over the item's semantic embedding (Eq. 3-4). The pieces:

* **Sparse attention** (Sec. 3.2.2), :func:`setrec_attention_mask`: the encoder input is the history's
  items, N+1 tokens each. A token attends to itself and to every token of every earlier item, never to
  the other tokens of its own item nor to later items, so no token of an item depends on another one
  (order-agnostic within items, causal across items). The mask reaches T5 as a 4D additive mask, which
  ``transformers`` 5 passes to the attention layers unchanged (``masking_utils`` returns a 4D mask as it
  is). In addition the encoder's relative position bias uses *item* positions, so all tokens of one item
  sit at the same position, as in the authors' T5 code (:func:`share_positions_within_items`). The item-level
  sparse pattern itself follows the paper and the authors' decoder-only (Qwen) code; their T5 variant passes
  only a padding mask, which is what ``sparse_mask=False`` (the paper's "w/o SA" ablation) runs here.
* **Query-guided simultaneous generation** (Eq. 5): one learnable query vector per dimension is the
  decoder input (``inputs_embeds``); a diagonal decoder self-attention mask lets each query see only
  itself and the encoder, so all N+1 output vectors come from one decoder pass and none depends on another.
  This is the paper's intent; the authors' T5 code does not achieve it: ``code/Q_t5.py``
  (``create_extended_attention_mask_for_Qdecoder``) builds a 0/1 identity matrix and hands it to the T5
  layers, which add a mask to the attention scores, without turning it into an additive one (0 / -inf), so
  there every query attends to every other query, with +1 on its own score.
* **Per-dimension loss** (Eq. 6): for dimension j, a softmax over all items of the dot product between the
  generated vector j and every item's j-th token, cross-entropy on the target; the mean over dimensions
  (as the authors' code) plus ``alpha`` times the autoencoder's reconstruction MSE (Eq. 8).
* **Decoder-only backbones** (the authors' Qwen code): the history's tokens are followed by the N+1
  query vectors in one sequence, under one 4D additive mask that keeps the sparse pattern inside the causal
  one: history tokens as above; query j sees every real history token and itself only. Items' tokens share
  a position id (the item's index among the real items) and all queries share the next one, the decoder-only
  analogue of the shared T5 positions. The hidden states at the query positions are the N+1 outputs.
* **Grounding** (Eq. 7): score(item) = CF score + beta * sum_j semantic score_j, with beta chosen on
  validation from ``beta_grid`` after training (beta = 1 while training selects the epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import MethodType
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batches import HistoryBatch
from benchmark.evaluate import EvaluationResult
from recommenders.backbones import BackboneSpec, build_backbone, causal_positions, is_decoder_only, padding_mask_4d
from recommenders.base import Recommender, masked_mean, padded_real_sizes, select_on_grid
from recommenders.contracts import ItemTokenSets

TRAINING_BETA = 1.0
"""Weight of the semantic scores while training (validation for early stopping), before beta is chosen."""


@dataclass(frozen=True)
class SetOptions:
    """Options of :class:`SetRecommender` (a scheme's ``Params`` may carry any of them).

    semantic_layers: hidden widths of the semantic autoencoder's encoder (the decoder mirrors them).
    semantic_dropout: dropout inside the autoencoder.
    alpha: weight of the reconstruction loss (tokenizer strength, Eq. 8).
    beta_grid: candidate weights of the semantic scores in the grounding (Eq. 7), chosen on validation.
    learnable_queries: learn the query vectors; False keeps them at their random initialisation.
    sparse_mask: the sparse attention mask; False lets every history token attend to every other one.
    selection_metric: validation metric that chooses beta (``recall@K`` or ``ndcg@K``).
    """

    semantic_layers: tuple[int, ...] = (512, 256, 128)
    semantic_dropout: float = 0.0
    alpha: float = 0.7
    beta_grid: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    learnable_queries: bool = True
    sparse_mask: bool = True
    selection_metric: str = "ndcg@10"


def setrec_attention_mask(n_items_in_history: int, n_tokens_per_item: int, item_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]`` sparse attention mask of Sec. 3.2.2, True where query token q may attend key token k.

    The encoder input holds ``n_items_in_history`` items of ``n_tokens_per_item`` tokens each, item after
    item (``T = n_items_in_history * n_tokens_per_item``); ``item_mask`` ``[B, n_items_in_history]`` marks
    real (not padded) items. Token q attends to itself and to every token of a real item strictly before
    its own item; tokens of one item never see each other.
    """
    earlier, itself = mask_structure(n_items_in_history, n_tokens_per_item, item_mask.device)
    real_keys = item_mask.bool().repeat_interleave(n_tokens_per_item, dim=1)
    return (earlier[None] & real_keys[:, None, :]) | itself[None]


@lru_cache(maxsize=16)
def mask_structure(n_items_in_history: int, n_tokens_per_item: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch-independent parts of the masks, ``[T, T]`` each, made once per shape: key token k belongs to an
    item strictly before query token q's, and q == k."""
    length = n_items_in_history * n_tokens_per_item
    item_of = torch.arange(length, device=device) // n_tokens_per_item
    return item_of[None, :] < item_of[:, None], torch.eye(length, dtype=torch.bool, device=device)


def full_attention_mask(n_items_in_history: int, n_tokens_per_item: int, item_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]`` mask of the ``sparse_mask=False`` ablation: every token sees every real token and itself."""
    itself = mask_structure(n_items_in_history, n_tokens_per_item, item_mask.device)[1]
    real_keys = item_mask.bool().repeat_interleave(n_tokens_per_item, dim=1)
    return real_keys[:, None, :] | itself[None]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, Q, K]`` additive attention mask (0 where allowed, the dtype's minimum elsewhere).

    A 4D mask is what ``transformers`` 5 hands to T5's attention layers as it is; the additive form is
    correct for both the eager and the SDPA attention paths (both add it to the scores and the position bias).
    """
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


@lru_cache(maxsize=16)
def query_mask(n_queries: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[1, 1, N, N]`` additive decoder self-attention mask of the queries: each sees only itself (made once)."""
    return additive_mask(torch.eye(n_queries, dtype=torch.bool, device=device)[None], dtype)


def share_positions_within_items(attention: nn.Module, tokens_per_item: int) -> None:
    """Make a T5 attention layer's relative position bias use item positions (token index // tokens per item).

    All tokens of one item then share a position, so the bias cannot order them (the authors' T5 code does
    the same). Patched on the one layer that computes the bias (T5 shares it across layers).
    """

    def compute_bias(self: nn.Module, query_length: int, key_length: int, device: torch.device | None = None,
                     past_seen_tokens: int = 0) -> torch.Tensor:
        device = device if device is not None else self.relative_attention_bias.weight.device
        context = (torch.arange(query_length, device=device) + past_seen_tokens) // tokens_per_item
        memory = torch.arange(key_length, device=device) // tokens_per_item
        bucket = self._relative_position_bucket(memory[None, :] - context[:, None], bidirectional=not self.is_decoder,
                                                num_buckets=self.relative_attention_num_buckets,
                                                max_distance=self.relative_attention_max_distance)
        return self.relative_attention_bias(bucket).permute([2, 0, 1]).unsqueeze(0)

    attention.compute_bias = MethodType(compute_bias, attention)


def mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """Linear layers of the given widths with ReLU and dropout between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


class SemanticTokenizer(nn.Module):
    """The shared autoencoder of Eq. 3-4: a semantic embedding -> N token vectors -> its reconstruction."""

    def __init__(self, in_dim: int, n_tokens: int, token_dim: int, layers: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.n_tokens, self.token_dim = n_tokens, token_dim
        dims = [in_dim, *layers, n_tokens * token_dim]
        self.encoder = mlp(dims, dropout)
        self.decoder = mlp(dims[::-1], dropout)

    def forward(self, semantic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, N, token_dim]`` tokens (Eq. 3) and ``[n, in_dim]`` reconstruction (Eq. 4)."""
        codes = self.encoder(semantic)
        return codes.view(len(semantic), self.n_tokens, self.token_dim), self.decoder(codes)


class SetRecommender(Recommender):
    """SETRec on a T5 (set tokens with the sparse mask -> encoder; one query per dimension -> decoder) or on a
    decoder-only model (history tokens then queries, one masked pass)."""

    def __init__(self, tokens: ItemTokenSets, backbone: str | BackboneSpec, max_history: int,
                 options: SetOptions = SetOptions()) -> None:
        super().__init__(tokens.n_items)
        self.options = options
        self.max_history = max_history
        self.dimensions = tokens.dimensions
        self.has_cf = tokens.cf is not None
        self.beta = TRAINING_BETA
        self.frozen_tokens: tuple[tuple[tuple[int, int], ...], tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self.backbone = build_backbone(backbone)
        self.decoder_only = is_decoder_only(self.backbone)
        d_model = self.backbone.config.hidden_size
        self.cf_inputs: nn.Embedding | None = None
        self.cf_proj: nn.Linear | None = None
        if tokens.cf is not None:
            self.cf_inputs = nn.Embedding.from_pretrained(tokens.cf.float().clone(), freeze=True)
            self.cf_proj = nn.Linear(tokens.cf.shape[1], d_model)
        self.semantic_tokenizer: SemanticTokenizer | None = None
        if tokens.semantic is not None:
            self.register_buffer("semantic_inputs", tokens.semantic.float().clone())
            self.semantic_tokenizer = SemanticTokenizer(tokens.semantic.shape[1], tokens.n_semantic, d_model,
                                                        tuple(options.semantic_layers), options.semantic_dropout)
        queries = torch.randn(len(self.dimensions), d_model) * 0.02
        if options.learnable_queries:
            self.queries = nn.Parameter(queries)
        else:
            self.register_buffer("queries", queries)
        if not self.decoder_only:
            share_positions_within_items(self.backbone.encoder.block[0].layer[0].SelfAttention, len(self.dimensions))

    @property
    def tokens_per_item(self) -> int:
        return len(self.dimensions)

    def item_tokens(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every item's token set ``[n_items, N+1, d_model]`` and the semantic reconstruction (or None).

        Computed once per training step (the gradient needs every item's tokens); at inference (eval mode, no
        gradient) once per state of the weights that make them, reused across batches while no in-place update
        (optimiser step, ``load_state_dict``) or move has touched any of them."""
        if self.training or torch.is_grad_enabled():
            return self.compute_item_tokens()
        sources = [self.cf_inputs, self.cf_proj, self.semantic_tokenizer]
        state = tuple((t.data_ptr(), t._version) for module in sources if module is not None
                      for t in module.parameters())
        state += tuple((t.data_ptr(), t._version) for t in self.buffers(recurse=False))
        if self.frozen_tokens is None or self.frozen_tokens[0] != state:
            self.frozen_tokens = (state, self.compute_item_tokens())
        return self.frozen_tokens[1]

    def compute_item_tokens(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`item_tokens`, computed."""
        parts, reconstruction = [], None
        if self.cf_inputs is not None:
            parts.append(self.cf_proj(self.cf_inputs.weight)[:, None])
        if self.semantic_tokenizer is not None:
            semantic_tokens, reconstruction = self.semantic_tokenizer(self.semantic_inputs)
            parts.append(semantic_tokens)
        return torch.cat(parts, dim=1), reconstruction

    def attention_mask(self, item_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, T]`` encoder mask: sparse (Sec. 3.2.2) or, for the ablation, full attention."""
        make = setrec_attention_mask if self.options.sparse_mask else full_attention_mask
        return make(item_mask.shape[1], self.tokens_per_item, item_mask)

    def generate(self, batch: HistoryBatch, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N+1, d_model]``: one generated vector per dimension, all from one decoder pass (Eq. 5).

        The history is the last ``max_history`` items of the batch, N+1 tokens each.
        """
        items, mask = batch.items[:, -self.max_history:], batch.mask[:, -self.max_history:]
        batch_size, length = items.shape
        history = gather_rows(tokens, items) * mask[..., None, None]
        inputs = history.reshape(batch_size, length * self.tokens_per_item, -1)
        queries = self.queries.to(inputs.dtype).expand(batch_size, -1, -1)
        if self.decoder_only:
            return self.generate_causal(inputs, queries, mask)
        encoded = self.backbone.encoder(inputs_embeds=inputs,
                                  attention_mask=additive_mask(self.attention_mask(mask), inputs.dtype))
        only_itself = query_mask(self.tokens_per_item, queries.dtype, inputs.device).expand(batch_size, -1, -1, -1)
        real_tokens = mask.repeat_interleave(self.tokens_per_item, dim=1)
        decoded = self.backbone.decoder(inputs_embeds=queries, attention_mask=only_itself,
                                        encoder_hidden_states=encoded.last_hidden_state,
                                        encoder_attention_mask=padding_mask_4d(real_tokens, inputs.dtype),
                                        use_cache=False)
        return decoded.last_hidden_state

    def causal_mask(self, item_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T + N+1, T + N+1]`` decoder-only mask: :meth:`attention_mask` over the history, then each query
        sees every real history token and itself."""
        history = self.attention_mask(item_mask)
        batch_size, length = history.shape[:2]
        queries = self.tokens_per_item
        allowed = torch.zeros(batch_size, length + queries, length + queries, dtype=torch.bool, device=history.device)
        allowed[:, :length, :length] = history
        allowed[:, length:, :length] = item_mask.bool().repeat_interleave(queries, dim=1)[:, None, :]
        allowed[:, length:, length:] = torch.eye(queries, dtype=torch.bool, device=history.device)
        return allowed

    def generate_causal(self, inputs: torch.Tensor, queries: torch.Tensor, item_mask: torch.Tensor) -> torch.Tensor:
        """The decoder-only :meth:`generate`: history tokens then queries in one pass; outputs at the queries."""
        item_positions = causal_positions(item_mask)
        query_positions = item_mask.long().sum(dim=1, keepdim=True).expand(-1, self.tokens_per_item)
        positions = torch.cat([item_positions.repeat_interleave(self.tokens_per_item, dim=1), query_positions], dim=1)
        sequence = torch.cat([inputs, queries], dim=1)
        hidden = self.backbone.base_model(inputs_embeds=sequence,
                                          attention_mask=additive_mask(self.causal_mask(item_mask), sequence.dtype),
                                          position_ids=positions, use_cache=False).last_hidden_state
        return hidden[:, -self.tokens_per_item:]

    def dimension_scores(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, N+1, n_items]`` per-dimension scores and the semantic reconstruction of every item (or None)."""
        tokens, reconstruction = self.item_tokens()
        generated = self.generate(batch, tokens)
        return torch.einsum("bjd,njd->bjn", generated, tokens.to(generated.dtype)), reconstruction

    def grounding_weights(self, beta: float, device: torch.device) -> torch.Tensor:
        """Eq. 7 weights per dimension: 1 for CF, beta for each semantic dimension (1 without a CF token)."""
        semantic = beta if self.has_cf else 1.0
        weights = [1.0] * int(self.has_cf) + [semantic] * (self.tokens_per_item - int(self.has_cf))
        return torch.tensor(weights, device=device)

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        scores, _ = self.dimension_scores(batch)
        return ground(scores.float(), self.grounding_weights(self.beta, scores.device))

    def host_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``real``: the real items among the last ``max_history`` of the batch's histories."""
        return {"real": batch.real_count(self.max_history)}

    def compiled_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``padded_real``: the history's real items counted and rounded up to a multiple of :data:`REAL_BUCKET`
        (at most every position); the compiled loss reconstructs that many items, the padding ones masked out of
        the mean, so its value is the exact count's up to float rounding."""
        return padded_real_sizes(batch, self.max_history)

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        """Mean over dimensions of the all-item cross-entropy (Eq. 6) + alpha * reconstruction MSE (Eq. 8)."""
        scores, reconstruction = self.dimension_scores(batch)
        targets = batch.targets.repeat_interleave(self.tokens_per_item)
        loss = F.cross_entropy(scores.float().flatten(0, 1), targets)
        if reconstruction is None:
            return loss
        # the history's real items, in the order boolean indexing would take them
        real_items, kept = batch.loss_positions(self.max_history, self.sizes_of(batch))
        seen = batch.items[:, -self.max_history:].flatten()[real_items]
        rebuilt, wanted = gather_rows(reconstruction, seen).float(), gather_rows(self.semantic_inputs, seen)
        if kept is None:
            return loss + self.options.alpha * F.mse_loss(rebuilt, wanted)
        return loss + self.options.alpha * masked_mean((rebuilt - wanted).pow(2).mean(dim=-1), kept)

    def select_on_validation(self, evaluate_valid: Callable[[Recommender], EvaluationResult]) -> dict[str, Any]:
        """Choose beta of Eq. 7 on validation (first best in grid order); return it and the value per beta."""
        if not self.has_cf or self.tokens_per_item == 1:
            return {}

        def with_beta(beta: float) -> Recommender:
            self.beta = beta
            return self

        self.beta, values = select_on_grid(self.options.beta_grid, with_beta, evaluate_valid,
                                           self.options.selection_metric)
        return {"beta": self.beta, "metric": self.options.selection_metric, "valid": values}


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` (rows of ``table``, shaped ``[*index.shape, *table.shape[1:]]``) through ``index_select``,
    whose backward adds the gradients of repeated rows in index order: advanced indexing's backward
    (``index_put_`` with ``accumulate``) adds them with atomics in parallel on a multi-threaded CPU, in an order
    that changes from run to run, which made SETRec's training not bit-reproducible with more than one thread.
    The values are those of ``table[index]`` and of its one-thread gradients, bit for bit."""
    return table.index_select(0, index.flatten()).view(*index.shape, *table.shape[1:])


def ground(dimension_scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 7: ``[B, n_items]`` item scores, the per-dimension scores ``[B, N+1, n_items]`` summed with ``weights``."""
    return (dimension_scores * weights[None, :, None]).sum(dim=1)
