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
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd
import torch

from benchmark.config import ConfigError, RunConfig, TrainConfig, check_params, hashed_params, option_fields
from benchmark.data.dataset import Dataset
from benchmark.data.quality import check_content
from benchmark.safeio import WriteError, load_or_compute
from benchmark.splits import Examples, TrainData
from recommenders import trainer
from recommenders.backbones import BackboneSpec, finetune_mode
from recommenders.base import Recommender
from recommenders.contracts import ItemCodes, ItemTokenSets, ItemVectors
from recommenders.embedding import EmbeddingOptions, EmbeddingRecommender
from recommenders.sasrec import SASRec, SASRecParams, cf_cache_key
from recommenders.sequence import GenerativeRecommender, SequenceOptions
from recommenders.set import SetOptions, SetRecommender
from recommenders.text import TextVocabulary, text_vocabulary


def backbone_spec(config: RunConfig) -> BackboneSpec:
    """``config``'s backbone and how it is fine-tuned (``run.backbone``, ``finetune``, ``lora``, ...)."""
    lora = dataclasses.asdict(config.lora) if config.lora is not None else {}
    return BackboneSpec(config.backbone, config.finetune, {**BackboneSpec(config.backbone).lora, **lora},
                        config.gradient_checkpointing, config.backbone_dropout)


def canonical(config: RunConfig) -> RunConfig:
    """``config`` with its fine-tuning spelled one way per run, so that one run has one record: ``finetune`` is
    ``auto`` where the mode given is the one ``auto`` picks for the backbone (``full`` for a preset, ``lora`` for a
    checkpoint), and a fully fine-tuned backbone carries no ``lora`` (its settings would have no effect but a
    record of their own). ``run`` and ``tune`` apply it to every config they resolve."""
    if config.backbone == "none":
        return config
    mode = finetune_mode(BackboneSpec(config.backbone, config.finetune))
    auto = finetune_mode(BackboneSpec(config.backbone))
    return dataclasses.replace(config, finetune="auto" if mode == auto else config.finetune,
                               lora=config.lora if mode == "lora" else None)


