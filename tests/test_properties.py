"""Property tests (hypothesis) of the input parsers and the metrics: for any input, a parser returns a valid
value or raises its own error naming the input, never another exception; metrics stay in range and order."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.cli import UsageError, _seeds
from benchmark.config import MAX_SEED, ConfigError, check_value, read_user_config, resolve
from benchmark.data.registry import AMAZON_RAW_PREFIX, check_dataset_name
from benchmark.metrics import METRICS, metric_value
from benchmark.records import record_path
from benchmark.splits import Examples
from identifiers.registry import get_scheme
from recommenders.text import disambiguate

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                           max_size=3), max_leaves=8)


@FAST
@given(st.lists(st.integers(0, MAX_SEED), min_size=1, max_size=6))
def test_seed_lists_parse_to_their_values(seeds: list[int]) -> None:
    assert _seeds(",".join(map(str, seeds))) == list(dict.fromkeys(seeds))


@FAST
@given(st.text(max_size=30))
def test_any_seed_text_parses_or_names_the_option(text: str) -> None:
    try:
        seeds = _seeds(text)
    except UsageError as error:
        assert "--seed" in str(error)
    else:
        assert all(0 <= seed <= MAX_SEED for seed in seeds)


@FAST
@given(VALUES, st.sampled_from([int, float, bool, str, tuple[int, ...], list[float], int | None]))
def test_check_value_returns_its_type_or_names_the_key(value, annotation) -> None:
    try:
        checked = check_value(value, annotation, "run.key")
    except ConfigError as error:
        assert str(error).startswith("run.key")
    else:
        assert check_value(checked, annotation, "run.key") == checked


@FAST
@given(st.text(max_size=40))
def test_dataset_names_are_known_or_refused_and_never_leave_the_folder(name: str) -> None:
    try:
        check_dataset_name(name)
    except KeyError as error:
        message = error.args[0]
        assert repr(name[len(AMAZON_RAW_PREFIX):]) in message or f"'{name}'" in message
        return
    category = name[len(AMAZON_RAW_PREFIX):] if name.startswith(AMAZON_RAW_PREFIX) else ""
    assert "/" not in category and "." not in category and "\\" not in category


@FAST
@given(st.text(min_size=1, max_size=40), st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=30))
def test_record_paths_stay_in_their_dataset_folder(backbone: str, category: str) -> None:
    config = resolve("synthetic", get_scheme("sasrec"), 0, "smoke")
    config = type(config)(**{**config.__dict__, "backbone": backbone, "dataset": f"{AMAZON_RAW_PREFIX}{category}"})
    path = record_path(Path("/results"), config)
    assert path.parent.parent == Path("/results") and path.parent.name not in ("", ".", "..")
    assert path.name.endswith(f"__{config.hash()}.json") and "/" not in path.name


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_yaml_text_is_a_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(text)
        try:
            config = read_user_config(path)
        except ConfigError as error:
            assert str(path) in str(error)
        else:
            assert set(config) <= {"run", "train", "schemes"}


RANKS = st.lists(st.integers(0, 10_000), min_size=1, max_size=50).map(np.array)


@FAST
@given(RANKS, st.integers(1, 100))
def test_metrics_lie_in_0_1_and_ndcg_is_at_most_recall(ranks: np.ndarray, k: int) -> None:
    recall, ndcg = METRICS["recall"](ranks, k), METRICS["ndcg"](ranks, k)
    assert set(np.unique(recall)) <= {0.0, 1.0}
    assert np.all((ndcg >= 0) & (ndcg <= recall + 1e-12))
    assert np.all(ndcg[ranks == 0] == 1.0)


@FAST
@given(RANKS, st.integers(1, 50), st.integers(0, 50))
def test_metrics_grow_with_k_and_fall_with_rank(ranks: np.ndarray, k: int, extra: int) -> None:
    for name in ("recall", "ndcg"):
        assert metric_value(f"{name}@{k + extra}", ranks) >= metric_value(f"{name}@{k}", ranks)
        assert metric_value(f"{name}@{k}", ranks + 1) <= metric_value(f"{name}@{k}", ranks)


@FAST
@given(st.lists(st.integers(0, 30), min_size=1, max_size=80), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_user_subsets_are_fixed_and_keep_every_example_of_a_chosen_user(users: list[int], n: int, seed: int) -> None:
    examples = Examples(np.array(users), np.zeros((len(users), 2), dtype=np.int64), np.arange(len(users)))
    subset = examples.of_users(n, seed)
    chosen = set(subset.users.tolist())
    assert len(chosen) == (len(set(users)) if n == 0 else min(n, len(set(users))))
    assert sorted(subset.targets.tolist()) == [i for i, user in enumerate(users) if user in chosen]
    assert np.array_equal(examples.of_users(n, seed).targets, subset.targets)


@pytest.mark.parametrize("name", ["amazon2014:Beauty", "amazon2014:Clothing_Shoes_and_Jewelry",
                                  "amazon2014:Arts-Crafts&Sewing"])
def test_real_category_names_are_accepted(name: str) -> None:
    check_dataset_name(name)


class _SuffixVocab:
    """Stands in for a TextVocabulary: `` (k)`` is the one token ``100 + k``."""

    def encode(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        return [[100 + int(text.strip(" ()"))] for text in texts]


@FAST
@given(st.lists(st.lists(st.sampled_from([1, 2, 102, 103]), min_size=1, max_size=3), max_size=40))
def test_disambiguate_gives_each_repeat_the_smallest_free_suffix(codes: list[list[int]]) -> None:
    """The spec, checked against codes that collide with suffixed forms of others (102 is `` (2)``)."""
    unique, changed = disambiguate(codes, _SuffixVocab())
    taken, seen, expected = {tuple(code) for code in codes}, set(), []
    for code in codes:
        key = tuple(code)
        if key in seen:
            rank = 2
            while key + (100 + rank,) in taken:
                rank += 1
            key += (100 + rank,)
        seen.add(key)
        taken.add(key)
        expected.append(list(key))
    assert unique == expected and len(set(map(tuple, unique))) == len(codes)
    assert changed == sum(a != b for a, b in zip(unique, codes))
