"""TIGER: semantic IDs from an RQ-VAE over item text embeddings (Rajput et al., "Recommender Systems with
Generative Retrieval", NeurIPS 2023).

Every item's content is embedded by a sentence encoder; an RQ-VAE maps the embedding ``x`` to a latent
``z = E(x)`` and quantises it residually with ``L`` codebooks ``{e^d_k}``::

    r_0 = z,   c_d = argmin_k ||r_d - e^d_k||,   r_{d+1} = r_d - e^d_{c_d},   z_q = sum_d e^d_{c_d}

trained with ``||x - D(z_q)||^2 + sum_d ||sg[r_d] - e_{c_d}||^2 + beta ||r_d - sg[e_{c_d}]||^2`` (``sg`` =
stop-gradient, straight-through gradient from ``D(z_q)`` to ``z``). The codes ``(c_0, ..., c_{L-1})`` are
the item's semantic ID; items that share one get a 4th token ``0, 1, 2, ...`` so every ID is unique. A
generative backbone then learns to emit the next item's ID (see :mod:`recommenders.sequence`); its encoder
reads a user token (the user id hashed into 2,000 buckets, Sec. 4.1) followed by the history's IDs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from benchmark.config import param
from benchmark.splits import TrainData
from identifiers.base import SequenceScheme
from identifiers.encoders import ENCODERS, item_embeddings
from identifiers.quantizers import RQVAE, RQVAE_OPTIMIZERS, ExtraLossFn, FitConfig, FitReport, cached_fit, level_codes
from identifiers.registry import register
from recommenders.contracts import ItemCodes


@dataclass
class TIGERParams:
    """TIGER's hyper-parameters (defaults = quick profile; "paper" = the value in Rajput et al. §4.1).

    encoder: text encoder for item content, ``auto`` (MiniLM when installed, else TF-IDF+SVD), ``minilm``
        or ``tfidf``. Paper: Sentence-T5 (768-d) over title, price, brand and category. Here the embedded text
        joins whichever of title, brand, categories and description the item has
        (:meth:`~benchmark.data.dataset.Dataset.item_texts`, see :mod:`identifiers.encoders`); price is not used.
    latent_dim: dimension of the RQ-VAE latent and of every codebook vector. Paper: 32.
    hidden_dims: encoder hidden layer sizes (ReLU); the decoder mirrors them. Paper: 512, 256, 128.
    n_levels: residual quantisation levels (code length before de-duplication). Paper: 3.
    codebook_size: codes per level. Paper: 256; quick: 64 (catalogues of a few hundred items).
    rqvae_epochs: RQ-VAE training epochs over the training items. Paper: 20k; quick: 300.
    rqvae_batch_size: RQ-VAE mini-batch size. Paper: 1024; quick: 128 (more steps per epoch on small
        catalogues).
    rqvae_lr: RQ-VAE learning rate. Paper: 0.4 (Adagrad); here 1e-3 with plain Adam, no weight decay. 1e-3 is
        the rate of public RQ-VAE re-implementations, which however train with AdamW and weight decay 1e-4
        (LETTER's ``RQ-VAE/main.py`` defaults ``--lr 1e-3 --learner AdamW --weight_decay 1e-4``;
        EdoardoBotta/RQ-VAE-Recommender ``configs/rqvae_amazon.gin`` with the AdamW of ``train_rqvae.py``);
        the suite's RQ-VAE fit offers only Adam and Adagrad, without weight decay. In this PyTorch
        implementation Adagrad at 0.4 collapsed the latent to one first-level code on the synthetic dataset.
        Set ``rqvae_optimizer: adagrad`` and ``rqvae_lr: 0.4`` to run the paper's setting.
    rqvae_optimizer: ``adam`` (no weight decay; not the AdamW of the re-implementations above) or ``adagrad``
        (paper).
    beta: commitment weight of the RQ-VAE loss. Paper: 0.25.
    kmeans_init: initialise each codebook by k-means on its level's residuals. Paper: yes (on the first
        batch; here on all training items).
    kmeans_iters: Lloyd iterations of that k-means (paper: not stated; vector-quantize-pytorch's default 10).
    beam_size: beams of the beam search that decodes recommendations. Paper: not verifiable in the sources
        available to us; 20 is what LETTER's TIGER re-implementation passes (``LETTER-TIGER/run_test.sh``,
        ``--num_beams 20``). The search is constrained to valid item codes (a trie) by default, the suite's
        shared protocol for every sequence scheme (``run.constrained_decoding: true`` in
        ``benchmark/defaults.yaml``); that re-implementation constrains it too (``prefix_allowed_tokens_fn``
        over the valid codes, ``LETTER-TIGER/test.py``); whether TIGER's own decoding was constrained is not
        stated in the sources we could check. ``run.constrained_decoding: false`` decodes freely and records
        the share of generated codes that name no item (``invalid_generation_rate``).
    user_tokens: user-id tokens; the encoder input starts with the token of the hashed user id (hashing trick,
        :func:`recommenders.sequence.user_bucket`), 0 = none. Paper: 2,000.
    """

    encoder: str = param("auto", choices=ENCODERS)
    latent_dim: int = param(32, low=1)
    hidden_dims: tuple[int, ...] = param((512, 256, 128), low=1)
    n_levels: int = param(3, low=1)
    codebook_size: int = param(64, low=2)
    rqvae_epochs: int = param(300, low=0)
    rqvae_batch_size: int = param(128, low=1)
    rqvae_lr: float = param(1e-3, low=0, low_open=True)
    rqvae_optimizer: str = param("adam", choices=RQVAE_OPTIMIZERS)
    beta: float = param(0.25, low=0)
    kmeans_init: bool = True
    kmeans_iters: int = param(10, low=1)
    beam_size: int = param(20, low=1, option=True)
    user_tokens: int = param(2000, low=0, option=True)


@register("tiger")
class TIGER(SequenceScheme):
    """Semantic IDs from an RQ-VAE over item text embeddings, plus TIGER's de-duplication token.

    Caveat (a choice of this benchmark): the RQ-VAE is trained on the **training items only** (items that
    occur in the training sequences, i.e. warm items), so the codebooks are fitted to the items the
    recommender is trained on; cold items are then encoded by the trained model, which is legitimate
    because their content is known at catalogue time. TIGER trains on every item of its (leave-one-out)
    catalogue, where (almost) every item is warm, so the two (nearly) coincide there.

    Tokens: level ``l``'s code ``c`` is token ``sum(level_sizes[:l]) + c``, so every level has its own
    tokens; the 4th level has as many tokens as the largest group of items sharing a 3-level code.

    Recommender training (``train_profiles``): TIGER trains its encoder-decoder with batches of 256 and
    learning rate 0.01 (inverse square-root decay after 10k steps) for about 200k steps (the step count, and
    whether it differs per dataset, is not verifiable in the sources available to us); the shared trainer
    uses AdamW at a constant rate, so the rate stays at 1e-3 and the paper profile runs up to 200 epochs with
    early stopping.
    """

    citation = "Rajput et al., Recommender Systems with Generative Retrieval, NeurIPS 2023."
    Params = TIGERParams
    needs_content = ("text",)
    profiles = {
        "smoke": {"encoder": "tfidf", "codebook_size": 16, "rqvae_epochs": 20, "rqvae_batch_size": 256},
        "quick": {},
        "paper": {"codebook_size": 256, "rqvae_epochs": 20000, "rqvae_batch_size": 1024},
    }
    train_profiles = {
        "quick": {"epochs": 20, "lr": 1e-3, "batch_size": 256},
        "paper": {"epochs": 200, "lr": 1e-3, "batch_size": 256, "patience": 10},
    }

    def tokenize(self, data: TrainData) -> ItemCodes:
        embeddings, train_items = self.content_embeddings(data)
        rqvae, report = self.fit_rqvae(embeddings[train_items], self.params.latent_dim)
        codes = level_codes(rqvae.encode(embeddings), self.params.codebook_size, extra_level=True)
        codes.details.update(self.rqvae_statistics(report))
        return codes

    def content_embeddings(self, data: TrainData) -> tuple[torch.Tensor, np.ndarray]:
        """Text embeddings of every item (cached) and the ids of the training items."""
        vectors = item_embeddings(self.ctx, self.params.encoder)
        return torch.from_numpy(vectors), np.flatnonzero(data.item_counts() > 0)

    def rqvae_class(self) -> type[RQVAE]:
        """The RQ-VAE variant this scheme trains (TIGER's loss: summed squared reconstruction error)."""
        return RQVAE

    def fit_rqvae(self, x: torch.Tensor, latent_dim: int, extra_loss_fn: ExtraLossFn | None = None,
                  extra_inputs: tuple[torch.Tensor, ...] = (),
                  extra_key: dict[str, Any] | None = None) -> tuple[RQVAE, FitReport]:
        """An RQ-VAE (of :meth:`rqvae_class`) with this scheme's settings and the run seed, trained on ``x``, or
        loaded from the cache when one was trained with the same settings on the same vectors
        (:func:`~identifiers.quantizers.cached_fit`); ``extra_inputs`` are the tensors ``extra_loss_fn`` reads,
        ``extra_key`` what names ``extra_loss_fn`` in the cache key (default: every field of the params). Under
        ``run.compile`` an RQ-VAE without ``extra_loss_fn`` is fitted compiled (:meth:`RQVAE.fit
        <identifiers.quantizers.RQVAE.fit>`), and its cache key says so: a compiled fit rounds otherwise, so an
        eager run never reuses it, nor it an eager one's fit or checkpoint (an eager fit's key is unchanged)."""
        p, ctx = self.params, self.ctx
        settings = {"input_dim": x.shape[1], "latent_dim": latent_dim, "hidden_dims": tuple(p.hidden_dims),
                    "n_levels": p.n_levels, "codebook_size": p.codebook_size, "beta": p.beta,
                    "kmeans_init": p.kmeans_init, "kmeans_iters": p.kmeans_iters}
        torch.manual_seed(ctx.seed)
        rqvae = self.rqvae_class()(**settings).to(ctx.device)
        fit = FitConfig(epochs=p.rqvae_epochs, batch_size=p.rqvae_batch_size, lr=p.rqvae_lr,
                        optimizer=p.rqvae_optimizer, seed=ctx.seed, max_steps=ctx.config.max_fit_steps)
        extra = (asdict(p) if extra_key is None else extra_key) if extra_loss_fn is not None else None
        compiled = ctx.config.compile and extra_loss_fn is None
        key = {**settings, "extra_loss": extra, **({"compiled": True} if compiled else {})}
        report = cached_fit(ctx, "rqvae", rqvae, key, fit, (x, *extra_inputs), lambda checkpoint: rqvae.fit(
            x, fit, ctx.progress, checkpoint, extra_loss_fn, compiled=compiled))
        return rqvae, report

    def rqvae_statistics(self, report: FitReport) -> dict[str, Any]:
        """The text encoder and the RQ-VAE's final losses on the training items, for the codes' details."""
        final = report.final
        return {
            "text_encoder": self.ctx.components["text_encoder"]["name"],
            "rqvae_train_items": report.n_vectors,
            "rqvae_reconstruction_loss": final["reconstruction"],
            "rqvae_quantization_loss": final["codebook"] + final["commitment"],
            "rqvae_fit_s": report.seconds,
            "rqvae_resumed_from_epoch": report.resumed_from_epoch,
            "rqvae_loaded_from_cache": report.loaded_from_cache,
        }
