"""The registry contract, checked for every registered scheme, and a smoke run of each."""
from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import pytest
import torch

from benchmark.config import PROFILES, Environment, resolve
from benchmark.runner import run_one
from identifiers.base import PARADIGMS, Scheme
from identifiers.registry import expand, get_scheme, register, schemes
from recommenders.sasrec import SASRecParams, cf_cache_key
from tests.conftest import make_context

ALL = list(schemes())


def test_baselines_are_registered() -> None:
    assert {"pop", "sasrec"} <= set(ALL)
    assert expand("all") == ALL
    assert expand("sasrec,pop,sasrec") == ["sasrec", "pop"]


@pytest.mark.parametrize("name", ALL)
def test_scheme_contract(name: str) -> None:
    cls = get_scheme(name)
    assert issubclass(cls, Scheme) and cls.name == name
    assert cls.paradigm in PARADIGMS
    assert cls.citation.strip(), "every scheme cites its paper"
    assert inspect.getmodule(cls).__doc__, "every scheme module has a docstring"
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__doc__
    for profile in PROFILES:
        params = cls.resolve_params(profile, {})
        assert set(params) == {f.name for f in dataclasses.fields(cls.Params)}
        resolve("synthetic", cls, 0, profile)


def test_duplicate_registration_is_rejected() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("pop")(type("Other", (Scheme,), {"build": lambda self, data: None}))


@pytest.mark.parametrize("name", ALL)
def test_smoke_run(name: str, tmp_path: Path) -> None:
    config = resolve("synthetic", get_scheme(name), 0, "smoke")
    record = run_one(config, Environment(device="cpu", cache_dir=str(tmp_path), progress=False))
    if record["status"] == "not_applicable":
        assert record["reason"]
        return
    assert record["status"] == "ok"
    for segment in ("all", "warm"):
        for key, value in record["metrics"][segment].items():
            assert math.isfinite(value) and value >= 0, key
    assert record["metrics"]["all"]["count"] == record["evaluation"]["test_examples"] == config.max_eval_users
    assert record["identifier"]["paradigm"] == get_scheme(name).paradigm
    if get_scheme(name).paradigm == "sequence":
        inference = record["inference"]
        assert inference["generated_sequences"] > 0 and inference["invalid_generation_rate"] == 0.0


def test_cf_encoder_is_cached_per_training_data_and_reported(tiny, cache: Path) -> None:
    dataset, split = tiny
    ctx = make_context(get_scheme("e4srec"), dataset, cache, split=split)
    first = ctx.cf_encoder(split.train)
    report = ctx.components["cf_encoder"]
    assert report["loaded_from_cache"] is False and report["train_s"] > 0 and report["epochs_run"] >= 1
    again = make_context(get_scheme("setrec"), dataset, cache, split=split)
    second = again.cf_encoder(split.train)
    assert again.components["cf_encoder"]["loaded_from_cache"] is True
    assert again.components["cf_encoder"]["train_s"] == report["train_s"]
    assert torch.equal(first.item_embeddings(), second.item_embeddings())
    resolved = resolve("synthetic", get_scheme("sasrec"), 0, "smoke")
    params, train = SASRecParams(**resolved.params), resolved.train
    shorter = dataclasses.replace(split.train, sequences=[seq[:-1] for seq in split.train.sequences])
    assert cf_cache_key(split.train, "synthetic", "loo", 0, params, train) == report["cache_key"]
    assert cf_cache_key(shorter, "synthetic", "loo", 0, params, train) != report["cache_key"]


def test_unconstrained_decoding_is_recorded(tmp_path: Path) -> None:
    config = resolve("synthetic", get_scheme("semid"), 0, "smoke", cli={"constrained_decoding": False})
    record = run_one(config, Environment(device="cpu", cache_dir=str(tmp_path), progress=False))
    inference = record["inference"]
    assert record["config"]["constrained_decoding"] is False and inference["generated_sequences"] > 0
    assert inference["invalid_generation_rate"] == inference["invalid_generations"] / inference["generated_sequences"]
    assert 0.0 < inference["invalid_generation_rate"] <= 1.0
