"""STORE of Liu, Zhu, Fan, Zhao & Wu, "STORE: Streamlining Semantic Tokenization and Generative
Recommendation with A Single LLM", arXiv:2409.07276v1, 2024 (sequence paradigm).

One backbone (the run's T5, with its text vocabulary, :mod:`recommenders.text`) both tokenizes items and
recommends; there is no separate embedding model or RQ-VAE. The paper "formulate[s] semantic tokenization as
a text-to-token task and generative recommendation as a token-to-token task, supplemented by a token-to-text
reconstruction task and a text-to-token auxiliary task" (abstract). Here they are trained in two stages of
the one backbone, with a non-parametric discretisation between them:

**Stage 1, tokenization** (``tokenizer_epochs`` over the training items' texts; its own AdamW,
``tokenizer_lr``, ``tokenizer_batch_size``), one loss, the reconstruction's:

* **Text-to-token** (the dense tokenizer): the encoder reads the item's text; the decoder reads ``n_tokens``
  placeholder tokens ``<dense_1> .. <dense_L>`` and its last hidden states at them are the item's L dense
  tokens. The decoder's causal mask makes the placeholders a cascade (dense token j sees the text and dense
  tokens < j), STORE's cascaded attention.
* **Token-to-text reconstruction**: the encoder reads the L dense tokens as ``inputs_embeds`` and the decoder
  regenerates the item text. Dense tokens have no target of their own, so this auto-encoder through one LLM is
  what makes them carry the item's content.

**Discretisation** (no training), as in the paper non-parametric: PCA to ``pca_dim`` and k-means into
``codebook_size`` clusters, fitted on the training items; every item (cold ones too: their text is catalogue
content) takes the nearest centroids. The sources available to us do not say how dense-token positions map to
code levels: ``discretizer="residual"`` (default) runs residual k-means over the concatenated dense tokens,
``n_tokens`` levels, each clustering what the levels before leave unexplained; ``"per_position"`` clusters
every dense token on its own, which on the synthetic data gave 90% colliding codes (the positions' clusters
nearly coincide). Level l's cluster c is new token ``l * M + c``, appended to the trained backbone with
embeddings drawn from the mean and covariance of its vocabulary (:func:`recommenders.backbones.add_tokens`);
items that still share a code get TIGER's extra disambiguation level (the paper does not say how it resolves
collisions).

**Stage 2, recommendation** (the run's training section, early stopping on validation), one joint loss per
batch, summed with weights:

* **Token-to-token**: history codes in, the next item's code out (token cross-entropy, constrained beam
  search at inference).
* **Text-to-token, auxiliary** (``text_to_token_weight``), on up to ``item_task_items`` target items of the
  batch: item text in, its *discrete* code out. It keeps the backbone the tokenizer of the items (see
  ``text_to_token_accuracy`` below) and ties the new code tokens to the text they stand for.
* **Code-to-text** (``token_to_text_weight``), on the same items: discrete code in, item text out; it grounds
  the new code tokens' embeddings in the text, as the reconstruction did for the dense tokens.

Why this order: the recommendation tasks predict discrete codes, which exist only once a trained dense
tokenizer's outputs are clustered, so the tokenization tasks come first; the tokenization stage trains on
texts alone, the recommendation stage on the training sequences. Whether it is the paper's: the pairing of
tasks with stages follows the abstract (reconstruction supplements tokenization, the text-to-token auxiliary
task supplements recommendation); the paper's training schedule beyond that is not given in the sources
available to us. The code-to-text task in stage 2 is our choice, not described there: set
``token_to_text_weight: 0`` to train stage 2 on token-to-token and the text-to-token auxiliary task only.

After training, ``text_to_token_accuracy`` in the record is the share of items whose code the backbone
itself generates from the item text (constrained beam search, top 1): the LLM is the tokenizer.

What can be checked here is the paper's abstract only: its full text is not readable in this environment,
and we found no released code (the abstract promises it; no repository of it among the first author's
public ones, github.com/Jyonn). Two details above are attributed to the paper's body as it was read when this scheme was
written and could not be re-checked since: the cascade of dense tokens and the non-parametric (PCA +
k-means) discretisation. Every "not stated" below means not stated in the abstract.

Hyper-parameters (field: default = quick profile), none of which the sources available to us state for the
paper: ``n_tokens`` 3, ``codebook_size`` 64, ``pca_dim`` 32, ``text_max_tokens`` 48,
``tokenizer_epochs`` 20, ``tokenizer_lr`` 1e-3, ``tokenizer_batch_size`` 64, ``text_to_token_weight`` 1.0,
``token_to_text_weight`` 1.0, ``item_task_items`` 64, ``discretizer`` residual, ``beam_size`` 20 (the suite's
setting for every sequence scheme). The ``paper`` profile is not the paper's configuration but larger
settings of ours for a GPU (4 tokens, 256 clusters, 128 text tokens, 50 tokenizer epochs). The run's backbone
(a T5, or a decoder-only model: see :class:`DenseTokenizer`) is trained in full (``finetune: lora`` makes the
run not applicable, see :meth:`STORE.not_applicable`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from transformers import PreTrainedModel

from benchmark.batches import HistoryBatch
from benchmark.config import param
from benchmark.data.dataset import Dataset
from benchmark.splits import TrainData
from identifiers.base import SequenceScheme
from identifiers.quantizers import level_codes, residual_kmeans
from identifiers.registry import register
from recommenders.backbones import (
    add_tokens,
    build_backbone,
    causal_positions,
    finetune_mode,
    is_decoder_only,
    new_token_offset,
    special_ids,
)
from recommenders.base import Recommender
from recommenders.contracts import ItemCodes, code_table
from recommenders.sequence import (
    IGNORE_INDEX,
    GenerativeRecommender,
    SequenceOptions,
    causal_pair_logits,
    left_padded,
)
from recommenders.trainer import train_epochs

DISCRETIZERS = ("residual", "per_position")
ACCURACY_ITEMS = 1000
"""Most items on which the record's text-to-token accuracy is measured."""


