"""DreamRec (guided diffusion, embedding paradigm) and TokenRec (LightGCN + MQ-Tokenizers + generative
retrieval, set paradigm): noise schedules, the sampler, masking (element and span) and quantisation, LightGCN's
graph, layer-0 table and fold-in, user tokens (fold-in for unseen users), options and the paper profile's
released-code choices, and one training step of each scheme on tiny data."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.batches import HistoryBatch, iterate
from benchmark.config import ConfigError
from benchmark.splits import TrainData
from identifiers.diffusion import SCHEDULES, GaussianDiffusion, beta_schedule
from identifiers.dreamrec import DreamRecParams, DreamRecRecommender
from identifiers.lightgcn import (
    LightGCN,
    LightGCNConfig,
    SymmetricSparseProduct,
    cf_rankings,
    fit_lightgcn,
    fold_in,
    interaction_pairs,
    item_degrees,
    lightgcn_cache_key,
    normalized_adjacency,
)
from identifiers.mq_tokenizer import MQTokenizer, random_mask, span_masks
from identifiers.quantizers import FitConfig
from identifiers.registry import get_scheme
from recommenders.contracts import ItemVectors
from tests.conftest import make_context


def scheme(tiny, cache: Path, name: str):
    dataset, split = tiny
    cls = get_scheme(name)
    ctx = make_context(cls, dataset, cache, split=split)
    return cls(cls.resolve_params("smoke", {}), ctx)


def first_batch(tiny, size: int = 16) -> HistoryBatch:
    return next(iterate(tiny[1].valid, size, "cpu"))


def train_one_step(model, batch: HistoryBatch) -> None:
    """Loss is finite, and one AdamW step changes the trainable parameters."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


# ----------------------------------------------------------------------------------------------- DreamRec

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("timesteps", [8, 500])
def test_alpha_bar_is_monotone_decreasing_in_unit_interval(name: str, timesteps: int) -> None:
    diffusion = GaussianDiffusion(timesteps, name)
    alpha_bar = diffusion.alpha_bar
    assert alpha_bar.shape == (timesteps,)
    assert bool((alpha_bar > 0).all()) and bool((alpha_bar < 1).all())
    assert bool((alpha_bar[1:] < alpha_bar[:-1]).all())
    assert bool((beta_schedule(name, timesteps) > 0).all())
    if name != "linear" or timesteps >= 500:
        assert float(alpha_bar[-1]) < 0.01, "the forward process ends close to pure noise"


def test_q_sample_matches_the_closed_form() -> None:
    diffusion = GaussianDiffusion(50, "cosine")
    x0, noise = torch.randn(6, 8), torch.randn(6, 8)
    t = torch.tensor([0, 1, 10, 25, 48, 49])
    xt = diffusion.q_sample(x0, t, noise)
    assert xt.shape == (6, 8)
    a = diffusion.alpha_bar[t][:, None]
    assert torch.allclose(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-6)


def tiny_dreamrec(weight: float = 2.0) -> DreamRecRecommender:
    torch.manual_seed(0)
    params = DreamRecParams(timesteps=6, schedule="exp", guidance_weight=weight)
    return DreamRecRecommender(ItemVectors(torch.randn(30, 8)), "t5-tiny", 4, params, seed=7).eval()


def test_sampler_is_finite_batched_and_deterministic_per_generator() -> None:
    model = tiny_dreamrec()
    guidance = torch.randn(5, 8)
    first = model.sample(guidance, torch.Generator().manual_seed(3))
    again = model.sample(guidance, torch.Generator().manual_seed(3))
    other = model.sample(guidance, torch.Generator().manual_seed(4))
    assert first.shape == (5, 8) and bool(torch.isfinite(first).all())
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_guidance_weight_zero_is_the_conditional_path() -> None:
    model = tiny_dreamrec()
    x, c, t = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 2, 3, 5])
    with torch.no_grad():
        assert torch.allclose(model.guided_prediction(x, c, t, 0.0), model.denoise(x, c, t), atol=1e-6)
        unconditional = model.denoise(x, model.null_guidance.expand_as(c), t)
        expected = 3 * model.denoise(x, c, t) - 2 * unconditional
        assert torch.allclose(model.guided_prediction(x, c, t, 2.0), expected, atol=1e-5)
    sampled = model.sample(c, torch.Generator().manual_seed(1), weight=0.0)
    conditional = model.diffusion.p_sample_loop(lambda xt, step: model.denoise(xt, c, step), (4, 8),
                                                torch.Generator().manual_seed(1), c.device)
    assert torch.allclose(sampled, conditional, atol=1e-5)


