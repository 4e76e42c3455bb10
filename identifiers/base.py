"""The scheme contract: how items become identifiers, and which recommender uses them.

A scheme is fitted on :class:`~benchmark.splits.TrainData` (training sequences only) plus item content
(known at catalogue time, available for every item through :class:`RunContext`). It returns a
:class:`~recommenders.base.Recommender`; the runner trains it with validation-based early stopping and
evaluates it on test. Nothing in this contract can reach validation or test targets.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from benchmark.config import ConfigError, RunConfig, resolve
from benchmark.data.dataset import Dataset
from benchmark.splits import Examples, TrainData
from recommenders import trainer
from recommenders.base import Recommender
from recommenders.sasrec import SASRec, SASRecParams, cf_cache_key

PARADIGMS = ("baseline", "sequence", "embedding", "set")


@dataclass
class RunContext:
    """What a scheme may use besides the training data: config, item content, device and caches.

    ``valid`` and ``warm`` are there for model selection (early stopping, choosing a knob) only; test
    examples are never part of the context.
    """

    config: RunConfig
    dataset: Dataset
    valid: Examples
    warm: np.ndarray
    device: torch.device
    cache_dir: Path
    progress: bool = True

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
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{key}{suffix}"

    def fit(self, model: Recommender, data: TrainData, train_cfg=None, desc: str = "train") -> trainer.TrainReport:
        """Train ``model`` with the shared loop, early stopping on this run's validation examples."""
        cfg = self.config
        return trainer.fit(model, data, self.valid, self.warm, train_cfg or cfg.train, cfg.ks, cfg.eval_batch_size,
                           self.device, cfg.seed, self.progress, desc=desc)

    def cf_encoder(self, data: TrainData) -> SASRec:
        """A SASRec trained on the training split (CE loss, early stopping on validation), cached on disk.

        Built with the ``sasrec`` scheme's parameters and training settings for this profile and seed, so
        the CF encoder that E4SRec, LETTER and SETRec build on is configured like the ``sasrec`` row.
        """
        from identifiers.registry import get_scheme

        cfg = self.config
        resolved = resolve(cfg.dataset, get_scheme("sasrec"), cfg.seed, cfg.profile)
        params, train_cfg = SASRecParams(**resolved.params), resolved.train
        key = cf_cache_key(cfg.dataset, cfg.split, cfg.k_core, cfg.seed, cfg.max_history, params, train_cfg)
        path = self.cache_path("cf", key, ".pt")
        model = SASRec(data.n_items, cfg.max_history, params).to(self.device)
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location=self.device))
        else:
            self.fit(model, data, train_cfg, desc="cf-encoder (sasrec)")
            trainer.save_atomic(path, model.state_dict())
        return model.eval()


@dataclass
class NoParams:
    """This scheme has no hyper-parameters."""


class Scheme(ABC):
    """A registered identifier scheme (or baseline).

    Class attributes: ``paradigm`` (one of :data:`PARADIGMS`), ``citation`` (paper), ``Params`` (a
    dataclass whose fields are the hyper-parameters, documented in its docstring, defaults = quick
    profile), ``profiles`` (per-profile overrides of ``Params``), ``train_profiles`` (per-profile
    overrides of the run's ``train`` section) and ``uses_backbone``.
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
                    raise ConfigError(f"{where}: unknown parameter '{key}'; valid: {', '.join(sorted(valid)) or 'none'}")
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

    Tokens are ids in ``[0, vocab_size)`` of the scheme's own vocabulary (the recommender maps them to
    backbone tokens); shorter codes are right-padded with -1. Codes must be unique, so every generated
    code names exactly one item. ``level_sizes`` (tokens per position, for fixed-length level-wise codes
    such as RQ-VAE's) enables per-level usage statistics; ``raw_codes`` are the codes before
    de-duplication, for the collision statistics.
    """

    codes: torch.Tensor
    vocab_size: int
    level_sizes: list[int] | None = None
    raw_codes: torch.Tensor | None = None

    def __post_init__(self) -> None:
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


def collision_rate(codes: torch.Tensor) -> float:
    """Share of items whose code is shared with at least one other item."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).float().mean())


def code_statistics(codes: ItemCodes) -> dict[str, Any]:
    """New tokens, code length, collision rates before/after de-duplication and codebook usage per level."""
    lengths = codes.lengths().float()
    stats: dict[str, Any] = {
        "new_tokens": codes.vocab_size,
        "code_length_max": int(codes.codes.shape[1]),
        "code_length_mean": float(lengths.mean()),
        "collision_rate_before_dedup": collision_rate(codes.raw_codes) if codes.raw_codes is not None else 0.0,
        "collision_rate_after_dedup": collision_rate(codes.codes),
    }
    if codes.level_sizes:
        stats["codebook_usage_per_level"] = [
            float(len(torch.unique(codes.codes[:, level][codes.codes[:, level] >= 0])) / size)
            for level, size in enumerate(codes.level_sizes)
        ]
    return stats


class SequenceScheme(Scheme):
    """Sequence paradigm: ``tokenize`` gives every item a short code of discrete tokens; a generative
    backbone learns to emit the next item's code, decoded by beam search constrained to valid codes."""

    paradigm = "sequence"

    @abstractmethod
    def tokenize(self, data: TrainData) -> ItemCodes:
        """Fit the tokenizer on training data and item content; return every item's code."""

    def build(self, data: TrainData) -> Recommender:
        from recommenders.sequence import GenerativeRecommender

        self.codes = self.tokenize(data)
        return GenerativeRecommender(self.codes, self.ctx.config.backbone, self.ctx.config.max_history,
                                     beam_size=getattr(self.params, "beam_size", 20))

    def statistics(self) -> dict[str, Any]:
        return code_statistics(self.codes)
