"""Decoder-only (Qwen2) backbones: presets, every paradigm's forward / backward and ranking, LoRA on a local
checkpoint written by the test."""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from benchmark.batches import HistoryBatch
from benchmark.cli import main
from benchmark.config import ConfigError, resolve
from benchmark.runner import model_size
from identifiers.base import canonical
from identifiers.registry import get_scheme
from recommenders.backbones import (
    FAMILIES,
    PRESETS,
    BackboneSpec,
    build_backbone,
    check_backbone,
    family_of,
    finetune_mode,
    is_decoder_only,
    preset_parameters,
)
from recommenders.contracts import ItemCodes, ItemTokenSets, ItemVectors
from recommenders.decoding import causal_beam_search, causal_reference_generate
from recommenders.embedding import EmbeddingRecommender
from recommenders.sequence import GenerativeRecommender, SequenceOptions
from recommenders.set import SetOptions, SetRecommender
from recommenders.text import text_vocabulary
from tests.test_decoding import random_codes

N_ITEMS = 30


def history_batch(n_items: int) -> HistoryBatch:
    items = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4], [0, 0, 0, 5]])
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, True]])
    return HistoryBatch(users=torch.arange(3), items=items, mask=mask, targets=torch.tensor([8, 9, n_items - 1]))


def test_qwen_presets_are_decoder_only_and_span_two_orders_of_magnitude() -> None:
    sizes = {name: preset_parameters(name) for name, preset in PRESETS.items() if preset.family == "qwen2"}
    assert sizes["qwen-tiny"] < 1_000_000
    ladder = [sizes[name] for name in ("qwen-1m", "qwen-5m", "qwen-20m", "qwen-100m")]
    assert ladder == sorted(ladder) and ladder[-1] / ladder[0] >= 100
    model = build_backbone("qwen-tiny", new_tokens=5)
    assert is_decoder_only(model) and model.config.vocab_size == 7
    assert sum(p.numel() for p in model.parameters()) == sizes["qwen-tiny"] + 2 * 5 * model.config.hidden_size


def test_decoder_only_sequence_recommender_trains_and_ranks_from_the_prompt_cache() -> None:
    torch.manual_seed(0)
    raw = random_codes(30, 3, 4, True, seed=5)
    codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=4)
    model = GenerativeRecommender(codes, "qwen-tiny", max_history=4,
                                  options=SequenceOptions(beam_size=6, user_tokens=3))
    batch = history_batch(codes.n_items)
    prompt, mask = model.prompt(batch)
    assert bool(mask[:, -1].all()) and bool((prompt[:, -1] == model.eos_id).all())
    assert int(mask[2].sum()) < prompt.shape[1] and not bool(mask[2, 0])
    logits, labels = model.token_logits(batch)
    assert logits.shape[:2] == labels.shape == (3, model.trie.depth)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss = model.loss(batch)
    before = model.backbone.lm_head.weight.detach().clone()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.backbone.lm_head.weight)
    model.eval()
    ranked = model.rank(batch, 10)
    for row in ranked.tolist():
        assert len(set(row)) == 10 and all(0 <= item < codes.n_items for item in row)
    assert model.invalid_generation_rate == 0.0 and model.generated == 30
    with torch.no_grad():
        result = causal_beam_search(model.backbone, prompt, mask, model.trie, 10, 10)
        users, labels = torch.arange(3).repeat_interleave(10), model.target_labels(result.items.flatten())
        log_probs = model.causal_logits(prompt[users], mask[users], labels).log_softmax(-1)
    teacher_forced = log_probs.gather(2, labels.clamp_min(0)[..., None]).squeeze(2).masked_fill(labels < 0, 0.0)
    assert torch.equal(result.items, ranked)
    assert torch.allclose(teacher_forced.sum(1).view(3, 10), result.scores, atol=1e-4)
    free = GenerativeRecommender(codes, model.backbone, max_history=4,
                                 options=SequenceOptions(beam_size=10, constrained=False, user_tokens=3)).eval()
    assert free.rank(batch, 10).shape == (3, 10) and free.generated == 30 and 0 <= free.invalid_generation_rate <= 1


