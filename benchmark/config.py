"""Run configuration: dataclasses resolved from ``defaults.yaml``, profiles, schemes, a user YAML and the CLI."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

import yaml

from benchmark.data.registry import has_released_split
from benchmark.hashing import checkpoint_fingerprint, content_key, without_off_values

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
PROFILES = ("smoke", "quick", "paper")
SPLITS = ("loo", "temporal", "fixed")
CANDIDATES = ("all", "segment")
SECTIONS = ("run", "train", "schemes")
MAX_SEED = 2**32 - 1
"""numpy's seeds are 0 .. 2**32 - 1."""
MAX_HISTORY = 1024
"""Largest ``run.max_history``: histories are padded to it, one row per example (the papers use at most 200)."""
RUN_MINIMUM = {"seed": 0, "k_core": 1, "max_history": 1, "eval_batch_size": 1, "text_vocab_size": 1,
               "max_eval_users": 0, "max_fit_steps": 0}
TRAIN_MINIMUM = {"epochs": 0, "batch_size": 1, "weight_decay": 0, "grad_clip": 0, "patience": 1,
                 "max_valid_examples": 0, "max_batches": 0, "eval_every": 1, "valid_users": 0}
"""Smallest valid value of each numeric run / train key (``defaults.yaml`` documents them)."""
LATER_KEYS = {"max_eval_users": (0,), "candidates": ("all",), "finetune": ("auto", "none"),
              "lora": (None, "default"), "gradient_checkpointing": (False,), "compile": (False,),
              "max_fit_steps": (0,), "backbone_fingerprint": (None,), "backbone_dropout": (None,)}
LATER_TRAIN_KEYS = {"max_batches": 0, "eval_every": 1, "valid_users": 0, "bucketing": False}
"""Run and train keys added after the first records, with their off values (``"default"``: the defaults.yaml value;
see :class:`RunConfig`)."""


