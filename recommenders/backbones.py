"""Backbone families and presets: language models built from a config (random init), or loaded with
``from_pretrained`` from what is already on disk.

Two families, one table (:data:`FAMILIES`): ``t5`` (encoder-decoder, ``T5ForConditionalGeneration``; an mT5
checkpoint with its own ``MT5ForConditionalGeneration``, :data:`T5_TYPES`) and ``qwen2`` (decoder-only,
``Qwen2ForCausalLM``); a checkpoint of any other causal LM (a model type registered with ``AutoModelForCausalLM``
that attends causally: not an encoder-decoder, and an encoder such as BERT only with ``is_decoder: true``) is built
with ``AutoModelForCausalLM`` and treated as family ``causal`` the same way. Recommenders ask
:func:`is_decoder_only` once and otherwise use the model's own ``config.hidden_size``.

A checkpoint is a folder of a model and its tokenizer, both written by ``save_pretrained`` (or a name in the
Hugging Face cache); :func:`check_backbone` reads its config, weights headers and tokenizer before any work.

Vocabulary, the same for every family: a preset is randomly initialised with ``text_vocab_size`` text tokens
(2 = only pad and end of sequence for schemes whose items are new tokens or vectors; the fitted BPE
vocabulary of :mod:`recommenders.text` for text identifiers), followed by ``new_tokens`` new tokens; a
checkpoint keeps its own text vocabulary and gets ``new_tokens`` rows appended (:func:`add_tokens`). New
token ``t`` is id :func:`new_token_offset` ``+ t`` either way. Presets use pad 0 and end of sequence 1;
a T5 (or mT5) checkpoint is set to those too, a decoder-only checkpoint keeps its own (:func:`special_ids`).

Fine-tuning (:class:`BackboneSpec`): ``full`` trains every weight; ``lora`` injects LoRA adapters through
``peft`` (``inject_adapter_in_model``, in place) into the ``lora.target_modules`` linear layers and freezes
the rest of the backbone, except the appended new-token rows of the input embedding and the LM head, which
``peft``'s ``trainable_token_indices`` keeps trainable while the pretrained rows stay frozen. ``auto`` is
``lora`` for a checkpoint and ``full`` for a preset: LoRA on random weights is meaningless (a low-rank update
of a random matrix learns little and the frozen random layers carry no knowledge). Heads, projections and
query vectors a recommender adds outside the backbone are always trained.

No weights are downloaded at run time.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.pytorch_utils import Conv1D
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, cached_file

PAD_ID, EOS_ID = 0, 1
"""Pad (also T5's decoder start) and end-of-sequence ids of every preset and of T5 checkpoints."""


@dataclass(frozen=True)
class Family:
    """How to build one kind of backbone: its config and model classes, whether it has an encoder, and
    the linear layers LoRA adapts by default."""

    name: str
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]
    encoder_decoder: bool
    lora_targets: tuple[str, ...] | str
    preset_config: dict[str, Any] = field(default_factory=dict)

    def from_preset(self, preset: BackbonePreset, vocab_size: int, dropout: float | None = None) -> PreTrainedModel:
        config = self.config_class(vocab_size=vocab_size, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
                                   tie_word_embeddings=False, **self.preset_config, **preset.config)
        return self.from_config(with_dropout(config, dropout))

    def from_config(self, config: PretrainedConfig) -> PreTrainedModel:
        """A randomly initialised model of ``config`` (an ``Auto`` model class: the class it maps ``config`` to)."""
        if self.model_class in (AutoModelForCausalLM, AutoModelForSeq2SeqLM):
            return self.model_class.from_config(config)
        return self.model_class(config)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("t5", T5Config, AutoModelForSeq2SeqLM, True, ("q", "v"),
               dict(decoder_start_token_id=PAD_ID, feed_forward_proj="relu")),
        Family("qwen2", Qwen2Config, Qwen2ForCausalLM, False,
               ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
               dict(bos_token_id=None, use_sliding_window=False, max_position_embeddings=4096)),
        Family("causal", AutoConfig, AutoModelForCausalLM, False, "all-linear"),
    )
}


