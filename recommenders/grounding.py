"""Grounding generated text to items by L2 distance, with a popularity adjustment (BIGRec's second step).

Bao et al., "A Bi-Step Grounding Paradigm for Large Language Models in Recommendation Systems" (arXiv:2308.08434,
2023): the language model first generates the next item's title freely; the generated text is then
grounded to the actual items by the L2 distance between its embedding and every item's title embedding, both
taken from the language model, which full-ranks the catalogue. With popularity (as the released
``data/movie/adjust_pda.py`` applies it), the ranking key of item ``i`` is

    key(i) = (1 + pop_i)^-gamma * dist_i,        smaller is better,

where ``dist_i`` is the L2 distance min-max normalised over the catalogue for each user (so in [0, 1]) and
``pop_i`` the item's interaction count min-max normalised over the catalogue (in [0, 1]); ``gamma`` = 0 is pure
L2 grounding. :func:`grounded_scores` returns ``-key`` (higher is better) for the suite's evaluator.

:class:`L2GroundedRecommender` is the sequence-paradigm recommender of text identifiers with this grounding in
place of constrained beam search: it trains exactly as :class:`~recommenders.sequence.GenerativeRecommender`
(teacher-forced next title) and scores every item (``output = "scores"``). Generation is transformers' own
unconstrained beam search (``generate``, ``num_beams`` beams, one sequence returned, its default length
penalty), as the released ``inference.py`` does. Embeddings come from the trained backbone:

* decoder-only: the last layer's hidden state at the last position of the text (the released code takes
  ``hidden_states[-1][:, -1, :]`` of LLaMA on the left-padded text);
* T5: the encoder's last hidden states mean-pooled over the text (a T5 has no causal last position that
  summarises the text; the encoder is what reads titles).

The text is the title's tokens followed by EOS, as every input of this suite ends (an empty generation is EOS
alone). Item embeddings are computed once per evaluation: they are cached from the first scored batch until
the model's mode is set again (:meth:`L2GroundedRecommender.train`, which the evaluator calls at its start and
end), so weights changed by training never meet a stale cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from transformers import PreTrainedModel

from benchmark.batches import HistoryBatch
from benchmark.evaluate import EvaluationResult
from benchmark.splits import TrainData
from recommenders.backbones import BackboneSpec, causal_positions
from recommenders.base import Recommender, select_on_grid
from recommenders.contracts import ItemCodes
from recommenders.sequence import GenerativeRecommender, SequenceOptions, left_padded


@dataclass(frozen=True)
class GroundingOptions:
    """Options of :class:`L2GroundedRecommender`.

    beams: beams of the unconstrained beam search that generates one title per user.
    gamma_grid: popularity exponents tried on validation after training (gamma = 0 while training selects
        the epoch); the first best in grid order is kept.
    selection_metric: validation metric that chooses gamma (``recall@K`` or ``ndcg@K``).
    item_batch_size: titles embedded per forward pass when the catalogue is embedded.
    """

    beams: int = 4
    gamma_grid: tuple[float, ...] = (0.0,)
    selection_metric: str = "ndcg@10"
    item_batch_size: int = 512


def popularity_weights(counts: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Interaction counts min-max normalised to [0, 1] over the catalogue (all 0 when every count is equal).

    The released code divides the counts by their sum first, which min-max normalisation cancels.
    """
    counts = torch.as_tensor(counts, dtype=torch.float32)
    low, high = counts.min(), counts.max()
    return (counts - low) / (high - low) if high > low else torch.zeros_like(counts)