def test_dreamrec_trains_and_scores_all_items(tiny, cache: Path) -> None:
    dreamrec = scheme(tiny, cache, "dreamrec")
    built = dreamrec.build(tiny[1].train)
    model = built.model
    batch = first_batch(tiny)
    train_one_step(model, batch)
    model.eval()
    with torch.no_grad():
        scores = model.score(batch)
        assert scores.shape == (len(batch.targets), model.n_items) and bool(torch.isfinite(scores).all())
        assert torch.equal(scores, model.score(batch)), "evaluation sampling is seeded"
    assert built.statistics["vector_dim"] == dreamrec.params.item_dim


# ----------------------------------------------------------------------------------------------- TokenRec

def test_random_mask_zeroes_the_given_share() -> None:
    x = torch.rand(400, 50) + 1.0
    masked, mask = random_mask(x, 0.3, torch.Generator().manual_seed(0))
    assert masked.shape == x.shape and mask.shape == x.shape and mask.dtype == torch.bool
    assert bool((masked[mask] == 0).all()) and torch.equal(masked[~mask], x[~mask])
    assert abs(float(mask.float().mean()) - 0.3) < 0.02
    assert not bool(random_mask(x, 0.0)[1].any())


def test_span_masks_confine_encoder_k_to_span_k_and_accumulate() -> None:
    """The released masking: encoder k may only lose features of span k (of 3 spans of 4 features here), one
    mask per batch shared by its rows, and encoder k also sees the masks of spans 0..k-1."""
    x = torch.rand(5, 12) + 1.0
    inputs, union = span_masks(x, 3, 0.5, torch.Generator().manual_seed(1))
    assert len(inputs) == 3 and union.shape == x.shape and bool(union.any())
    assert torch.equal(union, union[:1].expand_as(union)), "one feature mask shared by the rows"
    masked = [part[0] == 0 for part in inputs]
    for k in range(3):
        assert not bool(masked[k][4 * (k + 1):].any()), "nothing beyond span k"
        if k:
            assert torch.equal(masked[k][:4 * k], masked[k - 1][:4 * k]), "earlier spans stay masked"
            assert not bool(masked[k - 1][4 * k:].any())
    assert torch.equal(masked[-1], union[0]) and torch.equal(inputs[-1], x.masked_fill(union, 0.0))
    drawn = span_masks(torch.ones(1, 3000), 3, 0.2, torch.Generator().manual_seed(0))[1]
    assert abs(float(drawn.float().mean()) - 0.2) < 0.03
    with pytest.raises(ValueError, match="mask_mode"):
        MQTokenizer(12, mask_mode="block")


def test_mq_tokenizer_with_span_masking_trains_and_encodes_unmasked() -> None:
    torch.manual_seed(0)
    x = torch.randn(60, 12)
    tokenizer = MQTokenizer(12, n_codebooks=3, codebook_size=8, code_dim=4, hidden_dims=(16,), mask_ratio=0.5,
                            mask_mode="span")
    tokenizer.train()
    out = tokenizer(x)
    assert bool(out.mask.any()) and torch.equal(out.mask, out.mask[:1].expand_as(out.mask))
    report = tokenizer.fit(x, FitConfig(epochs=3, batch_size=32, lr=1e-3, optimizer="adamw", seed=0), progress=False)
    assert len(report.history) == 3 and all(np.isfinite(v) for v in report.final.values())
    codes = tokenizer.encode(x)
    assert codes.shape == (60, 3) and torch.equal(codes, tokenizer.encode(x))


def test_mq_tokenizer_gives_k_codes_per_item_in_range() -> None:
    torch.manual_seed(0)
    x = torch.randn(60, 12)
    tokenizer = MQTokenizer(12, n_codebooks=3, codebook_size=8, code_dim=4, hidden_dims=(16,), mask_ratio=0.2)
    tokenizer.train()
    out = tokenizer(x)
    assert out.mask.shape == (60, 12) and bool(out.mask.any())
    assert out.latents.shape == out.code_vectors.shape == (60, 3, 4) and out.reconstruction.shape == (60, 12)
    report = tokenizer.fit(x, FitConfig(epochs=3, batch_size=32, lr=1e-3, optimizer="adamw", seed=0), progress=False)
    assert len(report.history) == 3 and all(np.isfinite(v) for v in report.final.values())
    codes = tokenizer.encode(x)
    assert codes.shape == (60, 3) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 8
    assert torch.equal(codes, tokenizer.encode(x)), "encoding does not mask"