@dataclass(frozen=True)
class BackbonePreset:
    """A named architecture: its family and the config fields that define it (random init)."""

    name: str
    family: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)


def _qwen(hidden: int, layers: int, heads: int, kv_heads: int, ff: int) -> dict[str, Any]:
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                intermediate_size=ff)


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
        BackbonePreset("qwen-tiny", "qwen2", "Qwen2 decoder-only, 2 layers, hidden 64 (CPU tests), random init",
                       _qwen(64, 2, 4, 2, 128)),
        BackbonePreset("qwen-1m", "qwen2", "Qwen2 decoder-only ladder: 4 layers, hidden 128, random init",
                       _qwen(128, 4, 4, 2, 384)),
        BackbonePreset("qwen-5m", "qwen2", "Qwen2 decoder-only ladder: 6 layers, hidden 256, random init",
                       _qwen(256, 6, 4, 2, 768)),
        BackbonePreset("qwen-20m", "qwen2", "Qwen2 decoder-only ladder: 12 layers, hidden 384, random init",
                       _qwen(384, 12, 6, 2, 1152)),
        BackbonePreset("qwen-100m", "qwen2", "Qwen2 decoder-only ladder: 16 layers, hidden 768, random init",
                       _qwen(768, 16, 12, 2, 2048)),
    )
}

FINETUNE_MODES = ("auto", "full", "lora")

ENCODER_TYPES = frozenset(MODEL_FOR_MASKED_LM_MAPPING_NAMES) | {"bert-generation"}
"""Model types whose causal-LM class is a bidirectional encoder unless the config sets ``is_decoder: true``."""

T5_TYPES = ("t5", "mt5")
"""Model types of family ``t5``, each built with its own class (``AutoModelForSeq2SeqLM``): mT5 has T5 v1.1's layers
and weight names, but T5's class would not compute its logits (T5 scales a tied LM head's input by
``d_model ** -0.5``, transformers' MT5 does not). UMT5, with a relative position bias in every layer, is not one."""

SUPPORTED = ("T5 encoder-decoders (model_type 't5' or 'mt5') and causal LMs that AutoModelForCausalLM loads (gpt2, "
             "llama, qwen2, ...; an encoder such as bert only with is_decoder: true in its config)")

WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
"""A checkpoint's weights, in the order ``from_pretrained`` prefers them."""

TOKENIZER_FILE = "tokenizer.json"
PROBE_TEXT = "red pen (2)"
"""Text a checkpoint's tokenizer must encode to at least one token."""

LORA_LAYERS = (torch.nn.Linear, Conv1D, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding,
               torch.nn.MultiheadAttention)
"""The module types ``peft`` puts LoRA adapters on (its default dispatch)."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build and how to fine-tune it.

    name: a preset or a ``from_pretrained`` name / local path.
    finetune: ``full``, ``lora``, or ``auto`` (:func:`finetune_mode`).
    lora: LoRA settings ``{r, alpha, dropout, target_modules}`` (target_modules None = the family's default).
    gradient_checkpointing: recompute activations in the backward pass (memory for time).
    dropout: every dropout probability of the model's config (:func:`dropout_fields`); None = the config's own.
    """

    name: str
    finetune: str = "auto"
    lora: dict[str, Any] = field(default_factory=lambda: dict(r=8, alpha=16.0, dropout=0.05, target_modules=None))
    gradient_checkpointing: bool = False
    dropout: float | None = None


class BackboneError(ValueError):
    """The backbone name is neither a preset nor a loadable checkpoint, or does not fit the scheme."""


@lru_cache(maxsize=32)
def family_of(name: str) -> str:
    """The family of a preset or checkpoint name (a checkpoint's config is read from disk only); a model type
    that is neither a T5 nor a causal LM (:data:`SUPPORTED`) is refused."""
    if name in PRESETS:
        return PRESETS[name].family
    config = _local_config(name)
    kind = config.model_type
    if kind in T5_TYPES:
        return "t5"
    if getattr(config, "is_encoder_decoder", False):
        problem = "an encoder-decoder other than T5"
    elif kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        problem = "not a causal LM that AutoModelForCausalLM loads"
    elif kind in ENCODER_TYPES and not getattr(config, "is_decoder", False):
        problem = "a bidirectional encoder (its config does not set is_decoder: true)"
    else:
        return "qwen2" if kind == "qwen2" else "causal"
    raise BackboneError(f"backbone '{name}' has model_type '{kind}', {problem}; supported: {SUPPORTED}")


