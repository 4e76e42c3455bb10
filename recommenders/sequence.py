"""The sequence-paradigm recommender: a language model that reads the history's item codes and generates the
next one, on an encoder-decoder (T5) or a decoder-only backbone (Qwen2 or another causal LM).

As in TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023), the encoder
input is the codes of the history items, oldest first, and the decoder emits the target item's code; items
are ranked by beam search constrained to valid codes (:mod:`recommenders.decoding`).

Token mapping: backbone token 0 is the pad (also T5's decoder start), 1 is EOS. Codes made of new tokens
(TIGER, CID, ...) are appended to the backbone's vocabulary (:func:`~recommenders.backbones.build_backbone`);
codes made of words (BIGRec's titles, IDGenRec's textual IDs) are the ids of the backbone's text vocabulary
(:mod:`recommenders.text`) and each history item is followed by a separator word. The encoder input is the
history's tokens concatenated without pads, then EOS. The decoder target is the code, plus EOS when code
lengths vary (see :func:`recommenders.decoding.code_sequences`).

Decoder-only backbones (the recipe of decoder-only generative recommenders such as BIGRec and LC-Rec): the
prompt is the same token sequence (user token, history tokens, then EOS as the separator), left-padded;
the target's code follows it and the loss covers only the target's tokens (the prompt is not predicted).
Ranking is the same constrained beam search, continuing the prompt from its KV cache
(:func:`~recommenders.decoding.causal_beam_search`). A decoder-only checkpoint keeps its own pad and
end-of-sequence ids (:func:`~recommenders.backbones.special_ids`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from benchmark.batches import HistoryBatch
from recommenders.backbones import (
    BackboneSpec,
    build_backbone,
    causal_positions,
    check_positions,
    is_decoder_only,
    new_token_offset,
    padding_mask_4d,
    special_ids,
)
from recommenders.base import IGNORE_INDEX, Recommender, rounded_up
from recommenders.contracts import ItemCodes
from recommenders.decoding import CodeTrie, beam_search, causal_beam_search

SPAN_BUCKET = 16
"""Encoder widths a compiled training loss sees are multiples of this (:meth:`GenerativeRecommender.compiled_sizes`)."""


@dataclass(frozen=True)
class SequenceOptions:
    """Options of :class:`GenerativeRecommender` (a scheme's ``Params`` may carry any of them).

    beam_size: beams of the constrained beam search (at least the largest K evaluated is used).
    temperature: tau of the token cross-entropy on ``logits / tau``; 1 is T5's objective, tau < 1 is
        LETTER's ranking-guided generation loss (Wang et al., CIKM 2024, Sec. 3.3), which weights hard
        negative tokens more and tightens the link between generation and ranking.
    constrained: restrict decoding to valid codes (False only to measure invalid generations).
    user_tokens: TIGER's user token (Rajput et al., NeurIPS 2023, Sec. 4.1): the encoder input starts with one
        of ``user_tokens`` new tokens, chosen by hashing the user id (:func:`user_bucket`); 0 = no user token.
    """

    beam_size: int = 20
    temperature: float = 1.0
    constrained: bool = True
    user_tokens: int = 0


USER_HASH_MULTIPLIER = 2654435761
"""Knuth's multiplicative hash constant: spreads consecutive user ids over the user-token buckets."""


def user_bucket(users: torch.Tensor, buckets: int) -> torch.Tensor:
    """The hashing trick for user ids: ``(user * 2654435761 mod 2^32) mod buckets``, stable across runs."""
    return (users.long() * USER_HASH_MULTIPLIER) % 2**32 % buckets


@dataclass
class HistoryLayout:
    """Where every encoder position comes from: token ``positions[b, s]`` of the history-token row of item
    ``items[b, s]`` where ``real[b, s]``; position ``lengths[b]`` holds EOS, later ones are padding."""

    items: torch.Tensor
    positions: torch.Tensor
    real: torch.Tensor
    lengths: torch.Tensor

    def attention_mask(self) -> torch.Tensor:
        """``[B, S]`` 1 up to and including the EOS position."""
        width = self.items.shape[1]
        return (torch.arange(width, device=self.items.device)[None, :] <= self.lengths[:, None]).long()


def left_padded(values: torch.Tensor, mask: torch.Tensor, fill: float | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows ``[B, S, ...]`` (mask ``[B, S]``, 1 on tokens) moved to the right end of the row: left
    padding, ``fill`` in the padding."""
    width = values.shape[1]
    shift = width - mask.sum(dim=1, keepdim=True)
    source = (torch.arange(width, device=values.device)[None, :] - shift) % width
    moved = mask.gather(1, source)
    index = source.view(*source.shape, *([1] * (values.dim() - 2))).expand_as(values)
    real = moved.bool().view(*moved.shape, *([1] * (values.dim() - 2)))
    return torch.where(real, values.gather(1, index), fill), moved


def causal_pair_logits(model: PreTrainedModel, prompt: torch.Tensor | None, prompt_mask: torch.Tensor,
                       labels: torch.Tensor, pad_id: int, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced logits ``[B, T, vocab]`` of the label tokens ``[B, T]`` (-100 = ignore) continuing a
    left-padded prompt (ids, or embeddings ``prompt_embeds``) on a decoder-only ``model``: position ``S - 1 + t``
    predicts label ``t``; the prompt itself is not predicted."""
    check_positions(model, prompt_mask.shape[1] + labels.shape[1] - 1)
    target = labels.masked_fill(labels == IGNORE_INDEX, pad_id)
    mask = torch.cat([prompt_mask, (labels != IGNORE_INDEX).long()], dim=1)[:, :-1]
    inputs: dict[str, torch.Tensor] = {}
    if prompt_embeds is None:
        inputs["input_ids"] = torch.cat([prompt, target], dim=1)[:, :-1]
    else:
        embedded = model.get_input_embeddings()(target).to(prompt_embeds.dtype)
        inputs["inputs_embeds"] = torch.cat([prompt_embeds, embedded], dim=1)[:, :-1]
    logits = model(**inputs, attention_mask=mask, position_ids=causal_positions(mask), use_cache=False).logits
    return logits[:, prompt_mask.shape[1] - 1:]


class GenerativeRecommender(Recommender):
    """A language model generating item codes; ``rank`` is (constrained) beam search with ``max(beam_size, k)`` beams.

    ``backbone`` is a preset or checkpoint name (or spec), or an already built model whose vocabulary ends with the
    codes' new tokens (or holds the codes' text vocabulary), followed by ``options.user_tokens`` user tokens;
    with user tokens, the encoder input of :meth:`encode` and :meth:`token_logits` starts with the user's.

    Subclasses change the objective by overriding :meth:`sequence_loss`, which receives the per-token
    logits of :meth:`token_logits`. ``invalid_generation_rate`` is the share of generated sequences since
    the last :meth:`reset_inference_statistics` that name no item (0 when ``constrained``).
    """

    output = "ranking"

    def __init__(self, codes: ItemCodes, backbone: str | BackboneSpec | PreTrainedModel, max_history: int,
                 options: SequenceOptions = SequenceOptions()) -> None:
        super().__init__(codes.n_items)
        if options.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {options.temperature}")
        if options.user_tokens < 0:
            raise ValueError(f"user_tokens must be 0 or positive, got {options.user_tokens}")
        self.max_history = max_history
        self.options = options
        self.text = codes.text_vocab is not None
        if isinstance(backbone, PreTrainedModel):
            self.backbone = backbone
        elif self.text:
            self.backbone = build_backbone(backbone, text_vocab_size=codes.text_vocab.size,
                                           new_tokens=options.user_tokens)
        else:
            self.backbone = build_backbone(backbone, new_tokens=codes.vocab_size + options.user_tokens)
        self.decoder_only = is_decoder_only(self.backbone)
        self.pad_id, self.eos_id = special_ids(self.backbone)
        self.user_token_offset = new_token_offset(self.backbone, options.user_tokens)
        self.generated = 0
        self.invalid = 0
        self.set_codes(codes)

    def set_codes(self, codes: ItemCodes) -> None:
        """Use ``codes`` (same vocabulary) from now on: rebuilds the trie and the history tokens."""
        if codes.n_items != self.n_items or (codes.text_vocab is not None) != self.text:
            raise ValueError("set_codes needs codes of the same items and the same kind of vocabulary")
        offset = 0 if self.text else new_token_offset(self.backbone, codes.vocab_size + self.options.user_tokens)
        tokens = torch.where(codes.codes >= 0, codes.codes + offset, -1)
        device = next(self.backbone.parameters()).device
        self.trie = CodeTrie(tokens, eos_id=self.eos_id, vocab_size=self.backbone.config.vocab_size).to(device)
        history = tokens
        if self.text:
            history = torch.cat([tokens, torch.full((len(tokens), 1), -1, dtype=torch.long)], dim=1)
            history[torch.arange(len(tokens)), (tokens >= 0).sum(dim=1)] = codes.text_vocab.separator_id
        self.register_buffer("item_tokens", tokens.to(device), persistent=False)
        self.register_buffer("history_tokens", history.to(device), persistent=False)
        self.history_lengths = (history >= 0).sum(dim=1).cpu().numpy()

    def host_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``span``: the encoder width :meth:`history_layout` needs for ``batch`` (its most history tokens + 1 for
        EOS), counted on the host from ``batch.histories`` (None when the batch has none)."""
        if batch.histories is None:
            return {"span": None}
        items = batch.histories[:, -self.max_history:]
        return {"span": int(np.where(items >= 0, self.history_lengths[np.maximum(items, 0)], 0).sum(axis=1).max()) + 1}

    def compiled_sizes(self, batch: HistoryBatch) -> dict[str, int | None]:
        """``span`` rounded up to a multiple of :data:`SPAN_BUCKET`, at most the widest history (``max_history``
        items of the most tokens, + 1): the padded positions are masked, so the loss is the exact span's up to
        float rounding, and a compiled loss sees a few widths instead of one per batch (each a compilation or, on
        CUDA, a CUDA-graph recording)."""
        span = self.host_sizes(batch)["span"]
        if span is None:
            return {"span": None}
        return {"span": rounded_up(span, SPAN_BUCKET, self.max_history * self.history_tokens.shape[1] + 1)}

    def history_span(self, batch: HistoryBatch) -> int | None:
        """The ``span`` of :meth:`host_sizes`."""
        return self.sizes_of(batch)["span"]

    def history_layout(self, items: torch.Tensor, present: torch.Tensor,
                       table: torch.Tensor | None = None, span: int | None = None) -> HistoryLayout:
        """The encoder positions of the tokens of the last ``max_history`` items of ``items [B, H]`` where
        ``present``, oldest first, no pads.

        ``table`` (default: :attr:`history_tokens`) holds each item's history-token row, -1 padded; ``items``
        index its rows. ``span``: the layout's width (:meth:`history_span`); None reads it from the device (a
        host-device sync).
        """
        table = self.history_tokens if table is None else table
        items, present = items[:, -self.max_history:], present[:, -self.max_history:]
        width = table.shape[1]
        valid = ((table[items] >= 0) & present[..., None]).flatten(1)
        lengths = valid.sum(dim=1)
        span = int(lengths.max()) + 1 if span is None else span
        target = torch.where(valid, valid.cumsum(dim=1) - 1, span)
        source = torch.arange(valid.shape[1], device=items.device).expand_as(valid)
        slots = torch.zeros(len(items), span + 1, dtype=torch.long, device=items.device)
        slots = slots.scatter(1, target, source)[:, :span]
        real = torch.arange(span, device=items.device)[None, :] < lengths[:, None]
        return HistoryLayout(items=items.gather(1, slots // width), positions=slots % width, real=real,
                             lengths=lengths)

    def encoder_inputs(self, items: torch.Tensor, present: torch.Tensor, users: torch.Tensor | None = None,
                       span: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids [B, S]`` of histories ``items [B, H]`` where ``present`` (their tokens oldest first, pads
        removed, then EOS; right-padded) and the attention mask; preceded by the user token of ``users`` when
        given and ``options.user_tokens`` > 0. ``span``: see :meth:`history_layout`."""
        layout = self.history_layout(items, present, span=span)
        input_ids = torch.where(layout.real, self.history_tokens[layout.items, layout.positions], self.pad_id)
        input_ids[torch.arange(len(input_ids), device=input_ids.device), layout.lengths] = self.eos_id
        mask = layout.attention_mask()
        if users is None or self.options.user_tokens == 0:
            return input_ids, mask
        user_ids = self.user_token_offset + user_bucket(users, self.options.user_tokens)
        return torch.cat([user_ids[:, None], input_ids], dim=1), torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    def prompt(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoder-only backbone's prompt: :meth:`encoder_inputs` left-padded, ``[B, S]`` ids and mask."""
        return left_padded(*self.encoder_inputs(batch.items, batch.mask, batch.users, self.history_span(batch)),
                           self.pad_id)

    def causal_logits(self, prompt: torch.Tensor | None, prompt_mask: torch.Tensor, labels: torch.Tensor,
                      prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`causal_pair_logits` of this recommender's decoder-only backbone."""
        return causal_pair_logits(self.backbone, prompt, prompt_mask, labels, self.pad_id, prompt_embeds)

    def pair_logits(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, labels: torch.Tensor,
                    inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, vocab]`` of ``labels`` given a right-padded input (ids or embeddings)
        on either family: :meth:`seq2seq_logits` on a T5, the input as a left-padded prompt when decoder-only."""
        if not self.decoder_only:
            return self.seq2seq_logits(input_ids, attention_mask, labels, inputs_embeds=inputs_embeds)
        if inputs_embeds is None:
            return self.causal_logits(*left_padded(input_ids, attention_mask, self.pad_id), labels)
        embeds, mask = left_padded(inputs_embeds, attention_mask, 0.0)
        return self.causal_logits(None, mask, labels, prompt_embeds=embeds)

    @torch.no_grad()
    def search_from(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
        """``[B, k]`` items decoded (constrained beam search) from any right-padded input on either family."""
        beams = max(self.options.beam_size, k)
        if self.decoder_only:
            prompt, mask = left_padded(input_ids, attention_mask, self.pad_id)
            return causal_beam_search(self.backbone, prompt, mask, self.trie, beams, k).items
        hidden = self.backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return beam_search(self.backbone, hidden, attention_mask, self.trie, beams, k).items

    def encode(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output ``[B, S, d]`` and its attention mask ``[B, S]``."""
        input_ids, mask = self.encoder_inputs(batch.items, batch.mask, batch.users, self.history_span(batch))
        hidden = self.backbone.get_encoder()(input_ids=input_ids,
                                             attention_mask=padding_mask_4d(mask, self.backbone.dtype))
        return hidden.last_hidden_state, mask

    def target_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` decoder labels: the targets' code sequences, -100 after their end."""
        sequences = self.trie.sequences[targets]
        return sequences.masked_fill(sequences < 0, IGNORE_INDEX)

    def seq2seq_logits(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, labels: torch.Tensor,
                       inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, vocab]`` of any input (ids or embeddings) and labels (-100 = ignore); the
        ``[B, S]`` attention mask reaches the T5 as a 4D mask (:func:`~recommenders.backbones.padding_mask_4d`)."""
        decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels)
        mask = padding_mask_4d(attention_mask, self.backbone.dtype)
        return self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                             decoder_input_ids=decoder_input_ids).logits

    def token_logits(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits ``[B, D, vocab]`` for the target codes, with the labels ``[B, D]``."""
        labels = self.target_labels(batch.targets)
        if self.decoder_only:
            return self.causal_logits(*self.prompt(batch), labels), labels
        input_ids, mask = self.encoder_inputs(batch.items, batch.mask, batch.users, self.history_span(batch))
        return self.seq2seq_logits(input_ids, mask, labels), labels

    def sequence_loss(self, logits: torch.Tensor, labels: torch.Tensor, batch: HistoryBatch) -> torch.Tensor:
        """Token-level cross-entropy of ``logits / temperature`` over the code tokens; override for other losses."""
        scaled = logits.flatten(0, 1).float() / self.options.temperature
        return F.cross_entropy(scaled, labels.flatten(), ignore_index=IGNORE_INDEX)

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        return self.sequence_loss(*self.token_logits(batch), batch)

    @torch.no_grad()
    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        beams = max(self.options.beam_size, k)
        if self.decoder_only:
            result = causal_beam_search(self.backbone, *self.prompt(batch), self.trie, beams, k,
                                        constrained=self.options.constrained)
        else:
            hidden, mask = self.encode(batch)
            result = beam_search(self.backbone, hidden, mask, self.trie, beams, k, constrained=self.options.constrained)
        self.generated += result.n_generated
        self.invalid += result.n_invalid
        return result.items

    @property
    def invalid_generation_rate(self) -> float:
        return self.invalid / max(self.generated, 1)

    def reset_inference_statistics(self) -> None:
        self.generated = 0
        self.invalid = 0

    def inference_statistics(self) -> dict[str, Any]:
        return {"generated_sequences": self.generated, "invalid_generations": self.invalid,
                "invalid_generation_rate": self.invalid_generation_rate}
