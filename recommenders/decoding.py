"""Decoding item codes with a language model: a tensor prefix tree and constrained beam search.

Generative retrieval with semantic IDs (TIGER: Rajput et al., "Recommender Systems with Generative
Retrieval", NeurIPS 2023) decodes the next item's code token by token with beam search; constraining every
step to the prefixes of valid codes guarantees that each beam names an existing item.

* :class:`CodeTrie` holds the valid codes as a prefix tree in device tensors, so that the allowed next
  tokens and the child nodes of a whole batch of beams come from a few tensor operations.
* :func:`beam_search` is a vectorised beam search for a T5 or mT5 (one decoder forward per step for all
  ``B * beam`` hypotheses, decoder KV cache), constrained to the trie or not; :func:`causal_beam_search` is
  the same search for a decoder-only model continuing a left-padded prompt (KV cache over the prompt). It
  follows the semantics of transformers' ``generate(num_beams=...)`` with ``length_penalty=0`` (hypotheses
  ranked by the sum of their token log-probabilities, normalised over the full vocabulary before masking).
* :func:`reference_generate` runs transformers' own beam search with ``prefix_allowed_tokens_fn`` walking
  the trie in Python: slow, used to check :func:`beam_search`.

Code sequences: when all codes have the same length, a hypothesis ends after the last level; when lengths
vary, every code gets an end-of-sequence token appended, so a code may be a prefix of another.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.t5.modeling_t5 import eager_attention_forward

from recommenders.backbones import check_positions


class CodeTrie(nn.Module):
    """The prefix tree of valid code sequences, stored as (non-persistent) buffers on the model's device.

    Nodes are numbered breadth-first with siblings ordered by token (the root is node 0), so the children of
    a node are the contiguous node range ``child_start[n] + 1 .. child_start[n + 1]`` and the transition keys
    ``parent * vocab_size + token`` of nodes ``1 ..`` are sorted: a transition is one ``searchsorted``.
    ``leaf_item[n]`` is the item whose code ends at node ``n`` (-1 for inner nodes). Node -1 stands for
    "no node" (an invalid prefix); every method maps it to "nothing allowed" / -1.

    Args:
        codes: ``[n_items, L]`` token ids, right-padded with -1; rows must be unique.
        eos_id: the end-of-sequence token appended to every code when code lengths vary (required then).
        vocab_size: size of the token space (default: largest token + 1).
    """

    def __init__(self, codes: torch.Tensor, eos_id: int | None = None, vocab_size: int | None = None) -> None:
        super().__init__()
        sequences, lengths = code_sequences(codes, eos_id)
        self.eos_id = eos_id
        self.uses_eos = bool((lengths != lengths[0]).any())
        self.depth = sequences.shape[1]
        self.vocab_size = int(vocab_size if vocab_size is not None else sequences.max() + 1)
        if int(sequences.max()) >= self.vocab_size:
            raise ValueError(f"code tokens must be smaller than vocab_size {self.vocab_size}")
        parent, token, leaf_item = _build_nodes(sequences, lengths)
        n_nodes = len(leaf_item)
        self.max_children = int(torch.bincount(parent, minlength=n_nodes).max())
        self.register_buffer("sequences", sequences, persistent=False)
        self.register_buffer("edge_key", parent * self.vocab_size + token, persistent=False)
        self.register_buffer("edge_token", token, persistent=False)
        self.register_buffer("child_start", torch.searchsorted(parent, torch.arange(n_nodes + 1)), persistent=False)
        self.register_buffer("leaf_item", leaf_item, persistent=False)

    @property
    def n_nodes(self) -> int:
        return len(self.leaf_item)

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """``[N, vocab_size]`` True where the token extends node ``nodes[i]`` towards a valid code."""
        if vocab_size < self.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the trie's {self.vocab_size}")
        safe = nodes.clamp_min(0)
        start = self.child_start[safe]
        count = torch.where(nodes >= 0, self.child_start[safe + 1] - start, 0)
        offsets = torch.arange(self.max_children, device=nodes.device)
        present = offsets[None, :] < count[:, None]
        edge = (start[:, None] + offsets[None, :]).clamp_max(len(self.edge_token) - 1)
        tokens = torch.where(present, self.edge_token[edge], vocab_size)
        mask = torch.zeros(len(nodes), vocab_size + 1, dtype=torch.bool, device=nodes.device)
        return mask.scatter_(1, tokens, True)[:, :vocab_size]

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The child of each node along its token, or -1 where the prefix leaves the trie."""
        key = nodes * self.vocab_size + tokens
        position = torch.searchsorted(self.edge_key, key).clamp_max(len(self.edge_key) - 1)
        valid = (nodes >= 0) & (tokens >= 0) & (tokens < self.vocab_size) & (self.edge_key[position] == key)
        return torch.where(valid, position + 1, -1)

    def item_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """The item whose code ends at each node, -1 for inner nodes and for -1."""
        return torch.where(nodes >= 0, self.leaf_item[nodes.clamp_min(0)], -1)

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.item_of(nodes) >= 0

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """Items named by token sequences ``[..., T]``: the first code end on the path, else -1."""
        nodes = torch.zeros(tokens.shape[:-1], dtype=torch.long, device=tokens.device)
        items = torch.full_like(nodes, -1)
        for position in range(tokens.shape[-1]):
            nodes = self.step(nodes, tokens[..., position])
            items = torch.where(items < 0, self.item_of(nodes), items)
        return items


