"""A checkpoint given as ``--backbone PATH``: tiny T5, GPT-2, Llama and BERT checkpoints written here with
``save_pretrained`` (no hub involved), then damaged one way each. Every bad one exits 2 with a one-line message
naming the path before any work (the dataset is not even loaded); the good ones pass the same checks."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MT5Config,
    MT5ForConditionalGeneration,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from benchmark.config import resolve
from benchmark.data.dataset import Dataset
from benchmark.splits import make_split
from identifiers.registry import get_scheme
from recommenders import trainer
from recommenders.backbones import (
    BackboneError,
    BackboneSpec,
    build_backbone,
    build_t5,
    check_backbone,
    check_lora_targets,
    family_of,
    position_table,
)
from recommenders.sasrec import SASRec, SASRecParams
from recommenders.text import TextVocabulary, disambiguate
from tests.test_bad_input import EXIT_USAGE, cli, one_epoch_config, run_argv


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with pad 0, end of sequence 1 and unknown 2 (fits T5 and causal LMs)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(["red pen", "blue ink", "green chalk box"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


TINY = {
    "t5": (T5ForConditionalGeneration, T5Config, dict(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)),
    "mt5": (MT5ForConditionalGeneration, MT5Config, dict(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)),
    "gpt2": (GPT2LMHeadModel, GPT2Config, dict(n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=1,
                                               eos_token_id=1)),
    "llama": (LlamaForCausalLM, LlamaConfig, dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, num_key_value_heads=1, bos_token_id=None,
                                                  pad_token_id=0, eos_token_id=1)),
    "opt": (OPTForCausalLM, OPTConfig, dict(hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                            word_embed_proj_dim=16, bos_token_id=1, pad_token_id=0, eos_token_id=1)),
    "bert": (BertForMaskedLM, BertConfig, dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, eos_token_id=1)),
}
"""Model class, config class and config of a one-layer, width-16 model of each kind."""


def checkpoint(folder: Path, kind: str, tokenizer: PreTrainedTokenizerFast, with_tokenizer: bool = True,
               **config: object) -> str:
    """Save a tiny ``kind`` model (as many embedding rows as ``tokenizer`` has tokens unless ``config`` gives
    ``vocab_size``) and, ``with_tokenizer``, the tokenizer into ``folder``; its path."""
    model_class, config_class, defaults = TINY[kind]
    model_class(config_class(**{**defaults, "vocab_size": len(tokenizer), **config})).save_pretrained(folder)
    if with_tokenizer:
        tokenizer.save_pretrained(folder)
    return str(folder)


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], backbone: str, identifiers: str = "tiger",
            *extra: str) -> str:
    """Run the CLI on ``backbone``; assert exit 2 before the dataset is loaded; its one-line error."""
    code, out, err = cli(run_argv(tmp_path, identifiers, "--backbone", backbone, *extra), capsys)
    assert code == EXIT_USAGE and "synthetic (k-core" not in out
    assert not [path for path in tmp_path.glob("cache/**/*") if path.is_file()]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and backbone in lines[0]
    return lines[0]


def test_good_checkpoints_of_every_kind_pass_the_check(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    for kind, family in (("t5", "t5"), ("mt5", "t5"), ("gpt2", "causal"), ("llama", "causal")):
        path = checkpoint(tmp_path / kind, kind, tokenizer)
        check_backbone(path)
        assert family_of(path) == family
    decoder = checkpoint(tmp_path / "bert-decoder", "bert", tokenizer, is_decoder=True)
    check_backbone(decoder)
    assert family_of(decoder) == "causal"


def test_a_bidirectional_encoder_is_refused_naming_its_model_type(tmp_path: Path, tokenizer: PreTrainedTokenizerFast,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    error = refused(tmp_path, capsys, checkpoint(tmp_path / "bert", "bert", tokenizer))
    assert "model_type 'bert', a bidirectional encoder" in error
    assert "T5 encoder-decoders (model_type 't5' or 'mt5')" in error


def test_an_mt5_checkpoint_is_built_with_its_own_classes_and_trains(tmp_path: Path, tokenizer: PreTrainedTokenizerFast,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """An mT5 is family t5 but built as MT5ForConditionalGeneration: T5's class loads its weights without a missing
    key yet computes other logits where the LM head is tied (T5 scales the head's input by d_model ** -0.5, MT5 does
    not), so it must not stand in for it. A LoRA run of TIGER (the checkpoint's default) trains on it."""
    path = checkpoint(tmp_path / "mt5", "mt5", tokenizer)
    check_backbone(path)
    assert family_of(path) == "t5"
    model = build_t5(BackboneSpec(path, finetune="full")).eval()
    ids, start = torch.tensor([[3, 4, 5, 1]]), torch.tensor([[0]])
    own, as_t5 = (cls.from_pretrained(path).eval()(input_ids=ids, decoder_input_ids=start).logits
                  for cls in (MT5ForConditionalGeneration, T5ForConditionalGeneration))
    assert isinstance(model, MT5ForConditionalGeneration) and not torch.allclose(own, as_t5, atol=1e-3)
    assert torch.equal(model(input_ids=ids, decoder_input_ids=start).logits, own)
    code, _, err = cli(run_argv(tmp_path, "tiger", "--backbone", path, "--config", str(one_epoch_config(tmp_path))),
                       capsys)
    assert code == 0, err
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert (record["model"]["finetune"], record["model"]["backbone_family"]) == ("lora", "mt5")


def test_a_checkpoint_without_tokenizer_files_is_refused_before_bigrec_fits(
        tmp_path: Path, tokenizer: PreTrainedTokenizerFast, capsys: pytest.CaptureFixture[str]) -> None:
    error = refused(tmp_path, capsys, checkpoint(tmp_path / "gpt2", "gpt2", tokenizer, with_tokenizer=False), "bigrec")
    assert "no tokenizer files (expected merges.txt or tokenizer.json or vocab.json)" in error


def test_suffixes_a_tokenizer_cannot_tell_apart_raise_instead_of_looping(tmp_path: Path) -> None:
    """A tokenizer that writes ``' (2)'`` as no tokens, or ``' (2)'`` and ``' (3)'`` alike, would make the
    search for a free suffix endless."""
    nothing = SimpleNamespace(source="empty", encode=lambda texts, _: [[] for _ in texts])
    with pytest.raises(BackboneError, match="writes the suffix ' \\(2\\)' as no tokens"):
        disambiguate([[5], [5]], nothing)
    words = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "pen": 3}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    unknown = TextVocabulary(PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>",
                                                     unk_token="<unk>"), "words")
    with pytest.raises(BackboneError, match="writes the suffix ' \\(3\\)' as ' \\(2\\)'"):
        disambiguate([[3], [3], [3, 2, 2, 2]], unknown)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "model.safetensors is corrupt or truncated"),
    ("delete", "no weights file (expected one of model.safetensors"),
    ("empty-bin", "pytorch_model.bin is missing or empty"),
    ("missing-shard", "model-00001-of-00002.safetensors is missing or empty"),
])
def test_damaged_weights_are_refused_before_any_work(damage: str, message: str, tmp_path: Path,
                                                     tokenizer: PreTrainedTokenizerFast,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint(tmp_path / "gpt2", "gpt2", tokenizer)
    weights = Path(path) / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    if damage == "empty-bin":
        (Path(path) / "pytorch_model.bin").touch()
    if damage == "missing-shard":
        (Path(path) / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert message in refused(tmp_path, capsys, path)


def test_a_load_failure_in_build_backbone_is_a_one_line_backbone_error(tmp_path: Path,
                                                                       tokenizer: PreTrainedTokenizerFast) -> None:
    path = checkpoint(tmp_path / "gpt2", "gpt2", tokenizer)
    weights = Path(path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BackboneError, match="not loadable with from_pretrained") as error:
        build_backbone(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind, config, message", [
    ("llama", {"eos_token_id": None}, "its config defines no eos_token_id"),
    ("t5", {}, "its tokenizer uses pad id 1 and eos id 0; a T5 backbone needs pad 0, eos 1"),
    ("llama", {"vocab_size": 200}, "its tokenizer has 280 tokens but the model's embedding has 200 rows"),
])
def test_missing_or_mismatched_special_tokens_and_sizes_are_refused(kind: str, config: dict[str, object],
                                                                    message: str, tmp_path: Path,
                                                                    tokenizer: PreTrainedTokenizerFast,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint(tmp_path / kind, kind, tokenizer, **config)
    if kind == "t5":  # a tokenizer whose pad and end of sequence are swapped
        swapped = Path(path) / "tokenizer_config.json"
        settings = json.loads(swapped.read_text())
        swapped.write_text(json.dumps({**settings, "pad_token": "</s>", "eos_token": "<pad>"}))
    assert message in refused(tmp_path, capsys, path, "bigrec")


def test_lora_targets_of_causal_checkpoints_are_checked_on_the_meta_device(tmp_path: Path,
                                                                           tokenizer: PreTrainedTokenizerFast) -> None:
    gpt2 = checkpoint(tmp_path / "gpt2", "gpt2", tokenizer)
    llama = checkpoint(tmp_path / "llama", "llama", tokenizer)
    check_lora_targets(gpt2, ["c_attn", "c_proj"])
    check_lora_targets(llama, ["q_proj", "v_proj"])
    lora = dict(r=2, alpha=4.0, dropout=0.0, target_modules=["c_attn"])
    model = build_backbone(BackboneSpec(gpt2, "lora", lora), new_tokens=3)
    assert {name for name, p in model.named_parameters() if p.requires_grad and "lora_" in name}
    with pytest.raises(BackboneError, match="nosuch name\\(s\\) no module .* linear layers are named c_attn, c_fc"):
        check_lora_targets(gpt2, ["nosuch"])
    check_lora_targets(llama, ["q_proj"], rank=8)
    with pytest.raises(BackboneError, match=r"lora.r 100000: above the smaller side \(\d+\) of a q_proj weight"):
        check_lora_targets(llama, ["q_proj"], rank=100_000)


def test_a_lora_target_of_a_type_peft_cannot_adapt_stops_before_any_run(tmp_path: Path,
                                                                        tokenizer: PreTrainedTokenizerFast,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint(tmp_path / "gpt2", "gpt2", tokenizer)
    config = tmp_path / "lora.yaml"
    config.write_text("run: {finetune: lora, lora: {target_modules: [c_attn, ln_f]}}\n")
    error = refused(tmp_path, capsys, path, "tiger", "--config", str(config))
    assert "run.lora: lora.target_modules: ln_f names a LayerNorm module" in error
    assert "peft adapts Linear, Conv1D" in error and "linear layers are named c_attn, c_fc, c_proj, lm_head" in error


def test_tune_checks_the_lora_targets_before_any_trial(tmp_path: Path, tokenizer: PreTrainedTokenizerFast,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint(tmp_path / "llama", "llama", tokenizer)
    config = tmp_path / "lora.yaml"
    config.write_text("run: {finetune: lora, lora: {target_modules: [q_proj, norm]}}\n")
    code, out, err = cli(["tune", "--identifiers", "cid", "--profile", "smoke", "--trials", "1", "--no-final-run",
                          "--no-progress", "--backbone", path, "--config", str(config), "--results-dir",
                          str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == EXIT_USAGE and "norm names a LlamaRMSNorm module of backbone" in err
    assert not list(tmp_path.rglob("*.db")) and not (tmp_path / "cache").exists()


def test_a_checkpoint_path_spelt_another_way_reuses_its_record(tmp_path: Path, tokenizer: PreTrainedTokenizerFast,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint(tmp_path / "ck", "gpt2", tokenizer)
    config = one_epoch_config(tmp_path)
    assert cli(run_argv(tmp_path, "cid", "--backbone", "ck/", "--config", str(config)), capsys)[0] == 0
    [path] = (tmp_path / "results").rglob("*.json")
    record = json.loads(path.read_text())
    fingerprint = record["config"]["backbone_fingerprint"]
    assert record["config"]["backbone"] == "ck" and record["run_name"].startswith(f"synthetic__cid__ck@{fingerprint}")
    assert record["hardware"]["processes"] == 1
    code, out, _ = cli(run_argv(tmp_path, "cid", "--backbone", "./ck", "--config", str(config)), capsys)
    assert code == 0 and f"skip synthetic__cid__ck@{fingerprint}__loo__smoke" in out
    assert list((tmp_path / "results").rglob("*.json")) == [path]


@pytest.mark.parametrize(("kind", "size", "table"), [("gpt2", {"n_positions": 16}, "transformer.wpe"),
                                                     ("opt", {"max_position_embeddings": 16},
                                                      "model.decoder.embed_positions")])
def test_a_prompt_longer_than_a_learned_position_table_is_a_one_line_error(
        tmp_path: Path, tokenizer: PreTrainedTokenizerFast, capsys: pytest.CaptureFixture[str], kind: str,
        size: dict[str, int], table: str) -> None:
    """GPT-2's and OPT's positions are tables (OPT's with two rows no position uses): BIGRec's prompts of item
    titles outgrow 16 positions, which stops the run with exit 2 naming the backbone and the table, not with an
    index error inside the model."""
    path = checkpoint(tmp_path / f"{kind}-short", kind, tokenizer, **size)
    code, _, err = cli(run_argv(tmp_path, "bigrec", "--backbone", path, "--config", str(one_epoch_config(tmp_path))),
                       capsys)
    assert code == EXIT_USAGE
    assert f"backbone '{path}': a prompt and its continuation of" in err
    assert f"than its 16 (learned position table {table})" in err


def test_rotary_and_relative_positions_have_no_table_to_outgrow(tokenizer: PreTrainedTokenizerFast) -> None:
    for kind in ("llama", "t5"):
        model_class, config_class, defaults = TINY[kind]
        assert position_table(model_class(config_class(**{**defaults, "vocab_size": len(tokenizer)}))) is None


def test_lora_adapters_that_get_no_gradient_stop_training(small_synthetic: Dataset) -> None:
    """Adapters on a module the model never calls would leave the backbone frozen under a ``lora`` record: the
    first training step finds that no adapter weight got a gradient."""
    from peft import LoraConfig, inject_adapter_in_model

    split = make_split(small_synthetic, "loo", 10)
    cfg = resolve("synthetic", get_scheme("sasrec"), 0, "smoke").train
    cfg = dataclasses.replace(cfg, epochs=1, max_batches=2)
    for adapted in ("unused", "out"):
        torch.manual_seed(0)
        model = SASRec(split.train.n_items, 10, SASRecParams(hidden=16, layers=1))
        model.unused = torch.nn.Linear(16, 16)
        model.out = torch.nn.Linear(16, 16)
        inject_adapter_in_model(LoraConfig(r=2, target_modules=[adapted]), model)
        for parameter in model.parameters():  # the rest trains too, as new item rows and heads do in a LoRA run
            parameter.requires_grad_(True)
        if adapted == "out":  # an adapter the loss uses: training goes on
            inner = model.encode_sequence
            model.encode_sequence = lambda items, mask: model.out(inner(items, mask))
            trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cpu"), 0,
                        progress=False)
            continue
        with pytest.raises(BackboneError, match=r"run.lora: none of the 2 LoRA adapter weights \(on unused\) got a "
                                                 r"gradient in the first training step"):
            trainer.fit(model, split.train, split.valid, split.warm, cfg, (10,), 256, torch.device("cpu"), 0,
                        progress=False)
