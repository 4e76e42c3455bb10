"""The sequence-paradigm recommender: a T5 that reads the history's item codes and generates the next one.

As in TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023), the encoder
input is the codes of the history items, oldest first, and the decoder emits the target item's code; items
are ranked by beam search constrained to valid codes (:mod:`recommenders.decoding`).

Token mapping: backbone token 0 is the pad (also T5's decoder start), 1 is EOS, scheme token ``t`` is
``t + 2``. The encoder input is the history's code tokens concatenated without pads, then EOS. The decoder
target is the code, plus EOS when code lengths vary (see :func:`recommenders.decoding.code_sequences`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from recommenders.backbones import build_t5
from recommenders.base import HistoryBatch, Recommender
from recommenders.decoding import CodeTrie, beam_search

if TYPE_CHECKING:
    from identifiers.base import ItemCodes

PAD_TOKEN, EOS_TOKEN, TOKEN_OFFSET = 0, 1, 2
IGNORE_INDEX = -100


class GenerativeRecommender(Recommender):
    """A T5 generating item codes; ``rank`` is (constrained) beam search with ``max(beam_size, k)`` beams.

    Subclasses change the objective by overriding :meth:`sequence_loss`, which receives the per-token
    logits of :meth:`token_logits`. ``invalid_generation_rate`` is the share of generated sequences since
    the last :meth:`reset_generation_stats` that name no item (0 when ``constrained``).
    """

    output = "ranking"

    def __init__(self, codes: ItemCodes, backbone: str, max_history: int, beam_size: int = 20,
                 constrained: bool = True) -> None:
        super().__init__(codes.n_items)
        self.max_history = max_history
        self.beam_size = beam_size
        self.constrained = constrained
        self.backbone = build_t5(backbone, codes.vocab_size + TOKEN_OFFSET, pad_id=PAD_TOKEN, eos_id=EOS_TOKEN,
                                 decoder_start_id=PAD_TOKEN)
        tokens = torch.where(codes.codes >= 0, codes.codes + TOKEN_OFFSET, -1)
        self.trie = CodeTrie(tokens, eos_id=EOS_TOKEN, vocab_size=codes.vocab_size + TOKEN_OFFSET)
        self.register_buffer("item_tokens", tokens, persistent=False)
        self.generated = 0
        self.invalid = 0

    def encoder_inputs(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids [B, S]`` (history codes oldest first, pads removed, then EOS; right-padded) and mask."""
        items, present = batch.items[:, -self.max_history:], batch.mask[:, -self.max_history:]
        tokens = self.item_tokens[items].flatten(1)
        valid = (tokens >= 0) & present.repeat_interleave(self.item_tokens.shape[1], dim=1)
        lengths = valid.sum(dim=1)
        width = int(lengths.max()) + 1
        position = torch.where(valid, valid.cumsum(dim=1) - 1, width)
        input_ids = torch.zeros(len(tokens), width + 1, dtype=torch.long, device=tokens.device)
        input_ids.scatter_(1, position, tokens.clamp_min(0))
        input_ids = input_ids[:, :width]
        input_ids[torch.arange(len(tokens), device=tokens.device), lengths] = EOS_TOKEN
        mask = torch.arange(width, device=tokens.device)[None, :] <= lengths[:, None]
        return input_ids, mask.long()

    def encode(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output ``[B, S, d]`` and its attention mask ``[B, S]``."""
        input_ids, mask = self.encoder_inputs(batch)
        return self.backbone.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask

    def target_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` decoder labels: the targets' code sequences, -100 after their end."""
        sequences = self.trie.sequences[targets]
        return sequences.masked_fill(sequences < 0, IGNORE_INDEX)

    def seq2seq_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, vocab]`` of any backbone-token input / label pair (-100 = ignore)."""
        decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels)
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                             decoder_input_ids=decoder_input_ids).logits

    def token_logits(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits ``[B, D, vocab]`` for the target codes, with the labels ``[B, D]``."""
        input_ids, mask = self.encoder_inputs(batch)
        labels = self.target_labels(batch.targets)
        return self.seq2seq_logits(input_ids, mask, labels), labels

    def sequence_loss(self, logits: torch.Tensor, labels: torch.Tensor, batch: HistoryBatch) -> torch.Tensor:
        """Token-level cross-entropy over the code tokens (T5's objective); override for other losses."""
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        return self.sequence_loss(*self.token_logits(batch), batch)

    @torch.no_grad()
    def rank(self, batch: HistoryBatch, k: int) -> torch.Tensor:
        hidden, mask = self.encode(batch)
        result = beam_search(self.backbone, hidden, mask, self.trie, max(self.beam_size, k), k,
                             constrained=self.constrained)
        self.generated += result.n_generated
        self.invalid += result.n_invalid
        return result.items

    @property
    def invalid_generation_rate(self) -> float:
        return self.invalid / max(self.generated, 1)

    def reset_generation_stats(self) -> None:
        self.generated = 0
        self.invalid = 0