def code_sequences(codes: torch.Tensor, eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The token sequences decoded for ``codes`` (EOS appended when lengths vary) and their lengths."""
    codes = codes.detach().cpu().long()
    if codes.dim() != 2 or len(codes) == 0:
        raise ValueError("codes must be a non-empty LongTensor [n_items, L]")
    present = codes >= 0
    if bool((present[:, 1:] & ~present[:, :-1]).any()) or bool((codes < -1).any()):
        raise ValueError("codes must be right-padded with -1")
    lengths = present.sum(dim=1)
    if int(lengths.min()) == 0:
        raise ValueError("every item needs a code of at least one token")
    codes = codes[:, :int(lengths.max())]
    if len(torch.unique(codes, dim=0)) != len(codes):
        raise ValueError("codes are not unique")
    if bool((lengths == lengths[0]).all()):
        return codes, lengths
    if eos_id is None or bool((codes == eos_id).any()):
        raise ValueError("codes of different lengths need an eos_id that is not a code token")
    sequences = torch.cat([codes, torch.full((len(codes), 1), -1, dtype=torch.long)], dim=1)
    sequences[torch.arange(len(codes)), lengths] = eos_id
    return sequences, lengths + 1


def _build_nodes(sequences: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Breadth-first nodes: parent and token of nodes ``1 ..`` and the item ending at every node."""
    parents, tokens, leaves = [], [], [torch.full((1,), -1, dtype=torch.long)]
    node_of_row = torch.zeros(len(sequences), dtype=torch.long)
    offset = 1
    for depth in range(sequences.shape[1]):
        rows = torch.nonzero(lengths > depth).squeeze(1)
        prefixes, inverse = torch.unique(sequences[rows, :depth + 1], dim=0, return_inverse=True)
        parent = torch.zeros(len(prefixes), dtype=torch.long)
        parent[inverse] = node_of_row[rows]
        leaf = torch.full((len(prefixes),), -1, dtype=torch.long)
        ends = lengths[rows] == depth + 1
        leaf[inverse[ends]] = rows[ends]
        node_of_row[rows] = offset + inverse
        parents.append(parent)
        tokens.append(prefixes[:, depth])
        leaves.append(leaf)
        offset += len(prefixes)
    return torch.cat(parents), torch.cat(tokens), torch.cat(leaves)


@dataclass
class BeamResult:
    """Top-k decoded items per user, best first, with their sequence log-probabilities.

    ``items`` is -1 for an empty slot (score -inf: fewer valid codes than slots) and for a generated
    sequence that names no item (finite score; only unconstrained search produces those).
    """

    items: torch.Tensor
    scores: torch.Tensor

    @property
    def n_generated(self) -> int:
        """Filled slots (sequences actually generated)."""
        return int(torch.isfinite(self.scores).sum())

    @property
    def n_invalid(self) -> int:
        """Generated sequences that are not the code of any item."""
        return int((torch.isfinite(self.scores) & (self.items < 0)).sum())

    @property
    def invalid_rate(self) -> float:
        return self.n_invalid / max(self.n_generated, 1)


SHARED_BEAMS = "+shared-beams"
"""Suffix of the attention implementations registered by :func:`shared_beams_implementation`."""


def shared_beams_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, *, inner: Callable[..., Any],
                           **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """Attention of ``B * beam`` one-token queries ``[B * beam, H, 1, D]`` (hypotheses grouped by user) on keys
    and values of the ``B`` users only ``[B, H, S, D]``: each user's beams become the query rows of one
    ``[B, H, beam, D]`` attention (``inner``, the model's own implementation), so the encoder states are shared
    by a user's beams instead of repeated per beam. The cross-attention mask ``[B, 1, 1, S]`` and T5's position
    bias ``[1, H, 1, S]`` broadcast over the rows. Equal batches (self-attention, the first step) go to
    ``inner`` unchanged. Returns ``[B * beam, 1, H, D]`` and the weights ``inner`` returns."""
    users, rows = key.shape[0], query.shape[0]
    if rows == users:
        return inner(module, query, key, value, attention_mask, **kwargs)
    heads, dim = query.shape[1], query.shape[-1]
    packed = query.view(users, rows // users, heads, dim).transpose(1, 2)
    output, weights = inner(module, packed, key, value, attention_mask, **kwargs)
    return output.reshape(rows, 1, heads, dim), weights


def shared_beams_implementation(original: str) -> str:
    """The name of an attention implementation that is ``original`` (e.g. ``sdpa``, ``eager``) with encoder states
    shared across beams (:func:`shared_beams_attention`), registered with transformers (masks: ``original``'s)."""
    name = original + SHARED_BEAMS
    if name not in ALL_ATTENTION_FUNCTIONS:
        inner = ALL_ATTENTION_FUNCTIONS.get_interface(original, eager_attention_forward)
        AttentionInterface.register(name, partial(shared_beams_attention, inner=inner))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name


@contextmanager
def shared_encoder_states(model: PreTrainedModel) -> Iterator[None]:
    """Within the block, ``model``'s decoder attends with :func:`shared_beams_implementation` of its own
    implementation (restored afterwards, also on an error)."""
    config = model.get_decoder().config
    original = config._attn_implementation
    config._attn_implementation = shared_beams_implementation(original)
    try:
        yield
    finally:
        config._attn_implementation = original


class T5Steps:
    """Decoder steps of an encoder-decoder: the start token on the encoder output, then one token per step with
    the decoder KV cache. The cross-attention keys and values are computed once per user and shared by its beams
    (never repeated per beam): the decoder runs inside :func:`shared_encoder_states`, which attends each user's
    ``beam`` hypotheses to its one copy of the encoder states."""

    def __init__(self, model: PreTrainedModel, encoder_hidden: torch.Tensor,
                 attention_mask: torch.Tensor) -> None:
        self.model, self.hidden, self.mask = model, encoder_hidden, attention_mask
        self.cache_name = decoder_cache_name(model)
        self.cache = None

    def first(self) -> torch.Tensor:
        """``[B, vocab]`` logits of the first code token."""
        start = torch.full((self.hidden.shape[0], 1), self.model.config.decoder_start_token_id, dtype=torch.long,
                           device=self.hidden.device)
        return self._forward(start)

    def next(self, tokens: torch.Tensor, parents: torch.Tensor | None, beam_size: int) -> torch.Tensor:
        """``[B * beam, vocab]`` logits after appending ``tokens`` to the hypotheses' ``parents`` (None: the first
        expansion, every user's decoder self-attention state repeated ``beam_size`` times; the encoder states and
        the cross-attention cache stay one per user)."""
        if parents is None:
            self.cache.self_attention_cache.batch_repeat_interleave(beam_size)
        else:
            self.cache.self_attention_cache.reorder_cache(parents)
        return self._forward(tokens[:, None])

    def _forward(self, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(encoder_outputs=(self.hidden,), attention_mask=self.mask, decoder_input_ids=decoder_input_ids,
                         use_cache=True, **{self.cache_name: self.cache})
        self.cache = getattr(out, self.cache_name)
        return out.logits[:, -1]


class CausalSteps:
    """Decoder steps of a decoder-only model: one forward over the left-padded prompt fills the KV cache, then
    one token per step (the prompt is never re-encoded). Positions count real tokens only, so left padding
    changes nothing."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.model, self.input_ids, self.mask = model, input_ids, attention_mask.long()
        self.cache_name = decoder_cache_name(model)
        self.cache = None
        self.positions = self.mask.sum(dim=1)

    def first(self) -> torch.Tensor:
        return self._forward(self.input_ids, (self.mask.cumsum(dim=1) - 1).clamp_min(0))

    def next(self, tokens: torch.Tensor, parents: torch.Tensor | None, beam_size: int) -> torch.Tensor:
        if parents is None:
            self.cache.batch_repeat_interleave(beam_size)
            self.mask = self.mask.repeat_interleave(beam_size, dim=0)
            self.positions = self.positions.repeat_interleave(beam_size, dim=0)
        else:
            self.cache.reorder_cache(parents)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits = self._forward(tokens[:, None], self.positions[:, None])
        self.positions = self.positions + 1
        return logits

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1, **{self.cache_name: self.cache})
        self.cache = getattr(out, self.cache_name)
        return out.logits[:, -1]


@torch.no_grad()
def beam_search(model: PreTrainedModel, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor,
                trie: CodeTrie, beam_size: int, k: int, constrained: bool = True) -> BeamResult:
    """Vectorised beam search over item codes for a T5, optionally constrained to ``trie``.

    Every step runs one decoder forward for all running hypotheses with the decoder KV cache, scores the
    ``beam x vocab`` continuations per user with ``topk`` and keeps, as transformers' beam search does, the
    best ``2 * beam`` candidates: those that complete a sequence (reach a leaf when constrained; emit EOS or
    reach the maximal length when not) enter a pool of ``beam`` finished hypotheses if they are among the
    best ``beam`` candidates, the best ``beam`` others keep running. Search stops when no running hypothesis
    can beat the worst pooled one (exact, since scores only decrease). Disallowed tokens get -inf; slots
    that cannot be filled stay -inf and report item -1.

    Cost: the first step runs on the ``B`` users only, after which the decoder self-attention cache is repeated
    ``beam`` times; later steps reorder only that cache. The cross-attention keys and values (``B * S``
    positions per layer) are computed once and shared by each user's beams (:func:`shared_encoder_states`), not
    copied per beam. The scores may then differ from a per-beam computation in the last float bits (another
    matrix shape); the model should be in eval mode.

    Args:
        model: the encoder-decoder; ``model.config.decoder_start_token_id`` starts every hypothesis.
        encoder_hidden: ``[B, S, d]`` encoder output; attention_mask: ``[B, S]`` (1 / True = token).
        trie: valid codes in the model's token space, on the model's device.
        beam_size: hypotheses kept per user (>= k); k: items returned per user.
        constrained: restrict every step to the trie; when False, generated codes are mapped to items
            afterwards (-1 when invalid), which measures the invalid-generation rate.
    """
    with shared_encoder_states(model):
        return search(T5Steps(model, encoder_hidden, attention_mask), encoder_hidden.shape[0], trie, beam_size, k,
                      constrained)


@torch.no_grad()
def causal_beam_search(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: CodeTrie,
                       beam_size: int, k: int, constrained: bool = True) -> BeamResult:
    """:func:`beam_search` for a decoder-only model: the codes continue the left-padded prompt ``input_ids``
    ``[B, S]`` (mask ``[B, S]``), whose KV cache is computed once and then repeated and reordered per beam."""
    check_positions(model, input_ids.shape[1] + trie.depth - 1)  # the last code token is chosen, never fed back
    return search(CausalSteps(model, input_ids, attention_mask), input_ids.shape[0], trie, beam_size, k, constrained)


def search(steps: T5Steps | CausalSteps, batch: int, trie: CodeTrie, beam_size: int, k: int,
           constrained: bool) -> BeamResult:
    """The beam search loop of :func:`beam_search` over the decoder steps of either backbone family."""
    if k > beam_size:
        raise ValueError(f"k={k} exceeds beam_size={beam_size}")
    device = trie.sequences.device
    keep = 2 * beam_size
    users = torch.arange(batch, device=device)[:, None]
    nodes = torch.zeros(batch, dtype=torch.long, device=device)
    running = torch.zeros(batch, 1, device=device)
    pool_scores = torch.full((batch, beam_size), float("-inf"), device=device)
    pool_items = torch.full((batch, beam_size), -1, dtype=torch.long, device=device)
    logits = steps.first()
    for position in range(trie.depth):
        log_probs = F.log_softmax(logits.float(), dim=-1)
        vocab = log_probs.shape[-1]
        if constrained:
            log_probs = log_probs.masked_fill(~trie.allowed_mask(nodes, vocab), float("-inf"))
        width = running.shape[1]
        candidates = (running[:, :, None] + log_probs.view(batch, width, vocab)).view(batch, width * vocab)
        if candidates.shape[1] < keep:
            candidates = F.pad(candidates, (0, keep - candidates.shape[1]), value=float("-inf"))
        top_scores, top_index = candidates.topk(keep, dim=1)
        top_tokens = top_index % vocab
        parents = users * width + (top_index // vocab).clamp_max(width - 1)
        children = trie.step(nodes[parents], top_tokens)
        last = position == trie.depth - 1
        if last:
            ends = torch.ones_like(children, dtype=torch.bool)
        elif constrained:
            ends = trie.is_leaf(children)
        elif trie.uses_eos:
            ends = top_tokens == trie.eos_id
        else:
            ends = torch.zeros_like(children, dtype=torch.bool)
        finished = ends.clone()
        finished[:, beam_size:] = False
        merged_scores = torch.cat([pool_scores, top_scores.masked_fill(~finished, float("-inf"))], dim=1)
        merged_items = torch.cat([pool_items, trie.item_of(children)], dim=1)
        pool_scores, order = merged_scores.topk(beam_size, dim=1)
        pool_items = merged_items.gather(1, order)
        if last:
            break
        running, pick = top_scores.masked_fill(ends, float("-inf")).topk(beam_size, dim=1)
        if not bool((running[:, 0] > pool_scores[:, -1]).any()):
            break
        nodes = children.gather(1, pick).view(-1)
        tokens = top_tokens.gather(1, pick).view(-1)
        logits = steps.next(tokens, None if position == 0 else parents.gather(1, pick).view(-1), beam_size)
    scores = pool_scores[:, :k]
    return BeamResult(items=torch.where(torch.isfinite(scores), pool_items[:, :k], -1), scores=scores)


def decoder_cache_name(model: nn.Module) -> str:
    """The name under which ``model.forward`` takes and returns the decoder KV cache: ``cache`` from transformers
    5.24 on, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def constrained_beam_search(model: PreTrainedModel, encoder_hidden: torch.Tensor,
                            attention_mask: torch.Tensor, trie: CodeTrie, beam_size: int, k: int) -> BeamResult:
    """:func:`beam_search` restricted to valid codes: every returned item exists, none twice."""
    return beam_search(model, encoder_hidden, attention_mask, trie, beam_size, k, constrained=True)


def unconstrained_beam_search(model: PreTrainedModel, encoder_hidden: torch.Tensor,
                              attention_mask: torch.Tensor, trie: CodeTrie, beam_size: int, k: int) -> BeamResult:
    """:func:`beam_search` over the whole vocabulary (the speed ceiling); invalid codes come back as -1."""
    return beam_search(model, encoder_hidden, attention_mask, trie, beam_size, k, constrained=False)


def prefix_table(trie: CodeTrie) -> dict[tuple[int, ...], list[int]]:
    """``{prefix: sorted allowed next tokens}`` for every proper prefix of a code sequence (plain Python)."""
    table: dict[tuple[int, ...], set[int]] = {}
    for row in trie.sequences.tolist():
        code = [token for token in row if token >= 0]
        for length in range(len(code)):
            table.setdefault(tuple(code[:length]), set()).add(code[length])
    return {prefix: sorted(tokens) for prefix, tokens in table.items()}


@torch.no_grad()
def reference_generate(model: PreTrainedModel, encoder_hidden: torch.Tensor,
                       attention_mask: torch.Tensor, trie: CodeTrie, beam_size: int, k: int) -> BeamResult:
    """The slow reference: ``model.generate`` beam search with ``prefix_allowed_tokens_fn`` on a Python trie.

    ``length_penalty=0`` ranks hypotheses by summed log-probability like :func:`beam_search`. Completed or
    invalid prefixes allow only the pad token; slots transformers fills from its -1e9 dummy beams (fewer
    valid codes than beams) are reported empty.
    """
    table = prefix_table(trie)
    pad = model.config.pad_token_id

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        return table.get(tuple(input_ids[1:].tolist()), [pad])

    out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                         attention_mask=attention_mask, num_beams=beam_size, num_return_sequences=k,
                         max_length=trie.depth + 1, min_length=0, length_penalty=0.0, early_stopping=False,
                         do_sample=False, prefix_allowed_tokens_fn=allowed, return_dict_in_generate=True,
                         output_scores=True)
    batch = encoder_hidden.shape[0]
    sequences = out.sequences.view(batch, k, -1)[:, :, 1:]
    scores = out.sequences_scores.view(batch, k).float()
    scores = scores.masked_fill(scores < -1e8, float("-inf"))
    items = torch.where(torch.isfinite(scores), trie.lookup(sequences), -1)
    return BeamResult(items=items, scores=scores)


@torch.no_grad()
def causal_reference_generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              trie: CodeTrie, beam_size: int, k: int) -> BeamResult:
    """:func:`reference_generate` for a decoder-only model continuing the left-padded prompt ``input_ids``:
    the allowed tokens depend only on what was generated after the prompt."""
    table = prefix_table(trie)
    pad, width = model.config.pad_token_id, input_ids.shape[1]

    def allowed(batch_id: int, sequence: torch.Tensor) -> list[int]:
        return table.get(tuple(sequence[width:].tolist()), [pad])

    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=beam_size,
                         num_return_sequences=k, max_new_tokens=trie.depth, min_new_tokens=0, length_penalty=0.0,
                         early_stopping=False, do_sample=False, prefix_allowed_tokens_fn=allowed,
                         return_dict_in_generate=True, output_scores=True, pad_token_id=pad)
    batch = input_ids.shape[0]
    sequences = out.sequences[:, width:].reshape(batch, k, -1)
    scores = out.sequences_scores.view(batch, k).float()
    scores = scores.masked_fill(scores < -1e8, float("-inf"))
    items = torch.where(torch.isfinite(scores), trie.lookup(sequences), -1)
    return BeamResult(items=items, scores=scores)
