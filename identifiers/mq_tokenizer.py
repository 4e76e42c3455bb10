"""The Masked Vector-Quantized tokenizer (MQ-Tokenizer) of TokenRec (Qu, Fan, Zhao & Li, "TokenRec: Learning
to Tokenize ID for LLM-based Generative Recommendation", arXiv:2406.10450, 2024).

An item's (or a user's) collaborative representation ``x`` (``[d]``, e.g. from LightGCN) becomes K discrete
tokens:

1. **Masking**: during training every element of ``x`` is zeroed independently with probability ``rho``
   (:func:`random_mask`, ``mask_mode="element"``), so the tokens cannot depend on any single coordinate;
   encoding (after training) reads the whole vector. ``mask_mode="span"`` is the masking of the TokenRec
   authors' code (``code/model.py``, class ``MQ``; :func:`span_masks`): the features are cut into K equal
   spans, encoder k may only have features of span k masked (each with probability ``rho``), one mask per
   batch shared by its rows, and the masks accumulate (encoder k reads ``x`` with spans 0..k masked).
2. **K-way encoder**: K separate MLP encoders map the (masked) vector to K sub-vectors ``z_k`` of width
   ``code_dim``.
3. **K codebooks**: ``z_k`` is replaced by its nearest (Euclidean) entry of codebook ``C_k`` (``M`` entries);
   its index is token k of the item. The codebooks are parallel, not residual, so the K tokens of an item
   carry no order among them. They are initialised by k-means on the sub-vectors of all training vectors.
4. **K-to-1 decoder**: an MLP reconstructs ``x`` from the concatenated quantised sub-vectors, the gradient
   passing the quantiser by the straight-through estimator (van den Oord et al., "Neural Discrete
   Representation Learning", NeurIPS 2017).

Loss per item (VQ-VAE, van den Oord et al. 2017, Eq. 3; summed over the K codebooks, averaged over items)::

    ||x - x_hat||^2 + sum_k ( ||sg[z_k] - e_k||^2 + beta * ||z_k - sg[e_k]||^2 )

The reconstruction target is the unmasked ``x`` (a masked auto-encoder). TokenRec fits one tokenizer on
the items' and another on the users' representations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from identifiers.quantizers import FitConfig, FitReport, Quantizer
from recommenders.set import mlp
from recommenders.trainer import FitCheckpoint, train_epochs

ADAMW_WEIGHT_DECAY = 0.01
"""Weight decay of the ``adamw`` optimiser (as in the TokenRec authors' tokenizer training)."""
OPTIMIZERS = ("adamw", "adam", "adagrad")
MASK_MODES = ("element", "span")


def random_mask(x: torch.Tensor, ratio: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero every element of ``x`` independently with probability ``ratio``.

    Returns the masked tensor (same shape) and the boolean mask, True where an element was zeroed.
    """
    masked = torch.rand(x.shape, generator=generator, device=x.device) < ratio
    return x.masked_fill(masked, 0.0), masked


def span_masks(x: torch.Tensor, n_spans: int, ratio: float,
               generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The span masking of the TokenRec authors' code: ``n_spans`` inputs, input k with the masks of spans
    0..k applied, where span k is features ``[k d / n, (k + 1) d / n)`` and each of its features is masked with
    probability ``ratio``, one draw per feature shared by every row.

    Returns the inputs (each shaped like ``x``) and the union of the masks ``[b, d]`` (True where zeroed in the
    last input). The authors' spans are ``int(d / n)`` wide and leave each span's last feature (and the
    remainder of the division) unmasked; here the spans cover every feature.
    """
    d = x.shape[1]
    drawn = torch.rand(d, generator=generator, device=x.device) < ratio
    span = torch.arange(d, device=x.device) * n_spans // d
    inputs, mask = [], torch.zeros(d, dtype=torch.bool, device=x.device)
    for k in range(n_spans):
        mask = mask | (drawn & (span == k))
        inputs.append(x.masked_fill(mask, 0.0))
    return inputs, mask.expand_as(x)


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance over the last dimension, averaged over every other dimension."""
    return (a - b).pow(2).sum(dim=-1).mean()


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """``[k, d]`` centres of Lloyd's k-means on ``x`` ``[n, d]``, initialised at ``k`` random rows.

    With fewer rows than centres some rows are drawn more than once; an empty cluster keeps its centre.
    """
    n = len(x)
    start = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(0, n, (k,), generator=generator)
    centres = x[start.to(x.device)].clone()
    for _ in range(iters):
        assignment = torch.cdist(x, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=k).to(x.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def make_optimizer(cfg: FitConfig, parameters) -> torch.optim.Optimizer:
    """AdamW (weight decay 0.01), Adam or Adagrad at ``cfg.lr``, by ``cfg.optimizer``."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=ADAMW_WEIGHT_DECAY)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(parameters, lr=cfg.lr, initial_accumulator_value=0.1)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}'; choose from {', '.join(OPTIMIZERS)}")


@dataclass
class MQOutput:
    """One forward pass: sub-vectors ``latents`` and chosen code vectors ``code_vectors`` (both ``[b, K, c]``),
    ``codes`` ``[b, K]``, the reconstruction ``[b, d]`` and the mask ``[b, d]`` (True where zeroed; with span
    masking the union of the K encoders' masks; all False in eval)."""

    latents: torch.Tensor
    code_vectors: torch.Tensor
    codes: torch.Tensor
    reconstruction: torch.Tensor
    mask: torch.Tensor


class MQTokenizer(Quantizer):
    """Masking (``mask_mode``: ``element`` or ``span``), K-way MLP encoder, K parallel codebooks of
    ``codebook_size`` entries, K-to-1 MLP decoder."""

    def __init__(self, input_dim: int, n_codebooks: int = 3, codebook_size: int = 256, code_dim: int = 64,
                 hidden_dims: tuple[int, ...] = (128, 256), mask_ratio: float = 0.1, beta: float = 0.25,
                 kmeans_iters: int = 10, mask_mode: str = "element") -> None:
        super().__init__([codebook_size] * n_codebooks)
        if mask_mode not in MASK_MODES:
            raise ValueError(f"unknown mask_mode '{mask_mode}'; choose from {', '.join(MASK_MODES)}")
        self.input_dim, self.code_dim = input_dim, code_dim
        self.mask_ratio, self.beta, self.kmeans_iters, self.mask_mode = mask_ratio, beta, kmeans_iters, mask_mode
        self.encoders = nn.ModuleList(mlp([input_dim, *hidden_dims, code_dim], 0.0) for _ in range(n_codebooks))
        self.codebooks = nn.Parameter(torch.empty(n_codebooks, codebook_size, code_dim)
                                      .uniform_(-1.0 / codebook_size, 1.0 / codebook_size))
        self.decoder = mlp([n_codebooks * code_dim, *reversed(hidden_dims), input_dim], 0.0)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, K, code_dim]``: sub-vector k from encoder k."""
        return torch.stack([encoder(x) for encoder in self.encoders], dim=1)

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest entry of codebook k for sub-vector k: codes ``[b, K]`` and code vectors ``[b, K, code_dim]``."""
        distances = torch.cdist(latents.transpose(0, 1), self.codebooks.to(latents.dtype))
        codes = distances.argmin(dim=2).T
        levels = torch.arange(self.n_levels, device=codes.device)
        return codes, self.codebooks[levels[None, :], codes]

    def forward(self, x: torch.Tensor) -> MQOutput:
        if self.training and self.mask_mode == "span":
            inputs, mask = span_masks(x, self.n_levels, self.mask_ratio)
            latents = torch.stack([encoder(part) for encoder, part in zip(self.encoders, inputs)], dim=1)
        else:
            if self.training:
                x, mask = random_mask(x, self.mask_ratio)
            else:
                mask = torch.zeros_like(x, dtype=torch.bool)
            latents = self.latents(x)
        codes, code_vectors = self.quantize(latents.detach())
        straight_through = latents + (code_vectors - latents).detach()
        return MQOutput(latents, code_vectors, codes, self.decoder(straight_through.flatten(1)), mask)

    def loss_terms(self, x: torch.Tensor, out: MQOutput) -> dict[str, torch.Tensor]:
        """``reconstruction`` of the unmasked ``x``, ``codebook`` and beta-weighted ``commitment`` terms (each a
        squared distance summed over features, averaged over items; the VQ terms summed over codebooks)."""
        return {
            "reconstruction": squared_distance(x, out.reconstruction),
            "codebook": squared_distance(out.latents.detach(), out.code_vectors) * self.n_levels,
            "commitment": self.beta * squared_distance(out.latents, out.code_vectors.detach()) * self.n_levels,
        }

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """k-means initialisation of every codebook on the sub-vectors of all rows of ``x`` (unmasked)."""
        was_training = self.training
        self.eval()
        latents = self.latents(x)
        for level in range(self.n_levels):
            self.codebooks[level] = kmeans(latents[:, level], self.codebook_sizes[level], self.kmeans_iters, generator)
        self.train(was_training)

    def fit(self, x: torch.Tensor, cfg: FitConfig, progress: bool = True, checkpoint: Path | None = None) -> FitReport:
        """Train on ``x`` (rows = items) for ``cfg.epochs`` epochs of shuffled mini-batches, after k-means
        initialisation of the codebooks; ``cfg.optimizer`` is ``adamw`` (weight decay 0.01), ``adam`` or
        ``adagrad``; resuming from and keeping a checkpoint at ``checkpoint`` when given."""
        start = time.perf_counter()
        device = self.codebooks.device
        x = x.to(device=device, dtype=torch.float32)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.init_codebooks(x, generator)
        optimizer = make_optimizer(cfg, self.parameters())
        report = FitReport(n_vectors=len(x))
        self.train()

        def batches():
            for index in torch.randperm(len(x), generator=generator).to(device).split(cfg.batch_size):
                yield len(index), x[index]

        resume = FitCheckpoint(checkpoint, self, generator) if checkpoint is not None else None
        epochs = train_epochs(optimizer, cfg.epochs, batches, lambda batch: self.loss_terms(batch, self(batch)),
                              "mq-tokenizer", "its learning rate (tokenizer_lr)", progress, max_steps=cfg.max_steps,
                              checkpoint=resume)
        report.history, report.resumed_from_epoch = epochs.history, epochs.resumed_from_epoch
        report.final = self.evaluate(x)
        report.seconds = epochs.earlier_seconds + time.perf_counter() - start
        return report

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """Loss terms over ``x`` in eval mode (no masking) and ``codebook_usage_level{k}``."""
        self.eval()
        x = x.to(device=self.codebooks.device, dtype=torch.float32)
        out = self(x)
        result = {name: float(value) for name, value in self.loss_terms(x, out).items()}
        for level, size in enumerate(self.codebook_sizes):
            result[f"codebook_usage_level{level}"] = len(torch.unique(out.codes[:, level])) / size
        return result

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """``LongTensor [n, K]`` on ``x``'s device: token k of each row is its nearest entry of codebook k.

        No masking, in either mode (the encoders have no dropout), so a model holding a fitted tokenizer can
        tokenize new vectors while it trains.
        """
        return self.quantize(self.latents(x.float()))[0].long()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``LongTensor [n, K]`` (CPU): :meth:`codes` of every row, in eval mode."""
        self.eval()
        return self.codes(x.to(device=self.codebooks.device)).cpu()
