"""DreamRec of Yang, Wu, Wang, Wang, Yuan & He, "Generate What You Prefer: Reshaping Sequential
Recommendation via Guided Diffusion", NeurIPS 2023 (arXiv:2310.20453), embedding paradigm.

An item's identifier is one continuous vector, its ID embedding ``e_i``, learned jointly with the model (the
paper's public code initialises the table from N(0, 1) and trains it end to end; ``init_from_cf`` instead
starts it from the SASRec CF encoder of :meth:`~identifiers.base.RunContext.cf_encoder`). DreamRec does not
classify the next item: it *generates* the embedding of the item the user would prefer, an "oracle item"
that need not exist, and then retrieves real items near it:

* **Guidance** (Sec. 4, learning phase): the history's item embeddings, each linearly projected into the
  backbone's width, are read by the run's T5 encoder, or by a decoder-only backbone's causal stack
  (``inputs_embeds`` with the padding mask); its hidden state at the last (most recent) position, projected
  back to the embedding width, is the guidance ``c``.
* **Forward process** (DDPM, Ho et al. 2020, Eq. 4): ``x_0 = e_target``,
  ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``, ``t`` uniform in ``[0, T)``.
* **Denoiser** (learning phase): ``f(x_t, c, t)`` predicts ``x_0`` from ``[x_t; c; tau(t)]`` with
  ``tau`` a sinusoidal step embedding followed by Linear-GELU-Linear (the authors' code); loss
  ``||x_0 - f(x_t, c, t)||^2`` averaged over the batch and the embedding dimensions (the code's ``mse_loss``).
* **Classifier-free guidance** (Ho & Salimans 2021, Eq. 6): during training ``c`` is replaced by a learned
  null vector with probability ``p_uncond``; when sampling the x_0 prediction is
  ``(1 + w) f(x_t, c, t) - w f(x_t, null, t)``.
* **Generation and retrieval** (Sec. 4, generation phase): DDPM ancestral sampling from ``x_T ~ N(0, I)``
  down to ``x_0`` with the x_0-parameterised posterior of :mod:`identifiers.diffusion`; every item is scored
  by the inner product of the generated ``x_0`` with its embedding. The sampler is vectorised over the batch
  (the conditional and unconditional predictions share one pass) and its noise comes from a
  ``torch.Generator`` seeded with the run seed at every ``score`` call, so a batch's scores depend on the
  seed only.

Hyper-parameters (field: default = quick profile [paper / authors' code]): ``item_dim`` 64 [hidden_factor
64]; ``timesteps`` T 500 [README: 500 on YooChoose and Zhihu, 2000 on KuaiRec; argparse default 200];
``schedule`` ``exp`` [the code's default, used for YooChoose; ``cosine`` for KuaiRec, ``linear`` (beta 1e-4 ..
0.02) for Zhihu]; ``guidance_weight`` w 2 [2; 4 on Zhihu]; ``p_uncond`` 0.1 [0.1]; ``denoiser`` ``linear``
[``mlp1``: one linear layer over the concatenation]; ``init_from_cf`` False [random N(0, 1) init]. The
authors train with AdamW (their README's commands: lr 1e-3 YooChoose, 5e-5 KuaiRec, 1e-2 Zhihu; batch 256, the
argparse default); here the run's ``train`` section applies (the ``train_profiles`` below).

Choices the paper leaves open, documented options here: the schedule (its three datasets use three; we
default to the code's ``exp``), the denoiser's depth (``linear`` as the code's README; ``mlp`` adds a hidden
GELU layer, the code's ``mlp2``), and how the sequence encoder reads the history (the paper: a one-block
SASRec-style Transformer; here the benchmark's T5 encoder, as for every backbone scheme).

Differences from the paper, by design of this benchmark: the sequence encoder is the run's T5 encoder
(random init) instead of the paper's single self-attention block, model selection is early stopping on
validation NDCG (the code reports test metrics every 10 epochs), and ranking covers all items.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.batches import HistoryBatch
from benchmark.config import ConfigError, param
from benchmark.splits import TrainData
from identifiers.base import EmbeddingScheme
from identifiers.diffusion import SCHEDULES, GaussianDiffusion, SinusoidalTimeEmbedding, guided
from identifiers.registry import register
from recommenders.backbones import BackboneSpec, build_backbone, causal_positions, is_decoder_only
from recommenders.base import Recommender
from recommenders.contracts import ItemVectors

DENOISERS = ("linear", "mlp")


@dataclass
class DreamRecParams:
    """DreamRec hyper-parameters (defaults = quick profile; paper / authors' code values in brackets).

    item_dim: width d of the learned item ID embeddings, the guidance and the denoiser [hidden_factor 64].
        Ignored with ``init_from_cf`` (the width is then the ``sasrec`` scheme's ``hidden``).
    init_from_cf: start the ID embeddings from the SASRec CF encoder's item embeddings, rescaled to unit
        root-mean-square entry to match the scale of the N(0, I) prior, instead of N(0, 1) [False: random
        init]. Either way they are learned jointly with the model.
    timesteps: diffusion steps T, used for training and for ancestral sampling [500 on YooChoose and Zhihu,
        2000 on KuaiRec; code default 200].
    schedule: beta schedule, ``exp`` (VP-SDE, beta 0.1 .. 10), ``cosine`` or ``linear`` [``exp`` is the
        code's default and its YooChoose setting; ``cosine`` KuaiRec; ``linear`` Zhihu].
    beta_start: first beta of the ``linear`` schedule [1e-4].
    beta_end: last beta of the ``linear`` schedule [0.02].
    guidance_weight: classifier-free guidance strength w at sampling [2; 4 on Zhihu].
    p_uncond: probability of replacing the guidance by the null vector in training [0.1].
    denoiser: ``linear`` = one linear layer over ``[x_t; c; tau(t)]`` [the code's ``mlp1``, used for all
        datasets]; ``mlp`` = Linear-GELU-Linear with a 2d hidden layer [``mlp2``].
    """

    item_dim: int = param(64, low=4)
    init_from_cf: bool = False
    timesteps: int = param(500, low=1)
    schedule: str = param("exp", choices=SCHEDULES)
    beta_start: float = param(1e-4, low=0, low_open=True, high=1, high_open=True)
    beta_end: float = param(0.02, low=0, low_open=True, high=1, high_open=True)
    guidance_weight: float = param(2.0, low=0)
    p_uncond: float = param(0.1, low=0, high=1, high_open=True)
    denoiser: str = param("linear", choices=DENOISERS)

    def check(self) -> None:
        if self.item_dim % 2:
            raise ConfigError(f"item_dim must be even (sinusoidal time embedding), got {self.item_dim}")


class DreamRecRecommender(Recommender):
    """Learned ID embeddings; T5-encoder (or decoder-only) guidance; a guided x_0-predicting DDPM generates the
    next item."""

    def __init__(self, vectors: ItemVectors, backbone: str | BackboneSpec, max_history: int, params: DreamRecParams,
                 seed: int) -> None:
        super().__init__(vectors.n_items)
        self.params = params
        self.max_history = max_history
        self.seed = seed
        dim = vectors.dim
        self.item_embeddings = nn.Parameter(vectors.vectors.float().clone())
        model = build_backbone(backbone)
        self.decoder_only = is_decoder_only(model)
        self.encoder = model.base_model if self.decoder_only else model.get_encoder()
        d_model = self.encoder.config.hidden_size
        self.input_proj = nn.Linear(dim, d_model)
        self.guidance_proj = nn.Linear(d_model, dim)
        self.null_guidance = nn.Parameter(torch.randn(dim))
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(dim), nn.Linear(dim, 2 * dim), nn.GELU(),
                                            nn.Linear(2 * dim, dim))
        if params.denoiser == "linear":
            self.denoiser = nn.Sequential(nn.Linear(3 * dim, dim))
        else:
            self.denoiser = nn.Sequential(nn.Linear(3 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.diffusion = GaussianDiffusion(params.timesteps, params.schedule, params.beta_start, params.beta_end)

    def guidance(self, batch: HistoryBatch) -> torch.Tensor:
        """``[B, d]`` guidance c: the backbone's state at the most recent history position, projected to d."""
        inputs = self.input_proj(self.item_embeddings[batch.items]) * batch.mask[..., None]
        mask = batch.mask.long()
        positions = {"position_ids": causal_positions(mask), "use_cache": False} if self.decoder_only else {}
        encoded = self.encoder(inputs_embeds=inputs, attention_mask=mask, **positions).last_hidden_state
        return self.guidance_proj(encoded[:, -1])

    def denoise(self, x_t: torch.Tensor, guidance: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f(x_t, c, t)``: the predicted x_0 ``[B, d]`` from ``[x_t; c; tau(t)]``."""
        return self.denoiser(torch.cat([x_t, guidance, self.time_embedding(t).to(x_t.dtype)], dim=-1))

    def guided_prediction(self, x_t: torch.Tensor, guidance: torch.Tensor, t: torch.Tensor,
                          weight: float) -> torch.Tensor:
        """``(1 + w) f(x_t, c, t) - w f(x_t, null, t)``, both predictions from one batched pass."""
        null = self.null_guidance.to(guidance.dtype).expand_as(guidance)
        both = self.denoise(torch.cat([x_t, x_t]), torch.cat([guidance, null]), torch.cat([t, t]))
        conditional, unconditional = both.chunk(2)
        return guided(conditional, unconditional, weight)

    @torch.no_grad()
    def sample(self, guidance: torch.Tensor, generator: torch.Generator, weight: float | None = None) -> torch.Tensor:
        """``[B, d]`` generated oracle items x_0 for the guidance ``[B, d]`` (DDPM ancestral sampling).

        ``weight`` overrides the guidance strength w of the parameters; all noise is drawn from ``generator``.
        """
        w = self.params.guidance_weight if weight is None else weight
        return self.diffusion.p_sample_loop(lambda x, t: self.guided_prediction(x, guidance, t, w),
                                            tuple(guidance.shape), generator, guidance.device, guidance.dtype)

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """Inner products ``[B, n_items]`` of the generated x_0 with every item embedding (generation phase)."""
        guidance = self.guidance(batch)
        generator = torch.Generator(device=guidance.device).manual_seed(self.seed)
        return self.sample(guidance, generator) @ self.item_embeddings.T.to(guidance.dtype)

    def loss(self, batch: HistoryBatch) -> torch.Tensor:
        """``||x_0 - f(x_t, c', t)||^2`` with ``c'`` the null vector with probability ``p_uncond``."""
        x0 = self.item_embeddings[batch.targets]
        guidance = self.guidance(batch)
        drop = torch.rand(len(x0), device=x0.device) < self.params.p_uncond
        guidance = torch.where(drop[:, None], self.null_guidance.to(guidance.dtype).expand_as(guidance), guidance)
        t = self.diffusion.sample_timesteps(len(x0), x0.device)
        x_t = self.diffusion.q_sample(x0, t, torch.randn_like(x0))
        return F.mse_loss(self.denoise(x_t, guidance, t).float(), x0.float())


@register("dreamrec")
class DreamRec(EmbeddingScheme):
    """Guided diffusion over learned item ID embeddings; the generated oracle item ranks all items."""

    citation = ("Yang, Wu, Wang, Wang, Yuan & He, Generate What You Prefer: Reshaping Sequential "
                "Recommendation via Guided Diffusion, NeurIPS 2023.")
    Params = DreamRecParams
    profiles = {"smoke": {"item_dim": 16, "timesteps": 8}, "quick": {}, "paper": {}}
    train_profiles = {"smoke": {"epochs": 1, "lr": 0.003},
                      "quick": {"epochs": 30, "batch_size": 256, "lr": 0.001, "patience": 5},
                      "paper": {"epochs": 200, "batch_size": 256, "lr": 0.001, "patience": 20}}

    def tokenize(self, data: TrainData) -> ItemVectors:
        """The initial ID embeddings: N(0, 1) (seeded by the run seed) or the rescaled SASRec embeddings
        (RunContext.cf_encoder, cached and trained on the training split only)."""
        if self.params.init_from_cf:
            embeddings = self.ctx.cf_encoder(data).item_embeddings().detach().to("cpu", torch.float32)
            return ItemVectors(embeddings / embeddings.pow(2).mean().sqrt().clamp_min(1e-8))
        generator = torch.Generator().manual_seed(self.ctx.seed)
        return ItemVectors(torch.randn(data.n_items, self.params.item_dim, generator=generator))

    def recommender(self, identifiers: ItemVectors) -> Recommender:
        """DreamRec's own recommender: the vectors are learned, and generated by guided diffusion."""
        torch.manual_seed(self.ctx.seed)
        return DreamRecRecommender(identifiers, self.ctx.backbone, self.ctx.config.max_history, self.params,
                                   self.ctx.seed)