@dataclass
class STOREParams:
    """STORE hyper-parameters (defaults = quick profile; in brackets the paper's value, none of which is stated in
    the sources available to us, and the ``paper`` profile's, which is ours).

    n_tokens: L, dense (and discrete) tokens per item [not stated; paper profile 4].
    codebook_size: k-means clusters per code level [not stated; paper profile 256].
    pca_dim: PCA dimensions before k-means [PCA of the LLM's dense tokens; dimensions not stated].
    text_max_tokens: item text tokens read and reconstructed [not stated; paper profile 128].
    tokenizer_epochs: epochs of stage 1 (dense tokenizer + reconstruction) over the training items [not stated;
        paper profile 50].
    tokenizer_lr: AdamW learning rate of stage 1 [not stated].
    tokenizer_batch_size: items per step of stage 1 [not stated].
    text_to_token_weight: weight of the auxiliary text-to-token task in stage 2 [not stated].
    token_to_text_weight: weight of the code-to-text task in stage 2; 0 drops it [ours; not described].
    item_task_items: most distinct target items per batch used by the two item tasks of stage 2 (bounds
        their cost) [not stated].
    discretizer: ``residual`` = residual k-means over the concatenated dense tokens (level l clusters what
        levels < l leave), or ``per_position`` = one k-means per dense token [PCA + k-means; the mapping of
        positions to code levels is not stated].
    beam_size: beams of the constrained beam search that decodes recommendations [not stated; 20 is the
        suite's setting for every sequence scheme].
    """

    n_tokens: int = param(3, low=1)
    codebook_size: int = param(64, low=1)
    pca_dim: int = param(32, low=1)
    text_max_tokens: int = param(48, low=1)
    tokenizer_epochs: int = param(20, low=0)
    tokenizer_lr: float = param(1e-3, low=0, low_open=True)
    tokenizer_batch_size: int = param(64, low=1)
    text_to_token_weight: float = param(1.0, low=0)
    token_to_text_weight: float = param(1.0, low=0)
    item_task_items: int = param(64, low=1)
    discretizer: str = param("residual", choices=DISCRETIZERS)
    beam_size: int = param(20, low=1, option=True)


class ItemTexts:
    """Every item's text as encoder input (tokens + EOS) and as decoder labels (tokens + EOS, -100 padded)."""

    def __init__(self, texts: list[list[int]], device: torch.device, pad_id: int, eos_id: int) -> None:
        table = code_table([ids + [eos_id] for ids in texts]).to(device)
        self.pad_id = pad_id
        self.input_ids = torch.where(table >= 0, table, pad_id)
        self.mask = (table >= 0).long()
        self.labels = table.masked_fill(table < 0, IGNORE_INDEX)