class ConfigError(ValueError):
    """A configuration file, key or value is invalid; the message names it and the valid choices."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and model-selection settings (documented in ``defaults.yaml``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    patience: int
    valid_metric: str
    max_valid_examples: int
    amp: bool
    max_batches: int = 0
    eval_every: int = 1
    valid_users: int = 0
    bucketing: bool = False

    @property
    def valid_k(self) -> int:
        """The cut-off K of ``valid_metric`` (``ndcg@10`` -> 10; its form is checked when the config resolves)."""
        return int(self.valid_metric.split("@")[1])

    def to_dict(self) -> dict[str, Any]:
        """The fields, without those of :data:`LATER_TRAIN_KEYS` at their off value (see :class:`RunConfig`)."""
        return without_off_values(dataclasses.asdict(self), LATER_TRAIN_KEYS)


FINETUNE = ("auto", "full", "lora")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA settings of ``run.lora`` (documented in ``defaults.yaml``)."""

    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...] | None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one experiment; its hash names the result record.

    ``params`` are the scheme's resolved hyper-parameters. Where the run happens (device, folders) is not
    part of the experiment and lives in :class:`Environment`. Keys of :data:`LATER_KEYS`, added after records
    were first written, are left out of :meth:`to_dict` (and so of the hash and the record) while they hold
    their off value, so the records written before them keep their names and config ids.

    ``backbone`` is a preset, a Hugging Face cache name, or a checkpoint folder's path as :func:`backbone_identity`
    spells it; ``backbone_fingerprint`` is the content fingerprint of that folder or of the cached name's snapshot
    (None for a preset), so a checkpoint saved again to the same path, or a newer cached revision, is another
    experiment, with its own record and epoch checkpoint.
    """

    dataset: str
    scheme: str
    backbone: str
    seed: int
    profile: str
    split: str
    k_core: int
    max_history: int
    ks: tuple[int, ...]
    eval_batch_size: int
    text_vocab_size: int
    constrained_decoding: bool
    train: TrainConfig
    candidates: str = "all"
    finetune: str = "auto"
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False
    compile: bool = False
    backbone_dropout: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    max_eval_users: int = 0
    max_fit_steps: int = 0
    backbone_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ks"] = list(self.ks)
        out["train"] = self.train.to_dict()
        for key, offs in LATER_KEYS.items():
            if out[key] in offs or (key == "lora" and "default" in offs and out[key] == _default_lora()):
                del out[key]
        return out

    def hash(self) -> str:
        """A short stable hash of the experiment-defining fields."""
        return content_key(self.to_dict(), length=12)

    def check_cutoffs(self, n_items: int) -> None:
        """Refuse cut-offs (``run.ks``, ``train.valid_metric``'s K) above the dataset's ``n_items``: a ranking
        model (beam search) would return that many items per user, which can exhaust memory after training, and
        a score model's Recall@K would be 1 by construction."""
        for name, k in [("run.ks", max(self.ks)), ("train.valid_metric", self.train.valid_k)]:
            if k > n_items:
                raise ConfigError(f"{name}: cut-off {k} exceeds the {n_items:,} items of dataset '{self.dataset}' "
                                  f"(k-core {self.k_core}); use values from 1 to {n_items:,}")

    @property
    def run_name(self) -> str:
        """``dataset__scheme__backbone__split__profile__sSEED``; a checkpoint folder's backbone part ends with
        ``@`` and its fingerprint."""
        backbone = self.backbone + (f"@{self.backbone_fingerprint}" if self.backbone_fingerprint else "")
        return f"{self.dataset}__{self.scheme}__{backbone}__{self.split}__{self.profile}__s{self.seed}"


@dataclass(frozen=True)
class Environment:
    """Where and how runs execute (device, folders, CPU threads); recorded, but not part of the config hash."""

    device: str = "auto"
    data_dir: str | None = None
    results_dir: str = "results"
    reports_dir: str = "reports"
    cache_dir: str = ".cache"
    progress: bool = True
    threads: int | None = None
    """CPU threads set for the process (``--threads``; None: left as the process found them)."""
    jobs: int = 1
    """Worker processes of the command that ran it (``run --jobs``), sharing the machine: its times include their
    contention."""


def load_defaults() -> dict[str, Any]:
    with open(DEFAULTS_PATH) as handle:
        return yaml.safe_load(handle)


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a mapping with a repeated key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"repeated key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_user_config(path: str | Path) -> dict[str, Any]:
    """Read a user YAML; only the sections ``run``, ``train`` and ``schemes``, each a mapping, are allowed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: invalid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    for section, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"config file {path}: section '{section}' must be a mapping of key: value, "
                              f"got {_shown(value)}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    """Override keys of ``base``; unknown keys are an error naming ``where`` and the valid keys."""
    if override is not None and not isinstance(override, dict):
        raise ConfigError(f"{where}: expected a mapping of key: value, got {_shown(override)}")
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if key not in out:
            raise ConfigError(f"{where}: unknown key '{key}'; valid keys: {', '.join(sorted(out))}")
        out[key] = value
    return out


def resolve(dataset: str, scheme_cls: type, seed: int | None, profile: str, user: dict[str, Any] | None = None,
            cli: dict[str, Any] | None = None) -> RunConfig:
    """Resolve one run's configuration for a dataset and a registered scheme class."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; choose from {', '.join(PROFILES)}")
    defaults = load_defaults()
    user = user or {}
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    prof = defaults["profiles"].get(profile) or {}
    run = merge(defaults["run"], prof.get("run", {}), f"profile {profile}.run")
    train = merge(defaults["train"], prof.get("train", {}), f"profile {profile}.train")
    train = merge(train, scheme_cls.train_profiles.get(profile, {}), f"scheme {scheme_cls.name} train_profiles")
    run = merge(run, user.get("run", {}), "config run")
    train = merge(train, user.get("train", {}), "config train")
    run = merge(run, cli, "command line")
    run["split"] = _split_for(dataset, run["split"], "split" in cli or "split" in (user.get("run") or {}))
    if seed is not None:
        run["seed"] = seed
    run, train = _check_run(run), _check_train(train)
    if run["compile"] and scheme_cls.not_compilable:
        raise ConfigError(f"run.compile: true is not supported by {scheme_cls.name}: {scheme_cls.not_compilable}; "
                          "run it with run.compile: false")
    lora = _check_lora(merge(defaults["run"]["lora"], run["lora"], "run.lora"))
    schemes = user.get("schemes") or {}
    if not isinstance(schemes, dict):
        raise ConfigError(f"config schemes: expected a mapping of scheme name: parameters, got {_shown(schemes)}")
    overrides = schemes.get(scheme_cls.name) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"config schemes.{scheme_cls.name}: expected a mapping of parameter: value, "
                          f"got {_shown(overrides)}")
    params = scheme_cls.resolve_params(profile, overrides)
    uses = scheme_cls.uses_backbone
    backbone, fingerprint = backbone_identity(run["backbone"]) if uses else ("none", None)
    return RunConfig(dataset=dataset, scheme=scheme_cls.name, backbone=backbone, backbone_fingerprint=fingerprint,
                     seed=run["seed"], profile=profile,
                     split=run["split"], k_core=run["k_core"], max_history=run["max_history"], ks=run["ks"],
                     eval_batch_size=run["eval_batch_size"], text_vocab_size=run["text_vocab_size"],
                     constrained_decoding=run["constrained_decoding"], train=TrainConfig(**train), params=params,
                     max_eval_users=run["max_eval_users"], max_fit_steps=run["max_fit_steps"],
                     candidates=run["candidates"],
                     finetune=run["finetune"] if uses else "none", lora=lora if uses else None,
                     gradient_checkpointing=run["gradient_checkpointing"] and uses, compile=run["compile"],
                     backbone_dropout=run["backbone_dropout"] if uses else None)