def write_checkpoint(folder: Path) -> Path:
    """A tiny Qwen2 causal LM with tied embeddings and a byte-level BPE tokenizer whose end-of-sequence id is 0,
    saved with ``save_pretrained`` (no hub involved)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(["red pen", "blue ink", "green chalk box", "red ink; blue pen"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    words = fast.get_vocab()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=fast.eos_token_id,
                         bos_token_id=None, pad_token_id=None, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_local_checkpoint_with_lora_trains_only_adapters_and_new_item_rows(tmp_path: Path) -> None:
    path = str(write_checkpoint(tmp_path / "tiny-qwen"))
    check_backbone(path)
    assert family_of(path) == "qwen2"
    vocab = text_vocabulary(path, ["red pen", "blue ink"], 100, tmp_path / "cache")
    assert vocab.own_ids and vocab.tokenizer.eos_token_id == 0 and vocab.decode(vocab.encode(["red pen"], 9)[0]) == \
        "red pen"
    text_size = Qwen2Config.from_pretrained(path).vocab_size
    config = resolve("synthetic", get_scheme("cid"), 0, "smoke", cli={"backbone": path, "finetune": "lora"})
    spec = BackboneSpec(path, config.finetune, dataclasses.asdict(config.lora))
    torch.manual_seed(0)
    raw = random_codes(30, 3, 4, True, seed=5)
    codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=4)
    model = GenerativeRecommender(codes, spec, max_history=4, options=SequenceOptions(beam_size=6))
    assert model.eos_id == 0 and model.pad_id == 0 and int(model.item_tokens.max()) == text_size + 3
    assert int(model.item_tokens[model.item_tokens >= 0].min()) == text_size
    embed = model.backbone.get_input_embeddings()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows_before = embed(torch.arange(text_size + 4)).detach().clone()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "trainable_tokens_delta" in name for name in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model.loss(history_batch(codes.n_items)).backward()
        optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert changed and changed <= trainable
    assert any("lora_B" in name for name in changed) and any("trainable_tokens_delta" in name for name in changed)
    rows_after = embed(torch.arange(text_size + 4)).detach()
    assert torch.equal(rows_after[:text_size], rows_before[:text_size])
    assert not torch.equal(rows_after[text_size:], rows_before[text_size:])
    model.eval()
    assert model.rank(history_batch(codes.n_items), 5).shape == (3, 5)

    size = model_size(model, config)
    reference = build_backbone(BackboneSpec(path, "full"), new_tokens=codes.vocab_size)
    lora = config.lora
    peft_model = get_peft_model(reference, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(FAMILIES["qwen2"].lora_targets),
        trainable_token_indices={"embed_tokens": list(range(text_size, text_size + 4))}))
    trainable_peft, total_peft = peft_model.get_nb_trainable_parameters()
    assert (size["backbone_parameters"]["trainable"], size["backbone_parameters"]["total"]) == (trainable_peft,
                                                                                                 total_peft)
    assert size["finetune"] == "lora" and size["lora"]["r"] == lora.r and size["backbone_family"] == "qwen2"
    assert size["trainable_parameters"] == trainable_peft


def test_finetune_and_lora_settings_are_validated() -> None:
    scheme = get_scheme("tiger")
    for cli, user, message in ((dict(finetune="half"), {}, "run.finetune"),
                               ({}, {"run": {"lora": {"r": 0}}}, "run.lora.r"),
                               ({}, {"run": {"lora": {"dropout": 1.5}}}, "run.lora.dropout"),
                               ({}, {"run": {"lora": {"rank": 4}}}, "unknown key 'rank'"),
                               ({}, {"run": {"lora": {"target_modules": "q_proj"}}}, "run.lora.target_modules")):
        with pytest.raises(ConfigError, match=message):
            resolve("synthetic", scheme, 0, "smoke", user, cli)
    assert resolve("synthetic", get_scheme("pop"), 0, "smoke").finetune == "none"
    assert finetune_mode(BackboneSpec("qwen-tiny")) == "full" and finetune_mode(BackboneSpec("/some/path")) == "lora"


def test_spellings_of_one_fine_tuning_share_one_record() -> None:
    """``canonical``: an explicit mode that ``auto`` would pick, and LoRA settings of a fully fine-tuned backbone
    (which have no effect), do not make a second record of the same run; a mode other than auto's does."""
    scheme = get_scheme("tiger")

    def key(backbone: str, finetune: str | None = None, lora: dict | None = None) -> str:
        cli = {"backbone": backbone, **({"finetune": finetune} if finetune else {})}
        return canonical(resolve("synthetic", scheme, 0, "smoke", {"run": {"lora": lora}} if lora else {}, cli)).hash()

    plain = key("t5-tiny")
    assert key("t5-tiny", "full") == key("t5-tiny", lora={"r": 4}) == key("t5-tiny", "auto", {"r": 4}) == plain
    assert key("t5-tiny", "lora") != plain and key("t5-tiny", "lora", {"r": 4}) != key("t5-tiny", "lora")
    assert key("ck/qwen", "lora") == key("ck/qwen") != key("ck/qwen", "full") == key("ck/qwen", "full", {"r": 4})
    assert key("ck/qwen", lora={"r": 4}) != key("ck/qwen")
    assert canonical(resolve("synthetic", get_scheme("pop"), 0, "smoke")).finetune == "none"


def test_causal_beam_search_equals_generate_with_prefix_allowed_tokens() -> None:
    """The KV-cached vectorised search returns what transformers' generate returns on left-padded prompts,
    for fixed-length and for EOS-terminated variable-length codes."""
    for variable in (False, True):
        torch.manual_seed(1)
        raw = random_codes(40, 3, 5, variable, seed=7)
        codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=5)
        model = GenerativeRecommender(codes, "qwen-tiny", max_history=4).eval()
        prompt, mask = model.prompt(history_batch(codes.n_items))
        fast = causal_beam_search(model.backbone, prompt, mask, model.trie, 8, 8)
        reference = causal_reference_generate(model.backbone, prompt, mask, model.trie, 8, 8)
        assert torch.equal(fast.items, reference.items)
        assert torch.allclose(fast.scores, reference.scores, atol=1e-4)


