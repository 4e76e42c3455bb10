"""Text identifiers: the fitted text vocabulary, unique word codes, BIGRec's titles and L2 grounding, IDGenRec's
learned IDs."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.batches import HistoryBatch, iterate
from benchmark.config import ConfigError
from benchmark.data.dataset import Dataset
from benchmark.evaluate import evaluate
from benchmark.metrics import metric_value
from benchmark.splits import make_split
from identifiers.bigrec import BIGRec, BIGRecParams
from identifiers.idgenrec import IDGenerator, IDGenRec, keyword_tags
from recommenders.backbones import EOS_ID, PAD_ID
from recommenders.contracts import ItemCodes, code_table
from recommenders.grounding import L2GroundedRecommender, grounded_scores, popularity_weights, text_tokens
from recommenders.sequence import GenerativeRecommender
from recommenders.text import disambiguate, text_vocabulary, train_bpe
from tests.conftest import make_context


def test_fitted_vocabulary_is_deterministic_cached_and_t5_compatible(tmp_path: Path) -> None:
    corpus = ["Voltix slim keyboard, 2 pack", "Glowra hydrating serum", "Voltix wireless mouse"]
    first = text_vocabulary("t5-tiny", corpus, 200, tmp_path)
    assert (first.tokenizer.pad_token_id, first.tokenizer.eos_token_id) == (PAD_ID, EOS_ID)
    assert len(list((tmp_path / "text_vocab").glob("*.pt"))) == 1
    again = text_vocabulary("t5-tiny", corpus, 200, tmp_path)
    assert again.encode(corpus, 50) == first.encode(corpus, 50)
    assert train_bpe(corpus, 200).backend_tokenizer.to_str() == train_bpe(corpus, 200).backend_tokenizer.to_str()
    ids = first.encode(["voltix slim keyboard"], 50)[0]
    assert first.decode(ids) == "voltix slim keyboard" and len(first.encode(["voltix slim keyboard"], 2)[0]) == 2
    assert first.tokenizer.convert_ids_to_tokens(first.separator_id).endswith(";")
    assert first.source.startswith("bpe") and first.size == len(first.tokenizer)


def test_disambiguate_keeps_the_first_and_suffixes_the_rest(tmp_path: Path) -> None:
    vocab = text_vocabulary("t5-tiny", ["a red pen (2) (3)", "blue ink"], 100, tmp_path)
    pen, ink = vocab.encode(["a red pen", "blue ink"], 10)
    pen_2 = vocab.encode(["a red pen (2)"], 10)[0]
    unique, changed = disambiguate([pen, ink, pen, pen_2, pen], vocab)
    assert unique[0] == pen and unique[1] == ink and unique[3] == pen_2
    assert len({tuple(code) for code in unique}) == 5 and changed == 2
    assert vocab.decode(unique[2]) == "a red pen (3)" and vocab.decode(unique[4]) == "a red pen (4)"


def test_text_codes_share_the_text_vocabulary_and_separate_history_items(tmp_path: Path) -> None:
    vocab = text_vocabulary("t5-tiny", ["red pen", "blue ink", "green chalk"], 100, tmp_path)
    words = vocab.encode(["red pen", "blue ink", "green chalk"], 10)
    codes = ItemCodes(codes=code_table(words), vocab_size=vocab.size, text_vocab=vocab)
    model = GenerativeRecommender(codes, "t5-tiny", max_history=3)
    assert model.backbone.config.vocab_size == vocab.size
    batch = HistoryBatch(users=torch.arange(1), items=torch.tensor([[0, 2, 1]]),
                         mask=torch.tensor([[False, True, True]]), targets=torch.tensor([0]))
    input_ids, mask = model.encoder_inputs(batch.items, batch.mask)
    expected = words[2] + [vocab.separator_id] + words[1] + [vocab.separator_id] + [EOS_ID]
    assert input_ids[0].tolist() == expected and mask[0].tolist() == [1] * len(expected)
    assert model.target_labels(torch.tensor([1]))[0, :len(words[1])].tolist() == words[1]


def test_bigrec_titles_are_unique_word_codes(small_synthetic: Dataset, cache: Path) -> None:
    ctx = make_context(BIGRec, small_synthetic, cache)
    scheme = BIGRec(ctx.config.params, ctx)
    codes = scheme.tokenize(make_split(small_synthetic, "loo", 10).train)
    assert codes.text_vocab is not None and len(torch.unique(codes.codes, dim=0)) == small_synthetic.n_items
    titles = [t.lower() for t in small_synthetic.items["title"]]
    decoded = [codes.text_vocab.decode(row.tolist()) for row in codes.codes]
    first_of_title = {title: titles.index(title) for title in titles}
    for item, title in enumerate(titles):
        if first_of_title[title] == item:
            assert decoded[item] == title
        else:
            assert decoded[item].startswith(title + " (")
    assert codes.statistics()["items_with_suffix"] == len(titles) - len(set(titles))


def id_generator(scheme: IDGenRec) -> IDGenerator:
    """A fresh ID generator of ``scheme``'s settings over its run's text vocabulary."""
    vocab, p = scheme.ctx.text_vocabulary(), scheme.params
    return IDGenerator(p.generator_backbone, vocab, vocab.encode(scheme.ctx.dataset.item_texts(), p.text_max_tokens))


def test_keyword_tags_rank_distinctive_words() -> None:
    tags = keyword_tags(["red pen red pen for office", "blue ink for pens", "red chalk"], 2)
    assert tags[0].split() == ["pen", "red"] and "ink" in tags[1].split() and len(tags) == 3


def test_idgenrec_ids_are_unique_words_from_the_generator(small_synthetic: Dataset, cache: Path) -> None:
    ctx = make_context(IDGenRec, small_synthetic, cache)
    scheme = IDGenRec({**ctx.config.params, "tag_epochs": 20}, ctx)
    identifiers, model = scheme.two_stage(make_split(small_synthetic, "loo", 10).train)
    codes, stats = identifiers.codes, identifiers.statistics()
    assert len(torch.unique(codes, dim=0)) == small_synthetic.n_items and isinstance(model, GenerativeRecommender)
    assert stats["id_assignment"]["first_beam"] + stats["id_assignment"]["later_beam"] <= small_synthetic.n_items
    decoded = [identifiers.text_vocab.decode(row.tolist()) for row in codes]
    assert all(re.fullmatch(r"\w+( \w+)*( \(\d+\))?", text) for text in decoded)
    assert stats["alternation"]["tag_losses"][-1] < stats["alternation"]["tag_losses"][0]
    assert len(stats["example_ids"]) == 10
    rounds = stats["alternation"]["rounds"]
    assert len(rounds) == ctx.config.params["rounds"] - 1
    assert all("rec_best_valid" in entry and entry["id_losses"] for entry in rounds)


def test_soft_ids_of_one_hot_distributions_equal_the_hard_ids(small_synthetic: Dataset, cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The ID-generator phase feeds p^T E; with one-hot p on the current IDs it is the recommender's loss."""
    ctx = make_context(IDGenRec, small_synthetic, cache)
    split = make_split(small_synthetic, "loo", 10)
    scheme = IDGenRec({**ctx.config.params, "rounds": 1, "alternation": "id_first"}, ctx)
    identifiers, model = scheme.two_stage(split.train)
    model.eval()
    codes, vocab = identifiers.codes, identifiers.text_vocab
    (entry,) = identifiers.statistics()["alternation"]["rounds"]
    assert entry["id_losses"] and "rec_best_valid" not in entry
    generator = id_generator(scheme)

    def one_hot(items: torch.Tensor, item_codes: torch.Tensor) -> torch.Tensor:
        return F.one_hot(item_codes.clamp_min(0), vocab.size).float() * (item_codes >= 0)[..., None]

    monkeypatch.setattr(generator, "teacher_forced", one_hot)
    batch = next(iterate(split.valid, 8, "cpu"))
    embedding = model.backbone.get_input_embeddings().weight
    with torch.no_grad():
        soft = scheme.soft_id_loss(generator, vocab, model, batch, codes, embedding)
        hard = model.loss(batch)
    assert torch.allclose(soft, hard, atol=1e-5)


