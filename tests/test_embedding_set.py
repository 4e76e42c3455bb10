"""Embedding paradigm (E4SRec) and set paradigm (SETRec): the sparse mask, order-agnostic generation,
grounding, beta selection on validation, ablation switches and one training step on tiny data."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.batches import HistoryBatch, iterate
from benchmark.evaluate import EvaluationResult
from identifiers.registry import get_scheme
from recommenders.contracts import ItemTokenSets, ItemVectors
from recommenders.set import (
    SetOptions,
    SetRecommender,
    additive_mask,
    full_attention_mask,
    ground,
    setrec_attention_mask,
)
from tests.conftest import make_context

N_ITEMS = 30


def scheme(tiny, cache: Path, name: str, **overrides):
    cls = get_scheme(name)
    if name == "setrec":
        overrides = {"semantic_encoder": "tfidf", "n_semantic": 2, **overrides}
    return cls(cls.resolve_params("smoke", overrides), make_context(cls, tiny[0], cache, split=tiny[1]))


def small_set_model(n_semantic: int = 2, sparse_mask: bool = True, cf: bool = True) -> SetRecommender:
    torch.manual_seed(0)
    tokens = ItemTokenSets(cf=torch.randn(N_ITEMS, 8) if cf else None, semantic=torch.randn(N_ITEMS, 12),
                           n_semantic=n_semantic)
    return SetRecommender(tokens, "t5-tiny", 3, SetOptions(semantic_layers=(16,), sparse_mask=sparse_mask)).eval()


def history_batch(items: list[list[int]], mask: list[list[bool]]) -> HistoryBatch:
    mask_t = torch.tensor(mask)
    return HistoryBatch(users=torch.arange(len(items)), items=torch.tensor(items) * mask_t, mask=mask_t,
                        targets=torch.zeros(len(items), dtype=torch.long))


def test_sparse_mask_exact_pattern_with_left_padding() -> None:
    # 3 history items x 2 tokens; row 0 has its first item padded.
    allowed = setrec_attention_mask(3, 2, torch.tensor([[False, True, True], [True, True, True]]))
    assert allowed.shape == (2, 6, 6) and allowed.dtype == torch.bool
    padded = [[1, 0, 0, 0, 0, 0],
              [0, 1, 0, 0, 0, 0],
              [0, 0, 1, 0, 0, 0],
              [0, 0, 0, 1, 0, 0],
              [0, 0, 1, 1, 1, 0],
              [0, 0, 1, 1, 0, 1]]
    full = [[1, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 0, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 0, 1]]
    assert allowed[0].int().tolist() == padded
    assert allowed[1].int().tolist() == full
    ablation = full_attention_mask(3, 2, torch.tensor([[False, True, True]]))[0].int()
    assert ablation.tolist() == [[1, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]] + [[0, 0, 1, 1, 1, 1]] * 4


def encoder_outputs(model: SetRecommender, inputs: torch.Tensor, item_mask: torch.Tensor) -> torch.Tensor:
    mask = additive_mask(model.attention_mask(item_mask), inputs.dtype)
    return model.backbone.encoder(inputs_embeds=inputs, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_masked_tokens_cannot_influence_the_encoder(implementation: str) -> None:
    model = small_set_model()
    model.backbone.set_attn_implementation(implementation)
    item_mask = torch.tensor([[False, True, True, True]])
    inputs = torch.randn(1, 4 * 3, model.backbone.config.d_model)
    base = encoder_outputs(model, inputs, item_mask)
    perturbed = inputs.clone()
    perturbed[0, 3 * 2 + 1] += 5.0  # token 1 of item 2
    perturbed[0, 0] += 5.0  # a token of the padded item
    out = encoder_outputs(model, perturbed, item_mask)
    same_item = [3 * 2, 3 * 2 + 2]
    earlier = list(range(3, 6))
    torch.testing.assert_close(out[0, same_item + earlier], base[0, same_item + earlier], rtol=0, atol=1e-6)
    assert not torch.allclose(out[0, 9:], base[0, 9:], atol=1e-3)  # the later item does see it
    full = small_set_model(sparse_mask=False)
    full.backbone.set_attn_implementation(implementation)
    changed = encoder_outputs(full, perturbed, item_mask)[0, 6] - encoder_outputs(full, inputs, item_mask)[0, 6]
    assert changed.abs().max() > 1e-3  # without the sparse mask the same item's tokens interact


def test_tokens_of_one_item_share_a_position() -> None:
    model = small_set_model()
    assert model.tokens_per_item == 3
    bias = model.backbone.encoder.block[0].layer[0].SelfAttention.compute_bias(6, 6)[0, 0]
    assert bias[0, 3] == bias[1, 4] == bias[2, 5] == bias[0, 5]  # item 0 -> item 1, any token pair
    assert bias[0, 0] == bias[0, 2] == bias[2, 1] and bias[0, 0] != bias[0, 3]


def test_queries_generate_all_dimensions_in_one_pass_without_seeing_each_other() -> None:
    model = small_set_model(n_semantic=3)
    assert model.dimensions == ["cf", "sem_1", "sem_2", "sem_3"]
    batch = history_batch([[0, 4, 5], [1, 2, 3]], [[False, True, True], [True, True, True]])
    calls = []
    model.backbone.decoder.register_forward_hook(lambda *_: calls.append(1))
    tokens, _ = model.item_tokens()
    generated = model.generate(batch, tokens)
    assert generated.shape == (2, 4, model.backbone.config.d_model) and len(calls) == 1
    scores, _ = model.dimension_scores(batch)
    assert scores.shape == (2, 4, N_ITEMS) and len(calls) == 2
    with torch.no_grad():
        model.queries[2] += 1.0
    moved = model.generate(batch, tokens)
    torch.testing.assert_close(moved[:, [0, 1, 3]], generated[:, [0, 1, 3]], rtol=0, atol=1e-6)
    assert not torch.allclose(moved[:, 2], generated[:, 2])


def test_grounding_is_cf_plus_beta_times_semantic_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    dims = torch.tensor([[[1.0, 2.0, 3.0], [10.0, 0.0, 1.0], [0.0, 5.0, 1.0]]])  # cf, sem_1, sem_2 x 3 items
    torch.testing.assert_close(ground(dims, torch.tensor([1.0, 0.5, 0.5])), torch.tensor([[6.0, 4.5, 4.0]]))
    model = small_set_model(n_semantic=2)
    monkeypatch.setattr(model, "dimension_scores", lambda batch: (dims, None))
    for beta in (0.0, 0.25, 2.0):
        model.beta = beta
        expected = dims[:, 0] + beta * dims[:, 1:].sum(dim=1)
        torch.testing.assert_close(model.score(None), expected)
    semantic_only = small_set_model(n_semantic=2, cf=False)
    assert semantic_only.grounding_weights(0.0, torch.device("cpu")).tolist() == [1.0, 1.0]


def test_beta_is_chosen_on_validation() -> None:
    model = small_set_model()
    seen = []

    def fake_evaluate(m: SetRecommender) -> EvaluationResult:
        seen.append(m.beta)
        rank = {0.5: 0, 1.0: 0, 2.0: 3}.get(m.beta, 50)  # 0.5 and 1.0 tie: the first in grid order wins
        return EvaluationResult(np.arange(2), np.zeros(2, dtype=int), np.array([rank, 50]), np.ones(2, dtype=bool), 0.0)

    chosen = model.select_on_validation(fake_evaluate)
    assert seen == list(model.options.beta_grid)
    assert chosen["beta"] == 0.5 and model.beta == 0.5 and chosen["metric"] == "ndcg@10"
    assert chosen["valid"]["0.5"] == pytest.approx(0.5) and chosen["valid"]["0.0"] == 0.0
    assert set(chosen["valid"]) == {str(float(b)) for b in model.options.beta_grid}


def test_ablation_switches_change_the_token_set(tiny, cache: Path) -> None:
    data = tiny[1].train
    full = scheme(tiny, cache, "setrec").tokenize(data)
    assert full.dimensions == ["cf", "sem_1", "sem_2"] and full.n_items == data.n_items
    assert scheme(tiny, cache, "setrec", use_cf=False).tokenize(data).dimensions == ["sem_1", "sem_2"]
    assert scheme(tiny, cache, "setrec", use_semantic=False).tokenize(data).dimensions == ["cf"]
    assert scheme(tiny, cache, "setrec", n_semantic=3).tokenize(data).dimensions[-1] == "sem_3"
    frozen = scheme(tiny, cache, "setrec", learnable_queries=False).build(data).model
    assert all(name != "queries" for name, _ in frozen.named_parameters()) and "queries" in dict(frozen.named_buffers())
    dense = scheme(tiny, cache, "setrec", sparse_mask=False).build(data).model
    item_mask = torch.ones(1, 3, dtype=torch.bool)
    assert dense.attention_mask(item_mask).all() and not frozen.attention_mask(item_mask).all()


@pytest.mark.parametrize("name", ["e4srec", "setrec"])
def test_one_training_step_on_tiny_data(tiny, cache: Path, name: str) -> None:
    torch.manual_seed(0)
    data = tiny[1].train
    identifiers, model = scheme(tiny, cache, name).two_stage(data)
    assert isinstance(identifiers, ItemTokenSets if name == "setrec" else ItemVectors)
    batch = next(iterate(model.training_examples(data), 32, "cpu", np.random.default_rng(0)))
    loss = model.loss(batch)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    frozen = "item_vectors.weight" if name == "e4srec" else "cf_inputs.weight"
    assert not after[frozen].requires_grad  # the SASRec embeddings stay fixed
    model.eval()
    with torch.no_grad():
        scores = model.score(batch)
    assert scores.shape == (32, data.n_items) and torch.isfinite(scores).all()
    assert identifiers.statistics()["new_tokens"] == 0


def test_registry_contract() -> None:
    assert get_scheme("setrec").paradigm == "set"
    assert get_scheme("e4srec").paradigm == "embedding"
    with pytest.raises(ValueError, match="at least one"):
        ItemTokenSets(cf=None, semantic=None)
    with pytest.raises(ValueError, match="FloatTensor"):
        ItemVectors(torch.zeros(3, dtype=torch.long))


def test_e4srec_can_build_on_a_bce_trained_sasrec(tiny, cache: Path) -> None:
    data = tiny[1].train
    ce = scheme(tiny, cache, "e4srec")
    ce.tokenize(data)
    bce = scheme(tiny, cache, "e4srec", cf_loss="bce")
    vectors = bce.tokenize(data)
    ce_report, bce_report = ce.ctx.components["cf_encoder"], bce.ctx.components["cf_encoder"]
    assert (ce_report["params"]["loss"], bce_report["params"]["loss"]) == ("ce", "bce")
    assert ce_report["cache_key"] != bce_report["cache_key"] and not bce_report["loaded_from_cache"]
    assert torch.isfinite(vectors.vectors).all()
    assert "cf_loss" not in get_scheme("e4srec").resolve_params("quick", {})  # an added field at its default
    assert get_scheme("e4srec").Params().cf_loss == "ce"  # CE stays the default