def backbone_identity(name: str) -> tuple[str, str | None]:
    """How a run names its backbone: a name that is a folder (relative to the working directory, as
    ``from_pretrained`` reads it) is a checkpoint, spelt without ``.`` parts, repeated or trailing slashes (so
    ``ck/qwen``, ``ck/qwen/`` and ``./ck/qwen`` are one backbone; a relative path stays relative, ``..`` stays),
    with its :func:`~benchmark.hashing.checkpoint_fingerprint`; a Hugging Face name (``org/model``) in the local
    cache keeps its name, with the fingerprint of the snapshot ``from_pretrained`` would load (the cache's
    ``main``), so a new revision fetched later is another experiment; any other name (a preset, a name not cached)
    is kept as it is, without a fingerprint. A folder named like a preset is refused by the backbone check before
    any run."""
    if not name.strip():
        return name, None
    folder = name if os.path.isdir(name) else cached_snapshot(name)  # as from_pretrained tells a path from a name
    if folder is None:
        return name, None
    try:
        return (str(PurePath(name)) if folder == name else name), checkpoint_fingerprint(folder)
    except OSError as error:
        raise ConfigError(f"backbone '{name}': cannot read the checkpoint folder {folder} ({error})") from error


def cached_snapshot(name: str) -> str | None:
    """The folder of the cached snapshot of Hugging Face model ``org/model`` (its ``main`` revision, where
    ``config.json`` lies), or None when ``name`` is no such name or is not cached. Reads the cache only."""
    if name.count("/") != 1 or name.startswith(("/", ".")) or os.path.exists(name):
        return None
    from huggingface_hub import try_to_load_from_cache  # only for such names: presets never import it

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repository id
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def _split_for(dataset: str, split: str, explicit: bool) -> str:
    """``fixed`` for a dataset that comes with its released split (an explicit other split is an error);
    otherwise ``split``, which must then not be ``fixed``."""
    released = has_released_split(dataset)
    if released and split != "fixed":
        if explicit:
            raise ConfigError(f"split '{split}': dataset '{dataset}' comes with its released split; use split fixed")
        return "fixed"
    if not released and split == "fixed":
        raise ConfigError(f"split 'fixed': dataset '{dataset}' has no released split; choose loo or temporal")
    return split


def _check_run(run: dict[str, Any]) -> dict[str, Any]:
    """The run section with every key of the type and range its :class:`RunConfig` field needs."""
    hints = typing.get_type_hints(RunConfig)
    run = {key: check_value(value, hints[key], f"run.{key}") if key != "lora" else value for key, value in run.items()}
    _check_minimum(run, RUN_MINIMUM, "run")
    if run["seed"] > MAX_SEED:
        raise ConfigError(f"run.seed: expected an integer from 0 to {MAX_SEED}, got {run['seed']}")
    if run["max_history"] > MAX_HISTORY:
        raise ConfigError(f"run.max_history: expected an integer from 1 to {MAX_HISTORY}, got {run['max_history']}")
    if run["split"] not in SPLITS:
        raise ConfigError(f"unknown split '{run['split']}'; choose from {', '.join(SPLITS)}")
    if run["candidates"] not in CANDIDATES:
        raise ConfigError(f"run.candidates: unknown value '{run['candidates']}'; choose from {', '.join(CANDIDATES)}")
    if run["finetune"] not in FINETUNE:
        raise ConfigError(f"run.finetune: '{run['finetune']}' is not a valid choice; choose from {', '.join(FINETUNE)}")
    if run["backbone_dropout"] is not None and not 0 <= run["backbone_dropout"] < 1:
        raise ConfigError(f"run.backbone_dropout: expected null or a number in [0, 1), got {run['backbone_dropout']}")
    if not run["ks"] or min(run["ks"]) < 1 or len(set(run["ks"])) < len(run["ks"]):
        raise ConfigError(f"run.ks: expected a non-empty list of distinct positive integers, got {list(run['ks'])}")
    return run