def test_lightgcn_normalisation_and_one_propagation_by_hand() -> None:
    # u0 - {i0, i1}, u1 - {i1}; item i2 has no training interaction. Degrees: u0 2, u1 1, i0 1, i1 2, i2 0.
    data = TrainData(sequences=[np.array([0, 1, 1]), np.array([1])], n_items=3, max_history=5)
    users, items = interaction_pairs(data)
    assert list(zip(users.tolist(), items.tolist())) == [(0, 0), (0, 1), (1, 1)]
    adjacency = normalized_adjacency(users, items, 2, 3)
    h = 2 ** -0.5
    expected = torch.tensor([[0, 0, h, 0.5, 0],
                             [0, 0, 0, h, 0],
                             [h, 0, 0, 0, 0],
                             [0.5, h, 0, 0, 0],
                             [0, 0, 0, 0, 0]])
    assert torch.allclose(adjacency.to_dense(), expected, atol=1e-6)
    model = LightGCN(adjacency, 2, 3, LightGCNConfig(dim=5, layers=1))
    with torch.no_grad():
        model.embedding.weight.copy_(torch.eye(5))
        user_final, item_final = model()
    assert torch.allclose(torch.cat([user_final, item_final]), (torch.eye(5) + expected) / 2, atol=1e-6)
    assert torch.equal(item_final[2], torch.tensor([0, 0, 0, 0, 0.5])), "an isolated item is not propagated"


def test_the_symmetric_sparse_product_has_the_sums_of_the_coo_product(tiny) -> None:
    """Forward and backward equal ``torch.sparse.mm`` of the COO adjacency bit for bit (so cached LightGCN fits made
    before the CSR change stay valid) and the dense product up to rounding."""
    train = tiny[1].train
    adjacency = normalized_adjacency(*interaction_pairs(train), len(train.sequences), train.n_items)
    coo = adjacency.to_sparse_coo().coalesce()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(adjacency.shape[0], 6, generator=generator)
    upstream = torch.randn(adjacency.shape[0], 6, generator=generator)
    results = []
    for product in (lambda a: SymmetricSparseProduct.apply(adjacency, a), lambda a: torch.sparse.mm(coo, a),
                    lambda a: adjacency.to_dense() @ a):
        leaf = x.clone().requires_grad_()
        out = product(product(leaf))
        out.backward(upstream)
        results.append((out.detach(), leaf.grad))
    (ours, ours_grad), (sparse, sparse_grad), (dense, dense_grad) = results
    assert torch.equal(ours, sparse) and torch.equal(ours_grad, sparse_grad)
    assert torch.allclose(ours, dense, atol=1e-5) and torch.allclose(ours_grad, dense_grad, atol=1e-5)


def test_lightgcn_graph_holds_training_interactions_only(tiny) -> None:
    train = tiny[1].train
    users, items = interaction_pairs(train)
    expected = {(u, int(i)) for u, seq in enumerate(train.sequences) for i in seq}
    assert set(zip(users.tolist(), items.tolist())) == expected
    dense = normalized_adjacency(users, items, len(train.sequences), train.n_items).to_dense()
    valid = tiny[1].valid
    unseen = [(int(u), int(t)) for u, t in zip(valid.users, valid.targets)
              if int(t) not in set(train.sequences[u].tolist())]
    assert unseen, "the tiny split has validation targets new to their user"
    assert all(float(dense[u, len(train.sequences) + t]) == 0.0 for u, t in unseen)
    result = fit_lightgcn(train, LightGCNConfig(dim=8, layers=2, epochs=4, batch_size=512), torch.device("cpu"), 0,
                          progress=False)
    assert result.users.shape == (len(train.sequences), 8) and result.items.shape == (train.n_items, 8)
    assert result.losses[-1] < result.losses[0]


