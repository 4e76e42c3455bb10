"""Which runs are seeds of one config, and how rows of one scheme with different configs are told apart.

Runs with the same config apart from the seed share a :func:`config_id` and are averaged as seeds; runs of
one scheme with other configs (another learning rate, another scheme parameter) become rows of their own,
labelled by :func:`variant_labels` with the config keys in which they differ.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from benchmark.hashing import content_key

SEED_KEY = "seed"
ABSENT = "-"
"""The value a variant label shows for a config key the record's config lacks (the key at its default)."""


def config_id(config: dict[str, Any]) -> str:
    """A short hash of a record's config without its seed: runs with equal ids are seeds of one config."""
    return content_key({k: v for k, v in config.items() if k != SEED_KEY}, length=8)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config's values by dotted key (``train.lr``, ``params.hidden``) as short text, without the seed."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if not prefix and key == SEED_KEY:
            continue
        if isinstance(value, dict):
            out |= flat_config(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value, default=str).strip('"')
    return out


def flat_configs(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The :func:`flat_config` of each record's config, by its :func:`config_id` (for :func:`variant_labels`)."""
    return {config_id(record["config"]): flat_config(record["config"]) for record in records}


def variant_labels(frame: pd.DataFrame, keys: Sequence[str], configs: dict[str, dict[str, str]]) -> pd.Series:
    """Per row of ``frame`` (columns ``keys`` and ``config_id``): the ``key=value`` pairs in which its config
    differs from the other configs of its ``keys`` group, or "" when the group holds a single config.

    ``configs`` maps each config id to its :func:`flat_config`; a key a config lacks shows as :data:`ABSENT`
    (the run used the key's default, which the record does not store; :data:`LEGEND` says so).
    """
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, group in frame.groupby(list(keys), sort=False):
        ids = list(dict.fromkeys(group["config_id"]))
        if len(ids) < 2:
            continue
        names = sorted({key for i in ids for key in configs[i]})
        differing = [key for key in names if len({configs[i].get(key, ABSENT) for i in ids}) > 1]
        text = {i: ", ".join(f"{key}={configs[i].get(key, ABSENT)}" for key in differing) for i in ids}
        labels[group.index] = group["config_id"].map(text)
    return labels


def row_label(scheme: str, variant: str) -> str:
    """The name a report shows for a row: the scheme, with its differing config keys in brackets."""
    return f"{scheme} [{variant}]" if variant else scheme


LEGEND = ("Runs with the same config apart from the seed are averaged; a scheme run with several configs "
          "has a row per config, named with the config keys where they differ ([key=value]; key=- means that "
          "record's config lacks the key, i.e. the run used the key's default of its code version; the csv's "
          "config_id is the hash of the config without the seed).")
"""The sentence every report prints under its banner."""
