"""Backbones: presets, checkpoints loaded with from_pretrained (offline, from a local folder), new tokens."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recommenders.backbones import (
    EOS_ID,
    PAD_ID,
    BackboneError,
    add_tokens,
    build_t5,
    check_backbone,
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