def test_greedy_soft_ids_have_gradients_and_lengths(small_synthetic: Dataset, cache: Path) -> None:
    ctx = make_context(IDGenRec, small_synthetic, cache)
    scheme = IDGenRec({**ctx.config.params, "rounds": 1, "alternation": "id_first", "soft_ids": "greedy"}, ctx)
    split = make_split(small_synthetic, "loo", 10)
    identifiers, model = scheme.two_stage(split.train)
    generator, vocab = id_generator(scheme), identifiers.text_vocab
    probs, lengths = generator.greedy(torch.arange(5), scheme.params.id_max_tokens)
    assert probs.shape[0] == 5 and probs.shape[2] == vocab.size
    assert bool((lengths >= 1).all()) and bool((lengths <= scheme.params.id_max_tokens).all())
    batch = next(iterate(split.valid, 4, "cpu"))
    loss = scheme.soft_id_loss(generator, vocab, model, batch, identifiers.codes,
                               model.backbone.get_input_embeddings().weight)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


def test_idgenrec_defaults_follow_the_authors_and_quick_profile_is_cheaper() -> None:
    defaults, quick = IDGenRec.resolve_params("paper", {}), IDGenRec.resolve_params("quick", {})
    assert (defaults["alternation"], defaults["soft_ids"]) == ("id_first", "greedy")
    assert (quick["alternation"], quick["soft_ids"]) == ("rec_first", "teacher_forced")