@dataclass
class RunContext:
    """What a scheme may use besides the training data: config, item content, device and caches.

    ``valid`` and ``warm`` are there for model selection (early stopping, choosing a knob) only; test
    examples are never part of the context. ``cf_config`` is the resolved config of the ``sasrec`` scheme for
    this dataset, profile and seed (the runner resolves it), which :meth:`cf_encoder` trains. ``components``
    collects what shared, cached components (the CF encoder) report, for the run record.
    """

    config: RunConfig
    dataset: Dataset
    valid: Examples
    warm: np.ndarray
    device: torch.device
    cache_dir: Path
    progress: bool = True
    cf_config: RunConfig | None = None
    components: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def items(self) -> pd.DataFrame:
        """Item content of the whole catalogue (title, description, brand, categories, price)."""
        return self.dataset.items

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def backbone(self) -> BackboneSpec:
        """The run's backbone and how it is fine-tuned (``run.backbone``, ``finetune``, ``lora``, ...)."""
        return backbone_spec(self.config)

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
        """What ``compute()`` returns, cached as ``<cache>/<kind>/<key>.pt`` (:func:`benchmark.safeio.load_or_compute`:
        safe loads, atomic writes, the global random generators kept), and whether it was read from the file.
        ``key`` must name everything that determines the result (:func:`benchmark.hashing.content_key`)."""
        return load_or_compute(self.cache_path(kind, key, ".pt"), compute)

    def load_or_fit(self, kind: str, key: str,
                    fit: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """:meth:`load_or_compute` of ``fit(checkpoint)``, a component fit that keeps its progress at ``checkpoint``
        (``<cache>/checkpoints/<kind>-<key>.pt``, a :class:`~recommenders.trainer.FitCheckpoint`) so that a killed
        run resumes it; the checkpoint is removed once the fitted component is saved."""
        checkpoint = self.cache_path("checkpoints", f"{kind}-{key}", ".pt")
        result = self.load_or_compute(kind, key, lambda: fit(checkpoint))
        checkpoint.unlink(missing_ok=True)
        return result

    def text_vocabulary(self) -> TextVocabulary:
        """The backbone's text vocabulary: its own tokenizer, or BPE fitted on every item's text for a preset."""
        cfg = self.config
        return text_vocabulary(cfg.backbone, self.dataset.item_texts(), cfg.text_vocab_size, self.cache_dir)

    def fit(self, model: Recommender, data: TrainData, train_cfg: TrainConfig | None = None,
            desc: str = "train", compiled: bool | None = None) -> trainer.TrainReport:
        """Train ``model`` with the shared loop, early stopping on this run's validation examples; its loss
        compiled as ``compiled`` says (None: ``run.compile``)."""
        cfg = self.config
        return trainer.fit(model, data, self.valid, self.warm, train_cfg or cfg.train, cfg.ks, cfg.eval_batch_size,
                           self.device, cfg.seed, self.progress, desc=desc,
                           compiled=cfg.compile if compiled is None else compiled)

    def cf_encoder(self, data: TrainData, loss: str | None = None) -> SASRec:
        """A SASRec trained on the training split (early stopping on validation), cached on disk; its loss is
        the ``sasrec`` scheme's (softmax cross-entropy by default) unless ``loss`` names another (``bce``).

        Built with the ``sasrec`` scheme's parameters and training settings of :attr:`cf_config` (the
        defaults of this profile: a user YAML's ``schemes.sasrec`` or ``train`` section does not change the
        shared encoder), so the CF encoder that E4SRec, LETTER, SETRec and DreamRec build on is the model of
        the ``sasrec`` row of a default run; for the same reason it is trained eagerly under ``run.compile``
        (a compiled loss rounds differently, and the cache key, which does not name it, would hand that encoder
        to eager runs). :attr:`components` records it, with its training time even when it was loaded
        from the cache.
        """
        if self.cf_config is None:
            raise ValueError("RunContext.cf_config is not set: resolve the sasrec scheme's config for the CF encoder")
        cfg = self.config
        params, train_cfg = SASRecParams(**self.cf_config.params), self.cf_config.train
        if loss is not None:
            params = dataclasses.replace(params, loss=loss)
        key = cf_cache_key(data, cfg.dataset, cfg.split, cfg.seed, params, train_cfg)
        model = SASRec(data.n_items, cfg.max_history, params).to(self.device)

        def train() -> dict[str, Any]:
            report = self.fit(model, data, train_cfg, desc="cf-encoder (sasrec)", compiled=False)
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


@dataclass
class Built:
    """What a scheme hands the runner: the untrained recommender and its identifiers' statistics (new tokens,
    code length, collisions, usage, and the scheme's own ``details``) for the run record."""

    model: Recommender
    statistics: dict[str, Any]


class Scheme(ABC):
    """A registered identifier scheme (or baseline).

    Class attributes: ``paradigm`` (one of :data:`benchmark.records.PARADIGMS`), ``citation`` (paper),
    ``Params`` (a dataclass whose fields are the hyper-parameters, documented in its docstring with the paper's
    values; its defaults are the quick profile's unless the docstring says otherwise; ranges and choices declared
    with :func:`benchmark.config.param`, cross-field rules in an optional ``check()`` method), ``profiles``
    (per-profile overrides of ``Params``), ``train_profiles`` (per-profile overrides of the run's ``train``
    section), ``uses_backbone`` and ``needs_content`` (item fields its identifiers are made from: ``text``,
    ``categories``; see :meth:`required_content`). ``Options`` is the options dataclass of the paradigm's
    recommender: the ``Params`` fields declared ``param(..., option=True)`` are passed to it, and each must be
    one of its fields. ``not_compilable``: why the scheme's training loss cannot run under ``run.compile`` (the
    configuration then refuses it), empty when it can.
    """

    name: ClassVar[str] = ""
    paradigm: ClassVar[str] = "baseline"
    citation: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    Options: ClassVar[type | None] = None
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    train_profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    uses_backbone: ClassVar[bool] = True
    needs_content: ClassVar[tuple[str, ...]] = ()
    not_compilable: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any], ctx: RunContext) -> None:
        self.params = self.Params(**params)
        self.ctx = ctx

    @classmethod
    def resolve_params(cls, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults, then the profile's overrides, then the user's, checked: unknown keys, wrong types, values
        out of range and options the recommender does not have are a ConfigError naming the key."""
        valid = {f.name for f in dataclasses.fields(cls.Params)}
        merged = dataclasses.asdict(cls.Params())
        for where, values in ((f"scheme {cls.name} profile {profile}", cls.profiles.get(profile, {})),
                              (f"config schemes.{cls.name}", overrides or {})):
            for key, value in values.items():
                if key not in valid:
                    raise ConfigError(f"{where}: unknown parameter '{key}'; "
                                      f"valid: {', '.join(sorted(valid)) or 'none'}")
                merged[key] = value
        checked = check_params(cls.Params, merged, f"schemes.{cls.name}")
        option_fields(cls.Params, cls.Options, f"schemes.{cls.name}")
        return hashed_params(cls.Params, checked)

    @classmethod
    def required_content(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """The item fields (of :data:`benchmark.data.quality.CONTENT_FIELDS`) this scheme needs with ``params``;
        the run refuses a dataset where too few items have them (:func:`benchmark.data.quality.check_content`)."""
        return cls.needs_content

    def not_applicable(self, dataset: Dataset) -> str | None:
        """Why this scheme cannot run on ``dataset`` (no item has a field it needs), or None when it can; a field
        that only too few items have stops the run with a :class:`~benchmark.data.dataset.DataError`."""
        return check_content(dataset, self.name, self.required_content(dataclasses.asdict(self.params)))

    @abstractmethod
    def build(self, data: TrainData) -> Built:
        """Fit the identifiers on training data and item content; return the untrained recommender and the
        identifiers' statistics."""

    def options(self, **fixed: Any) -> Any:
        """The recommender's :attr:`Options`: the ``Params`` fields declared as options, then ``fixed``."""
        names = option_fields(self.Params, self.Options, f"schemes.{self.name}")
        return self.Options(**{**{name: getattr(self.params, name) for name in names}, **fixed})


class BaselineScheme(Scheme):
    """A baseline without identifiers (popularity, SASRec): ``recommender`` is all it defines."""

    paradigm = "baseline"

    @abstractmethod
    def recommender(self, data: TrainData) -> Recommender:
        """The untrained baseline model."""

    def build(self, data: TrainData) -> Built:
        return Built(self.recommender(data), {})


class ParadigmScheme(Scheme):
    """An identifier scheme of one paradigm, in two documented stages.

    1. ``tokenize(data)`` fits the identifiers on training data and item content and returns the paradigm's
       contract object (:attr:`contract`), which carries its own statistics;
    2. ``recommender(identifiers)`` builds the untrained recommender that reads them (default: the paradigm's
       shared one, configured by the ``Params`` options).

    Schemes whose identifiers are learned together with the recommender's own model (IDGenRec alternates its
    ID generator with the recommender; STORE tokenizes with the backbone that then recommends) implement the
    **two-stage hook** :meth:`two_stage` instead of ``tokenize``: it returns the final identifiers and the
    recommender built on them. :meth:`build` is the same for every scheme and checks the contract.
    """

    contract: ClassVar[type]

    def tokenize(self, data: TrainData) -> Any:
        """Fit the identifiers on training data and item content; return one :attr:`contract` object."""
        raise NotImplementedError(f"{type(self).__name__} implements neither tokenize nor two_stage")

    @abstractmethod
    def recommender(self, identifiers: Any) -> Recommender:
        """The untrained recommender that reads ``identifiers``."""

    def two_stage(self, data: TrainData) -> tuple[Any, Recommender]:
        """The identifiers and the recommender built on them (default: :meth:`tokenize`, then
        :meth:`recommender`)."""
        identifiers = self.tokenize(data)
        return identifiers, self.recommender(identifiers)

    def build(self, data: TrainData) -> Built:
        identifiers, model = self.two_stage(data)
        if not isinstance(identifiers, self.contract):
            raise TypeError(f"scheme {self.name} returned {type(identifiers).__name__}, not the {self.paradigm} "
                            f"paradigm's {self.contract.__name__}")
        if identifiers.n_items != data.n_items:
            raise ValueError(f"scheme {self.name}: identifiers for {identifiers.n_items} items, the catalogue has "
                             f"{data.n_items}")
        return Built(model, identifiers.statistics())


class SequenceScheme(ParadigmScheme):
    """Sequence paradigm: ``tokenize`` gives every item a short code of discrete tokens (:class:`ItemCodes`); a
    generative backbone learns to emit the next item's code, decoded by beam search constrained to valid codes.

    Options: :class:`recommenders.sequence.SequenceOptions` (``beam_size``, ``temperature``, ``user_tokens``);
    the run's ``constrained_decoding`` says whether beam search is restricted to valid codes.
    """

    paradigm = "sequence"
    contract = ItemCodes
    Options = SequenceOptions

    def recommender(self, identifiers: ItemCodes) -> Recommender:
        return GenerativeRecommender(identifiers, self.ctx.backbone, self.ctx.config.max_history,
                                     self.sequence_options())

    def sequence_options(self) -> SequenceOptions:
        """The recommender's options, decoding constrained as the run says."""
        return self.options(constrained=self.ctx.config.constrained_decoding)


class EmbeddingScheme(ParadigmScheme):
    """Embedding paradigm: ``tokenize`` gives every item one vector (:class:`ItemVectors`); a backbone encodes
    the history of vectors and a linear head scores all items (cross-entropy over the catalogue, no decoding).

    Options: :class:`recommenders.embedding.EmbeddingOptions`.
    """

    paradigm = "embedding"
    contract = ItemVectors
    Options = EmbeddingOptions

    def recommender(self, identifiers: ItemVectors) -> Recommender:
        return EmbeddingRecommender(identifiers, self.ctx.backbone, self.ctx.config.max_history,
                                    self.options())


class SetScheme(ParadigmScheme):
    """Set paradigm: ``tokenize`` gives every item an unordered set of tokens (:class:`ItemTokenSets`); the
    backbone generates one vector per token dimension in a single pass and each is grounded to all items.

    Options: :class:`recommenders.set.SetOptions`; knobs chosen on validation are scored with the run's
    ``train.valid_metric``.
    """

    paradigm = "set"
    contract = ItemTokenSets
    Options = SetOptions

    def recommender(self, identifiers: ItemTokenSets) -> Recommender:
        return SetRecommender(identifiers, self.ctx.backbone, self.ctx.config.max_history,
                              self.options(selection_metric=self.ctx.config.train.valid_metric))
