"""Backbones: presets, checkpoints loaded with from_pretrained (offline, from a local folder), new tokens."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recommenders.backbones import (
    EOS_ID,
    PAD_ID,
    BackboneError,
    BackboneSpec,
    add_tokens,
    build_backbone,
    build_t5,
    check_backbone,
    dropout_fields,
    new_token_offset,
)
from recommenders.contracts import ItemCodes, code_table
from recommenders.sequence import GenerativeRecommender
from recommenders.text import text_vocabulary


def test_presets_put_new_tokens_after_the_text_vocabulary() -> None:
    model = build_t5("t5-tiny", new_tokens=5, text_vocab_size=40)
    assert model.config.vocab_size == 45 and new_token_offset(model, 5) == 40
    assert (model.config.pad_token_id, model.config.eos_token_id, model.config.decoder_start_token_id) == \
        (PAD_ID, EOS_ID, PAD_ID)


def test_added_tokens_are_distinct_rows_at_the_vocabulary_scale() -> None:
    torch.manual_seed(0)
    model = build_t5("t5-tiny", text_vocab_size=50)
    add_tokens(model, 8)
    for weight in (model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()):
        old, new = weight[:50].norm(dim=1), weight[50:].norm(dim=1)
        assert weight.shape[0] == 58 and 0.5 < float(new.mean() / old.mean()) < 2.0
        assert float(torch.cdist(weight[50:], weight[50:]).add(torch.eye(8) * 1e9).min()) > 0.1 * float(old.mean())


def test_checkpoint_keeps_its_vocabulary_and_tokenizer(tmp_path: Path) -> None:
    """A T5 saved to a folder with its tokenizer loads through from_pretrained, no hub involved."""
    corpus = ["red pen", "blue ink", "green chalk box"]
    vocab = text_vocabulary("t5-tiny", corpus, 100, tmp_path / "cache")
    saved = build_t5("t5-tiny", text_vocab_size=vocab.size)
    checkpoint = tmp_path / "my-t5"
    saved.save_pretrained(checkpoint)
    vocab.tokenizer.save_pretrained(checkpoint)

    loaded = text_vocabulary(str(checkpoint), corpus, 100, tmp_path / "cache")
    assert loaded.encode(corpus, 10) == vocab.encode(corpus, 10) and loaded.source == str(checkpoint)
    model = build_t5(str(checkpoint), new_tokens=6)
    assert model.config.vocab_size == vocab.size + 6 and new_token_offset(model, 6) == vocab.size
    assert torch.equal(model.get_input_embeddings().weight[:vocab.size], saved.get_input_embeddings().weight)
    codes = ItemCodes(codes=code_table([[0, 3], [1, 4], [2, 5]]), vocab_size=6)
    recommender = GenerativeRecommender(codes, str(checkpoint), max_history=2)
    assert int(recommender.item_tokens.min()) == vocab.size
    with pytest.raises(BackboneError, match="not a preset"):
        build_t5(str(tmp_path / "missing"))


def test_check_backbone_accepts_presets_and_folders_and_names_the_choices(tmp_path: Path) -> None:
    check_backbone("t5-tiger")
    vocab = text_vocabulary("t5-tiny", ["red pen", "blue ink"], 100, tmp_path / "cache")
    build_t5("t5-tiny", text_vocab_size=vocab.size).save_pretrained(tmp_path / "local-t5")
    with pytest.raises(BackboneError, match="no tokenizer files"):
        check_backbone(str(tmp_path / "local-t5"))
    vocab.tokenizer.save_pretrained(tmp_path / "local-t5")
    check_backbone(str(tmp_path / "local-t5"))
    with pytest.raises(BackboneError, match="t5-tiny, t5-tiger, t5-small"):
        check_backbone("no-such-org/no-such-t5")


def dropout_rates(model: torch.nn.Module) -> set[float]:
    """The probabilities of every dropout module of ``model`` and of the attention layers' functional dropout (T5's
    ``dropout``, Qwen2's ``attention_dropout`` attribute)."""
    rates = {module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)}
    return rates | {getattr(module, name) for module in model.modules() for name in ("dropout", "attention_dropout")
                    if isinstance(getattr(module, name, None), float)}


@pytest.mark.parametrize("name", ["t5-tiny", "qwen-tiny"])
def test_backbone_dropout_sets_every_dropout_of_a_preset(name: str) -> None:
    """``run.backbone_dropout`` reaches each dropout the model applies (modules and T5's attention dropout)."""
    default = build_backbone(name)
    assert dropout_rates(build_backbone(BackboneSpec(name, dropout=0.25))) == {0.25}
    assert dropout_rates(build_backbone(BackboneSpec(name, dropout=0.0))) == {0.0}
    assert dropout_rates(default) == ({0.1} if name == "t5-tiny" else {0.0})


def test_backbone_dropout_overrides_a_checkpoint_s_config(tmp_path: Path) -> None:
    saved = build_t5("t5-tiny")
    saved.save_pretrained(tmp_path / "t5")
    model = build_t5(BackboneSpec(str(tmp_path / "t5"), finetune="full", dropout=0.0))
    assert model.config.dropout_rate == 0.0 and dropout_rates(model) == {0.0}
    assert torch.equal(model.shared.weight, saved.shared.weight)
    assert build_t5(BackboneSpec(str(tmp_path / "t5"), finetune="full")).config.dropout_rate == 0.1


def test_dropout_fields_are_the_configs_probabilities() -> None:
    from transformers import GPT2Config, OPTConfig, Qwen2Config, T5Config

    assert dropout_fields(T5Config()) == ["classifier_dropout", "dropout_rate"]
    assert dropout_fields(Qwen2Config()) == ["attention_dropout"]
    assert set(dropout_fields(GPT2Config())) >= {"attn_pdrop", "embd_pdrop", "resid_pdrop"}
    assert "layerdrop" not in dropout_fields(OPTConfig())
