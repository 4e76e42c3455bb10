"""Run configuration: dataclasses resolved from ``defaults.yaml``, profiles, schemes, a user YAML and the CLI."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
PROFILES = ("smoke", "quick", "paper")
SPLITS = ("loo", "temporal")


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


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one experiment; its hash names the result record.

    ``params`` are the scheme's resolved hyper-parameters. Where the run happens (device, folders) is not
    part of the experiment and lives in :class:`Environment`.
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
    train: TrainConfig
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ks"] = list(self.ks)
        return out

    def hash(self) -> str:
        """A short stable hash of the experiment-defining fields."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def run_name(self) -> str:
        return f"{self.dataset}__{self.scheme}__{self.backbone}__{self.split}__{self.profile}__s{self.seed}"


@dataclass(frozen=True)
class Environment:
    """Where and how runs execute; recorded, but not part of the config hash."""

    device: str = "auto"
    data_dir: str | None = None
    results_dir: str = "results"
    reports_dir: str = "reports"
    cache_dir: str = ".cache"
    progress: bool = True


def load_defaults() -> dict[str, Any]:
    with open(DEFAULTS_PATH) as handle:
        return yaml.safe_load(handle)


def read_user_config(path: str | Path) -> dict[str, Any]:
    """Read a user YAML; only the sections ``run``, ``train`` and ``schemes`` are allowed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: invalid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping with sections run, train, schemes")
    unknown = set(data) - {"run", "train", "schemes"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {sorted(unknown)}; valid: run, train, schemes")
    return data


def merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    """Override keys of ``base``; unknown keys are an error naming ``where`` and the valid keys."""
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
    if seed is not None:
        run["seed"] = seed
    if run["split"] not in SPLITS:
        raise ConfigError(f"unknown split '{run['split']}'; choose from {', '.join(SPLITS)}")
    params = scheme_cls.resolve_params(profile, (user.get("schemes") or {}).get(scheme_cls.name, {}))
    backbone = run["backbone"] if scheme_cls.uses_backbone else "none"
    _check_train(train)
    return RunConfig(dataset=dataset, scheme=scheme_cls.name, backbone=backbone, seed=int(run["seed"]),
                     profile=profile, split=run["split"], k_core=int(run["k_core"]),
                     max_history=int(run["max_history"]), ks=tuple(int(k) for k in run["ks"]),
                     eval_batch_size=int(run["eval_batch_size"]), text_vocab_size=int(run["text_vocab_size"]),
                     train=TrainConfig(**train), params=params)


def _check_train(train: dict[str, Any]) -> None:
    metric, _, k = str(train["valid_metric"]).partition("@")
    if metric not in ("recall", "ndcg") or not k.isdigit():
        raise ConfigError(f"train.valid_metric '{train['valid_metric']}': expected recall@K or ndcg@K")