def _local_config(name: str) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        where = "a local path whose config does not load" if Path(name).exists() else "not a local path"
        raise BackboneError(f"unknown backbone '{name}'; choose from {', '.join(PRESETS)}, a local checkpoint path "
                            f"or a name cached by Hugging Face (no weights are downloaded here; it is not a preset "
                            f"and {where})") from error


def finetune_mode(spec: BackboneSpec) -> str:
    """``spec.finetune`` with ``auto`` resolved: LoRA for a checkpoint, full fine-tuning for a random-init preset."""
    if spec.finetune not in FINETUNE_MODES:
        raise BackboneError(f"finetune '{spec.finetune}': choose from {', '.join(FINETUNE_MODES)}")
    if spec.finetune == "auto":
        return "full" if spec.name in PRESETS else "lora"
    return spec.finetune


def build_backbone(backbone: str | BackboneSpec, new_tokens: int = 0, text_vocab_size: int = 2,
                   encoder_decoder: bool | None = None) -> PreTrainedModel:
    """A backbone whose vocabulary is its text vocabulary followed by ``new_tokens`` new tokens, fine-tuned as
    ``backbone`` says (a plain name: ``auto``). ``encoder_decoder`` True / False refuses the other kind."""
    spec = backbone if isinstance(backbone, BackboneSpec) else BackboneSpec(backbone)
    family = FAMILIES[family_of(spec.name)]
    if encoder_decoder is not None and family.encoder_decoder != encoder_decoder:
        kind = "an encoder-decoder (T5)" if encoder_decoder else "a decoder-only"
        raise BackboneError(f"backbone '{spec.name}' is a {family.name} model; this needs {kind} backbone")
    if spec.name in PRESETS:
        model = family.from_preset(PRESETS[spec.name], text_vocab_size + new_tokens, spec.dropout)
    else:
        config = {} if spec.dropout is None else {"config": with_dropout(_local_config(spec.name), spec.dropout)}
        try:
            model = family.model_class.from_pretrained(spec.name, local_files_only=True, **config)
        except Exception as error:  # any failure of reading user files (safetensors, torch, json, ...)
            raise BackboneError(f"backbone '{spec.name}': not loadable with from_pretrained from local files "
                                f"(no weights are downloaded here): {one_line(error)}") from error
        add_tokens(model, new_tokens)
        if family.encoder_decoder:
            model.config.pad_token_id, model.config.eos_token_id = PAD_ID, EOS_ID
            model.config.decoder_start_token_id = PAD_ID
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if finetune_mode(spec) == "lora":
        apply_lora(model, family, spec.lora, new_tokens)
    return model


def dropout_fields(config: PretrainedConfig) -> list[str]:
    """The dropout probabilities of ``config`` (what ``run.backbone_dropout`` sets): its number-valued fields whose
    name contains ``dropout`` or ends in ``pdrop`` (T5 ``dropout_rate``; Qwen2 ``attention_dropout``; GPT-2
    ``resid_pdrop``, ``embd_pdrop``, ``attn_pdrop``; BERT ``hidden_dropout_prob``, ...). Fields left unset (None,
    e.g. ``classifier_dropout``) are not numbers and are kept."""
    return sorted(name for name, value in config.to_dict().items()
                  if ("dropout" in name or name.endswith("pdrop"))
                  and isinstance(value, (int, float)) and not isinstance(value, bool))


def with_dropout(config: PretrainedConfig, dropout: float | None) -> PretrainedConfig:
    """``config`` with each of its :func:`dropout_fields` set to ``dropout`` (in place; None: unchanged)."""
    for name in dropout_fields(config) if dropout is not None else ():
        setattr(config, name, dropout)
    return config


def build_t5(backbone: str | BackboneSpec, new_tokens: int = 0, text_vocab_size: int = 2) -> PreTrainedModel:
    """:func:`build_backbone` for schemes that need an encoder-decoder: a ``T5ForConditionalGeneration`` (or, for an
    mT5 checkpoint, an ``MT5ForConditionalGeneration``, which has its interface)."""
    return build_backbone(backbone, new_tokens, text_vocab_size, encoder_decoder=True)