class DenseTokenizer:
    """The tokenization stage: text -> L dense tokens (cascade of placeholders) -> text again. On a T5 the
    encoder reads the text and the decoder the placeholders; on a decoder-only backbone the placeholders follow
    the left-padded text in one causal sequence, and the reconstruction continues the dense tokens."""

    def __init__(self, model: PreTrainedModel, texts: ItemTexts, n_tokens: int) -> None:
        self.model, self.texts = model, texts
        self.decoder_only = is_decoder_only(model)
        first = new_token_offset(model, n_tokens)
        self.placeholders = torch.arange(first, first + n_tokens, device=texts.input_ids.device)

    def dense(self, items: torch.Tensor) -> torch.Tensor:
        """``[U, L, d]`` dense tokens of the items' texts."""
        if self.decoder_only:
            prompt, mask = left_padded(self.texts.input_ids[items], self.texts.mask[items], self.texts.pad_id)
            ids = torch.cat([prompt, self.placeholders.expand(len(items), -1)], dim=1)
            mask = torch.cat([mask, torch.ones_like(ids[:, prompt.shape[1]:])], dim=1)
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=causal_positions(mask),
                                           use_cache=False).last_hidden_state
            return hidden[:, prompt.shape[1]:]
        decoder_input_ids = self.placeholders.expand(len(items), -1)
        out = self.model(input_ids=self.texts.input_ids[items], attention_mask=self.texts.mask[items],
                         decoder_input_ids=decoder_input_ids, output_hidden_states=True)
        return out.decoder_hidden_states[-1]

    def reconstruction_loss(self, items: torch.Tensor) -> torch.Tensor:
        """Token-to-text: cross-entropy of the item text generated from its dense tokens."""
        dense = self.dense(items)
        mask = torch.ones(dense.shape[:2], dtype=torch.long, device=dense.device)
        if self.decoder_only:
            labels = self.texts.labels[items]
            logits = causal_pair_logits(self.model, None, mask, labels, self.texts.pad_id, prompt_embeds=dense)
            return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return self.model(inputs_embeds=dense, attention_mask=mask, labels=self.texts.labels[items]).loss


class STORERecommender(GenerativeRecommender):
    """Token-to-token generation trained jointly with the text-to-token and token-to-text item tasks."""

    def __init__(self, codes: ItemCodes, model: PreTrainedModel, max_history: int,
                 options: SequenceOptions, texts: ItemTexts,
                 weights: tuple[float, float], task_items: int) -> None:
        super().__init__(codes, model, max_history, options)
        self.texts, self.weights, self.task_items = texts, weights, task_items

    def code_inputs(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder input of the items' codes alone (a one-item history): code tokens then EOS, right-padded."""
        return self.encoder_inputs(items[:, None], torch.ones(len(items), 1, dtype=torch.bool, device=items.device))

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        loss = super().loss(batch)
        items = torch.unique(batch.targets)
        items = items[torch.randperm(len(items), device=items.device)[:self.task_items]]
        text_to_token, token_to_text = self.weights
        if text_to_token > 0:
            labels = self.target_labels(items)
            logits = self.pair_logits(self.texts.input_ids[items], self.texts.mask[items], labels)
            loss = loss + text_to_token * F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                          ignore_index=IGNORE_INDEX)
        if token_to_text > 0:
            ids, mask = self.code_inputs(items)
            loss = loss + token_to_text * self.code_to_text_loss(ids, mask, self.texts.labels[items])
        return loss

    def code_to_text_loss(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the item text generated from the item's code."""
        if not self.decoder_only:
            return self.backbone(input_ids=ids, attention_mask=mask, labels=labels).loss
        logits = self.pair_logits(ids, mask, labels)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)

    def identifier_statistics(self) -> dict[str, Any]:
        """How well the trained backbone maps item text to the item's code (first :data:`ACCURACY_ITEMS`)."""
        items = torch.arange(min(ACCURACY_ITEMS, self.n_items), device=self.texts.input_ids.device)
        return {"text_to_token_accuracy": self.text_to_token_accuracy(items)}

    @torch.no_grad()
    def text_to_token_accuracy(self, items: torch.Tensor) -> float:
        """Share of ``items`` whose code the backbone generates first from the item text (constrained)."""
        self.eval()
        hits = 0
        for chunk in items.split(256):
            found = self.search_from(self.texts.input_ids[chunk], self.texts.mask[chunk], 1)
            hits += int((found[:, 0] == chunk).sum())
        return hits / max(1, len(items))


