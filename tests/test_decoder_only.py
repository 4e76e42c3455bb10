"""Decoder-only (Qwen2) backbones: presets, every paradigm's forward / backward and ranking, LoRA on a local
checkpoint written by the test."""
from __future__ import annotations

import torch

from benchmark.batches import HistoryBatch
from recommenders.backbones import PRESETS, build_backbone, is_decoder_only, preset_parameters
from recommenders.contracts import ItemCodes
from recommenders.decoding import causal_beam_search
from recommenders.sequence import GenerativeRecommender, SequenceOptions
from tests.test_decoding import random_codes


def history_batch(n_items: int) -> HistoryBatch:
    items = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4], [0, 0, 0, 5]])
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, True]])
    return HistoryBatch(users=torch.arange(3), items=items, mask=mask, targets=torch.tensor([8, 9, n_items - 1]))


def test_qwen_presets_are_decoder_only_and_span_two_orders_of_magnitude() -> None:
    sizes = {name: preset_parameters(name) for name, preset in PRESETS.items() if preset.family == "qwen2"}
    assert sizes["qwen-tiny"] < 1_000_000
    ladder = [sizes[name] for name in ("qwen-1m", "qwen-5m", "qwen-20m", "qwen-100m")]
    assert ladder == sorted(ladder) and ladder[-1] / ladder[0] >= 100
    model = build_backbone("qwen-tiny", new_tokens=5)
    assert is_decoder_only(model) and model.config.vocab_size == 7
    assert sum(p.numel() for p in model.parameters()) == sizes["qwen-tiny"] + 2 * 5 * model.config.hidden_size


def test_decoder_only_sequence_recommender_trains_and_ranks_from_the_prompt_cache() -> None:
    torch.manual_seed(0)
    raw = random_codes(30, 3, 4, True, seed=5)
    codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=4)
    model = GenerativeRecommender(codes, "qwen-tiny", max_history=4,
                                  options=SequenceOptions(beam_size=6, user_tokens=3))
    batch = history_batch(codes.n_items)
    prompt, mask = model.prompt(batch)
    assert bool(mask[:, -1].all()) and bool((prompt[:, -1] == model.eos_id).all())
    assert int(mask[2].sum()) < prompt.shape[1] and not bool(mask[2, 0])
    logits, labels = model.token_logits(batch)
    assert logits.shape[:2] == labels.shape == (3, model.trie.depth)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss = model.loss(batch)
    before = model.backbone.lm_head.weight.detach().clone()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.backbone.lm_head.weight)
    model.eval()
    ranked = model.rank(batch, 10)
    for row in ranked.tolist():
        assert len(set(row)) == 10 and all(0 <= item < codes.n_items for item in row)
    assert model.invalid_generation_rate == 0.0 and model.generated == 30
    with torch.no_grad():
        result = causal_beam_search(model.backbone, prompt, mask, model.trie, 10, 10)
        users, labels = torch.arange(3).repeat_interleave(10), model.target_labels(result.items.flatten())
        log_probs = model.causal_logits(prompt[users], mask[users], labels).log_softmax(-1)
    teacher_forced = log_probs.gather(2, labels.clamp_min(0)[..., None]).squeeze(2).masked_fill(labels < 0, 0.0)
    assert torch.equal(result.items, ranked)
    assert torch.allclose(teacher_forced.sum(1).view(3, 10), result.scores, atol=1e-4)
    free = GenerativeRecommender(codes, model.backbone, max_history=4,
                                 options=SequenceOptions(beam_size=10, constrained=False, user_tokens=3)).eval()
    assert free.rank(batch, 10).shape == (3, 10) and free.generated == 30 and 0 <= free.invalid_generation_rate <= 1