@pytest.mark.parametrize(("override", "keys"), [({"rounds": 1, "alternation": "rec_first"}, ("rounds", "alternation")),
                                               ({"rounds": 2, "id_epochs": 0}, ("id_epochs",))])
def test_idgenrec_rejects_configs_without_an_id_generator_phase(override: dict, keys: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as error:
        IDGenRec.resolve_params("quick", override)
    assert str(error.value).startswith("schemes.idgenrec") and all(key in str(error.value) for key in keys)


def test_diverse_beam_search_groups_differ_and_a_zero_penalty_repeats_greedy(small_synthetic: Dataset,
                                                                              cache: Path) -> None:
    ctx = make_context(IDGenRec, small_synthetic, cache)
    scheme = IDGenRec(ctx.config.params, ctx)
    torch.manual_seed(0)
    generator = id_generator(scheme).eval()
    items = torch.arange(6)
    same = generator.diverse(items, groups=3, penalty=0.0, min_tokens=1, max_tokens=4)
    assert all(rows[0] == rows[1] == rows[2] for rows in same)  # no penalty: every group decodes greedily
    apart = generator.diverse(items, groups=3, penalty=1e6, min_tokens=2, max_tokens=4)
    for rows in apart:
        assert len({row[0] for row in rows}) == 3 and all(len(row) >= 2 for row in rows)


def test_idgenrec_searches_again_until_its_ids_are_free(small_synthetic: Dataset, cache: Path) -> None:
    ctx = make_context(IDGenRec, small_synthetic, cache)
    scheme = IDGenRec({**ctx.config.params, "id_beams": 2, "id_search": "diverse"}, ctx)  # smoke uses beam
    torch.manual_seed(0)
    generator, vocab = id_generator(scheme), ctx.text_vocabulary()
    codes = scheme.generate_ids(generator, vocab)
    assignment = codes.statistics()["id_assignment"]
    assert len(torch.unique(codes.codes, dim=0)) == small_synthetic.n_items
    assert assignment["searched_again"] > 0  # an untrained generator repeats itself: items were searched again
    assert assignment["suffixed"] < assignment["searched_again"] and assignment["max_diversity_penalty"] > 0.1
    plain = IDGenRec({**ctx.config.params, "id_beams": 2, "id_search": "beam"}, ctx)
    assert plain.generate_ids(generator, vocab).statistics()["id_assignment"]["searched_again"] == 0


def test_l2_grounding_ranks_by_normalised_distance_and_popularity() -> None:
    """Hand-worked: distances 5, 1, 2, 10 -> min-max 4/9, 0, 1/9, 1; counts 10, 0, 5, 20 -> pop .5, 0, .25, 1;
    key = (1 + pop)^-gamma * dist: gamma 0 ranks 1, 2, 0, 3; gamma 4 lifts the popular far item 3 over item 0
    (keys 0.0878, 0, 0.0455, 0.0625)."""
    generated = torch.tensor([[0.0, 0.0]])
    items = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [6.0, 8.0]])
    popularity = popularity_weights(np.array([10, 0, 5, 20]))
    assert torch.allclose(popularity, torch.tensor([0.5, 0.0, 0.25, 1.0]))
    plain = grounded_scores(generated, items, popularity, 0.0)
    assert torch.allclose(plain, -torch.tensor([[4 / 9, 0.0, 1 / 9, 1.0]]))
    assert plain.argsort(dim=1, descending=True)[0].tolist() == [1, 2, 0, 3]
    adjusted = grounded_scores(generated, items, popularity, 4.0)
    keys = torch.tensor([[4 / 9 / 1.5**4, 0.0, 1 / 9 / 1.25**4, 1 / 2**4]])
    assert torch.allclose(adjusted, -keys)
    assert adjusted.argsort(dim=1, descending=True)[0].tolist() == [1, 2, 3, 0]
    assert torch.equal(popularity_weights(np.array([3, 3, 3])), torch.zeros(3))
    assert torch.equal(grounded_scores(generated, torch.ones(3, 2), torch.zeros(3), 1.0), torch.zeros(1, 3))


