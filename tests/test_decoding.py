"""Code trie, vectorised (constrained) beam search against transformers' generate, and the T5 recommender."""
from __future__ import annotations

import itertools

import pytest
import torch

from benchmark.batches import HistoryBatch
from recommenders.backbones import EOS_ID, build_t5
from recommenders.contracts import ItemCodes
from recommenders.decoding import (
    BeamResult,
    CodeTrie,
    beam_search,
    code_sequences,
    constrained_beam_search,
    decoder_cache_name,
    reference_generate,
    unconstrained_beam_search,
)
from recommenders.sequence import GenerativeRecommender, SequenceOptions, user_bucket


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run fastest on one thread, and do not stall when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_codes(n: int, length: int, codebook: int, variable: bool, seed: int) -> torch.Tensor:
    """Unique random codes over tokens ``2 .. codebook + 1``; when ``variable``, some are truncated so that
    codes share prefixes and some codes are prefixes of others."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(2, codebook + 2, (n, length), generator=generator)
    if variable:
        cut = torch.randint(1, length + 1, (n,), generator=generator)
        codes[torch.arange(length)[None, :] >= cut[:, None]] = -1
    return torch.unique(codes, dim=0)


def enumerate_leaves(trie: CodeTrie) -> dict[int, list[int]]:
    """Every path from the root to a leaf, found by expanding all allowed tokens level by level."""
    nodes, paths, found = torch.zeros(1, dtype=torch.long), [[]], {}
    while len(nodes):
        parent, token = torch.nonzero(trie.allowed_mask(nodes, trie.vocab_size), as_tuple=True)
        children = trie.step(nodes[parent], token)
        assert bool((children >= 0).all())
        paths = [paths[p] + [t] for p, t in zip(parent.tolist(), token.tolist())]
        leaf = trie.is_leaf(children)
        for item, path in zip(trie.item_of(children)[leaf].tolist(), itertools.compress(paths, leaf.tolist())):
            assert item not in found
            found[item] = path
        nodes, paths = children[~leaf], list(itertools.compress(paths, (~leaf).tolist()))
    return found


@pytest.mark.parametrize("variable", [False, True])
def test_trie_yields_exactly_the_valid_items(variable: bool) -> None:
    codes = random_codes(300, 4, 5, variable, seed=1)
    if variable:
        assert bool((codes[:, -1] < 0).any()) and bool((codes[:, -1] >= 0).any())
    trie = CodeTrie(codes, eos_id=1, vocab_size=7)
    assert trie.uses_eos == variable and trie.depth == 4 + variable
    leaves = enumerate_leaves(trie)
    assert sorted(leaves) == list(range(len(codes)))
    for item, path in leaves.items():
        assert path == [t for t in trie.sequences[item].tolist() if t >= 0]
        assert [t for t in codes[item].tolist() if t >= 0] == [t for t in path if t != 1]
    assert torch.equal(trie.lookup(trie.sequences), torch.arange(len(codes)))
    generator = torch.Generator().manual_seed(2)
    nodes = torch.zeros(500, dtype=torch.long)
    for _ in range(trie.depth):
        weights = trie.allowed_mask(nodes, 9).float()
        weights[weights.sum(1) == 0] = 1.0
        token = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        nodes = torch.where(trie.is_leaf(nodes), nodes, trie.step(nodes, token))
    assert bool(trie.is_leaf(nodes).all())


def test_allowed_mask_and_steps_on_a_hand_case() -> None:
    trie = CodeTrie(torch.tensor([[2, 3], [2, 4], [5, -1], [2, -1]]), eos_id=1)
    assert trie.sequences.tolist() == [[2, 3, 1], [2, 4, 1], [5, 1, -1], [2, 1, -1]]
    root, two = torch.tensor([0]), trie.step(torch.tensor([0]), torch.tensor([2]))
    two_three = trie.step(two, torch.tensor([3]))
    nodes = torch.cat([root, two, two_three, torch.tensor([-1])])
    allowed = [torch.nonzero(row).squeeze(1).tolist() for row in trie.allowed_mask(nodes, 8)]
    assert allowed == [[2, 5], [1, 3, 4], [1], []]
    stepped = trie.step(nodes, torch.tensor([3, 5, 1, 2]))
    assert stepped[[0, 1, 3]].tolist() == [-1, -1, -1] and trie.item_of(stepped).tolist() == [-1, -1, 0, -1]
    assert trie.item_of(trie.step(two, torch.tensor([1]))).tolist() == [3]
    assert trie.item_of(nodes).tolist() == [-1, -1, -1, -1]
    assert trie.lookup(torch.tensor([[5, 1, 0], [2, 4, 1], [2, 2, 1], [4, 1, 0]])).tolist() == [2, 1, -1, -1]
    fixed = CodeTrie(torch.tensor([[0, 1], [1, 0], [1, 1]]))
    assert not fixed.uses_eos and fixed.depth == 2 and fixed.n_nodes == 6
    with pytest.raises(ValueError):
        code_sequences(torch.tensor([[0, 1], [0, 1]]), eos_id=9)
    with pytest.raises(ValueError):
        code_sequences(torch.tensor([[0, -1, 1]]), eos_id=9)
    with pytest.raises(ValueError):
        code_sequences(torch.tensor([[0, 1], [2, -1]]), eos_id=None)


def encoded(model, vocab: int, batch: int = 5, length: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 4:] = 0
    with torch.no_grad():
        return model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state, mask


def assert_same_ranking(fast: BeamResult, reference: BeamResult, tolerance: float = 1e-4) -> None:
    """Same items in the same order, except swaps between sequences whose log-probabilities tie."""
    scores_close = torch.where(torch.isinf(fast.scores) & torch.isinf(reference.scores), 0.0,
                               (fast.scores - reference.scores).abs()) <= tolerance
    assert bool(scores_close.all())
    assert bool(((fast.items == reference.items) | scores_close).all())
    assert (fast.items == reference.items).float().mean() > 0.95


@pytest.mark.parametrize("variable", [False, True])
def test_beam_search_matches_generate_reference(variable: bool) -> None:
    torch.manual_seed(0)
    codes = random_codes(40, 3, 4, variable, seed=3)
    trie = CodeTrie(codes, eos_id=1, vocab_size=6)
    model = build_t5("t5-tiny", new_tokens=4).eval()
    hidden, mask = encoded(model, 6)
    for beam, k in ((4, 3), (10, 10), (50, 50)):
        fast = constrained_beam_search(model, hidden, mask, trie, beam, k)
        assert_same_ranking(fast, reference_generate(model, hidden, mask, trie, beam, k))
        assert fast.items.shape == (5, k)
        for row, scores in zip(fast.items.tolist(), fast.scores.tolist()):
            filled = [item for item in row if item >= 0]
            assert len(filled) == len(set(filled)) == min(k, len(codes))
            assert scores == sorted(scores, reverse=True)
        assert fast.invalid_rate == 0.0


def test_unconstrained_search_reports_invalid_generations() -> None:
    torch.manual_seed(0)
    model = build_t5("t5-tiny", new_tokens=4).eval()
    hidden, mask = encoded(model, 6)
    everything = torch.tensor(list(itertools.product(range(6), repeat=2)))
    full = CodeTrie(everything)
    free, constrained = (beam_search(model, hidden, mask, full, 8, 8, constrained=c) for c in (False, True))
    assert torch.equal(free.items, constrained.items) and free.invalid_rate == 0.0
    few = CodeTrie(random_codes(5, 3, 4, False, seed=4))
    free = unconstrained_beam_search(model, hidden, mask, few, 10, 10)
    assert free.n_generated == 50 and free.n_invalid >= 25
    assert free.invalid_rate == free.n_invalid / 50
    valid = free.items >= 0
    assert torch.equal(few.lookup(few.sequences[free.items[valid]]), free.items[valid])


def test_generative_recommender_trains_and_ranks() -> None:
    torch.manual_seed(0)
    raw = random_codes(30, 3, 4, True, seed=5)
    codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=4)
    model = GenerativeRecommender(codes, "t5-tiny", max_history=4, options=SequenceOptions(beam_size=6))
    assert not any(key.startswith("trie.") or key == "item_tokens" for key in model.state_dict())
    items = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4], [0, 0, 0, 5]])
    batch = HistoryBatch(users=torch.arange(3), items=items, mask=torch.tensor(
        [[False, False, True, True], [True, True, True, True], [False, False, False, True]]),
        targets=torch.tensor([8, 9, len(codes.codes) - 1]))
    input_ids, mask = model.encoder_inputs(batch.items, batch.mask)
    tokens = [[t + 2 for t in codes.codes[i].tolist() if t >= 0] for i in range(len(codes.codes))]
    expected = tokens[3] + tokens[7] + [EOS_ID]
    assert input_ids[0, :len(expected)].tolist() == expected and int(mask[0].sum()) == len(expected)
    assert int(mask[2].sum()) == len(tokens[5]) + 1 and input_ids.shape[1] == int(mask.sum(1).max())
    logits, labels = model.token_logits(batch)
    assert logits.shape[:2] == labels.shape == (3, model.trie.depth)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss = model.loss(batch)
    assert torch.isfinite(loss)
    before = model.backbone.lm_head.weight.detach().clone()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.backbone.lm_head.weight)
    model.eval()
    ranked = model.rank(batch, 10)
    assert ranked.shape == (3, 10)
    for row in ranked.tolist():
        assert len(set(row)) == 10 and all(0 <= item < codes.n_items for item in row)
    assert model.invalid_generation_rate == 0.0 and model.generated == 30
    with torch.no_grad():
        hidden, mask = model.encode(batch)
        result = constrained_beam_search(model.backbone, hidden, mask, model.trie, 10, 10)
        users, labels = torch.arange(3).repeat_interleave(10), model.target_labels(result.items.flatten())
        log_probs = model.seq2seq_logits(input_ids[users], mask[users], labels).log_softmax(-1)
    teacher_forced = log_probs.gather(2, labels.clamp_min(0)[..., None]).squeeze(2).masked_fill(labels < 0, 0.0)
    assert torch.equal(result.items, ranked)
    assert torch.allclose(teacher_forced.sum(1).view(3, 10), result.scores, atol=1e-4)


def test_user_tokens_start_the_encoder_input() -> None:
    torch.manual_seed(0)
    raw = random_codes(12, 3, 4, False, seed=6)
    codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=4)
    plain = GenerativeRecommender(codes, "t5-tiny", max_history=3)
    model = GenerativeRecommender(codes, "t5-tiny", max_history=3, options=SequenceOptions(user_tokens=7))
    assert model.backbone.config.vocab_size == plain.backbone.config.vocab_size + 7
    assert torch.equal(model.item_tokens, plain.item_tokens)
    users = torch.tensor([0, 5, 12])
    batch = HistoryBatch(users=users, items=torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
                         mask=torch.tensor([[False, True, True], [True, True, True], [False, False, True]]),
                         targets=torch.tensor([3, 6, 9]))
    without, without_mask = plain.encoder_inputs(batch.items, batch.mask)
    with_users, mask = model.encoder_inputs(batch.items, batch.mask, batch.users)
    buckets = user_bucket(users, 7)
    assert torch.equal(with_users[:, 0], model.user_token_offset + buckets)
    assert int(with_users[:, 0].min()) >= model.backbone.config.vocab_size - 7
    assert torch.equal(with_users[:, 1:], without) and torch.equal(mask[:, 1:], without_mask)
    assert bool(mask[:, 0].all())
    assert torch.equal(user_bucket(users, 7), buckets) and int(buckets.max()) < 7
    assert torch.isfinite(model.loss(batch))
    model.eval()
    assert model.rank(batch, 5).shape == (3, 5) and model.invalid_generation_rate == 0.0


def test_decoder_cache_argument_follows_the_installed_transformers() -> None:
    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None):
            return input_ids

    assert decoder_cache_name(Old()) == "past_key_values" and decoder_cache_name(New()) == "cache"
