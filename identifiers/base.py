"""The scheme contract: how items become identifiers, and which recommender uses them.

A scheme is fitted on :class:`~benchmark.splits.TrainData` (training sequences only) plus item content
(known at catalogue time, available for every item through :class:`RunContext`). It returns a
:class:`~recommenders.base.Recommender`; the runner trains it with validation-based early stopping and
evaluates it on test. Test examples never reach a scheme; validation examples reach it only through
:class:`RunContext`, for model selection (early stopping, inference-time knobs), never for fitting.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import pandas as pd
import torch

from benchmark.config import ConfigError, RunConfig, TrainConfig, resolve
from benchmark.data.dataset import Dataset
from benchmark.safeio import WriteError, plain, safe_load, save_tensors
from benchmark.splits import Examples, TrainData
from recommenders import trainer
from recommenders.base import Recommender
from recommenders.sasrec import SASRec, SASRecParams, cf_cache_key
from recommenders.text import TextVocabulary, text_vocabulary

if TYPE_CHECKING:
    from recommenders.sequence import SequenceOptions

PARADIGMS = ("baseline", "sequence", "embedding", "set")


@dataclass
class RunContext:
    """What a scheme may use besides the training data: config, item content, device and caches.

    ``valid`` and ``warm`` are there for model selection (early stopping, choosing a knob) only; test
    examples are never part of the context. ``components`` collects what shared, cached components (the CF
    encoder) report, for the run record.
    """

    config: RunConfig
    dataset: Dataset
    valid: Examples
    warm: np.ndarray
    device: torch.device
    cache_dir: Path
    progress: bool = True
    components: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def items(self) -> pd.DataFrame:
        """Item content of the whole catalogue (title, description, brand, categories, price)."""
        return self.dataset.items

    @property
    def seed(self) -> int:
        return self.config.seed

    def cache_path(self, kind: str, key: str, suffix: str) -> Path:
        """A file under the cache folder, e.g. ``.cache/cf/<key>.pt``; its folder exists."""
        folder = self.cache_dir / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WriteError(f"cannot create the cache folder {folder}: {error.strerror or error}") from error
        return folder / f"{key}{suffix}"

    def load_or_compute(self, kind: str, key: str,
                        compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """What ``compute()`` returns, written atomically to ``<cache>/<kind>/<key>.pt`` the first time and read
        back (onto the CPU) by every later call with the same key, so a repeated or killed-and-resumed run keeps
        what was fitted; and whether it was read from the file. ``key`` must name everything that determines
        the result. What ``compute`` returns is saved as tensors and plain values (:func:`~benchmark.safeio.plain`,
        also what this call returns) and read with
        :func:`~benchmark.safeio.safe_load`, and one that does not load that way (e.g. a crafted pickle) is
        reported and computed again, never executed. ``compute`` runs under
        :func:`~recommenders.trainer.random_state_kept`, so what the run draws afterwards does not depend on
        whether the file existed."""
        path = self.cache_path(kind, key, ".pt")
        saved = safe_load(path) if path.is_file() else None
        if saved is not None:
            return saved, True
        with trainer.random_state_kept():
            saved = plain(compute())
        save_tensors(path, saved)
        return saved, False

    def text_vocabulary(self) -> TextVocabulary:
        """The backbone's text vocabulary: its own tokenizer, or BPE fitted on every item's text for a preset."""
        cfg = self.config
        return text_vocabulary(cfg.backbone, self.dataset.item_texts(), cfg.text_vocab_size, self.cache_dir)

    def fit(self, model: Recommender, data: TrainData, train_cfg: TrainConfig | None = None,
            desc: str = "train") -> trainer.TrainReport:
        """Train ``model`` with the shared loop, early stopping on this run's validation examples."""
        cfg = self.config
        return trainer.fit(model, data, self.valid, self.warm, train_cfg or cfg.train, cfg.ks, cfg.eval_batch_size,
                           self.device, cfg.seed, self.progress, desc=desc)

    def cf_encoder(self, data: TrainData) -> SASRec:
        """A SASRec trained on the training split (CE loss, early stopping on validation), cached on disk.

        Built with the ``sasrec`` scheme's parameters and training settings for this profile and seed (the
        defaults of that profile: a user YAML's ``schemes.sasrec`` or ``train`` section does not change the
        shared encoder), so the CF encoder that E4SRec, LETTER, SETRec and DreamRec build on is the model of
        the ``sasrec`` row of a default run. :attr:`components` records it, with its training time even when
        it was loaded from the cache.
        """
        from identifiers.registry import get_scheme

        cfg = self.config
        resolved = resolve(cfg.dataset, get_scheme("sasrec"), cfg.seed, cfg.profile)
        params, train_cfg = SASRecParams(**resolved.params), resolved.train
        key = cf_cache_key(data, cfg.dataset, cfg.split, cfg.seed, params, train_cfg)
        model = SASRec(data.n_items, cfg.max_history, params).to(self.device)

        def train() -> dict[str, Any]:
            report = self.fit(model, data, train_cfg, desc="cf-encoder (sasrec)")
            return {"state": model.state_dict(), "report": dataclasses.asdict(report)}

        saved, cached = self.load_or_compute("cf", key, train)
        model.load_state_dict(saved["state"])
        report = saved["report"]
        self.components["cf_encoder"] = {
            "model": "sasrec", "params": dataclasses.asdict(params), "cache_key": key, "loaded_from_cache": cached,
            "train_s": report["seconds"], "epochs_run": report["epochs_run"], "best_epoch": report["best_epoch"],
            f"best_valid_{train_cfg.valid_metric}": report["best_valid"]}
        return model.eval()


