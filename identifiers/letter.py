"""LETTER of Wang, Bao, Lin, Zhang, Li, Feng, Ng & Chua, "Learnable Item Tokenization for Generative
Recommendation", CIKM 2024 (arXiv:2405.07314), instantiated on TIGER (sequence paradigm).

LETTER trains TIGER's RQ-VAE (:class:`identifiers.quantizers.RQVAE`, the semantic regulariser L_Sem) with
two more terms, ``L = L_Sem + alpha L_CF + beta L_Div`` (Sec. 3.2):

* **Collaborative regulariser** L_CF: contrastive alignment of each item's quantised latent
  ``z_hat_i = z_i + sg(sum_l e_{c_l} - z_i)`` (straight-through) with its CF embedding ``h_i`` from the
  SASRec trained on the training split (:meth:`~identifiers.base.RunContext.cf_encoder`), in-batch softmax
  over inner products: ``-1/B sum_i log exp<z_hat_i, h_i> / sum_j exp<z_hat_i, h_j>``. As in the released
  code there is no projection: the latent width must equal SASRec's ``hidden``.
* **Diversity regulariser** L_Div: at the start of every epoch the code vectors of each level are grouped
  into ``diversity_clusters`` clusters by constrained k-means (:func:`identifiers.quantizers.constrained_kmeans`;
  sizes within 0.39 .. 2.34 times the mean, LETTER's 10 .. 60 for 256 codes in 10 clusters); for an item
  with code ``c`` at a level, a random other code ``e+`` of ``c``'s cluster is the positive of a softmax over
  ``<e_c, e_j>`` for all codes ``j != c``; cross-entropy, averaged over items and levels.
* **Collisions** (:func:`reassign_last_level`, a deterministic stand-in for the released step): items sharing
  a full code are re-assigned at the last level only; per prefix, the colliding items take distinct
  last-level codes that no other item of that prefix holds, by the assignment of least total squared distance
  to their last residuals (``scipy.optimize.linear_sum_assignment``). Only if a prefix has too few free
  codes does TIGER's extra level (:func:`identifiers.quantizers.level_codes`) tell the rest apart. The released
  ``RQ-VAE/generate_indices.py`` does otherwise: it re-encodes each group of items sharing a full code with
  the last level assigned by Sinkhorn balancing (``sk_epsilon`` 0.003, ``sinkhorn_algorithm`` of
  ``models/layers.py`` over the group's distances rescaled to [-1, 1], then each item's argmax), which spreads
  a group over codes but neither guarantees distinct codes nor avoids codes already held under the same
  prefix; it repeats this over the groups still colliding at most 20 times and then keeps the remaining
  collisions (its comment: duplicate items are no longer told apart), with no extra token. The stand-in is
  not a limit of that procedure: the two can give different codes, and here every final code is unique.
* **Ranking-guided generation loss** (Sec. 3.3): the recommender's token cross-entropy on ``logits / tau``
  (:class:`recommenders.sequence.SequenceOptions`); tau < 1 weights hard negatives more. Everything else of
  the recommender is TIGER's, the hashed user token (``user_tokens``) included, so that the two rows differ
  only in what LETTER adds. The released LETTER-TIGER has no user token: in ``LETTER-TIGER/data.py``
  (``SeqRecDataset``) the lines storing the user id are commented out and an example is the history's codes
  and the target's, so its encoder reads the history alone (``user_tokens: 0`` does the same here).

**Scale of L_Sem** (``rqvae_loss``). alpha and beta weigh cross-entropies, whose size does not depend on the
data, against squared errors, whose size does, so they only mean what they meant at the authors' scale. The
released code (``RQ-VAE/models/rqvae.py``, ``vq.py``, ``rq.py``) averages every squared error over features
(``F.mse_loss``), averages the per-level losses (codebook, 0.25 commitment and ``beta * L_Div``) over levels,
and quantises un-normalised LLaMA hidden states (mean-pooled ``last_hidden_state``, which LLaMA
RMS-normalises: root-mean-square of order 1 per feature). ``"released"`` (default) does the same: those
reductions (:class:`ReleasedRQVAE`) on this suite's unit-norm item embeddings rescaled by ``sqrt(dim)`` to
root-mean-square 1 per feature (without the rescaling the reconstruction shrinks ``dim`` times, L_CF
dominates it, and on the synthetic data 65% of items collided). ``"tiger"`` keeps the TIGER scheme's loss
(squared norms summed over features and levels), whose codebook and commitment terms are ``n_levels *
latent_dim`` (192 in the quick profile) times the released averages, so L_Div, which acts on the code
vectors, weighs about 200 times less than in the released code. On the synthetic data (quick profile, mean
of three RQ-VAE seeds, collisions before re-assignment) ``"released"`` LETTER collided on 37% of items
against 44% for its regulariser-free reference (L_Div alone: 32%); ``"tiger"`` LETTER on 28% against 26%.
The released-scale reference itself collides more than the TIGER-scale one: its averaged quantisation terms
weigh less against the reconstruction.

The record reports collision rate and codebook usage of LETTER's codes beside those of a TIGER reference
quantiser: the same RQ-VAE (same ``rqvae_loss``, inputs, seed and data) trained without L_CF and L_Div
(``tiger_reference``). With ``regularizer_ablation`` (default on) it also trains that RQ-VAE with each
regulariser alone and reports, under ``regularizer_ablation``, the collision rate (before re-assignment) and
codebook usage per level of ``letter`` (alpha and beta), ``cf_only`` (beta = 0), ``diversity_only``
(alpha = 0) and ``none`` (the reference). These are two more RQ-VAE fits, each at most as long as LETTER's
own (``rqvae_fit_s`` in the record) and cached like it: cheap next to the recommender's training in the smoke
and quick profiles, so on by default; on the paper profile (20,000 RQ-VAE epochs) ``regularizer_ablation:
false`` saves them.

**Tuning.** ``cf_weight`` (alpha; log-uniform on 1e-3 .. 1, a decade either side of the released 0.01 and 0.1)
and ``temperature`` (tau; log-uniform on 0.2 .. 2) form the search space of ``python -m benchmark tune
--identifiers letter``, which selects on validation only. The RQ-VAE's cache key leaves out the recommender's
options, so trials that differ only in tau share one RQ-VAE fit; a trial with a new alpha fits anew, the two
ablation fits included unless the tune config sets ``regularizer_ablation: false``.

Not reproduced: the released code also balances the last level's assignment with Sinkhorn (epsilon 0.003)
during RQ-VAE training, initialises the codebooks by constrained k-means and trains with AdamW (weight decay
1e-4); here the assignment is nearest-code and the optimiser TIGER's (see :class:`identifiers.tiger.TIGERParams`).
Its RQ-VAE encoder is deeper (``RQ-VAE/main.py`` ``--layers`` default 2048, 1024, 512, 256, 128, 64, then the
32-d latent; the decoder mirrors it); here it is TIGER's ``hidden_dims`` (512, 256, 128) to ``latent_dim``.
Its ``trainer.fit`` measures the collision rate every ``eval_step`` epochs (``main.py`` default 2,000), saves
the lowest-collision checkpoint (``best_collision_model.pth``) and, after epoch 2,500, the checkpoint of every
evaluation, one of which ``tokenize.sh`` reads (``epoch_9999_collision_0.0012_model.pth``); here the RQ-VAE
of the last epoch is used. Its item vector (``data_process/amazon_text_emb.py``) is the average of two
embeddings, of the title and of the description, each mean-pooled separately; here it is one embedding of
the joined title, brand, categories and description (:mod:`identifiers.encoders`).

Hyper-parameters beyond TIGER's (field: default = quick profile [paper / released code, github.com/
HonghuiBao2000/LETTER]): ``cf_weight`` alpha 0.01 [paper: not verifiable in the sources available to us;
released ``RQ-VAE/train_tokenizer.sh`` 0.01 (Instruments), ``RQ-VAE/tokenize.sh`` 0.1 for Beauty (it reads the
checkpoint of ``alpha1e-1-beta1e-4``, epoch 10,000), ``RQ-VAE/main.py`` default 0.1; tuned on validation,
see above], ``diversity_weight`` beta 1e-4 [both scripts 1e-4; ``main.py`` default 0.1],
``diversity_clusters`` K 10 [10; at most half the codebook size here], ``temperature`` tau 1.0 [released
``LETTER-TIGER/run_train.sh`` and ``LETTER-LC-Rec/run_train.sh`` pass ``--temperature 1.0``, the default of
their ``utils.py``, for every dataset; the paper's value is not verifiable in the sources available to us;
tuned on validation, see above], ``rqvae_loss`` released [released code], ``latent_dim`` 64 [32 = their
SASRec width; here the ``sasrec`` scheme's ``hidden`` of the profile], ``n_levels`` 3 [4; ``paper`` profile
4], ``hidden_dims`` 512, 256, 128 [released ``main.py``: 2048, 1024, 512, 256, 128, 64], ``regularizer_ablation``
true [not in the paper: the record's per-regulariser statistics].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from benchmark.config import ConfigError, hashed_params, param
from benchmark.splits import TrainData
from identifiers.quantizers import RQVAE, FitReport, RQVAEOutput, constrained_kmeans, level_codes
from identifiers.registry import register
from identifiers.tiger import TIGER, TIGERParams
from recommenders.contracts import ItemCodes

CLUSTER_SIZE_RANGE = (0.39, 2.34)
"""Cluster sizes of the diversity clustering relative to the mean size (LETTER: 10 and 60 of 25.6)."""
RQVAE_LOSSES = ("released", "tiger")
CF_WEIGHT_RANGE = (1e-3, 1.0, "log")
"""Search range of alpha for ``python -m benchmark tune``: a decade either side of the released scripts' 0.01
(Instruments) and 0.1 (Beauty)."""
TEMPERATURE_RANGE = (0.2, 2.0, "log")
"""Search range of tau: below 1 (hard negatives weigh more, the paper's motivation) and above (softer)."""
ABLATION_FIT_INDEPENDENT = ("regularizer_ablation",)
"""Params fields besides the recommender's options that do not change an RQ-VAE fit."""


@dataclass
class LETTERParams(TIGERParams):
    """LETTER hyper-parameters: TIGER's (see :class:`identifiers.tiger.TIGERParams`) plus, paper values in
    brackets:

    cf_weight: alpha, weight of the collaborative regulariser L_CF [paper: not verifiable in the sources
        available to us; released ``RQ-VAE/train_tokenizer.sh`` 0.01 (Instruments), ``RQ-VAE/tokenize.sh`` 0.1
        (Beauty)]; tunable, log-uniform on 1e-3 .. 1.
    diversity_weight: beta, weight of the diversity regulariser L_Div [both released scripts 1e-4].
    diversity_clusters: K, constrained k-means clusters of each level's code vectors [10].
    temperature: tau of the ranking-guided generation loss; tau < 1 weights hard negatives more [paper: not
        verifiable in the sources available to us; released ``run_train.sh`` scripts 1.0]; tunable,
        log-uniform on 0.2 .. 2.
    rqvae_loss: scale of L_Sem that alpha and beta are weighed against: ``released`` (mean squared errors
        over features, quantisation terms averaged over levels, inputs rescaled to root-mean-square 1 per
        feature) or ``tiger`` (the TIGER scheme's summed squared norms on unit-norm inputs) [released code].
    latent_dim: must equal the CF encoder's width, the ``sasrec`` scheme's ``hidden`` [32 with their SASRec].
    regularizer_ablation: also fit the RQ-VAE with L_CF only and with L_Div only and report their collision
        rate and codebook usage in the record (two more cached RQ-VAE fits) [not in the paper].
    """

    latent_dim: int = param(64, low=1)
    cf_weight: float = param(0.01, low=0, tune=CF_WEIGHT_RANGE)
    diversity_weight: float = param(1e-4, low=0)
    diversity_clusters: int = param(10, low=1)
    temperature: float = param(1.0, low=0, low_open=True, option=True, tune=TEMPERATURE_RANGE)
    rqvae_loss: str = param("released", choices=RQVAE_LOSSES)
    regularizer_ablation: bool = param(True, added=True)


class ReleasedRQVAE(RQVAE):
    """TIGER's RQ-VAE with the loss reductions of LETTER's released code: every squared error is averaged over
    features (``F.mse_loss``), and the codebook and commitment terms over levels too."""

    def loss_terms(self, x: torch.Tensor, out: RQVAEOutput) -> dict[str, torch.Tensor]:
        return {
            "reconstruction": F.mse_loss(out.reconstruction, x),
            "codebook": F.mse_loss(out.code_vectors, out.residuals.detach()),
            "commitment": self.beta * F.mse_loss(out.residuals, out.code_vectors.detach()),
        }


class Regularizers:
    """LETTER's L_CF and L_Div for :meth:`RQVAE.fit`'s ``extra_loss_fn``; re-clusters every ``batches_per_epoch``."""

    def __init__(self, cf: torch.Tensor, params: LETTERParams, batches_per_epoch: int, seed: int) -> None:
        self.cf, self.params, self.batches_per_epoch = cf, params, batches_per_epoch
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0
        self.clusters: torch.Tensor | None = None

    def __call__(self, model: RQVAE, out: RQVAEOutput, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms; a term of weight 0 is left out (and L_Div's clustering skipped)."""
        terms: dict[str, torch.Tensor] = {}
        if self.params.diversity_weight and self.calls % self.batches_per_epoch == 0:
            self.clusters = self.cluster(model.quantizer.codebooks.detach())
        self.calls += 1
        if self.params.cf_weight:
            quantized = out.latent + (out.quantized - out.latent).detach()
            logits = quantized @ self.cf[index].T
            collaborative = F.cross_entropy(logits, torch.arange(len(index), device=logits.device))
            terms["collaborative"] = self.params.cf_weight * collaborative
        if self.params.diversity_weight:
            codebooks = model.quantizer.codebooks
            diversity = torch.stack([self.diversity(codebooks[level], out.codes[:, level], self.clusters[level])
                                     for level in range(model.n_levels)]).mean()
            terms["diversity"] = self.params.diversity_weight * diversity
        return terms

    def cluster(self, codebooks: torch.Tensor) -> torch.Tensor:
        """``[L, M]`` constrained k-means cluster of every code vector of every level."""
        size = codebooks.shape[1]
        k = min(self.params.diversity_clusters, size // 2)
        low, high = (max(2, int(np.floor(r * size / k))) for r in CLUSTER_SIZE_RANGE)
        high = max(high, -(-size // k))
        labels = [constrained_kmeans(level.cpu().numpy(), k, min(low, size // k), high, 10, self.rng)
                  for level in codebooks]
        return torch.as_tensor(np.stack(labels), device=codebooks.device)

    def diversity(self, codebook: torch.Tensor, codes: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
        """Cross-entropy towards a random same-cluster code over ``<e_c, e_j>``, ``j != c``."""
        positives = same_cluster_positives(codes, clusters, self.generator)
        rows = torch.arange(len(codes), device=codes.device)
        logits = (codebook[codes] @ codebook.T).index_put((rows, codes), torch.tensor(float("-inf"),
                                                                                      device=codes.device))
        return F.cross_entropy(logits, positives)


def same_cluster_positives(codes: torch.Tensor, clusters: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each code, a uniformly drawn other code of its cluster (clusters need at least two codes)."""
    order = torch.argsort(clusters, stable=True)
    counts = torch.bincount(clusters, minlength=int(clusters.max()) + 1)
    starts = torch.cumsum(counts, 0) - counts
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(len(order), device=order.device) - starts[clusters[order]]
    cluster = clusters[codes]
    draw = torch.rand(len(codes), generator=generator).to(codes.device)
    offset = (draw * (counts[cluster] - 1)).long()
    offset = offset + (offset >= rank_of[codes]).long()
    return order[starts[cluster] + offset]


def reassign_last_level(raw: torch.Tensor, residuals: np.ndarray, codebook: np.ndarray) -> tuple[torch.Tensor, int]:
    """Distinct last-level codes for items sharing a full code: per prefix, the colliding items take codes
    no other item of that prefix holds, by least total squared distance of their last-level residuals
    (a prefix with too few free codes is left as it is). Returns the codes and how many items moved."""
    codes = raw.clone()
    _, group, counts = torch.unique(raw, dim=0, return_inverse=True, return_counts=True)
    colliding = counts[group] > 1
    _, prefix = torch.unique(raw[:, :-1], dim=0, return_inverse=True)
    moved = 0
    for value in torch.unique(prefix[colliding]).tolist():
        members = torch.nonzero(prefix == value).squeeze(1)
        movers = members[colliding[members]]
        held = set(raw[members[~colliding[members]], -1].tolist())
        free = np.array([c for c in range(len(codebook)) if c not in held])
        if len(free) < len(movers):
            continue
        cost = ((residuals[movers.numpy()][:, None, :] - codebook[free][None]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        codes[movers[torch.as_tensor(rows)], -1] = torch.as_tensor(free[cols])
        moved += int((codes[movers, -1] != raw[movers, -1]).sum())
    return codes, moved


@register("letter")
class LETTER(TIGER):
    """TIGER's RQ-VAE with LETTER's collaborative and diversity regularisers and ranking-guided loss."""

    citation = ("Wang, Bao, Lin, Zhang, Li, Feng, Ng & Chua, Learnable Item Tokenization for Generative "
                "Recommendation, CIKM 2024.")
    Params = LETTERParams
    profiles = {
        "smoke": {**TIGER.profiles["smoke"], "latent_dim": 32, "diversity_clusters": 4},
        "quick": {},
        "paper": {**TIGER.profiles["paper"], "n_levels": 4},
    }

    def tokenize(self, data: TrainData) -> ItemCodes:
        p, ctx = self.params, self.ctx
        cf = ctx.cf_encoder(data).item_embeddings().detach().float()
        if cf.shape[1] != p.latent_dim:
            raise ConfigError(f"schemes.letter.latent_dim is {p.latent_dim} but the CF encoder (sasrec hidden) has "
                              f"{cf.shape[1]} dimensions; LETTER aligns them without a projection, set them equal")
        embeddings, train_items = self.content_embeddings(data)
        if p.rqvae_loss == "released":
            embeddings = embeddings * embeddings.shape[1] ** 0.5
        train = torch.as_tensor(train_items)
        cf_train = cf[train].to(ctx.device)
        rqvae, report = self.fit_regularized(embeddings[train], cf_train, p)
        raw = rqvae.encode(embeddings)
        rqvae_reference, _ = self.fit_rqvae(embeddings[train], p.latent_dim)
        reference = self.code_statistics(rqvae_reference, embeddings)
        reassigned, reassigned_items = self.reassign_collisions(rqvae, raw, embeddings)
        codes = level_codes(reassigned, p.codebook_size, extra_level=False)
        codes.raw_codes = raw + torch.arange(p.n_levels) * p.codebook_size
        last = report.history[-1] if report.history else {}
        codes.details.update(self.rqvae_statistics(report), reassigned_items=reassigned_items,
                             tiger_reference=reference, rqvae_collaborative_loss=last.get("collaborative"),
                             rqvae_diversity_loss=last.get("diversity"))
        if p.regularizer_ablation:
            codes.details["regularizer_ablation"] = {
                "letter": self.code_statistics(rqvae, embeddings),
                **self.single_regularizers(embeddings, train, cf_train), "none": reference}
        return codes

    def rqvae_class(self) -> type[RQVAE]:
        """The RQ-VAE of ``rqvae_loss``: the released code's averaged losses, or TIGER's."""
        return ReleasedRQVAE if self.params.rqvae_loss == "released" else RQVAE

    def fit_regularized(self, x: torch.Tensor, cf: torch.Tensor, params: LETTERParams) -> tuple[RQVAE, FitReport]:
        """The RQ-VAE trained on ``x`` with L_CF and L_Div at the weights of ``params`` (cached, see
        :meth:`regularizer_key`)."""
        batches = -(-len(x) // params.rqvae_batch_size)
        regularizers = Regularizers(cf, params, batches, self.ctx.seed)
        return self.fit_rqvae(x, params.latent_dim, regularizers, (cf,), extra_key=self.regularizer_key(params))

    @staticmethod
    def regularizer_key(params: LETTERParams) -> dict[str, Any]:
        """What names a regularised RQ-VAE fit in the cache: every field of ``params``, with those that do not
        change the fit (the recommender's options, :data:`ABLATION_FIT_INDEPENDENT`) at their defaults, so that
        runs differing only in them (e.g. tuning trials of ``temperature``) share one fit, and fields added
        later left out at their defaults, so that earlier cache entries keep their key."""
        defaults = LETTERParams()
        independent = [f.name for f in fields(LETTERParams)
                       if f.metadata.get("option") or f.name in ABLATION_FIT_INDEPENDENT]
        values = {**asdict(params), **{name: getattr(defaults, name) for name in independent}}
        return hashed_params(LETTERParams, values)

    def single_regularizers(self, embeddings: torch.Tensor, train: torch.Tensor,
                            cf_train: torch.Tensor) -> dict[str, dict[str, Any]]:
        """Code statistics of the same RQ-VAE (inputs, seed, data, ``rqvae_loss``) trained with L_CF only
        (``cf_only``: beta = 0) and with L_Div only (``diversity_only``: alpha = 0)."""
        p = self.params
        out = {}
        for name, params in (("cf_only", replace(p, diversity_weight=0.0)),
                             ("diversity_only", replace(p, cf_weight=0.0))):
            rqvae, _ = self.fit_regularized(embeddings[train], cf_train, params)
            out[name] = self.code_statistics(rqvae, embeddings)
        return out

    def code_statistics(self, rqvae: RQVAE, embeddings: torch.Tensor) -> dict[str, Any]:
        """Collision rate (before any re-assignment) and codebook usage per level of ``rqvae``'s codes."""
        stats = level_codes(rqvae.encode(embeddings), self.params.codebook_size, extra_level=False).statistics()
        return {key: stats[key] for key in ("collision_rate_before_dedup", "codebook_usage_per_level")}

    @torch.no_grad()
    def reassign_collisions(self, rqvae: RQVAE, raw: torch.Tensor,
                            embeddings: torch.Tensor) -> tuple[torch.Tensor, int]:
        """:func:`reassign_last_level` with the trained RQ-VAE's last residuals and codebook."""
        rqvae.eval()
        out = rqvae(embeddings.to(next(rqvae.parameters()).device))
        codebook = rqvae.quantizer.codebooks[-1].detach().cpu().numpy()
        return reassign_last_level(raw, out.residuals[-1].cpu().numpy(), codebook)
