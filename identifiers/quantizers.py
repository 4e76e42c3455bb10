"""Quantizers: components that turn continuous item vectors into short tuples of discrete codes.

A :class:`Quantizer` is fitted on item vectors and ``encode``s any vector to ``n_levels`` codes, level ``l``
in ``[0, codebook_sizes[l])``. :class:`RQVAE` is the residual-quantised variational auto-encoder of TIGER
(Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023; RQ-VAE after Zeghidour et
al., "SoundStream", 2021 and Lee et al., "Autoregressive Image Generation using Residual Quantization",
CVPR 2022). Its loss is a dict of named terms so that LETTER (Wang et al., "Learnable Item Tokenization for
Generative Recommendation", CIKM 2024) can add its collaborative and diversity regularisers through
``fit(..., extra_loss_fn=...)`` or by overriding :meth:`RQVAE.loss_terms`.
:func:`deduplicate` appends TIGER's extra code level that makes colliding codes unique; :func:`level_codes`
turns level-wise codes into the tokens of :class:`~identifiers.base.ItemCodes`. :func:`cached_fit` trains a
quantizer once per settings and training vectors and keeps it in the run's cache folder.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ
from vector_quantize_pytorch.vector_quantize_pytorch import cdist as vq_cdist

from benchmark.hashing import content_key, without_off_values
from identifiers.base import RunContext
from recommenders.contracts import ItemCodes
from recommenders.trainer import FitCheckpoint, compile_step, train_epochs


@dataclass(frozen=True)
class FitConfig:
    """How a quantizer is trained: ``epochs`` passes over the vectors in shuffled mini-batches of
    ``batch_size``, optimiser ``optimizer`` (``adagrad`` as in TIGER, or ``adam``) at learning rate ``lr``;
    ``seed`` fixes the k-means initialisation and the batch order; ``max_steps > 0`` stops after that many steps
    in all epochs together (``run.max_fit_steps``)."""

    epochs: int = 500
    batch_size: int = 1024
    lr: float = 0.4
    optimizer: str = "adagrad"
    seed: int = 0
    max_steps: int = 0


@dataclass
class FitReport:
    """What fitting did: per-epoch mean of every loss term (``history``), the loss terms of the trained model
    on all training vectors (``final``, eval mode), the number of training vectors and the seconds spent (those
    of earlier, killed processes included); ``resumed_from_epoch``: the epochs taken from such a process's
    checkpoint; ``loaded_from_cache``: this run read the fitted quantizer from the cache (:func:`cached_fit`),
    and ``seconds`` is the time of the fit that wrote it."""

    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    n_vectors: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    loaded_from_cache: bool = False


class Quantizer(nn.Module, ABC):
    """Maps vectors ``[n, input_dim]`` to codes ``[n, n_levels]``; level ``l`` has ``codebook_sizes[l]`` codes."""

    def __init__(self, codebook_sizes: list[int]) -> None:
        super().__init__()
        self.codebook_sizes = list(codebook_sizes)

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    @abstractmethod
    def fit(self, x: torch.Tensor, cfg: FitConfig, progress: bool = True, checkpoint: Path | None = None) -> FitReport:
        """Train on the vectors ``x``, resuming from and keeping a :class:`~recommenders.trainer.FitCheckpoint` at
        ``checkpoint`` when given."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes ``LongTensor [n, n_levels]`` of the vectors ``x``."""


@dataclass
class RQVAEOutput:
    """One forward pass: latent ``z = E(x)``, its quantisation ``z_q = sum_d e_{c_d}`` (passed to the decoder
    with a straight-through gradient towards ``z``), reconstruction ``x_hat = D(z_q)``, codes ``[b, L]``,
    residuals ``r_d`` and chosen code vectors ``e_{c_d}`` (both ``[L, b, latent_dim]``; the code vectors carry
    the gradient to the codebooks)."""

    latent: torch.Tensor
    quantized: torch.Tensor
    reconstruction: torch.Tensor
    codes: torch.Tensor
    residuals: torch.Tensor
    code_vectors: torch.Tensor


ExtraLossFn = Callable[["RQVAE", RQVAEOutput, torch.Tensor], dict[str, torch.Tensor]]