@lru_cache(maxsize=1)
def _default_lora() -> dict[str, Any]:
    """``run.lora`` of ``defaults.yaml`` as :meth:`RunConfig.to_dict` writes it."""
    return dataclasses.asdict(_check_lora(load_defaults()["run"]["lora"]))


def _check_lora(values: dict[str, Any]) -> LoraSettings:
    """``run.lora`` checked for type and range: r >= 1, alpha > 0, 0 <= dropout < 1, target names non-empty."""
    lora = LoraSettings(**check_fields(values, LoraSettings, "run.lora"))
    if lora.r < 1:
        raise ConfigError(f"run.lora.r: expected an integer >= 1, got {lora.r}")
    if lora.alpha <= 0:
        raise ConfigError(f"run.lora.alpha: expected a number > 0, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"run.lora.dropout: expected a number in [0, 1), got {lora.dropout}")
    if lora.target_modules is not None and (not lora.target_modules or not all(lora.target_modules)):
        raise ConfigError(f"run.lora.target_modules: expected null or a non-empty list of module names, "
                          f"got {list(lora.target_modules)}")
    return lora


def _check_train(train: dict[str, Any]) -> dict[str, Any]:
    """The train section with every key of the type and range its :class:`TrainConfig` field needs."""
    train = check_fields(train, TrainConfig, "train")
    _check_minimum(train, TRAIN_MINIMUM, "train")
    if train["lr"] <= 0:
        raise ConfigError(f"train.lr: expected a number > 0, got {train['lr']}")
    metric, _, k = train["valid_metric"].partition("@")
    if metric not in ("recall", "ndcg") or not k.isdecimal() or int(k) < 1:
        raise ConfigError(f"train.valid_metric '{train['valid_metric']}': expected recall@K or ndcg@K with K >= 1")
    return train


def _check_minimum(values: dict[str, Any], minimum: dict[str, float], section: str) -> None:
    for key, low in minimum.items():
        if values[key] < low:
            raise ConfigError(f"{section}.{key}: expected a value >= {low}, got {values[key]}")


TUNE_SCALES = ("linear", "log", "int", "int-log")
"""How a numeric search range is sampled: uniformly, log-uniformly, as integers, as log-spaced integers."""


@dataclass(frozen=True)
class Tunable:
    """The search range of one tunable ``Params`` field (declared with ``param(..., tune=...)``): numbers from
    ``low`` to ``high`` on ``scale`` (:data:`TUNE_SCALES`), or one of ``choices``."""

    name: str
    low: float | None = None
    high: float | None = None
    scale: str = "linear"
    choices: tuple[Any, ...] | None = None


def param(default: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
          high_open: bool = False, choices: tuple[Any, ...] | None = None, option: bool = False,
          tune: tuple[float, float, str] | bool | None = None, added: bool = False) -> Any:
    """A scheme ``Params`` field with its valid values, checked by :func:`check_params` while the config is
    resolved (before any run): numbers (or every element of a list of numbers) in ``[low, high]`` (``low_open`` /
    ``high_open`` exclude the bound), or one of ``choices``. ``option=True`` marks a field of the paradigm
    recommender's options (see :func:`option_fields`). ``tune`` puts the field in the scheme's search space for
    ``python -m benchmark tune`` (:func:`search_space`): ``(low, high, scale)`` with a scale of
    :data:`TUNE_SCALES`, or ``True`` for every one of ``choices`` (of a bool field: false and true).
    ``added=True`` marks a field added after records existed whose default keeps the earlier behaviour: it is
    left out of the resolved config while at its default (:func:`hashed_params`), so earlier records keep their
    config hash."""
    bounds = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "choices": choices,
              "option": option, "tune": tune, "added": added}
    return field(default=default, metadata=bounds)