def test_decoder_only_embedding_recommender_reads_the_last_position() -> None:
    torch.manual_seed(0)
    model = EmbeddingRecommender(ItemVectors(torch.randn(N_ITEMS, 8)), "qwen-tiny", 4)
    batch = history_batch(N_ITEMS)
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.input_proj.weight.grad is not None
    assert model.backbone.model.layers[0].self_attn.q_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        state = model.encode(batch)
        changed = HistoryBatch(users=batch.users, items=batch.items.clone(), mask=batch.mask, targets=batch.targets)
        changed.items[0, 0] = 11  # a padded position: invisible
        assert torch.allclose(model.encode(changed), state, atol=1e-6)
        changed.items[0, -1] = 11  # the most recent item
        assert not torch.allclose(model.encode(changed)[0], state[0])
    assert model.rank(batch, 5).shape == (3, 5)


def test_decoder_only_set_recommender_keeps_items_order_agnostic_and_queries_independent() -> None:
    torch.manual_seed(0)
    tokens = ItemTokenSets(cf=torch.randn(N_ITEMS, 8), semantic=torch.randn(N_ITEMS, 12), n_semantic=2)
    model = SetRecommender(tokens, "qwen-tiny", 4, SetOptions(semantic_layers=(16,)))
    batch = history_batch(N_ITEMS)
    allowed = model.causal_mask(batch.mask)
    length = batch.mask.shape[1] * model.tokens_per_item
    assert allowed.shape == (3, length + 3, length + 3)
    assert not bool(torch.triu(allowed[1], diagonal=1).any()), "inside the causal mask"
    assert torch.equal(allowed[:, length:, length:], torch.eye(3, dtype=torch.bool).expand(3, -1, -1))
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.queries.grad is not None and model.cf_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        item_tokens, _ = model.item_tokens()
        generated = model.generate(batch, item_tokens)
        assert generated.shape == (3, 3, model.backbone.config.hidden_size)
        swapped = item_tokens.clone()
        swapped[:, [1, 2]] = swapped[:, [2, 1]]  # the two semantic tokens of every item change places
        again = model.generate(batch, swapped)
        assert torch.allclose(again[:, 0], generated[:, 0], atol=1e-5), "a set: the order within items is invisible"
    assert model.score(batch).shape == (3, N_ITEMS) and model.rank(batch, 5).shape == (3, 5)


def test_backbone_grid_runs_every_scheme_per_backbone_and_the_leaderboard_has_a_table_each(tmp_path: Path,
                                                                                             capsys) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    assert main(["run", "--identifiers", "pop,e4srec", "--datasets", "synthetic", "--profile", "smoke", "--backbone",
                 "t5-tiny,qwen-tiny", "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"),
                 "--reports-dir", str(reports), "--no-progress", "--device", "cpu"]) == 0
    names = sorted(path.name.split("__")[:2] for path in results.rglob("*.json"))
    assert names == [["e4srec", "qwen-tiny"], ["e4srec", "t5-tiny"], ["pop", "none"]]
    assert main(["leaderboard", "--results-dir", str(results), "--reports-dir", str(reports)]) == 0
    headings = [line for line in (reports / "leaderboard.md").read_text().splitlines() if line.startswith("## ")]
    assert sum("qwen-tiny" in line for line in headings) == 1 and sum("t5-tiny" in line for line in headings) == 1
    capsys.readouterr()
    for argv, message in ((["--backbone", "qwen-tiny,"], "--backbone"),
                          (["--backbone", str(tmp_path / "no-such-model")], "not a preset"),
                          (["--finetune", "half"], "invalid choice")):
        with pytest.raises(SystemExit) if message == "invalid choice" else nullcontext():
            code = main(["run", "--identifiers", "e4srec", "--profile", "smoke", *argv])
            assert code == 2
        assert message in capsys.readouterr().err


def test_gradient_checkpointing_option_trains_the_same_way() -> None:
    raw = random_codes(20, 3, 4, False, seed=3)
    codes = ItemCodes(codes=torch.where(raw >= 0, raw - 2, -1), vocab_size=4)
    losses = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = GenerativeRecommender(codes, BackboneSpec("qwen-tiny", gradient_checkpointing=checkpointing), 4)
        assert model.backbone.is_gradient_checkpointing == checkpointing
        model.train()
        loss = model.loss(history_batch(codes.n_items))
        loss.backward()
        losses.append((float(loss), model.backbone.lm_head.weight.grad.clone()))
    assert losses[0][0] == pytest.approx(losses[1][0], abs=1e-6) and torch.allclose(losses[0][1], losses[1][1],
                                                                                      atol=1e-6)
