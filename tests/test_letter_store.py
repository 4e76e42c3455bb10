"""LETTER's regularisers and collision re-assignment, its per-regulariser ablation and search space, the
ranking-guided loss, and STORE's single-backbone tasks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.batches import iterate
from benchmark.config import ConfigError, Tunable, search_space
from benchmark.data.dataset import Dataset
from benchmark.splits import make_split
from identifiers.letter import (
    CF_WEIGHT_RANGE,
    LETTER,
    TEMPERATURE_RANGE,
    LETTERParams,
    Regularizers,
    ReleasedRQVAE,
    reassign_last_level,
    same_cluster_positives,
)
from identifiers.quantizers import RQVAE, constrained_kmeans
from identifiers.store import STORE, DenseTokenizer
from recommenders.backbones import EOS_ID
from recommenders.contracts import ItemCodes
from recommenders.sequence import GenerativeRecommender, SequenceOptions
from tests.conftest import make_context


@pytest.mark.parametrize(("n", "k", "low", "high"), [(256, 10, 10, 60), (64, 10, 2, 14), (30, 3, 10, 10)])
def test_constrained_kmeans_respects_the_size_bounds(n: int, k: int, low: int, high: int) -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(n - n // 4, 4)), rng.normal(8.0, 0.1, size=(n // 4, 4))])
    sizes = np.bincount(constrained_kmeans(points, k, low, high, 10, rng), minlength=k)
    assert len(sizes) == k and sizes.sum() == n and sizes.min() >= low and sizes.max() <= high
    with pytest.raises(ValueError, match="cannot split"):
        constrained_kmeans(points, k, n, n, 1, rng)


def test_diversity_positives_are_other_codes_of_the_same_cluster() -> None:
    clusters = torch.tensor([0, 1, 0, 2, 1, 2, 0, 2])
    codes = torch.arange(8).repeat(50)
    positives = same_cluster_positives(codes, clusters, torch.Generator().manual_seed(0))
    assert bool((clusters[positives] == clusters[codes]).all()) and bool((positives != codes).all())
    assert set(positives[codes == 0].tolist()) == {2, 6}


def test_reassignment_gives_colliding_items_free_last_codes_by_distance() -> None:
    raw = torch.tensor([[0, 1], [0, 1], [0, 3], [1, 1], [1, 1], [2, 0]])
    codebook = np.array([[0.0], [1.0], [2.0], [3.0]])
    residuals = np.array([[1.9], [0.1], [3.0], [0.0], [3.0], [0.0]])
    codes, moved = reassign_last_level(raw, residuals, codebook)
    assert codes.tolist() == [[0, 2], [0, 0], [0, 3], [1, 0], [1, 3], [2, 0]] and moved == 4
    crowded, moved = reassign_last_level(torch.tensor([[0, 0], [0, 0], [0, 1]]), np.zeros((3, 1)),
                                         np.array([[0.0], [1.0]]))
    assert crowded.tolist() == [[0, 0], [0, 0], [0, 1]] and moved == 0


def _initialised_rqvae(x: torch.Tensor) -> RQVAE:
    """A small RQ-VAE in training mode whose codebooks were initialised on ``x`` (as ``RQVAE.fit`` does first)."""
    rqvae = RQVAE(12, latent_dim=8, hidden_dims=(16,), n_levels=2, codebook_size=8)
    rqvae.train()
    with torch.no_grad():
        rqvae.quantizer(rqvae.encoder(x))
    return rqvae


def test_regularizers_align_latents_with_cf_and_reach_the_right_parameters() -> None:
    torch.manual_seed(0)
    x, cf = torch.randn(64, 12), torch.randn(64, 8)
    rqvae = _initialised_rqvae(x)
    params = LETTER.Params(latent_dim=8, codebook_size=8, cf_weight=1.0, diversity_weight=1.0, diversity_clusters=2)
    regularizers = Regularizers(cf, params, batches_per_epoch=4, seed=0)
    index = torch.arange(16)
    out = rqvae(x[index])
    terms = regularizers(rqvae, out, index)
    assert set(terms) == {"collaborative", "diversity"} and all(torch.isfinite(v) for v in terms.values())
    assert regularizers.clusters.shape == (2, 8)
    terms["collaborative"].backward()
    assert rqvae.encoder[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in rqvae.quantizer.parameters())


def test_a_regularizer_of_weight_zero_is_left_out() -> None:
    torch.manual_seed(0)
    x, cf = torch.randn(32, 12), torch.randn(32, 8)
    rqvae = _initialised_rqvae(x)
    index = torch.arange(16)
    for weights, names in (((1.0, 0.0), {"collaborative"}), ((0.0, 1.0), {"diversity"})):
        params = LETTER.Params(latent_dim=8, codebook_size=8, cf_weight=weights[0], diversity_weight=weights[1],
                               diversity_clusters=2)
        regularizers = Regularizers(cf, params, batches_per_epoch=2, seed=0)
        assert set(regularizers(rqvae, rqvae(x[index]), index)) == names
        assert (regularizers.clusters is None) == (weights[1] == 0)


def test_letter_tunes_alpha_and_tau_without_changing_its_config() -> None:
    assert search_space(LETTERParams) == [Tunable("cf_weight", *CF_WEIGHT_RANGE[:2], scale="log"),
                                          Tunable("temperature", *TEMPERATURE_RANGE[:2], scale="log")]
    for profile in ("smoke", "quick", "paper"):
        assert "regularizer_ablation" not in LETTER.resolve_params(profile, {})
    assert LETTER.resolve_params("smoke", {"regularizer_ablation": False})["regularizer_ablation"] is False


def test_released_rqvae_averages_what_tiger_sums() -> None:
    """LETTER's released code averages squared errors over features and levels; TIGER's loss sums them."""
    torch.manual_seed(0)
    released = ReleasedRQVAE(12, latent_dim=8, hidden_dims=(16,), n_levels=3, codebook_size=4)
    tiger = RQVAE(12, latent_dim=8, hidden_dims=(16,), n_levels=3, codebook_size=4)
    tiger.load_state_dict(released.state_dict())
    x = torch.randn(32, 12)
    released.train()
    with torch.no_grad():
        released.quantizer(released.encoder(x))
    out = released(x)
    mean, summed = released.loss_terms(x, out), tiger.loss_terms(x, out)
    assert torch.allclose(mean["reconstruction"] * 12, summed["reconstruction"])
    for term in ("codebook", "commitment"):
        assert torch.allclose(mean[term] * 3 * 8, summed[term])


def test_ranking_guided_loss_is_temperature_scaled_cross_entropy() -> None:
    codes = ItemCodes(codes=torch.tensor([[0, 2], [1, 3], [0, 3]]), vocab_size=4)
    model = GenerativeRecommender(codes, "t5-tiny", max_history=2, options=SequenceOptions(temperature=0.5))
    logits = torch.randn(3, 2, model.backbone.config.vocab_size)
    labels = torch.tensor([[2, 4], [3, -100], [2, 5]])
    expected = F.cross_entropy((logits / 0.5).flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(model.sequence_loss(logits, labels, None), expected)
    with pytest.raises(ValueError, match="temperature"):
        GenerativeRecommender(codes, "t5-tiny", max_history=2, options=SequenceOptions(temperature=0.0))


def test_letter_codes_are_unique_and_report_the_tiger_reference(small_synthetic: Dataset, cache: Path) -> None:
    ctx = make_context(LETTER, small_synthetic, cache)
    scheme = LETTER({**ctx.config.params, "rqvae_epochs": 30}, ctx)
    codes = scheme.tokenize(make_split(small_synthetic, "loo", 10).train)
    stats = codes.statistics()
    assert scheme.rqvae_class() is ReleasedRQVAE
    assert len(torch.unique(codes.codes, dim=0)) == small_synthetic.n_items
    assert set(stats["tiger_reference"]) == {"collision_rate_before_dedup", "codebook_usage_per_level"}
    assert len(stats["tiger_reference"]["codebook_usage_per_level"]) == scheme.params.n_levels
    assert stats["rqvae_collaborative_loss"] is not None and stats["reassigned_items"] >= 0
    ablation = stats["regularizer_ablation"]
    assert list(ablation) == ["letter", "cf_only", "diversity_only", "none"]
    assert ablation["none"] == stats["tiger_reference"]
    assert ablation["letter"]["collision_rate_before_dedup"] == stats["collision_rate_before_dedup"]
    for name, row in ablation.items():
        assert set(row) == {"collision_rate_before_dedup", "codebook_usage_per_level"}, name
        assert 0 <= row["collision_rate_before_dedup"] < 1
        assert len(row["codebook_usage_per_level"]) == scheme.params.n_levels
        assert all(0 < usage <= 1 for usage in row["codebook_usage_per_level"])
    again = LETTER({**ctx.config.params, "rqvae_epochs": 30}, ctx)
    repeated = again.tokenize(make_split(small_synthetic, "loo", 10).train)
    assert torch.equal(repeated.codes, codes.codes)
    assert repeated.statistics()["regularizer_ablation"] == ablation
    assert repeated.statistics()["rqvae_loaded_from_cache"] and not stats["rqvae_loaded_from_cache"]
    hotter = LETTER({**ctx.config.params, "rqvae_epochs": 30, "temperature": 0.5, "regularizer_ablation": False}, ctx)
    tuned = hotter.tokenize(make_split(small_synthetic, "loo", 10).train)
    assert tuned.statistics()["rqvae_loaded_from_cache"], "tau does not change the RQ-VAE: trials share its fit"
    assert torch.equal(tuned.codes, codes.codes) and "regularizer_ablation" not in tuned.statistics()
    with pytest.raises(Exception, match="latent_dim"):
        LETTER({**ctx.config.params, "latent_dim": 7}, ctx).tokenize(make_split(small_synthetic, "loo", 10).train)
    with pytest.raises(ConfigError, match="schemes.letter.rqvae_loss: 'l1' is not a valid choice; choose from "
                                          "released, tiger"):
        LETTER.resolve_params("smoke", {"rqvae_loss": "l1"})


def test_store_tokenizes_with_its_own_backbone_and_trains_all_tasks(small_synthetic: Dataset, cache: Path) -> None:
    ctx = make_context(STORE, small_synthetic, cache)
    split = make_split(small_synthetic, "loo", 10)
    scheme = STORE({**ctx.config.params, "tokenizer_epochs": 3}, ctx)
    identifiers, model = scheme.two_stage(split.train)
    assert len(torch.unique(identifiers.codes, dim=0)) == small_synthetic.n_items
    losses = identifiers.statistics()["reconstruction_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    tokenizer = DenseTokenizer(model.backbone, model.texts, scheme.params.n_tokens)
    dense = tokenizer.dense(torch.arange(4))
    assert dense.shape == (4, scheme.params.n_tokens, model.backbone.config.d_model)
    ids, mask = model.code_inputs(torch.tensor([0, 1]))
    length = int((identifiers.codes[0] >= 0).sum())
    assert ids[0, length].item() == EOS_ID and int(mask[0].sum()) == length + 1
    batch = next(iterate(split.valid, 16, "cpu"))
    model.train()
    torch.manual_seed(0)
    joint = model.loss(batch)
    model.weights = (0.0, 0.0)
    torch.manual_seed(0)
    assert joint > model.loss(batch)
    accuracy = model.text_to_token_accuracy(torch.arange(10))
    assert 0.0 <= accuracy <= 1.0