@dataclass
class NoParams:
    """This scheme has no hyper-parameters."""


class Scheme(ABC):
    """A registered identifier scheme (or baseline).

    Class attributes: ``paradigm`` (one of :data:`PARADIGMS`), ``citation`` (paper), ``Params`` (a
    dataclass whose fields are the hyper-parameters, documented in its docstring with the paper's values; its
    defaults are the quick profile's unless the docstring says otherwise), ``profiles`` (per-profile
    overrides of ``Params``), ``train_profiles`` (per-profile overrides of the run's ``train`` section) and
    ``uses_backbone``.
    """

    name: ClassVar[str] = ""
    paradigm: ClassVar[str] = "baseline"
    citation: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    train_profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    uses_backbone: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any], ctx: RunContext) -> None:
        self.params = self.Params(**params)
        self.ctx = ctx

    @classmethod
    def resolve_params(cls, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults, then the profile's overrides, then the user's; unknown keys are a ConfigError."""
        valid = {f.name for f in dataclasses.fields(cls.Params)}
        merged = dataclasses.asdict(cls.Params())
        for where, values in ((f"scheme {cls.name} profile {profile}", cls.profiles.get(profile, {})),
                              (f"config schemes.{cls.name}", overrides or {})):
            for key, value in values.items():
                if key not in valid:
                    raise ConfigError(f"{where}: unknown parameter '{key}'; "
                                      f"valid: {', '.join(sorted(valid)) or 'none'}")
                merged[key] = value
        return merged

    def not_applicable(self, dataset: Dataset) -> str | None:
        """Why this scheme cannot run on ``dataset`` (e.g. no categories), or None when it can."""
        return None

    @abstractmethod
    def build(self, data: TrainData) -> Recommender:
        """Fit the identifiers on training data and item content; return the untrained recommender."""

    def statistics(self) -> dict[str, Any]:
        """Identifier statistics for the run record (new tokens, code length, collisions, usage)."""
        return {}


@dataclass
class ItemCodes:
    """Sequence-paradigm identifiers: ``codes[i]`` is item ``i``'s token sequence.

    Tokens are ids in ``[0, vocab_size)``: of the scheme's own new tokens (the recommender appends them to
    the backbone's vocabulary), or, when ``text_vocab`` is given, of the backbone's text vocabulary (words;
    ``vocab_size`` is then its size). Shorter codes are right-padded with -1. Codes must be unique, so every
    generated code names exactly one item. ``level_sizes`` (tokens per position, for fixed-length level-wise codes
    such as RQ-VAE's) enables per-level usage statistics; ``raw_codes`` are the codes before
    de-duplication, for the collision statistics.
    """

    codes: torch.Tensor
    vocab_size: int
    level_sizes: list[int] | None = None
    raw_codes: torch.Tensor | None = None
    text_vocab: TextVocabulary | None = None

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


class SequenceScheme(Scheme):
    """Sequence paradigm: ``tokenize`` gives every item a short code of discrete tokens; a generative
    backbone learns to emit the next item's code, decoded by beam search constrained to valid codes.

    ``Params`` fields named like those of :class:`recommenders.sequence.SequenceOptions` (``beam_size``,
    ``temperature``, ``user_tokens``) configure the recommender; the run's ``constrained_decoding`` says
    whether beam search is restricted to valid codes.
    """

    paradigm = "sequence"

    @abstractmethod
    def tokenize(self, data: TrainData) -> ItemCodes:
        """Fit the tokenizer on training data and item content; return every item's code."""

    def build(self, data: TrainData) -> Recommender:
        from recommenders.sequence import GenerativeRecommender

        self.codes = self.tokenize(data)
        return GenerativeRecommender(self.codes, self.ctx.config.backbone, self.ctx.config.max_history,
                                     self.sequence_options())

    def sequence_options(self) -> SequenceOptions:
        """The recommender's options: the ``Params`` fields named like them, decoding as the run says."""
        from recommenders.sequence import SequenceOptions

        return options_from_params(SequenceOptions, self.params, constrained=self.ctx.config.constrained_decoding)

    def statistics(self) -> dict[str, Any]:
        return code_statistics(self.codes)


def options_from_params(options_cls: type, params: Any, **fixed: Any) -> Any:
    """An options dataclass of a paradigm's recommender, its fields taken from ``params`` where they exist."""
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(options_cls) if hasattr(params, f.name)}
    return options_cls(**{**values, **fixed})


@dataclass
class ItemVectors:
    """Embedding-paradigm identifiers: ``vectors[i]`` is item ``i``'s single continuous token, ``[n_items, d]``.

    The recommender feeds a history as the sequence of its items' vectors (after a learned projection into
    the backbone's width) and scores every item with a linear head, so no code has to be decoded.
    """

    vectors: torch.Tensor

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


@dataclass
class ItemTokenSets:
    """Set-paradigm identifiers: every item is an unordered set of continuous tokens, one per named dimension.

    The tokens are produced inside the recommender (trained with it) from per-item inputs fixed here:
    ``cf`` ``[n_items, d_cf]`` gives one token, dimension ``cf`` (collaborative filtering); ``semantic``
    ``[n_items, d_sem]`` gives ``n_semantic`` tokens ``sem_1 .. sem_n`` through one shared tokenizer. Either
    source may be None (an ablation), not both. :attr:`dimensions` lists the token names in the order the
    recommender indexes them; that order is an index only, tokens of one item carry no order.
    """

    cf: torch.Tensor | None
    semantic: torch.Tensor | None
    n_semantic: int = 0

    def __post_init__(self) -> None:
        if self.cf is None and self.semantic is None:
            raise ValueError("ItemTokenSets needs at least one of cf and semantic")
        if (self.semantic is None) != (self.n_semantic == 0):
            raise ValueError("ItemTokenSets: give n_semantic > 0 exactly when semantic inputs are given")
        sizes = {source.shape[0] for source in (self.cf, self.semantic) if source is not None}
        for source in (self.cf, self.semantic):
            if source is not None and (source.dim() != 2 or not source.is_floating_point()):
                raise ValueError("ItemTokenSets inputs must be FloatTensors [n_items, d]")
        if len(sizes) != 1:
            raise ValueError(f"ItemTokenSets: cf and semantic cover different item counts {sorted(sizes)}")

    @property
    def n_items(self) -> int:
        return (self.cf if self.cf is not None else self.semantic).shape[0]

    @property
    def dimensions(self) -> list[str]:
        """Token names, e.g. ``["cf", "sem_1", "sem_2"]``."""
        return (["cf"] if self.cf is not None else []) + [f"sem_{j + 1}" for j in range(self.n_semantic)]


class EmbeddingScheme(Scheme):
    """Embedding paradigm: ``tokenize`` gives every item one vector; a backbone encodes the history of
    vectors and a linear head scores all items (cross-entropy over the catalogue, no decoding).

    ``Params`` fields named like those of :class:`recommenders.embedding.EmbeddingOptions` configure the
    recommender.
    """

    paradigm = "embedding"

    @abstractmethod
    def tokenize(self, data: TrainData) -> ItemVectors:
        """Fit the item vectors on training data and item content; return one vector per item."""

    def build(self, data: TrainData) -> Recommender:
        from recommenders.embedding import EmbeddingOptions, EmbeddingRecommender

        self.vectors = self.tokenize(data)
        options = options_from_params(EmbeddingOptions, self.params)
        return EmbeddingRecommender(self.vectors, self.ctx.config.backbone, self.ctx.config.max_history, options)

    def statistics(self) -> dict[str, Any]:
        return {"new_tokens": 0, "code_length_max": 1, "vector_dim": self.vectors.dim}


class SetScheme(Scheme):
    """Set paradigm: ``tokenize`` gives every item an unordered set of continuous tokens; the backbone
    generates one vector per token dimension in a single pass and each is grounded to all items.

    ``Params`` fields named like those of :class:`recommenders.set.SetOptions` configure the recommender;
    knobs chosen on validation are scored with the run's ``train.valid_metric``.
    """

    paradigm = "set"

    @abstractmethod
    def tokenize(self, data: TrainData) -> ItemTokenSets:
        """Fit the token inputs on training data and item content; return them for every item."""

    def build(self, data: TrainData) -> Recommender:
        from recommenders.set import SetOptions, SetRecommender

        self.tokens = self.tokenize(data)
        options = options_from_params(SetOptions, self.params, selection_metric=self.ctx.config.train.valid_metric)
        return SetRecommender(self.tokens, self.ctx.config.backbone, self.ctx.config.max_history, options)

    def statistics(self) -> dict[str, Any]:
        return {"new_tokens": 0, "code_length_max": len(self.tokens.dimensions),
                "dimensions": self.tokens.dimensions}
