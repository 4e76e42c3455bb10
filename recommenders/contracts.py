"""The paradigm contracts: what a scheme's ``tokenize`` returns and a paradigm's recommender reads.

* sequence: :class:`ItemCodes`, a short code of discrete tokens per item (decoded by constrained beam search);
* embedding: :class:`ItemVectors`, one continuous vector per item;
* set: :class:`ItemTokenSets`, an unordered set of tokens per item (continuous inputs or K codebook entries).

Each carries the scheme's own statistics in ``details`` and reports them, with the generic ones, through
``statistics()``: the run record's identifier statistics come from the returned object alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from recommenders.text import TextVocabulary


@dataclass
class ItemCodes:
    """Sequence-paradigm identifiers: ``codes[i]`` is item ``i``'s token sequence.

    Tokens are ids in ``[0, vocab_size)``: of the scheme's own new tokens (the recommender appends them to
    the backbone's vocabulary), or, when ``text_vocab`` is given, of the backbone's text vocabulary (words;
    ``vocab_size`` is then its size). Shorter codes are right-padded with -1. Codes must be unique, so every
    generated code names exactly one item. ``level_sizes`` (tokens per position, for fixed-length level-wise codes
    such as RQ-VAE's) enables per-level usage statistics; ``raw_codes`` are the codes before
    de-duplication, for the collision statistics. ``details`` are the scheme's own statistics of how the codes
    were made (losses, tree sizes, cache use), reported beside the generic ones by :meth:`statistics`.
    """

    codes: torch.Tensor
    vocab_size: int
    level_sizes: list[int] | None = None
    raw_codes: torch.Tensor | None = None
    text_vocab: TextVocabulary | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.text_vocab is not None and self.vocab_size != self.text_vocab.size:
            raise ValueError(f"ItemCodes over a text vocabulary need vocab_size {self.text_vocab.size}")
        if self.codes.dim() != 2 or self.codes.dtype != torch.long:
            raise ValueError("ItemCodes.codes must be a LongTensor [n_items, L]")
        if int(self.codes.max()) >= self.vocab_size or int(self.codes.min()) < -1:
            raise ValueError(f"ItemCodes.codes must lie in [0, {self.vocab_size}) or be -1 padding")
        if len(torch.unique(self.codes, dim=0)) != len(self.codes):
            raise ValueError("ItemCodes.codes are not unique: de-duplicate before building the recommender")

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    def lengths(self) -> torch.Tensor:
        return (self.codes >= 0).sum(dim=1)

    def statistics(self) -> dict[str, Any]:
        """:func:`code_statistics` and the scheme's :attr:`details`, for the run record."""
        return {**code_statistics(self), **self.details}


def code_table(codes: list[list[int]]) -> torch.Tensor:
    """``LongTensor [n, max length]`` of variable-length codes, right-padded with -1."""
    table = torch.full((len(codes), max(1, max(map(len, codes), default=1))), -1, dtype=torch.long)
    for row, code in enumerate(codes):
        table[row, :len(code)] = torch.tensor(code, dtype=torch.long)
    return table


def collision_rate(codes: torch.Tensor) -> float:
    """Share of items whose code is shared with at least one other item."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).float().mean())


def code_statistics(codes: ItemCodes) -> dict[str, Any]:
    """New tokens, code length, collision rates before/after de-duplication and codebook usage per level.

    Usage is measured on the codes before de-duplication (``raw_codes`` where given): what the tokenizer
    itself assigns, not an appended disambiguation level or a collision re-assignment.
    """
    lengths = codes.lengths().float()
    stats: dict[str, Any] = {
        "new_tokens": 0 if codes.text_vocab is not None else codes.vocab_size,
        "code_length_max": int(codes.codes.shape[1]),
        "code_length_mean": float(lengths.mean()),
        "collision_rate_before_dedup": collision_rate(codes.raw_codes) if codes.raw_codes is not None else 0.0,
        "collision_rate_after_dedup": collision_rate(codes.codes),
    }
    if codes.text_vocab is not None:
        stats["text_vocabulary"] = codes.text_vocab.source
    if codes.level_sizes:
        table = codes.raw_codes if codes.raw_codes is not None else codes.codes
        stats["codebook_usage_per_level"] = [
            float(len(torch.unique(table[:, level][table[:, level] >= 0])) / size)
            for level, size in enumerate(codes.level_sizes[:table.shape[1]])
        ]
    return stats


@dataclass
class ItemVectors:
    """Embedding-paradigm identifiers: ``vectors[i]`` is item ``i``'s single continuous token, ``[n_items, d]``.

    The recommender feeds a history as the sequence of its items' vectors (after a learned projection into
    the backbone's width) and scores every item with a linear head, so no code has to be decoded. ``details``
    are the scheme's own statistics of how the vectors were made.
    """

    vectors: torch.Tensor
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.dim() != 2 or not self.vectors.is_floating_point():
            raise ValueError("ItemVectors.vectors must be a FloatTensor [n_items, d]")
        if not bool(torch.isfinite(self.vectors).all()):
            raise ValueError("ItemVectors.vectors contain NaN or infinite values")

    @property
    def n_items(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def statistics(self) -> dict[str, Any]:
        """New tokens (none), code length (one vector), vector width and the scheme's :attr:`details`."""
        return {"new_tokens": 0, "code_length_max": 1, "vector_dim": self.dim, **self.details}


@dataclass
class ItemTokenSets:
    """Set-paradigm identifiers: every item is an unordered set of continuous tokens, one per named dimension.

    The tokens are produced inside the recommender (trained with it) from per-item inputs fixed here:
    ``cf`` ``[n_items, d_cf]`` gives one token, dimension ``cf`` (collaborative filtering); ``semantic``
    ``[n_items, d_sem]`` gives ``n_semantic`` tokens ``sem_1 .. sem_n`` through one shared tokenizer. Either
    source may be None (an ablation), not both. :attr:`dimensions` lists the token names in the order the
    recommender indexes them; that order is an index only, tokens of one item carry no order.

    Discrete sets (TokenRec): ``codes`` ``[n_items, K]`` gives every item K tokens, token k an entry of codebook k
    (``codebook_size`` entries each), dimensions ``code_1 .. code_K``; ``cf`` is then the space that generated
    vectors are grounded in. ``details`` are the scheme's own statistics of how the tokens were made.
    """

    cf: torch.Tensor | None
    semantic: torch.Tensor | None
    n_semantic: int = 0
    codes: torch.Tensor | None = None
    codebook_size: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cf is None and self.semantic is None:
            raise ValueError("ItemTokenSets needs at least one of cf and semantic")
        if (self.semantic is None) != (self.n_semantic == 0):
            raise ValueError("ItemTokenSets: give n_semantic > 0 exactly when semantic inputs are given")
        sizes = {source.shape[0] for source in (self.cf, self.semantic) if source is not None}
        for source in (self.cf, self.semantic):
            if source is not None and (source.dim() != 2 or not source.is_floating_point()):
                raise ValueError("ItemTokenSets inputs must be FloatTensors [n_items, d]")
        if self.codes is not None:
            if self.codes.dim() != 2 or self.codes.dtype != torch.long or self.codebook_size < 1:
                raise ValueError("ItemTokenSets.codes must be a LongTensor [n_items, K] with codebook_size >= 1")
            if int(self.codes.min()) < 0 or int(self.codes.max()) >= self.codebook_size:
                raise ValueError(f"ItemTokenSets.codes must lie in [0, {self.codebook_size})")
            sizes.add(self.codes.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"ItemTokenSets: cf, semantic and codes cover different item counts {sorted(sizes)}")

    @property
    def n_items(self) -> int:
        return (self.cf if self.cf is not None else self.semantic).shape[0]

    @property
    def dimensions(self) -> list[str]:
        """Token names, e.g. ``["cf", "sem_1", "sem_2"]`` (``["code_1", ..., "code_K"]`` for discrete sets)."""
        if self.codes is not None:
            return [f"code_{k + 1}" for k in range(self.codes.shape[1])]
        return (["cf"] if self.cf is not None else []) + [f"sem_{j + 1}" for j in range(self.n_semantic)]

    def statistics(self) -> dict[str, Any]:
        """Tokens per item and their dimensions (with collisions and codebook usage for discrete sets) and
        the scheme's :attr:`details`."""
        stats: dict[str, Any] = {"new_tokens": 0, "code_length_max": len(self.dimensions),
                                 "dimensions": self.dimensions}
        if self.codes is not None:
            collisions = collision_rate(self.codes)
            stats.update(new_tokens=self.codes.shape[1] * self.codebook_size,
                         collision_rate_before_dedup=collisions, collision_rate_after_dedup=collisions,
                         codebook_usage_per_level=codebook_usage(self.codes, self.codebook_size))
        return {**stats, **self.details}


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """Share of the ``codebook_size`` entries of each codebook that ``codes`` ``[n, K]`` use."""
    return [float(len(torch.unique(codes[:, k])) / codebook_size) for k in range(codes.shape[1])]
