"""The registry contract, checked for every registered scheme, and a smoke run of each."""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.batches import iterate
from benchmark.config import PROFILES, ConfigError, Environment, param, resolve
from benchmark.records import PARADIGMS
from benchmark.runner import run_one
from identifiers import registry
from identifiers.base import BaselineScheme, ParadigmScheme, Scheme, SequenceScheme
from identifiers.registry import expand, get_scheme, register, schemes
from recommenders import trainer
from recommenders.contracts import ItemCodes, ItemTokenSets, ItemVectors
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
        added = {f.name for f in dataclasses.fields(cls.Params) if f.metadata.get("added")}
        assert set(params) | added == {f.name for f in dataclasses.fields(cls.Params)}
        cls.Params(**params)
        resolve("synthetic", cls, 0, profile)
    if issubclass(cls, ParadigmScheme):
        own = {hook for hook in ("tokenize", "two_stage") if getattr(cls, hook) is not getattr(ParadigmScheme, hook)}
        assert len(own) == 1, f"{name} implements exactly one of tokenize and two_stage, not {sorted(own)}"
        assert cls.build is ParadigmScheme.build, "build is the paradigm's, never a scheme's"
        assert cls.contract in (ItemCodes, ItemVectors, ItemTokenSets)
    else:
        assert issubclass(cls, BaselineScheme) and cls.paradigm == "baseline"


def test_duplicate_registration_is_rejected() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("pop")(type("Other", (Scheme,), {"build": lambda self, data: None}))


BACKBONE_RUNS = [(name, backbone) for name in ALL
                 for backbone in (("t5-tiny", "qwen-tiny") if get_scheme(name).uses_backbone else ("t5-tiny",))]
"""Every scheme on the encoder-decoder and the decoder-only test backbone (baselines use none)."""


@pytest.fixture(scope="module")
def scheme_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One cache folder per scheme, shared by its runs on both backbones: the qwen-tiny run reuses the
    identifiers' cached parts (embeddings, CF encoder, quantizers, text vocabulary) of the t5-tiny run, which
    keeps the doubled smoke runs affordable; the recommender is trained again (checkpoints are per config)."""
    return {name: tmp_path_factory.mktemp(f"cache-{name}") for name in ALL}


@pytest.mark.parametrize(("name", "backbone"), BACKBONE_RUNS)
def test_smoke_run(name: str, backbone: str, scheme_caches: dict[str, Path]) -> None:
    config = resolve("synthetic", get_scheme(name), 0, "smoke", cli={"backbone": backbone})
    record = run_one(config, Environment(device="cpu", cache_dir=str(scheme_caches[name]), progress=False))
    if record["status"] == "not_applicable":
        assert record["reason"]
        return
    assert record["status"] == "ok"
    for segment in ("all", "warm"):
        for key, value in record["metrics"][segment].items():
            assert math.isfinite(value) and value >= 0, key
    assert record["metrics"]["all"]["count"] == record["evaluation"]["test_examples"] == config.max_eval_users
    assert record["identifier"]["paradigm"] == get_scheme(name).paradigm
    if get_scheme(name).uses_backbone:
        assert record["model"]["backbone_family"] == backbone.split("-")[0].replace("qwen", "qwen2")
        assert record["model"]["finetune"] == "full" and record["model"]["lora"] is None
    if get_scheme(name).paradigm == "sequence":
        inference = record["inference"]
        assert inference["generated_sequences"] > 0
        if record["config"]["params"].get("grounding") == "l2":  # BIGRec generates freely, then grounds by L2
            assert 0.0 <= inference["invalid_generation_rate"] <= 1.0 and "gamma" in record["selection"]
        else:
            assert inference["invalid_generation_rate"] == 0.0


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-graph test's own cache folder (the CF-encoder test below needs one that no build has filled)."""
    return tmp_path_factory.mktemp("graph-cache")


@pytest.mark.parametrize("name", ALL)
def test_the_training_loss_is_one_graph_or_the_scheme_says_why_not(name: str, tiny, graph_cache: Path) -> None:
    """What ``run.compile`` needs: the loss of a training batch that carries its host sizes
    (``Recommender.host_sizes``) traces (dynamo only, nothing is compiled) without a graph break, unless the
    scheme declares ``not_compilable`` (then the configuration refuses ``run.compile``)."""
    cls = get_scheme(name)
    dataset, split = tiny
    scheme = cls(cls.resolve_params("smoke", {}), make_context(cls, dataset, graph_cache, split=split))
    model = scheme.build(split.train).model
    if not model.trainable or cls.not_compilable:
        return
    model.prepare(split.train)
    batch = next(iterate(model.training_examples(split.train), 16, "cpu", np.random.default_rng(0)))
    explained = torch._dynamo.explain(model.train().loss)(dataclasses.replace(batch, sizes=model.host_sizes(batch)))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


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


