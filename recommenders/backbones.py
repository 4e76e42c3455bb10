"""Backbone presets: language models built from a config (random init), or loaded with ``from_pretrained``.

No weights are downloaded at run time: a preset builds a randomly initialised model of a known shape, and
any other name is passed to ``from_pretrained`` (a local path, or a hub name when the weights are cached).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import T5Config, T5ForConditionalGeneration


@dataclass(frozen=True)
class BackbonePreset:
    """A named architecture: its family (``t5``) and the config fields that define it."""

    name: str
    family: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, BackbonePreset] = {
    p.name: p
    for p in (
        BackbonePreset("t5-tiny", "t5", "T5 encoder-decoder, 2+2 layers, d_model 64 (CPU tests), random init",
                       dict(d_model=64, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=2,
                            dropout_rate=0.1)),
        BackbonePreset("t5-tiger", "t5", "TIGER's from-scratch T5: 4+4 layers, d_model 128, 6 heads of 64, FF 1024",
                       dict(d_model=128, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=6,
                            dropout_rate=0.1)),
        BackbonePreset("t5-small", "t5", "T5-small shape (60M), random init; pass a path for pretrained weights",
                       dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                            dropout_rate=0.1)),
    )
}


class BackboneError(ValueError):
    """The backbone name is neither a preset nor a loadable checkpoint."""


PAD_ID, EOS_ID = 0, 1
"""T5's pad (also the decoder start) and end-of-sequence ids, kept by every preset and checkpoint."""


def build_t5(name: str, new_tokens: int = 0, text_vocab_size: int = 2) -> T5ForConditionalGeneration:
    """A T5 whose vocabulary is its text vocabulary followed by ``new_tokens`` new tokens.

    A preset is randomly initialised with ``text_vocab_size`` text tokens (2 = only pad and end of
    sequence, for schemes whose items enter as new tokens or vectors; the size of
    :mod:`recommenders.text`'s fitted vocabulary for text identifiers). A checkpoint keeps its own text
    vocabulary and gets ``new_tokens`` rows appended. New token ``t`` is id
    :func:`new_token_offset` ``+ t`` either way.
    """
    if name in PRESETS:
        preset = PRESETS[name]
        if preset.family != "t5":
            raise BackboneError(f"backbone '{name}' is a {preset.family} model; this scheme needs a T5 backbone")
        config = T5Config(vocab_size=text_vocab_size + new_tokens, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
                          decoder_start_token_id=PAD_ID, feed_forward_proj="relu", tie_word_embeddings=False,
                          **preset.config)
        return T5ForConditionalGeneration(config)
    try:
        model = T5ForConditionalGeneration.from_pretrained(name)
    except (OSError, ValueError) as error:
        presets = ", ".join(p for p, v in PRESETS.items() if v.family == "t5")
        where = "local path" if Path(name).exists() else "name (no weights are downloaded here)"
        raise BackboneError(f"backbone '{name}': not a preset ({presets}) and not loadable as a {where}: "
                            f"{error}") from error
    add_tokens(model, new_tokens)
    model.config.pad_token_id, model.config.eos_token_id = PAD_ID, EOS_ID
    model.config.decoder_start_token_id = PAD_ID
    return model


@torch.no_grad()
def add_tokens(model: T5ForConditionalGeneration, count: int) -> None:
    """Append ``count`` rows to the input embeddings and the LM head, drawn from a normal with the mean and
    covariance of the existing rows: distinct tokens at the scale of the vocabulary. (transformers' default
    "mean resizing" shrinks that covariance so that all new rows start as copies of the mean row, which is
    right for a token that should start as an average word, not for item codes that must tell items apart.)
    """
    if count <= 0:
        return
    old = model.get_input_embeddings().num_embeddings
    model.resize_token_embeddings(old + count, mean_resizing=False)
    matrices = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())}
    for weight in matrices.values():
        rows = weight[:old].float()
        covariance = torch.cov(rows.T) + 1e-6 * torch.eye(rows.shape[1])
        normal = torch.distributions.MultivariateNormal(rows.mean(dim=0), covariance_matrix=covariance)
        weight[old:] = normal.sample((count,)).to(weight.dtype)


def new_token_offset(model: T5ForConditionalGeneration, new_tokens: int) -> int:
    """The id of new token 0 in a model built by :func:`build_t5` with ``new_tokens`` new tokens."""
    return model.get_input_embeddings().num_embeddings - new_tokens


def check_backbone(name: str) -> None:
    """Raise :class:`BackboneError` unless ``name`` is a preset, an existing local path, or a name whose config
    is in the local Hugging Face cache (nothing is downloaded). A local path must be a folder (what
    ``save_pretrained`` writes); control characters are refused."""
    if name in PRESETS:
        return
    if not name.strip() or any(ord(ch) < 32 for ch in name):
        raise BackboneError(f"backbone {name!r}: expected a preset ({', '.join(PRESETS)}), a checkpoint folder or a "
                            "cached Hugging Face name, without control characters")
    if Path(name).is_dir():
        return
    if Path(name).exists():
        raise BackboneError(f"backbone '{name}': a local checkpoint must be a folder written by save_pretrained, "
                            "not a file")
    try:
        T5Config.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        raise BackboneError(f"unknown backbone '{name}'; choose from {', '.join(PRESETS)}, a local checkpoint path "
                            "or a name cached by Hugging Face (no weights are downloaded here)") from error