def test_generated_text_stops_at_eos_and_drops_pads() -> None:
    sequences = torch.tensor([[5, 6, EOS_ID, 7, 7], [PAD_ID, 7, PAD_ID, 8, EOS_ID], [EOS_ID, 5, 5, 5, 5],
                              [4, 4, 4, 4, 4]])
    expected = [[5, 6, -1, -1, -1], [7, 8, -1, -1, -1], [-1] * 5, [4] * 5]
    assert text_tokens(sequences, PAD_ID, EOS_ID).tolist() == expected


def test_bigrec_grounding_option_keeps_the_trie_records_hash() -> None:
    for profile in ("smoke", "quick", "paper"):
        assert BIGRec.resolve_params(profile, {})["grounding"] == "l2"
    trie = BIGRec.resolve_params("quick", {"grounding": "trie"})
    assert trie == {"max_title_tokens": 16, "beam_size": 20}, "the constrained variant hashes as before the option"
    with pytest.raises(ConfigError, match=r"schemes\.bigrec\.grounding.*trie, l2"):
        BIGRec.resolve_params("quick", {"grounding": "cosine"})


@pytest.mark.parametrize("backbone", ["t5-tiny", "qwen-tiny"])
def test_bigrec_l2_grounding_trains_selects_gamma_on_validation_and_ranks_all_items(
        small_synthetic: Dataset, cache: Path, backbone: str) -> None:
    split = make_split(small_synthetic, "loo", 10)
    ctx = make_context(BIGRec, small_synthetic, cache, split=split, backbone=backbone)
    model = BIGRec(ctx.config.params, ctx).build(split.train).model
    assert isinstance(model, L2GroundedRecommender) and model.output == "scores"
    ctx.fit(model, split.train)
    assert torch.allclose(model.popularity, popularity_weights(split.train.item_counts()))
    ks, size = ctx.config.ks, ctx.config.eval_batch_size
    valid = split.valid.subset(60, 0)
    selection = model.select_on_validation(lambda m: evaluate(m, valid, split.warm, ks, 16, "cpu"))
    grid = ctx.config.params.get("gamma_grid", BIGRecParams().gamma_grid)
    assert set(selection["valid"]) == {str(float(g)) for g in grid} and model.gamma == selection["gamma"]
    assert selection["valid"][str(model.gamma)] == max(selection["valid"].values())
    again = evaluate(model, valid, split.warm, ks, 16, "cpu")  # generating anew gives what the replay gave
    assert metric_value(selection["metric"], again.ranks) == pytest.approx(selection["valid"][str(model.gamma)])
    model.reset_inference_statistics()
    test = evaluate(model, split.test, split.warm, ks, size, "cpu")
    metrics = test.metrics(ks)
    assert metrics["all"]["count"] == len(split.test) and set(metrics) == {"all", "warm", "cold"}
    assert all(np.isfinite(value) and value >= 0 for segment in metrics.values() for value in segment.values())
    assert bool((test.ranks <= max(ks)).all())
    stats = model.inference_statistics()
    assert stats["generated_sequences"] == len(split.test) and 0.0 <= stats["invalid_generation_rate"] <= 1.0