def test_lightgcn_with_zero_layers_is_mf_and_fold_in_by_hand() -> None:
    data = TrainData(sequences=[np.array([0, 1, 1]), np.array([1])], n_items=3, max_history=5)
    users, items = interaction_pairs(data)
    model = LightGCN(normalized_adjacency(users, items, 2, 3), 2, 3, LightGCNConfig(dim=4, layers=0))
    with torch.no_grad():
        user_final, item_final = model()
    assert torch.equal(torch.cat([user_final, item_final]), model.embedding.weight), "no propagation: BPR-MF"
    degrees = torch.as_tensor(item_degrees(data))
    assert degrees.tolist() == [1, 2, 0]
    representations = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    # history (1, 0, 1, 2, pad): items 0 and 1 once each; item 2 has no training user and is left out.
    history = torch.tensor([[1, 0, 1, 2, 0], [2, 0, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, True, False], [True, False, False, False, False]])
    expected = (representations[0] / 1 + representations[1] / 2 ** 0.5) / 2 ** 0.5
    folded = fold_in(history, mask, representations, degrees)
    assert torch.allclose(folded[0], expected, atol=1e-6)
    assert torch.equal(folded[1], torch.zeros(2)), "no trained history item: zero vector"


def tokenrec_scheme(tiny, cache: Path, data: TrainData | None = None, **overrides):
    dataset, split = tiny
    cls = get_scheme("tokenrec")
    tokenrec = cls(cls.resolve_params("smoke", overrides), make_context(cls, dataset, cache, split=split))
    return (tokenrec, *tokenrec.two_stage(data or split.train))


def test_tokenrec_trains_scores_all_items_and_any_user(tiny, cache: Path) -> None:
    tokenrec, tokens, model = tokenrec_scheme(tiny, cache)
    params, train = tokenrec.params, tiny[1].train
    assert params.loss == "cosine" and params.user_tokens and params.cf_model == "lightgcn"
    assert tokens.codes.shape == (train.n_items, params.n_codebooks)
    assert int(tokens.codes.min()) >= 0 and int(tokens.codes.max()) < params.codebook_size
    batch = first_batch(tiny)
    train_one_step(model, batch)
    model.eval()
    with torch.no_grad():
        scores = model.score(batch)
        assert scores.shape == (len(batch.targets), model.n_items) and bool(torch.isfinite(scores).all())
        stranger = HistoryBatch(users=torch.full_like(batch.users, 10 ** 6), items=batch.items, mask=batch.mask,
                                targets=batch.targets)
        assert stranger.users.max() >= len(train.sequences), "a user id absent from training"
        folded = fold_in(batch.items, batch.mask, tokens.users.item_representations, tokens.users.item_degrees)
        assert torch.equal(model.user_token_codes(stranger), tokens.users.tokenizer.codes(folded))
        assert bool(torch.isfinite(model.score(stranger)).all())
    stats = tokens.statistics()
    assert stats["new_tokens"] == 2 * params.n_codebooks * params.codebook_size
    assert stats["item_new_tokens"] == params.n_codebooks * params.codebook_size
    assert stats["code_length_max"] == params.n_codebooks
    assert stats["users"]["tokenized"] == len(train.sequences) and stats["users"]["folded_in"] == 0
    assert 0.0 <= stats["users"]["collision_rate"] <= 1.0
    assert len(stats["users"]["codebook_usage_per_level"]) == params.n_codebooks
    retrieval = stats["lightgcn"]["retrieval_valid"]
    assert retrieval.pop("metric") == tokenrec.ctx.config.train.valid_metric
    assert set(retrieval) == {"pop", "user_dot", "user_cosine", "last_item_cosine"}
    assert all(0.0 <= value <= 1.0 for value in retrieval.values())


def test_cf_rankings_by_hand() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    items = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    rules = cf_rankings(users, items, torch.tensor([5.0, 1.0, 3.0]))
    batch = HistoryBatch(users=torch.tensor([1, 7]), items=torch.tensor([[0, 2], [0, 1]]),
                         mask=torch.tensor([[False, True], [True, True]]), targets=torch.tensor([0, 2]))
    assert torch.equal(rules["pop"](batch), torch.tensor([[5.0, 1.0, 3.0]] * 2))
    assert torch.equal(rules["user_dot"](batch), torch.tensor([[0.0, 2.0, 2.0], [0.0, 0.0, 0.0]])), "unknown user: 0"
    assert torch.allclose(rules["user_cosine"](batch)[0], torch.tensor([0.0, 1.0, 2 ** -0.5]))
    assert torch.allclose(rules["last_item_cosine"](batch), torch.tensor([[2 ** -0.5, 2 ** -0.5, 1.0],
                                                                          [0.0, 1.0, 2 ** -0.5]]))