def apply_lora(model: PreTrainedModel, family: Family, lora: dict[str, Any], new_tokens: int) -> None:
    """Inject LoRA adapters in place (``peft``) and freeze the rest of ``model`` except its ``new_tokens`` last
    embedding and LM-head rows (``trainable_token_indices``; the LM head only when it is not tied). ``peft`` is
    imported here: importing it loads many of transformers' model classes (seconds), which a run without LoRA
    does not pay."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora.get("target_modules") or family.lora_targets
    indices: dict[str, list[int]] = {}
    if new_tokens > 0:
        rows = list(range(new_token_offset(model, new_tokens), model.config.vocab_size))
        names = {id(module): name for name, module in model.named_modules()}
        indices[names[id(model.get_input_embeddings())].rsplit(".", 1)[-1]] = rows
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            indices[names[id(head)].rsplit(".", 1)[-1]] = rows
    config = LoraConfig(r=int(lora["r"]), lora_alpha=float(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                        target_modules=list(targets) if not isinstance(targets, str) else targets,
                        trainable_token_indices=indices or None)
    try:
        inject_adapter_in_model(config, model)
    except ValueError as error:
        raise BackboneError(f"lora.target_modules {targets}: {one_line(error)}") from error
    model.finetune_mode = "lora"


def check_adapters_trained(model: torch.nn.Module) -> None:
    """Raise :class:`BackboneError` when ``model`` holds LoRA adapters (``peft``'s ``lora_A`` / ``lora_B``) of which
    none got a gradient from the backward pass just made: the model never calls an adapted module (a
    ``run.lora.target_modules`` entry that names modules this scheme does not use), so LoRA would train nothing of
    the backbone while the record says ``lora``. Reads only whether gradients exist: no wait for the device."""
    adapters = [(name, p) for name, p in model.named_parameters() if p.requires_grad and ".lora_" in name]
    if adapters and all(p.grad is None for _, p in adapters):
        modules = sorted({name.split(".lora_")[0].rsplit(".", 1)[-1] for name, _ in adapters})
        raise BackboneError(f"run.lora: none of the {len(adapters)} LoRA adapter weights (on {', '.join(modules)}) got "
                            "a gradient in the first training step: the model never calls those modules, so the "
                            "backbone would stay frozen; choose run.lora.target_modules among the modules it uses")


def is_decoder_only(model: PreTrainedModel) -> bool:
    """True for a causal LM (the history is a prompt), False for an encoder-decoder."""
    return not model.config.is_encoder_decoder


def causal_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so that padding (left or inside) does not shift them."""
    return (mask.long().cumsum(dim=1) - 1).clamp_min(0)


def padding_mask_4d(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, 1, K]`` additive attention mask of a ``[B, K]`` padding mask (1 / True on tokens): 0 on tokens, the
    dtype's minimum on padding, for any number of queries.

    ``transformers`` passes a 4D mask to T5's attention as it is; a 2D one it inspects on the host first
    (``padding_mask.all()``, a host-device sync) and turns into the same values (its eager masks), or its SDPA
    path into ``where(mask, bias, minimum)``, which equals ``bias + minimum`` in float32: so a T5 computes the
    same bits either way, without the sync."""
    minimum = torch.full(mask.shape, torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return minimum.masked_fill(mask.bool(), 0.0)[:, None, None, :]


def context_states(model: PreTrainedModel, inputs_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, S, d]`` hidden states of a history given as embeddings (padding where ``mask`` is 0): a T5's
    encoder output, or a decoder-only model's last hidden states (causal; the last column must be real)."""
    if is_decoder_only(model):
        return model.base_model(inputs_embeds=inputs_embeds, attention_mask=mask.long(),
                                position_ids=causal_positions(mask), use_cache=False).last_hidden_state
    return model.get_encoder()(inputs_embeds=inputs_embeds,
                               attention_mask=padding_mask_4d(mask, inputs_embeds.dtype)).last_hidden_state


def user_state(model: PreTrainedModel, inputs_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, d]`` one state summarising a history given as embeddings, left-padded: a T5's decoder state after
    its start token over the encoder output (E4SRec on T5), or a decoder-only model's last position's hidden
    state (E4SRec's released LLaMA code)."""
    if is_decoder_only(model):
        return context_states(model, inputs_embeds, mask)[:, -1]
    encoded = context_states(model, inputs_embeds, mask)
    start = torch.full((len(inputs_embeds), 1), model.config.decoder_start_token_id, dtype=torch.long,
                       device=inputs_embeds.device)
    decoded = model.get_decoder()(input_ids=start, encoder_hidden_states=encoded,
                                  encoder_attention_mask=padding_mask_4d(mask, encoded.dtype), use_cache=False)
    return decoded.last_hidden_state[:, -1]


def special_ids(model: PreTrainedModel) -> tuple[int, int]:
    """(pad, end of sequence) of a built backbone: 0 and 1 for presets and T5; a decoder-only checkpoint's own
    (its pad token, or its end of sequence when it has none)."""
    eos = model.config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = model.config.pad_token_id
    if eos is None:
        raise BackboneError(f"backbone {model.config.name_or_path!r} defines no eos_token_id")
    return (eos if pad is None else pad), eos


@torch.no_grad()
def add_tokens(model: PreTrainedModel, count: int) -> None:
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


def new_token_offset(model: PreTrainedModel, new_tokens: int) -> int:
    """The id of new token 0 in a model built by :func:`build_backbone` with ``new_tokens`` new tokens."""
    return model.config.vocab_size - new_tokens


POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")
"""Names of the embedding modules that hold a decoder's learned absolute positions: GPT-2 and GPT-Neo (``wpe``),
OPT (``embed_positions``, whose first ``offset`` rows no position uses), BERT-style decoders
(``position_embeddings``)."""


def position_table(model: torch.nn.Module) -> tuple[str, int] | None:
    """The name of ``model``'s learned position table and the most positions it holds (its rows less its
    ``offset``), or None when positions are not a table (rotary: Qwen2, Llama; relative: T5; ALiBi). Looked for
    outside the stacks of layers (:func:`modules_outside_layers`), where every such table lies, so that a call
    per training step costs a few modules, not the whole model's (with LoRA, thousands)."""
    for name, module in modules_outside_layers(model):
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in POSITION_TABLES:
            return name, module.num_embeddings - int(getattr(module, "offset", 0))
    return None


def modules_outside_layers(module: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.nn.Module]]:
    """``module``'s submodules with their dotted names, in :meth:`~torch.nn.Module.named_modules` order, except
    what lies inside a ``ModuleList`` (a stack of layers, which is listed but not entered)."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        yield path, child
        if not isinstance(child, torch.nn.ModuleList):
            yield from modules_outside_layers(child, path)


def check_positions(model: PreTrainedModel, length: int) -> None:
    """Raise :class:`BackboneError` when ``length`` tokens (the widest prompt and what follows it) need more
    positions than a decoder-only ``model``'s learned position table holds (:func:`position_table`), which would
    fail as an index error deep inside the model. Host-side shapes only: no wait for the device."""
    table = position_table(model)
    if table is not None and length > table[1]:
        raise BackboneError(f"backbone '{model.config.name_or_path}': a prompt and its continuation of {length} "
                            f"tokens need more positions than its {table[1]} (learned position table {table[0]}); "
                            "lower run.max_history, or use a backbone with more positions")


def one_line(error: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def check_backbone(name: str) -> None:
    """Raise :class:`BackboneError` unless ``name`` is a preset, or a local folder (what ``save_pretrained``
    writes) or cached name (nothing is downloaded) whose config loads as a T5 or a causal LM, whose weights
    headers read (:func:`_check_weights`) and whose tokenizer fits (:func:`_check_tokenizer`); control
    characters are refused, and so is a preset's name while a folder of that name is in the working directory (a
    run names the folder ``./t5-tiny`` as ``t5-tiny``, see :func:`benchmark.config.backbone_identity`, so it
    could not tell them apart). Reads headers and small files only: cheap enough to run before any work."""
    if name in PRESETS:
        if Path(name).is_dir():
            raise BackboneError(f"backbone '{name}' is a preset, and also a folder in the working directory "
                                f"({Path(name).resolve()}); rename or move the folder, or run from another directory")
        return
    if not name.strip() or any(ord(ch) < 32 for ch in name):
        raise BackboneError(f"backbone {name!r}: expected a preset ({', '.join(PRESETS)}), a checkpoint folder or a "
                            "cached Hugging Face name, without control characters")
    if Path(name).exists() and not Path(name).is_dir():
        raise BackboneError(f"backbone '{name}': a local checkpoint must be a folder written by save_pretrained, "
                            "not a file")
    family = FAMILIES[family_of(name)]
    config = _local_config(name)
    if not family.encoder_decoder and getattr(config, "eos_token_id", None) is None:
        raise BackboneError(f"backbone '{name}': its config defines no eos_token_id (a decoder-only backbone "
                            "separates the prompt from the target with it)")
    _check_weights(name)
    _check_tokenizer(name, family, config)


def _checkpoint_file(name: str, filename: str) -> Path | None:
    """``filename`` of checkpoint ``name``, in its folder or in the Hugging Face cache; None when absent."""
    found = cached_file(name, filename, local_files_only=True, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    return Path(found) if found else None


def _check_weights(name: str) -> None:
    """Raise :class:`BackboneError` unless checkpoint ``name`` has a weights file (:data:`WEIGHT_FILES`, the
    first found, as ``from_pretrained`` picks) and every file it consists of (the shards of an index) is
    there: a safetensors file must open with ``safe_open``, which reads its header only and checks that the
    file is as long as the header says (a truncated file fails); a ``.bin`` must be non-empty."""
    found = [(filename, path) for filename in WEIGHT_FILES if (path := _checkpoint_file(name, filename))]
    if not found:
        raise BackboneError(f"backbone '{name}': no weights file (expected one of {', '.join(WEIGHT_FILES)}, as "
                            "save_pretrained writes)")
    filename, path = found[0]
    shards = [path]
    if filename.endswith(".index.json"):
        try:
            shards = [path.parent / shard for shard in sorted(set(json.loads(path.read_text())["weight_map"].values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise BackboneError(f"backbone '{name}': weights index {path} is unreadable ({one_line(error)})") from error
    for shard in shards:
        if not shard.is_file() or shard.stat().st_size == 0:
            raise BackboneError(f"backbone '{name}': weights file {shard} is missing or empty")
        if shard.suffix == ".safetensors":
            try:
                with safe_open(str(shard), framework="pt"):
                    pass
            except (SafetensorError, OSError) as error:
                raise BackboneError(f"backbone '{name}': weights file {shard} is corrupt or truncated "
                                    f"({one_line(error)})") from error


def _check_tokenizer(name: str, family: Family, config: PretrainedConfig) -> None:
    """Raise :class:`BackboneError` unless checkpoint ``name`` has tokenizer files that load, encode text to
    tokens, define the special tokens of its family (T5: pad 0 and end of sequence 1; decoder-only: an end of
    sequence) and fit the model's embedding rows (``config.vocab_size``).

    A tokenizer with more tokens than the model has rows is refused rather than resized: the rows appended here
    are item tokens (:func:`new_token_offset`), so the tokenizer's last ids would be read as items, and new
    random rows for real words would silently change the pretrained model. Resize the checkpoint's embeddings
    (``model.resize_token_embeddings(len(tokenizer))``) and save it again. (transformers builds a tokenizer
    from no files at all, which encodes text to nothing or to unknown tokens, hence the files are checked.)"""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as error:  # any failure of reading user files (json, sentencepiece, ...)
        raise BackboneError(f"backbone '{name}': its tokenizer does not load ({one_line(error)}); save the "
                            "tokenizer with save_pretrained into the checkpoint folder") from error
    files = sorted({TOKENIZER_FILE, *type(tokenizer).vocab_files_names.values()})
    if not any(_checkpoint_file(name, filename) for filename in files):
        raise BackboneError(f"backbone '{name}': no tokenizer files (expected {' or '.join(files)}); save the "
                            "tokenizer with save_pretrained into the checkpoint folder")
    if not tokenizer.encode(PROBE_TEXT, add_special_tokens=False):
        raise BackboneError(f"backbone '{name}': its tokenizer encodes {PROBE_TEXT!r} to no tokens")
    if family.encoder_decoder and (tokenizer.pad_token_id, tokenizer.eos_token_id) != (PAD_ID, EOS_ID):
        raise BackboneError(f"backbone '{name}': its tokenizer uses pad id {tokenizer.pad_token_id} and eos id "
                            f"{tokenizer.eos_token_id}; a T5 backbone needs pad {PAD_ID}, eos {EOS_ID}")
    if not family.encoder_decoder and tokenizer.eos_token_id is None:
        raise BackboneError(f"backbone '{name}': its tokenizer defines no end-of-sequence token")
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise BackboneError(f"backbone '{name}': its tokenizer has {len(tokenizer)} tokens but the model's "
                            f"embedding has {rows} rows (config vocab_size); resize the embeddings "
                            "(resize_token_embeddings) and save the checkpoint again")


def meta_model(name: str) -> PreTrainedModel:
    """The backbone ``name`` built on the meta device (nothing allocated, a checkpoint's weights not read): a preset
    with a 2-token text vocabulary (pad, EOS) and no new tokens, or a checkpoint from its config."""
    family = FAMILIES[family_of(name)]
    with torch.device("meta"):
        return family.from_preset(PRESETS[name], 2) if name in PRESETS else family.from_config(_local_config(name))


def check_lora_targets(name: str, targets: Sequence[str] | str | None, rank: int | None = None) -> None:
    """Raise :class:`BackboneError` unless every LoRA target (None: the family's default) names a module of the
    backbone ``name`` as ``peft`` matches it (the module's name, or its last dotted parts), every module it
    names is of a type ``peft`` adapts (:data:`LORA_LAYERS`) and, given the LoRA ``rank`` (``run.lora.r``), no
    such module's weight has a side shorter than it: the update ``B @ A`` of a d x k weight has rank at most
    min(d, k), so a larger r only adds memory (r 100,000 on a small model asked for gigabytes). Built on the meta
    device, so nothing is allocated and a checkpoint's weights are not read. A string target (``all-linear``, a
    pattern) is left to ``peft``."""
    family = FAMILIES[family_of(name)]
    targets = targets or family.lora_targets
    if isinstance(targets, str):
        return
    model = meta_model(name)
    linear = ", ".join(sorted({module_name.rsplit(".", 1)[-1] for module_name, module in model.named_modules()
                               if isinstance(module, (torch.nn.Linear, Conv1D))}))
    matched = {target: [module for module_name, module in model.named_modules()
                        if module_name and (module_name == target or module_name.endswith(f".{target}"))]
               for target in targets}
    missing = [target for target, modules in matched.items() if not modules]
    if missing:
        raise BackboneError(f"lora.target_modules: {', '.join(missing)} name(s) no module of backbone '{name}'; its "
                            f"linear layers are named {linear}")
    for target, modules in matched.items():
        wrong = sorted({type(module).__name__ for module in modules if not isinstance(module, LORA_LAYERS)})
        if wrong:
            raise BackboneError(f"lora.target_modules: {target} names a {', '.join(wrong)} module of backbone "
                                f"'{name}', which LoRA cannot adapt (peft adapts "
                                f"{', '.join(layer.__name__ for layer in LORA_LAYERS)}); its linear layers are "
                                f"named {linear}")
        sides = [min(module.weight.shape[:2]) for module in modules
                 if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() >= 2]
        bound = min(sides, default=None)
        if rank is not None and bound is not None and rank > bound:
            raise BackboneError(f"lora.r {rank}: above the smaller side ({bound}) of a {target} weight of backbone "
                                f"'{name}', which bounds the rank of its LoRA update; choose r <= {bound}")


@lru_cache(maxsize=None)
def preset_parameters(name: str) -> int:
    """Parameters of a preset with a 2-token text vocabulary (pad, EOS) and no new tokens (built on the meta
    device: nothing is allocated)."""
    return sum(p.numel() for p in meta_model(name).parameters())