def hashed_params(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of the dataclass ``cls`` without its ``added`` fields that hold their default."""
    added = {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("added")}
    return {key: value for key, value in values.items() if not (key in added and value == added[key])}


def search_space(params_cls: type) -> list[Tunable]:
    """The fields of the dataclass ``params_cls`` declared tunable with ``param(..., tune=...)``, in order. A
    declaration that names no valid range, or a range reaching outside the field's valid values, is a
    ``ValueError`` (a scheme's bug, caught by the contract tests)."""
    space, hints = [], typing.get_type_hints(params_cls)
    for spec in dataclasses.fields(params_cls):
        tune = spec.metadata.get("tune")
        if tune is None or tune is False:
            continue
        where = f"{params_cls.__name__}.{spec.name}"
        if tune is True:
            choices = spec.metadata.get("choices") or ((False, True) if hints[spec.name] is bool else None)
            if not choices:
                raise ValueError(f"{where}: tune=True needs declared choices or a bool field")
            space.append(Tunable(spec.name, choices=tuple(choices)))
            continue
        if not (isinstance(tune, tuple) and len(tune) == 3 and tune[2] in TUNE_SCALES and tune[0] < tune[1]):
            raise ValueError(f"{where}: tune must be (low, high, scale) with low < high and a scale of "
                             f"{', '.join(TUNE_SCALES)}, or True; got {tune!r}")
        low, high, scale = tune
        for end in (low, high):
            _check_bounds(end, spec.metadata, where)
        if scale.startswith("int") and not (hints[spec.name] is int and float(low).is_integer()
                                             and float(high).is_integer()):
            raise ValueError(f"{where}: an integer scale needs an int field and integer ends, got {tune!r}")
        if scale.endswith("log") and low <= 0:
            raise ValueError(f"{where}: a log scale needs low > 0, got {tune!r}")
        space.append(Tunable(spec.name, low=low, high=high, scale=scale))
    return space


def check_params(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` of the dataclass ``cls`` checked for type (:func:`check_fields`), for the ranges and choices
    declared with :func:`param`, and by ``cls.check()`` (cross-field rules) when ``cls`` defines it; returned
    with the types converted. A ConfigError names ``where.key``, the value and what is allowed."""
    values = check_fields(values, cls, where)
    for spec in dataclasses.fields(cls):
        if spec.name in values:
            _check_bounds(values[spec.name], spec.metadata, f"{where}.{spec.name}")
    check = getattr(cls, "check", None)
    if check is not None:
        try:
            check(cls(**values))
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from error
    return values


def _check_bounds(value: Any, bounds: Any, where: str) -> None:
    choices = bounds.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: '{value}' is not a valid choice; choose from {', '.join(map(str, choices))}")
    low, high = bounds.get("low"), bounds.get("high")
    if low is None and high is None:
        return
    for number in (value if isinstance(value, (list, tuple)) else [value]):
        if number is None:
            continue
        below = low is not None and (number <= low if bounds["low_open"] else number < low)
        above = high is not None and (number >= high if bounds["high_open"] else number > high)
        if below or above:
            left = "(" if bounds["low_open"] else "["
            right = ")" if bounds["high_open"] else "]"
            span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
            raise ConfigError(f"{where}: {value!r} is out of range; allowed: {span}")


def option_fields(params_cls: type, options_cls: type | None, where: str) -> list[str]:
    """Names of the ``params_cls`` fields declared ``param(..., option=True)``; each must be a field of
    ``options_cls`` (the paradigm recommender's options), else a ConfigError: a misspelt option is never
    silently dropped."""
    names = [f.name for f in dataclasses.fields(params_cls) if f.metadata.get("option")]
    valid = {f.name for f in dataclasses.fields(options_cls)} if options_cls is not None else set()
    for name in names:
        if name not in valid:
            raise ConfigError(f"{where}.{name} is declared a recommender option, but "
                              f"{getattr(options_cls, '__name__', 'this scheme')} has no option '{name}'; "
                              f"its options: {', '.join(sorted(valid)) or 'none'}")
    return names


def check_fields(values: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """``values`` checked with :func:`check_value` against the annotations of the dataclass ``cls``'s fields."""
    hints = typing.get_type_hints(cls)
    return {key: check_value(value, hints[key], f"{where}.{key}") if key in hints else value
            for key, value in values.items()}


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against a type annotation and returned in that type; ConfigError naming ``where``.

    Understands ``int``, ``float``, ``bool``, ``str``, ``tuple[T, ...]``, ``list[T]``, ``X | None`` and ``Any``.
    An int is a valid float (returned as float), a list a valid tuple (returned as tuple); a bool is not a
    number. A float also accepts a numeric string, since YAML 1.1 reads ``1e-3`` (no dot) as a string. Floats
    must be finite.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, where)
            except ConfigError:
                continue
    elif origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if isinstance(value, (list, tuple)):
            items = [check_value(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        number = _float(value)
        if number is not None:
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{where}: check_value does not understand the annotation {annotation!r}")
    raise ConfigError(f"{where}: expected {_describe(annotation)}, got {_shown(value)}")


def _float(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


TYPE_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
              float: ("a finite number", "numbers"), str: ("a string", "strings")}
"""A reader's name of each scalar type: singular, and plural for lists."""


def _describe(annotation: Any) -> str:
    """A reader's name for a type annotation, e.g. 'a list of integers' for ``tuple[int, ...]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {TYPE_NAMES[args[0]][1]}"
    return TYPE_NAMES[annotation][0]


def _shown(value: Any) -> str:
    """``value`` for an error message: its repr and its YAML type."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"