def test_tokenrec_fits_its_cf_model_and_tokenizers_once(tiny, tmp_path: Path) -> None:
    _, first, _ = tokenrec_scheme(tiny, tmp_path)
    _, again, _ = tokenrec_scheme(tiny, tmp_path)
    before, after = first.statistics(), again.statistics()
    assert not before["lightgcn"]["loaded_from_cache"] and not before["tokenizer_loaded_from_cache"]
    assert after["lightgcn"]["loaded_from_cache"] and after["tokenizer_loaded_from_cache"]
    assert after["users"]["tokenizer_loaded_from_cache"] and torch.equal(first.codes, again.codes)
    assert after["tokenizer_final"] == before["tokenizer_final"]


def test_tokenrec_user_tokens_open_the_prompt_and_unseen_users_are_folded_in(tiny, cache: Path) -> None:
    train, valid = tiny[1].train, tiny[1].valid
    unseen = valid.users[:5]
    sequences = [np.zeros(0, dtype=np.int64) if user in set(unseen.tolist()) else seq
                 for user, seq in enumerate(train.sequences)]
    data = TrainData(sequences=sequences, n_items=train.n_items, max_history=train.max_history)
    tokenrec, tokens, model = tokenrec_scheme(tiny, cache, data)
    k, m = tokenrec.params.n_codebooks, tokenrec.params.codebook_size
    users = tokens.users
    assert users.codes.shape == (len(sequences), k)
    assert bool((users.codes[unseen] == -1).all()), "users without training interactions are not precomputed"
    seen = users.codes[[u for u in range(len(sequences)) if len(sequences[u])]]
    assert int(seen.min()) >= 0 and int(seen.max()) < m
    assert tokens.statistics()["users"]["folded_in"] == len(unseen)
    model.eval()
    batch = first_batch(tiny, size=8)
    assert set(unseen.tolist()) <= set(batch.users.tolist())
    with torch.no_grad():
        codes = model.user_token_codes(batch)
        is_unseen = torch.isin(batch.users, torch.as_tensor(unseen))
        folded = fold_in(batch.items, batch.mask, users.item_representations, users.item_degrees)
        assert torch.equal(codes[is_unseen], users.tokenizer.codes(folded[is_unseen]))
        assert model.host_sizes(batch) == {"unseen": int(is_unseen.sum())}, "counted on the host"
        assert torch.equal(model.user_token_codes(replace(batch, host_users=None)), codes), "counted on the device"
        assert torch.equal(codes[~is_unseen], users.codes[batch.users[~is_unseen]])
        inputs, mask = model.history_inputs(batch)
        assert inputs.shape[1] == mask.shape[1] == k + batch.items.shape[1] * k
        assert bool(mask[:, :k].all())
        user_ids = model.user_offsets[None] + codes
        assert int(user_ids.min()) > int(model.token_ids.max()), "user tokens follow the item tokens"
        assert int(user_ids.max()) < model.t5.get_input_embeddings().num_embeddings
        assert torch.equal(inputs[:, :k], model.t5.get_input_embeddings()(user_ids))
        scores = model.score(batch)
    assert scores.shape == (len(batch.targets), train.n_items) and bool(torch.isfinite(scores).all())


def test_tokenrec_training_loss_traces_to_one_graph_given_its_host_sizes(tiny, cache: Path) -> None:
    """Every training user has precomputed codes: the host counts no fold-in, so the loss (user codes, history
    inputs, generation) traces without a graph break, as ``run.compile`` needs."""
    _, _, model = tokenrec_scheme(tiny, cache)
    batch = next(iterate(tiny[1].train.next_item_examples(), 16, "cpu"))
    sized = replace(batch, sizes=model.host_sizes(batch))
    assert sized.sizes == {"unseen": 0}
    explained = torch._dynamo.explain(model.train().loss)(sized)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_tokenrec_without_user_tokens_reads_item_tokens_only(tiny, cache: Path) -> None:
    tokenrec, tokens, model = tokenrec_scheme(tiny, cache, user_tokens=False)
    k, m = tokenrec.params.n_codebooks, tokenrec.params.codebook_size
    assert tokens.users is None and model.user_tokenizer is None
    assert model.t5.get_input_embeddings().num_embeddings == 2 + k * m
    assert tokens.statistics()["new_tokens"] == k * m and "users" not in tokens.statistics()
    batch = first_batch(tiny, size=4)
    with torch.no_grad():
        inputs, mask = model.history_inputs(batch)
        items = model.t5.get_input_embeddings()(model.token_ids[batch.items]).flatten(1, 2)
    item_mask = batch.mask.repeat_interleave(k, dim=1)
    assert torch.equal(mask, item_mask) and torch.equal(inputs, items * item_mask[..., None])
    train_one_step(model, batch)