def test_the_cf_encoder_is_trained_eagerly_under_run_compile(tiny, tmp_path: Path, monkeypatch) -> None:
    """It is the default ``sasrec`` row's model, cached under a key that does not name ``run.compile``."""
    dataset, split = tiny
    seen = []
    fit = trainer.fit

    def recording(*args, **kwargs) -> trainer.TrainReport:
        seen.append(kwargs["compiled"])
        return fit(*args, **{**kwargs, "compiled": False})

    monkeypatch.setattr(trainer, "fit", recording)
    ctx = make_context(get_scheme("e4srec"), dataset, tmp_path, split=split, compile=True)
    assert ctx.config.compile
    ctx.cf_encoder(split.train)
    assert seen == [False]


def test_unconstrained_decoding_is_recorded(tmp_path: Path) -> None:
    config = resolve("synthetic", get_scheme("semid"), 0, "smoke", cli={"constrained_decoding": False})
    record = run_one(config, Environment(device="cpu", cache_dir=str(tmp_path), progress=False))
    inference = record["inference"]
    assert record["config"]["constrained_decoding"] is False and inference["generated_sequences"] > 0
    assert inference["invalid_generation_rate"] == inference["invalid_generations"] / inference["generated_sequences"]
    assert 0.0 < inference["invalid_generation_rate"] <= 1.0


THROWAWAY = """
\"\"\"A throw-away scheme: every item's code is its id in base 8 (two tokens).\"\"\"
from dataclasses import dataclass

import torch

from benchmark.config import param
from identifiers.base import SequenceScheme
from identifiers.registry import register
from recommenders.contracts import ItemCodes


@dataclass
class Base8Params:
    \"\"\"Beam size of the constrained beam search.\"\"\"

    beam_size: int = param(10, low=1, option=True)


@register("base8")
class Base8(SequenceScheme):
    citation = "A test."
    Params = Base8Params

    def tokenize(self, data) -> ItemCodes:
        items = torch.arange(data.n_items)
        high = -(-data.n_items // 8)
        codes = torch.stack([items // 8, high + items % 8], dim=1)
        return ItemCodes(codes=codes, vocab_size=high + 8, level_sizes=[high, 8], details={"base": 8})
"""


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by the test go to a copy of the registry."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_a_scheme_in_one_new_module_runs_end_to_end(tmp_path: Path, own_registry: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "base8_scheme.py"
    path.write_text(THROWAWAY)
    spec = importlib.util.spec_from_file_location("base8_scheme", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "base8_scheme", module)
    spec.loader.exec_module(module)
    assert "base8" in expand("all") and get_scheme("base8").paradigm == "sequence"
    test_scheme_contract("base8")
    with pytest.raises(ConfigError, match="schemes.base8.beam_size: 0 is out of range"):
        resolve("synthetic", get_scheme("base8"), 0, "smoke", {"schemes": {"base8": {"beam_size": 0}}})
    record = run_one(resolve("synthetic", get_scheme("base8"), 0, "smoke"),
                     Environment(device="cpu", cache_dir=str(tmp_path), progress=False))
    assert record["status"] == "ok" and record["paradigm"] == "sequence"
    assert record["identifier"]["base"] == 8 and record["identifier"]["code_length_max"] == 2
    assert record["metrics"]["all"]["count"] == record["evaluation"]["test_examples"] > 0


def test_a_misspelt_recommender_option_is_an_error(own_registry: None) -> None:
    @dataclasses.dataclass
    class Params:
        """A misspelt option."""

        beam_sise: int = param(20, option=True)

    @register("misspelt")
    class Misspelt(SequenceScheme):
        citation = "A test."

    Misspelt.Params = Params
    with pytest.raises(ConfigError, match="schemes.misspelt.beam_sise is declared a recommender option, but "
                                          "SequenceOptions has no option 'beam_sise'"):
        Misspelt.resolve_params("smoke", {})