@register("store")
class STORE(SequenceScheme):
    """One backbone tokenizes items (text -> dense -> k-means tokens) and recommends (token -> token)."""

    citation = ("Liu, Zhu, Fan, Zhao & Wu, STORE: Streamlining Semantic Tokenization and Generative "
                "Recommendation with A Single LLM, arXiv:2409.07276v1, 2024.")
    Params = STOREParams
    needs_content = ("text",)
    not_compilable = ("its auxiliary tasks take the batch's distinct targets and their code inputs' width, sizes "
                      "known only from the device (graph breaks), and torch 2.13's inductor fails on the pieces")
    profiles = {
        "smoke": {"n_tokens": 2, "codebook_size": 16, "pca_dim": 8, "text_max_tokens": 24, "tokenizer_epochs": 2,
                  "item_task_items": 32},
        "paper": {"n_tokens": 4, "codebook_size": 256, "text_max_tokens": 128, "tokenizer_epochs": 50},
    }
    train_profiles = {"quick": {"epochs": 15}}

    def not_applicable(self, dataset: Dataset) -> str | None:
        """LoRA is refused: the code tokens are appended after stage 1, while peft fixes the trainable token rows
        when the adapters are injected."""
        if finetune_mode(self.ctx.backbone) == "lora":
            return ("STORE appends its code tokens to the backbone after the tokenization stage; LoRA's trainable "
                    "token rows are fixed when peft injects the adapters, so STORE runs with --finetune full only")
        return super().not_applicable(dataset)

    def two_stage(self, data: TrainData) -> tuple[ItemCodes, Recommender]:
        """Stage 1 trains the backbone as dense tokenizer and discretises its tokens; stage 2's recommender is the
        same backbone with the codes' tokens added."""
        p, ctx = self.params, self.ctx
        vocab = ctx.text_vocabulary()
        torch.manual_seed(ctx.seed)
        model = build_backbone(ctx.backbone, new_tokens=p.n_tokens, text_vocab_size=vocab.size).to(ctx.device)
        texts = ItemTexts(vocab.encode(ctx.dataset.item_texts(), p.text_max_tokens), ctx.device, *special_ids(model))
        train_items = torch.as_tensor(np.flatnonzero(data.item_counts() > 0), device=ctx.device)
        tokenizer = DenseTokenizer(model, texts, p.n_tokens)
        start = time.perf_counter()
        losses = self.train_tokenizer(tokenizer, train_items)
        seconds = time.perf_counter() - start
        codes = self.discretize(tokenizer, texts, train_items)
        codes.details.update(reconstruction_losses=losses, tokenizer_fit_s=seconds)
        add_tokens(model, codes.vocab_size)
        return codes, STORERecommender(codes, model, ctx.config.max_history, self.sequence_options(), texts,
                                       (p.text_to_token_weight, p.token_to_text_weight), p.item_task_items)

    def train_tokenizer(self, tokenizer: DenseTokenizer, items: torch.Tensor) -> list[float]:
        """Train dense tokenizer + token-to-text reconstruction on the training items; mean loss per epoch."""
        p, ctx = self.params, self.ctx
        optimizer = torch.optim.AdamW(tokenizer.model.parameters(), lr=p.tokenizer_lr)
        generator = torch.Generator().manual_seed(ctx.seed)
        tokenizer.model.train()

        def batches():
            for index in torch.randperm(len(items), generator=generator).split(p.tokenizer_batch_size):
                yield len(index), items[index.to(items.device)]

        history = train_epochs(optimizer, p.tokenizer_epochs, batches,
                               lambda batch: {"reconstruction": tokenizer.reconstruction_loss(batch)},
                               "store tokenizer", "schemes.store.tokenizer_lr", ctx.progress,
                               max_steps=ctx.config.max_fit_steps).history
        return [epoch["reconstruction"] for epoch in history]

    @torch.no_grad()
    def discretize(self, tokenizer: DenseTokenizer, texts: ItemTexts, train_items: torch.Tensor) -> ItemCodes:
        """PCA + k-means of the dense tokens, fitted on the training items; every item's nearest clusters."""
        p, ctx = self.params, self.ctx
        tokenizer.model.eval()
        n_items = len(texts.input_ids)
        dense = torch.cat([tokenizer.dense(chunk) for chunk in torch.arange(n_items, device=ctx.device).split(256)])
        dense = dense.float().cpu().numpy()
        train = train_items.cpu().numpy()
        if p.discretizer == "residual":
            raw = residual_kmeans(_pca(dense.reshape(n_items, -1), train, p.pca_dim, ctx.seed), train, p.n_tokens,
                                  p.codebook_size, ctx.seed)
        else:
            raw = np.concatenate([residual_kmeans(_pca(dense[:, position], train, p.pca_dim, ctx.seed), train, 1,
                                                  p.codebook_size, ctx.seed) for position in range(p.n_tokens)], axis=1)
        return level_codes(torch.as_tensor(raw), p.codebook_size, extra_level=False)


def _pca(x: np.ndarray, fit_rows: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """``x`` projected on the top ``dim`` principal components of ``x[fit_rows]``."""
    pca = PCA(n_components=min(dim, x.shape[1], len(fit_rows)), random_state=seed)
    return pca.fit(x[fit_rows]).transform(x)