def test_lightgcn_keeps_its_layer0_table_which_is_the_final_vector_without_layers(tiny) -> None:
    train = tiny[1].train
    for layers in (0, 2):
        result = fit_lightgcn(train, LightGCNConfig(dim=8, layers=layers, epochs=2), torch.device("cpu"), 0, False)
        assert result.ego_users.shape == result.users.shape and result.ego_items.shape == result.items.shape
        assert torch.equal(result.ego_items, result.items) == (layers == 0)
    config = LightGCNConfig(dim=8, layers=2, epochs=2)
    assert lightgcn_cache_key(train, config, 0, with_ego=True) != lightgcn_cache_key(train, config, 0)


def test_tokenrec_paper_profile_takes_the_released_code_choices(tiny, cache: Path) -> None:
    """The ``paper`` profile: layer-0 LightGCN vectors, 512-d codes, span masking at 0.2; the same options at
    smoke size build, tokenize with the layer-0 table and train."""
    cls = get_scheme("tokenrec")
    paper = cls.resolve_params("paper", {})
    assert (paper["cf_vectors"], paper["code_dim"], paper["mask_mode"], paper["mask_ratio"]) == (
        "layer0", 512, "span", 0.2)
    assert "cf_vectors" not in cls.resolve_params("quick", {}) and "mask_mode" not in cls.resolve_params("quick", {})
    released = {"cf_vectors": "layer0", "mask_mode": "span", "mask_ratio": 0.2}
    tokenrec, tokens, model = tokenrec_scheme(tiny, cache, **released)
    _, default_tokens, _ = tokenrec_scheme(tiny, cache)
    train = tiny[1].train
    result = fit_lightgcn(train, tokenrec.lightgcn_config(), torch.device("cpu"), 0, False)
    assert torch.equal(tokens.cf, result.ego_items) and torch.equal(default_tokens.cf, result.items)
    assert torch.equal(tokens.users.item_representations, result.ego_items), "unseen users fold in layer 0"
    assert tokenrec.fit_tokenizer(tokens.cf, torch.ones(train.n_items, dtype=torch.bool))[0].mask_mode == "span"
    assert tokens.statistics()["lightgcn"]["vectors"] == "layer0"
    batch = first_batch(tiny)
    train_one_step(model, batch)
    model.eval()
    with torch.no_grad():
        scores = model.score(batch)
    assert scores.shape == (len(batch.targets), train.n_items) and bool(torch.isfinite(scores).all())
    for key, value in (("cf_vectors", "layer1"), ("mask_mode", "block")):
        with pytest.raises(ConfigError, match=f"schemes.tokenrec.{key}"):
            cls.resolve_params("smoke", {key: value})


def test_tokenrec_mf_option_and_config_errors(tiny, cache: Path) -> None:
    cls = get_scheme("tokenrec")
    ctx = make_context(cls, tiny[0], cache, split=tiny[1])
    mf = cls(cls.resolve_params("smoke", {"cf_model": "mf"}), ctx)
    lightgcn = cls(cls.resolve_params("smoke", {}), ctx)
    assert mf.lightgcn_config().layers == 0 and lightgcn.lightgcn_config().layers == mf.params.lightgcn_layers
    train = tiny[1].train
    assert (lightgcn_cache_key(train, mf.lightgcn_config(), 0)
            != lightgcn_cache_key(train, lightgcn.lightgcn_config(), 0))
    for key, value in (("cf_model", "ngcf"), ("loss", "bpr"), ("item_input", "mean"), ("user_tokens", "yes")):
        with pytest.raises(ConfigError, match=f"schemes.tokenrec.{key}"):
            cls.resolve_params("smoke", {key: value})


def test_registry_paradigms() -> None:
    assert get_scheme("dreamrec").paradigm == "embedding"
    assert get_scheme("tokenrec").paradigm == "set"