def grounded_scores(generated: torch.Tensor, items: torch.Tensor, popularity: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """``[B, n_items]`` scores, higher is better: ``-(1 + pop_i)^-gamma * dist_i`` with ``dist`` the L2 distance
    between each generated embedding ``[B, d]`` and every item embedding ``[n_items, d]``, min-max normalised
    per row (a row whose distances are all equal is 0), and ``popularity`` in [0, 1] (:func:`popularity_weights`)."""
    distance = torch.cdist(generated.float(), items.float(), p=2)
    low = distance.min(dim=1, keepdim=True).values
    spread = distance.max(dim=1, keepdim=True).values - low
    normalised = torch.where(spread > 0, (distance - low) / spread.clamp_min(torch.finfo(distance.dtype).tiny), 0.0)
    return -(1.0 + popularity.to(normalised))[None, :].pow(-gamma) * normalised


def text_tokens(sequences: torch.Tensor, pad_id: int, eos_id: int) -> torch.Tensor:
    """Generated ``sequences [B, T]`` as text: the tokens before the first EOS without pads (what a tokenizer
    decodes with ``skip_special_tokens``), moved to the left and padded with -1."""
    before_end = (sequences == eos_id).long().cumsum(dim=1) == 0
    keep = before_end & (sequences != pad_id) & (sequences != eos_id)
    order = torch.sort((~keep).long(), dim=1, stable=True).indices
    return torch.where(keep.gather(1, order), sequences.gather(1, order), -1)


class L2GroundedRecommender(GenerativeRecommender):
    """Text identifiers generated freely and grounded to all items by L2 distance (see the module docstring).

    ``gamma`` is the popularity exponent in use (0 until :meth:`select_on_validation` chooses one); ``popularity``
    is set from the training interactions by :meth:`prepare`. :meth:`inference_statistics` counts the generated
    titles that are no item's title (``invalid_generation_rate``): what the grounding step repairs.
    """

    output = "scores"

    def __init__(self, codes: ItemCodes, backbone: str | BackboneSpec | PreTrainedModel, max_history: int,
                 options: SequenceOptions = SequenceOptions(),
                 grounding: GroundingOptions = GroundingOptions()) -> None:
        if codes.text_vocab is None:
            raise ValueError("L2 grounding embeds text: the codes must be text identifiers (ItemCodes.text_vocab)")
        if grounding.beams < 1 or not grounding.gamma_grid or min(grounding.gamma_grid) < 0:
            raise ValueError(f"grounding needs beams >= 1 and a non-empty grid of gamma >= 0, got {grounding}")
        super().__init__(codes, backbone, max_history, options)
        self.grounding = grounding
        self.gamma = 0.0
        self.register_buffer("popularity", torch.zeros(codes.n_items), persistent=False)
        self.item_cache: torch.Tensor | None = None

    def prepare(self, data: TrainData) -> None:
        """Item popularity from the training interactions only."""
        self.popularity.copy_(popularity_weights(data.item_counts()))

    def train(self, mode: bool = True) -> L2GroundedRecommender:
        """Set the mode and forget the cached item embeddings (the weights may change from here on)."""
        self.item_cache = None
        return super().train(mode)

    @torch.no_grad()
    def generate_titles(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, T]`` the generated title of each history (:func:`text_tokens`), counted in the inference
        statistics."""
        max_new_tokens = self.trie.depth
        settings = dict(num_beams=self.grounding.beams, num_return_sequences=1, max_new_tokens=max_new_tokens,
                        do_sample=False, pad_token_id=self.pad_id, eos_token_id=self.eos_id)
        if self.decoder_only:
            prompt, mask = self.prompt(batch)
            generated = self.backbone.generate(input_ids=prompt, attention_mask=mask, **settings)[:, prompt.shape[1]:]
        else:
            input_ids, mask = self.encoder_inputs(batch.items, batch.mask, batch.users)
            generated = self.backbone.generate(input_ids=input_ids, attention_mask=mask, **settings)[:, 1:]
        named = self.trie.lookup(generated)
        self.generated += len(generated)
        self.invalid += int((named < 0).sum())
        return text_tokens(generated, self.pad_id, self.eos_id)

    @torch.no_grad()
    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` embeddings of texts ``[N, T]`` (-1 padded): each text's tokens then EOS, read by the backbone
        (decoder-only: last position's last hidden state; T5: encoder states mean-pooled)."""
        lengths = (tokens >= 0).sum(dim=1)
        ids = torch.cat([tokens, torch.full_like(tokens[:, :1], -1)], dim=1)
        ids[torch.arange(len(ids), device=ids.device), lengths] = self.eos_id
        mask = (ids >= 0).long()
        ids = ids.clamp_min(0).masked_fill(mask == 0, self.pad_id)
        if self.decoder_only:
            ids, mask = left_padded(ids, mask, self.pad_id)
            hidden = self.backbone.base_model(input_ids=ids, attention_mask=mask, position_ids=causal_positions(mask),
                                              use_cache=False).last_hidden_state
            return hidden[:, -1].float()
        hidden = self.backbone.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)

    def item_embeddings(self) -> torch.Tensor:
        """``[n_items, d]`` every item's title embedding, cached until the mode is set again."""
        if self.item_cache is None:
            size = self.grounding.item_batch_size
            self.item_cache = torch.cat([self.embed_text(self.item_tokens[start:start + size])
                                         for start in range(0, self.n_items, size)])
        return self.item_cache

    def generated_embeddings(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, d]`` embeddings of the titles generated for ``batch``."""
        return self.embed_text(self.generate_titles(batch))

    @torch.no_grad()
    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return grounded_scores(self.generated_embeddings(batch), self.item_embeddings(), self.popularity, self.gamma)

    @torch.no_grad()
    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        return Recommender.rank(self, batch, k)

    def select_on_validation(self, evaluate_valid: Callable[[Recommender], EvaluationResult]) -> dict[str, Any]:
        """Choose gamma on validation (first best in grid order); return it, the value of each gamma and the
        generation's beams. Titles are generated and embedded once (:class:`GroundingReplay`); each gamma re-ranks
        the same embeddings."""
        replay = GroundingReplay(self)

        def with_gamma(gamma: float) -> Recommender:
            replay.gamma = gamma
            return replay

        self.gamma, values = select_on_grid(self.grounding.gamma_grid, with_gamma, evaluate_valid,
                                            self.grounding.selection_metric)
        return {"gamma": self.gamma, "metric": self.grounding.selection_metric, "valid": values,
                "generation_beams": self.grounding.beams}


class GroundingReplay(Recommender):
    """:class:`L2GroundedRecommender`'s scores at another ``gamma`` without generating again: the first evaluation
    records each batch's generated embeddings (and the item embeddings), later ones replay them. The evaluator
    must visit the same batches in the same order each time (checked on the users; a mismatch is an error)."""

    output = "scores"
    trainable = False

    def __init__(self, model: L2GroundedRecommender) -> None:
        super().__init__(model.n_items)
        self.model = model
        self.gamma = 0.0
        self.recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.items: torch.Tensor | None = None
        self.replaying = False
        self.position = 0
        self.train(model.training)

    def train(self, mode: bool = True) -> GroundingReplay:
        """Start over: the evaluator sets the mode before its first batch and after its last."""
        if self.recorded:
            self.replaying = True
        self.position = 0
        return super().train(mode)

    @torch.no_grad()
    def score(self, batch: HistoryBatch) -> torch.Tensor:
        if not self.replaying:
            generated = self.model.generated_embeddings(batch)
            self.items = self.model.item_embeddings()
            self.recorded.append((batch.users.clone(), generated))
        else:
            if self.position >= len(self.recorded) or not torch.equal(self.recorded[self.position][0], batch.users):
                raise RuntimeError("the validation evaluator visited other batches than the ones recorded")
            generated = self.recorded[self.position][1]
        self.position += 1
        return grounded_scores(generated, self.items, self.model.popularity, self.gamma)