class RQVAE(Quantizer):
    """TIGER's RQ-VAE: MLP encoder, residual quantiser with ``n_levels`` codebooks, mirrored MLP decoder.

    Encoder ``input_dim -> hidden_dims -> latent_dim`` (ReLU between layers; TIGER: 512, 256, 128 and a 32-d
    latent); decoder the mirror image. Residual quantisation (TIGER eq. in §3.1): ``r_0 = z``,
    ``c_d = argmin_k ||r_d - e^d_k||``, ``r_{d+1} = r_d - e^d_{c_d}``; the codebooks are
    ``vector_quantize_pytorch.ResidualVQ`` codebooks, learned by gradient (no EMA) and initialised by k-means
    on the library's first forward pass, which :meth:`fit` makes before its first step; each step then chooses the
    library's codes itself (:func:`nearest_code`). Loss (per item, averaged over the batch)::

        ||x - x_hat||^2 + sum_d ( ||sg[r_d] - e_{c_d}||^2 + beta * ||r_d - sg[e_{c_d}]||^2 )
    """

    def __init__(self, input_dim: int, latent_dim: int = 32, hidden_dims: tuple[int, ...] = (512, 256, 128),
                 n_levels: int = 3, codebook_size: int = 256, beta: float = 0.25, kmeans_init: bool = True,
                 kmeans_iters: int = 10) -> None:
        super().__init__([codebook_size] * n_levels)
        self.beta = beta
        self.encoder = _mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.quantizer = ResidualVQ(dim=latent_dim, num_quantizers=n_levels, codebook_size=codebook_size,
                                    kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, learnable_codebook=True,
                                    ema_update=False, rotation_trick=False, commitment_weight=0.0)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        latent = self.encoder(x)
        codebooks = self.quantizer.codebooks
        residuals, code_vectors, codes, residual = [], [], [], latent
        for level in range(self.n_levels):
            code = nearest_code(residual.detach(), codebooks[level])
            vector = codebooks[level][code]
            residuals.append(residual)
            code_vectors.append(vector)
            codes.append(code)
            residual = residual - vector.detach()
        code_vectors_t = torch.stack(code_vectors)
        quantized = code_vectors_t.sum(dim=0)
        straight_through = latent + (quantized - latent).detach()
        return RQVAEOutput(latent, quantized, self.decoder(straight_through), torch.stack(codes, dim=1),
                           torch.stack(residuals), code_vectors_t)

    def loss_terms(self, x: torch.Tensor, out: RQVAEOutput) -> dict[str, torch.Tensor]:
        """TIGER's loss terms: ``reconstruction``, ``codebook`` (moves codes to residuals) and ``commitment``
        (beta-weighted; moves residuals to codes); each a squared distance summed over features."""
        return {
            "reconstruction": _sq_dist(x, out.reconstruction),
            "codebook": _sq_dist(out.residuals.detach(), out.code_vectors) * self.n_levels,
            "commitment": self.beta * _sq_dist(out.residuals, out.code_vectors.detach()) * self.n_levels,
        }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of a forward pass on ``x``; their sum is the training loss."""
        return self.loss_terms(x, self(x))

    def fit(self, x: torch.Tensor, cfg: FitConfig, progress: bool = True, checkpoint: Path | None = None,
            extra_loss_fn: ExtraLossFn | None = None, compiled: bool = False) -> FitReport:
        """Train on ``x`` (rows = items) for ``cfg.epochs`` epochs of shuffled mini-batches.

        The codebooks are k-means initialised on all of ``x`` before the first step (TIGER initialises on
        the first batch; with batches of 1,024 and catalogues of a few thousand training items this is a
        comparable sample, and it avoids k-means seeing fewer vectors than codes). ``extra_loss_fn(model,
        output, index)`` may add named loss terms for the batch whose rows are ``x[index]``. The fit resumes
        from and keeps a checkpoint at ``checkpoint``, except with ``extra_loss_fn`` (LETTER's regularisers keep
        state of their own between batches, which a checkpoint of the RQ-VAE would not restore).

        ``compiled`` (``run.compile``, only without ``extra_loss_fn``): each step's forward pass and loss, and the
        backward pass through them, run under :func:`~recommenders.trainer.compile_step`, one graph per batch
        size (a full batch and the epoch's last), on CUDA recorded as CUDA graphs: a step of this small MLP is
        bound by kernel launches there (docs/reference/gpu/README.md). The same arithmetic rounded otherwise, so
        the codes may differ from an eager fit's; the cache key names it (:meth:`TIGER.fit_rqvae
        <identifiers.tiger.TIGER.fit_rqvae>`).
        """
        start = time.perf_counter()
        device = next(self.parameters()).device
        x = x.to(device=device, dtype=torch.float32)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.train()
        with torch.no_grad():
            self.quantizer(self.encoder(x))
        report = FitReport(n_vectors=len(x))

        def batches():
            for index in torch.randperm(len(x), generator=generator).to(device).split(cfg.batch_size):
                yield len(index), index

        def loss_terms(index: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self(x[index])
            terms = self.loss_terms(x[index], out)
            if extra_loss_fn is not None:
                terms.update(extra_loss_fn(self, out, index))
            return terms

        resumable = checkpoint is not None and extra_loss_fn is None
        resume = FitCheckpoint(checkpoint, self, generator) if resumable else None
        if compiled and extra_loss_fn is None:
            loss_terms = compile_step(loss_terms, device, cuda_graphs=True, dynamic=False)
        epochs = train_epochs(_optimizer(cfg, self.parameters()), cfg.epochs, batches, loss_terms, "rq-vae",
                              "its learning rate (rqvae_lr)", progress, max_steps=cfg.max_steps, checkpoint=resume)
        report.history, report.resumed_from_epoch = epochs.history, epochs.resumed_from_epoch
        report.final = self.evaluate(x)
        report.seconds = epochs.earlier_seconds + time.perf_counter() - start
        return report

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
        """Mean loss terms over ``x`` in eval mode, plus ``codebook_usage`` (share of codes used per level)."""
        self.eval()
        totals: dict[str, float] = {}
        codes = []
        for batch in x.split(batch_size):
            out = self(batch)
            codes.append(out.codes)
            for name, value in self.loss_terms(batch, out).items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(batch)
        result = {name: value / max(1, len(x)) for name, value in totals.items()}
        all_codes = torch.cat(codes)
        for level, size in enumerate(self.codebook_sizes):
            result[f"codebook_usage_level{level}"] = len(torch.unique(all_codes[:, level])) / size
        return result

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        self.eval()
        device = next(self.parameters()).device
        x = x.to(device=device, dtype=torch.float32)
        codes = [self.quantizer(self.encoder(batch))[1] for batch in x.split(batch_size)]
        return torch.cat(codes).long().cpu()


def fit_key(name: str, settings: dict[str, Any], cfg: FitConfig, tensors: Sequence[torch.Tensor]) -> str:
    """Cache key of a fitted quantizer: everything that determines its weights, i.e. ``name`` (its class), its
    constructor ``settings``, the fit config (seed included) and the ``tensors`` it is trained on (the vectors,
    and whatever an extra loss reads), so that other settings or other data never reuse stale weights."""
    fit = without_off_values(asdict(cfg), {"max_steps": 0})
    return content_key({"quantizer": name, "settings": settings, "fit": fit},
                       [tensor.detach().to("cpu", torch.float32) for tensor in tensors])


def cached_fit(ctx: RunContext, kind: str, quantizer: Quantizer, settings: dict[str, Any], cfg: FitConfig,
               tensors: Sequence[torch.Tensor], fit: Callable[[Path], FitReport]) -> FitReport:
    """``fit(checkpoint)``, which trains ``quantizer`` keeping its progress at ``checkpoint``
    (:meth:`~identifiers.base.RunContext.load_or_fit`), run once per :func:`fit_key`: the weights and report are
    saved as ``<cache>/<kind>/<key>.pt`` (the checkpoint is then removed) and later runs load them into ``quantizer``
    instead of training it again; a run killed during the fit resumes it from the checkpoint (a TIGER RQ-VAE of
    the paper's 20,000 epochs can be fitted over several shorter runs). ``settings`` are the quantizer's
    constructor arguments plus anything else that changes its training."""
    def train(checkpoint: Path) -> dict[str, Any]:
        report = fit(checkpoint)
        return {"state": quantizer.state_dict(), "report": asdict(report)}

    saved, cached = ctx.load_or_fit(kind, fit_key(type(quantizer).__qualname__, settings, cfg, tensors), train)
    quantizer.load_state_dict(saved["state"])
    return replace(FitReport(**saved["report"]), loaded_from_cache=cached)


def deduplicate(codes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """TIGER's extra code level: items sharing a code get ``0, 1, 2, ...`` (in item order), the others ``0``.

    Returns the codes with the extra level appended (``[n, L + 1]``) and the extra level's size (the largest
    number of items sharing one code; 1 when there is no collision).
    """
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)
    groups = inverse.numpy()
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - starts
    extra = torch.from_numpy(rank)
    return torch.cat([codes, extra[:, None]], dim=1), int(rank.max()) + 1


def level_codes(raw: torch.Tensor, codebook_size: int, extra_level: bool) -> ItemCodes:
    """Level-wise codes ``[n, L]`` as tokens (level ``l``'s code ``c`` is token ``l * codebook_size + c``).

    With ``extra_level`` (TIGER), or whenever codes collide, :func:`deduplicate` appends a level that tells
    colliding items apart, with as many tokens as the largest group sharing a code.
    """
    n_levels = raw.shape[1]
    level_sizes = [codebook_size] * n_levels
    codes = raw
    if extra_level or len(torch.unique(raw, dim=0)) < len(raw):
        codes, extra_size = deduplicate(raw)
        level_sizes.append(extra_size)
    offsets = torch.tensor(np.cumsum([0, *level_sizes[:-1]]), dtype=torch.long)
    return ItemCodes(codes + offsets, vocab_size=sum(level_sizes), level_sizes=level_sizes,
                     raw_codes=raw + offsets[:n_levels])


def nearest_code(residual: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The index of the ``codebook [K, d]`` entry nearest each ``residual [B, d]``: the code ``ResidualVQ``
    chooses, computed as it computes it (its own ``cdist`` on the same shapes, the first of equal distances), so
    the codes are its codes bit for bit (``tests/test_tiger.py``). Without the rest of its forward pass, which
    :meth:`RQVAE.forward` does not use: per level an initialisation check that reads a device scalar (a
    host-device sync on a GPU), one-hot codes, loss terms and reshapes, most of an RQ-VAE step's operator calls
    outside the MLPs, which bound the step's time on a GPU (docs/reference/gpu/README.md)."""
    return (-vq_cdist(residual[None], codebook[None])[0]).argmax(dim=-1)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance over the last dimension, averaged over every other dimension."""
    return (a - b).pow(2).sum(dim=-1).mean()


RQVAE_OPTIMIZERS = ("adam", "adagrad")
"""Optimizers of :meth:`RQVAE.fit` (``FitConfig.optimizer``)."""


def _optimizer(cfg: FitConfig, parameters) -> torch.optim.Optimizer:
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(parameters, lr=cfg.lr, initial_accumulator_value=0.1)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}'; choose from adagrad, adam")


def residual_kmeans(x: np.ndarray, fit_rows: np.ndarray, levels: int, k: int, seed: int) -> np.ndarray:
    """Codes ``[n, levels]`` by residual k-means (a non-parametric residual quantiser): level ``l`` is k-means
    (``k`` clusters, fitted on ``x[fit_rows]``) of what the centroids of the levels before leave unexplained;
    every row takes its nearest centroid."""
    from sklearn.cluster import KMeans

    codes = np.zeros((len(x), levels), dtype=np.int64)
    residual = x.astype(np.float64)
    for level in range(levels):
        kmeans = KMeans(n_clusters=min(k, len(fit_rows)), n_init=10, random_state=seed).fit(residual[fit_rows])
        codes[:, level] = kmeans.predict(residual)
        residual = residual - kmeans.cluster_centers_[codes[:, level]]
    return codes


def constrained_kmeans(x: np.ndarray, k: int, min_size: int, max_size: int, iters: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Cluster labels ``[n]`` of ``x`` ``[n, d]`` into ``k`` clusters of ``min_size .. max_size`` points.

    Lloyd's iterations (Bradley, Bennett & Demiriz, "Constrained K-Means Clustering", 2000, the problem
    LETTER solves with the ``k-means-constrained`` package) with a capacity-constrained assignment step: in
    rounds, every unassigned point proposes its nearest centre that still has room below ``max_size`` and
    each centre accepts its closest proposers up to that room; then clusters under ``min_size`` take, one at
    a time, the point whose move costs least from a cluster above ``min_size``. Requires
    ``k * min_size <= n <= k * max_size``.
    """
    n = len(x)
    if not k * min_size <= n <= k * max_size:
        raise ValueError(f"cannot split {n} points into {k} clusters of {min_size}..{max_size}")
    centres = x[rng.choice(n, k, replace=False)]
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        distances = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        labels = np.full(n, -1)
        sizes = np.zeros(k, dtype=np.int64)
        while (labels < 0).any():
            points = np.flatnonzero(labels < 0)
            choice = np.where(sizes < max_size, distances[points], np.inf).argmin(axis=1)
            for centre in np.unique(choice):
                proposers = points[choice == centre]
                accepted = proposers[np.argsort(distances[proposers, centre], kind="stable")]
                accepted = accepted[:max_size - sizes[centre]]
                labels[accepted] = centre
                sizes[centre] += len(accepted)
        while (sizes < min_size).any():
            centre = int(np.argmin(sizes))
            donors = sizes[labels] > min_size
            cost = np.where(donors, distances[:, centre] - distances[np.arange(n), labels], np.inf)
            point = int(np.argmin(cost))
            sizes[labels[point]] -= 1
            labels[point] = centre
            sizes[centre] += 1
        centres = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
    return labels
