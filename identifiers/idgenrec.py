"""IDGenRec of Tan, Xu, Hua, Ge, Li, Zhang, Zhao & Zhang, "IDGenRec: LLM-RecSys Alignment with Textual ID
Learning", SIGIR 2024 (arXiv:2403.19021), sequence paradigm with learned textual identifiers.

An **ID generator** (a T5 over the backbone's text vocabulary) reads an item's text and writes a short
textual ID made of words; the **recommender** (the run's backbone: a T5 or a decoder-only model) reads the
history's IDs and generates the next item's ID under a prefix-tree constraint. The two are trained
alternately (Sec. 3.3):

* **ID generation** (Sec. 3.2), after the released ``generate_item_id_from_text`` (``src/utils/indexing.py``)
  as of the repository's initial commit 5e20550: **diverse beam search** (``id_search: diverse``) over the
  generator with ``id_beams`` groups of one beam each and a Hamming diversity penalty of 0.1 (at most
  ``id_max_tokens`` tokens); each candidate is normalised to its words (punctuation dropped); items, in
  catalogue order, take their first candidate that no earlier item holds, so IDs are unique. An item whose
  candidates are all taken is searched again with the penalty raised by 0.1 up to 0.9, then with longer IDs
  (``id_max_tokens`` to twice that many tokens, penalties 0.1 .. 0.9 again; :data:`DIVERSITY_RETRIES`): the
  penalty schedule 5e20550's loop states (start 0.1, step 0.1; at a penalty equal to 1, back to 0.1 with the
  minimum length raised by 10). That loop has no end and, since it tests its float penalty for equality
  with 1 (nine additions of 0.1 miss it), never reaches its longer-ID stage. The current HEAD (a297185; the
  function last changed in a15376a) follows another schedule, not the one here: penalty 1.0 at first, raised
  by 1.0 per search again and, once it is 10 or more, reset to 1.0 with the minimum length raised by 10
  (maximum = minimum + 10), again without end. Here an item still without a free candidate after the
  5e20550 schedule keeps its first one with `` (2)``, `` (3)`` ... appended (the record's ``id_assignment``
  counts such items). transformers 5 no longer ships group beam search, so the search is implemented here
  (:meth:`IDGenerator.diverse`, one forward pass per step for all groups); the group beam search of
  transformers 4 that the released code calls (its ``environment.txt`` pins 4.26) returns the candidates of
  all groups sorted by score, this one in group order, so an item's first free candidate can differ.
  ``id_search: beam`` is this module's earlier plain beam search (``id_beams`` candidates, no token
  repeated, no search again).
* **Recommender phase**: the generator is frozen and the recommender is trained on the hard IDs
  (token cross-entropy), early stopping on validation.
* **ID-generator phase**: the recommender is frozen; every history item's ID is written *softly*: at each
  ID position the generator's distribution over the vocabulary times the recommender's token embedding
  matrix (``p_t^T E``) replaces the token's embedding, so the recommender's loss on the target's ID
  back-propagates into the generator. ``soft_ids="greedy"`` decodes the soft IDs greedily with gradient
  (the authors' ``generate_with_grad``); ``"teacher_forced"`` (the cheaper CPU option) reads the
  distributions of the current hard IDs in one teacher-forced pass, no sequential decoding. Here ``p_t`` is
  the softmax probability vector, so a soft token is a convex combination of token embeddings, and no
  position is zeroed. The released ID-generator phase (``src/runner/DistributedRunner_gen.py``) calls
  ``generate_with_grad`` with ``renormalize_logits=True``, so the per-step scores it multiplies by the
  embedding matrix are log-softmax values (log-probabilities), and it zeroes the soft embedding wherever a
  punctuation token was decoded (its attention mask, taken from non-zero norms, then hides those positions).
  Here the hard IDs are punctuation-free already (see above), while greedy soft decoding may keep a
  punctuation step.
* After every ID-generator phase all IDs are regenerated and the recommender switches to them.

``alternation="id_first"`` (the authors' script, ``--alt_style id_first``) runs ``rounds`` times an
ID-generator phase followed by a recommender phase. ``"rec_first"`` starts with a recommender phase and ends
with one: ``rounds`` recommender and ``rounds - 1`` ID-generator phases (the authors' ``rec_first`` instead
ends every round, the last included, with an ID-generator phase, so their final recommender never trains on
the final IDs). Either way there are ``rounds`` recommender phases: the last is the run's training (early
stopping on validation, resumable); earlier ones run ``rec_epochs`` epochs each, also early-stopped on
validation. A configuration with no ID-generator phase (``rec_first`` with ``rounds`` 1, or ``id_epochs`` 0)
would be plain text-ID recommendation with the pre-trained generator's IDs, not IDGenRec, and is rejected.

**Quick profile.** The defaults follow the authors' script (``id_first``, ``greedy``); the ``quick`` (and
``smoke``) profile switches to the two cheaper choices, because these profiles run on a few CPU cores with a
random-init recommender: ``rec_first`` gives its single ID-generator phase (``rounds`` 2) a recommender that
has been trained, where ``id_first`` would train the generator against the untrained one, and
``teacher_forced`` reads the soft IDs in one decoder pass per step where ``greedy`` decodes ``id_max_tokens``
sequential passes with gradient.

**Generator initialisation.** The authors start the generator from a public T5-small fine-tuned on tag
generation for articles. No model hub is reachable here, so unless ``generator_backbone`` is a checkpoint
path, the generator is first trained for ``tag_epochs`` on a self-supervised stand-in of that task: item
text in, its ``tag_words`` highest TF-IDF words (over the catalogue's item texts) out. Item text of every
item is catalogue content, so cold items get IDs too.

Hyper-parameters (field: default [paper / authors' script; quick where it differs]): ``id_max_tokens`` 6 [max_length
10], ``text_max_tokens`` 64 [256], ``id_beams`` 10 [10], ``generator_backbone`` t5-tiny [pretrained T5-small;
``paper`` profile: the t5-small preset], ``tag_words`` 3, ``tag_epochs`` 30, ``tag_lr`` 1e-3 [not applicable],
``rounds`` 2 [3], ``alternation`` id_first [id_first; quick: rec_first], ``rec_epochs`` 3 [10], ``id_epochs`` 1
[1], ``id_lr`` 1e-4 [1e-8], ``id_batch_size`` 64 [12], ``id_examples`` 2000 [all], ``soft_ids`` greedy [greedy;
quick: teacher_forced], ``beam_size`` 20 [20]; ``tag_batch_size`` 32.

Differences from the paper, by design of this benchmark: both models are T5s of the run (random init unless
checkpoints are given), there is no prompt and no user ID (the authors' ``prompt_no_user_id`` variant), and
model selection is early stopping on validation.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer
from torch import nn

from benchmark.batches import HistoryBatch, iterate
from benchmark.config import ConfigError, param
from benchmark.data.dataset import Dataset
from benchmark.splits import Examples, TrainData
from identifiers.base import SequenceScheme
from identifiers.registry import register
from recommenders.backbones import EOS_ID, PAD_ID, PRESETS, BackboneSpec, build_t5, family_of, finetune_mode
from recommenders.base import IGNORE_INDEX, Recommender
from recommenders.contracts import ItemCodes, code_table
from recommenders.sequence import GenerativeRecommender
from recommenders.text import TextVocabulary, disambiguate
from recommenders.trainer import train_epochs

ALTERNATIONS = ("id_first", "rec_first")
SOFT_IDS = ("greedy", "teacher_forced")
WORD = re.compile(r"\b\w+\b")
ID_SEARCHES = ("diverse", "beam")
GENERATION_BATCH = 256
DIVERSITY_STEP = 0.1
"""Diversity penalty of the first diverse beam search, and its increment per search again (released code as of its
initial commit 5e20550; its current HEAD uses 1.0)."""
DIVERSITY_RETRIES = [(round(DIVERSITY_STEP * k, 1), False) for k in range(2, 10)] + [
    (round(DIVERSITY_STEP * k, 1), True) for k in range(1, 10)]
"""Searches again for an item whose candidates are all taken, as (penalty, longer): penalties 0.2 .. 0.9, then
0.1 .. 0.9 for longer IDs (``id_max_tokens`` to twice that many tokens)."""
EXAMPLE_IDS = 10


@dataclass
class IDGenRecParams:
    """IDGenRec hyper-parameters (defaults = quick profile except ``alternation`` and ``soft_ids``, whose defaults
    are the authors' and which the quick profile overrides; paper / authors' script values in brackets).

    id_max_tokens: most tokens of a textual ID [generation max_length 10].
    text_max_tokens: item text tokens read by the ID generator [256].
    id_beams: candidates per item when assigning unique IDs (groups of the diverse beam search) [10].
    id_search: ``diverse`` (diverse beam search, searched again with a larger penalty while every candidate
        is taken; the released code) or ``beam`` (plain beam search once) [diverse; smoke: beam, which keeps the
        smoke run a quick check: the diverse search takes about 15x longer on the synthetic catalogue].
    generator_backbone: T5 preset or checkpoint of the ID generator [T5-small pretrained on tag generation].
    tag_words: TF-IDF words per item in the generator's tag pre-training (stand-in for the pretrained tag
        generator; 0 skips it, e.g. for a tag-generation checkpoint) [not applicable].
    tag_epochs: epochs of that pre-training [not applicable].
    tag_lr: AdamW learning rate of that pre-training [not applicable].
    tag_batch_size: items per step of that pre-training [not applicable].
    rounds: alternation rounds; ``rec_first`` needs at least 2 [3].
    alternation: ``id_first`` (ID-generator phase, then recommender phase, per round) or ``rec_first``
        (recommender phases first and last, ID-generator phases between) [id_first; quick: rec_first].
    rec_epochs: epochs of each recommender phase before the last (the last is the run's training) [10].
    id_epochs: epochs of each ID-generator phase, at least 1 [1].
    id_lr: AdamW learning rate of the ID generator in its phase [1e-8].
    id_batch_size: training examples per ID-generator step [12].
    id_examples: training examples drawn (fixed subset) for each ID-generator epoch; 0 = all [all].
    soft_ids: ``greedy`` (decode with gradient) or ``teacher_forced`` (one pass over the current IDs)
        [greedy; quick: teacher_forced].
    beam_size: beams of the constrained beam search that decodes recommendations [20].
    """

    id_max_tokens: int = param(6, low=1)
    text_max_tokens: int = param(64, low=1)
    id_beams: int = param(10, low=1)
    generator_backbone: str = "t5-tiny"
    tag_words: int = param(3, low=0)
    tag_epochs: int = param(30, low=0)
    tag_lr: float = param(1e-3, low=0, low_open=True)
    tag_batch_size: int = param(32, low=1)
    rounds: int = param(2, low=1)
    alternation: str = param("id_first", choices=ALTERNATIONS)
    rec_epochs: int = param(3, low=0)
    id_epochs: int = param(1, low=1)
    id_lr: float = param(1e-4, low=0, low_open=True)
    id_batch_size: int = param(64, low=1)
    id_examples: int = param(2000, low=0)
    soft_ids: str = param("greedy", choices=SOFT_IDS)
    beam_size: int = param(20, low=1, option=True)
    id_search: str = param("diverse", choices=ID_SEARCHES)

    def check(self) -> None:
        if self.alternation == "rec_first" and self.rounds < 2:
            raise ConfigError(f"rounds {self.rounds} with alternation 'rec_first' runs no ID-generator phase "
                              "(rec_first runs rounds - 1 of them): set rounds to at least 2 or alternation to "
                              "'id_first'")


class IDGenerator(nn.Module):
    """A T5 writing a textual ID for an item's text; ``texts`` ``[n_items, T]`` are the items' token ids."""

    def __init__(self, backbone: str, vocab: TextVocabulary, texts: list[list[int]], dropout: float | None = None
                 ) -> None:
        super().__init__()
        self.t5 = build_t5(BackboneSpec(backbone, finetune="full", dropout=dropout), text_vocab_size=vocab.size)
        table = code_table([ids or [EOS_ID] for ids in texts])
        self.register_buffer("texts", table.clamp_min(PAD_ID), persistent=False)
        self.register_buffer("text_mask", (table >= 0).long(), persistent=False)

    def inputs(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.texts[items], "attention_mask": self.text_mask[items]}

    def teacher_forced(self, items: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``[U, L, V]`` distributions at each position of the given codes (-1 padded), teacher-forced."""
        labels = codes.masked_fill(codes < 0, IGNORE_INDEX)
        decoder_input_ids = self.t5.prepare_decoder_input_ids_from_labels(labels)
        return self.t5(**self.inputs(items), decoder_input_ids=decoder_input_ids).logits.float().softmax(-1)

    def greedy(self, items: torch.Tensor, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with gradient: ``[U, L, V]`` distributions and the ID lengths (EOS excluded)."""
        inputs = self.inputs(items)
        encoded = self.t5.get_encoder()(**inputs).last_hidden_state
        decoded = torch.full((len(items), 1), PAD_ID, dtype=torch.long, device=items.device)
        lengths = torch.full((len(items),), max_tokens, dtype=torch.long, device=items.device)
        finished = torch.zeros(len(items), dtype=torch.bool, device=items.device)
        steps = []
        for step in range(max_tokens):
            logits = self.t5(encoder_outputs=(encoded,), attention_mask=inputs["attention_mask"],
                             decoder_input_ids=decoded).logits[:, -1].float()
            if step == 0:
                logits = logits.index_fill(1, torch.tensor([EOS_ID], device=items.device), float("-inf"))
            probs = logits.softmax(-1)
            steps.append(probs)
            token = probs.argmax(-1)
            ends = (token == EOS_ID) & ~finished
            lengths = torch.where(ends, step, lengths)
            finished |= ends
            decoded = torch.cat([decoded, token[:, None]], dim=1)
            if bool(finished.all()):
                break
        return torch.stack(steps, dim=1), lengths

    @torch.no_grad()
    def candidates(self, items: torch.Tensor, beams: int, max_tokens: int) -> list[list[list[int]]]:
        """Per item, ``beams`` beam-search outputs (best first) as token lists without special tokens; no
        token repeats within an output (the authors' diverse beam search is not in transformers 5)."""
        out = self.t5.generate(**self.inputs(items), num_beams=beams, num_return_sequences=beams,
                               max_new_tokens=max_tokens, min_new_tokens=1, no_repeat_ngram_size=1, do_sample=False)
        rows = []
        for sequence in out.tolist():
            tokens = sequence[1:]
            tokens = tokens[:tokens.index(EOS_ID)] if EOS_ID in tokens else tokens
            rows.append([t for t in tokens if t != PAD_ID])
        return [rows[i * beams:(i + 1) * beams] for i in range(len(items))]

    @torch.no_grad()
    def diverse(self, items: torch.Tensor, groups: int, penalty: float | torch.Tensor, min_tokens: int,
                max_tokens: int) -> list[list[list[int]]]:
        """Per item, ``groups`` outputs of diverse beam search with one beam per group (Vijayakumar et al.'s
        Hamming diversity, as transformers' ``num_beam_groups = num_beams`` did): at every step, group ``g``
        takes its most likely token after ``penalty`` times the number of earlier groups that chose that token
        at this step is subtracted from its log-probabilities; no EOS before ``min_tokens`` tokens. ``penalty``
        may be one value per row of ``items`` (an item may appear several times)."""
        inputs = self.inputs(items)
        n = len(items)
        penalty = torch.as_tensor(penalty, dtype=torch.float32, device=items.device).expand(n)[:, None]
        encoded = self.t5.get_encoder()(**inputs).last_hidden_state.repeat_interleave(groups, dim=0)
        mask = inputs["attention_mask"].repeat_interleave(groups, dim=0)
        decoded = torch.full((n * groups, 1), PAD_ID, dtype=torch.long, device=items.device)
        finished = torch.zeros(n * groups, dtype=torch.bool, device=items.device)
        for step in range(max_tokens):
            logits = self.t5(encoder_outputs=(encoded,), attention_mask=mask, decoder_input_ids=decoded).logits
            scores = logits[:, -1].float().log_softmax(-1)
            scores[:, PAD_ID] = float("-inf")  # the decoder's start token, never an ID word
            if step < min_tokens:
                scores[:, EOS_ID] = float("-inf")
            scores = scores.view(n, groups, -1)
            chosen = torch.zeros(n, scores.shape[-1], device=items.device)
            tokens = torch.empty(n, groups, dtype=torch.long, device=items.device)
            for group in range(groups):
                tokens[:, group] = (scores[:, group] - penalty * chosen).argmax(-1)
                chosen.scatter_add_(1, tokens[:, group:group + 1], torch.ones(n, 1, device=items.device))
            token = torch.where(finished, PAD_ID, tokens.view(-1))
            finished |= token == EOS_ID
            decoded = torch.cat([decoded, token[:, None]], dim=1)
            if bool(finished.all()):
                break
        rows = []
        for sequence in decoded[:, 1:].tolist():
            tokens_out = sequence[:sequence.index(EOS_ID)] if EOS_ID in sequence else sequence
            rows.append([t for t in tokens_out if t != PAD_ID])
        return [rows[i * groups:(i + 1) * groups] for i in range(n)]


def keyword_tags(texts: list[str], n_words: int) -> list[str]:
    """Each text's ``n_words`` highest TF-IDF words (fitted on ``texts``), best first, ties by word."""
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b", stop_words="english",
                                 sublinear_tf=True)
    matrix = vectorizer.fit_transform(texts).tocsr()
    words = vectorizer.get_feature_names_out()
    tags = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        pairs = sorted(zip(-matrix.data[start:end], words[matrix.indices[start:end]]))
        tags.append(" ".join(word for _, word in pairs[:n_words]))
    return tags


@register("idgenrec")
class IDGenRec(SequenceScheme):
    """Textual IDs written by an ID generator from item text, learned alternately with the recommender."""

    citation = ("Tan, Xu, Hua, Ge, Li, Zhang, Zhao & Zhang, IDGenRec: LLM-RecSys Alignment with Textual ID "
                "Learning, SIGIR 2024.")
    Params = IDGenRecParams
    needs_content = ("text",)
    profiles = {
        "smoke": {"id_max_tokens": 4, "text_max_tokens": 24, "id_beams": 4, "tag_epochs": 2, "rec_epochs": 1,
                  "id_examples": 128, "id_batch_size": 64, "alternation": "rec_first", "soft_ids": "teacher_forced",
                  "id_search": "beam"},
        "quick": {"alternation": "rec_first", "soft_ids": "teacher_forced"},
        "paper": {"id_max_tokens": 10, "text_max_tokens": 256, "generator_backbone": "t5-small", "tag_epochs": 30,
                  "rounds": 3, "rec_epochs": 10, "id_lr": 1e-8, "id_batch_size": 12, "id_examples": 0},
    }
    train_profiles = {"quick": {"epochs": 10}}

    def not_applicable(self, dataset: Dataset) -> str | None:
        """LoRA and decoder-only checkpoints are refused (see the reasons)."""
        backbone = self.ctx.backbone
        if finetune_mode(backbone) == "lora":
            return ("IDGenRec's soft IDs mix the recommender's full input-embedding matrix, which LoRA (peft's "
                    "trainable-token wrapper) does not expose as one weight; IDGenRec runs with --finetune full only")
        if backbone.name not in PRESETS and family_of(backbone.name) != "t5":
            return ("IDGenRec's T5 ID generator writes IDs in T5's token convention (pad 0, end of sequence 1), which "
                    "a decoder-only checkpoint's tokenizer does not follow; use a preset or a T5 checkpoint")
        return super().not_applicable(dataset)

    def two_stage(self, data: TrainData) -> tuple[ItemCodes, Recommender]:
        """Pre-train the generator, then alternate ID-generator and recommender phases; the final IDs and the
        recommender for the last (the run's) phase."""
        p, ctx = self.params, self.ctx
        start = time.perf_counter()
        vocab = ctx.text_vocabulary()
        texts = ctx.dataset.item_texts()
        torch.manual_seed(ctx.seed)
        generator = IDGenerator(p.generator_backbone, vocab, vocab.encode(texts, p.text_max_tokens),
                                ctx.backbone.dropout).to(ctx.device)
        log: dict[str, Any] = {"tag_losses": self.pretrain_generator(generator, vocab, texts), "rounds": []}
        codes = self.generate_ids(generator, vocab)
        model = GenerativeRecommender(codes, ctx.backbone, ctx.config.max_history, self.sequence_options())
        examples = data.next_item_examples().subset(p.id_examples, ctx.seed)
        rec_train = dataclasses.replace(ctx.config.train, epochs=p.rec_epochs)
        for round_ in range(p.rounds):
            last = round_ == p.rounds - 1
            entry: dict[str, Any] = {"round": round_ + 1}
            if p.alternation == "rec_first":
                if last:
                    break
                entry["rec_best_valid"] = ctx.fit(model, data, rec_train, desc=f"idgenrec rec {round_ + 1}").best_valid
            entry["id_losses"] = self.id_phase(generator, vocab, model, codes, examples, round_)
            previous, codes = codes, self.generate_ids(generator, vocab)
            entry["ids_changed_share"] = float((_padded(previous.codes, codes.codes) != _padded(
                codes.codes, previous.codes)).any(dim=1).float().mean())
            model.set_codes(codes)
            if p.alternation == "id_first" and not last:
                entry["rec_best_valid"] = ctx.fit(model, data, rec_train, desc=f"idgenrec rec {round_ + 1}").best_valid
            log["rounds"].append(entry)
        log["alternation_seconds"] = time.perf_counter() - start
        shown = range(min(EXAMPLE_IDS, len(texts)))
        codes.details.update(alternation=log, example_ids={texts[i][:80]: vocab.decode(codes.codes[i].tolist())
                                                            for i in shown})
        return codes, model

    def pretrain_generator(self, generator: IDGenerator, vocab: TextVocabulary, texts: list[str]) -> list[float]:
        """Train the generator to write each item's TF-IDF keyword tags; the mean loss per epoch."""
        p, ctx = self.params, self.ctx
        if p.tag_words < 1 or p.tag_epochs < 1:
            return []
        tags = code_table([ids + [EOS_ID] for ids in vocab.encode(keyword_tags(texts, p.tag_words),
                                                                   p.id_max_tokens)]).to(ctx.device)
        optimizer = torch.optim.AdamW(generator.parameters(), lr=p.tag_lr)
        order = torch.Generator().manual_seed(ctx.seed)
        generator.train()

        def batches():
            for items in torch.randperm(len(tags), generator=order).to(ctx.device).split(p.tag_batch_size):
                yield len(items), items

        def loss_terms(items: torch.Tensor) -> dict[str, torch.Tensor]:
            labels = tags[items].masked_fill(tags[items] < 0, IGNORE_INDEX)
            return {"tags": generator.t5(**generator.inputs(items), labels=labels).loss}

        history = train_epochs(optimizer, p.tag_epochs, batches, loss_terms, "idgenrec tag pre-training",
                               "schemes.idgenrec.tag_lr", ctx.progress, max_steps=ctx.config.max_fit_steps).history
        return [epoch["tags"] for epoch in history]

    def generate_ids(self, generator: IDGenerator, vocab: TextVocabulary) -> ItemCodes:
        """Unique textual IDs of all items, assigned in catalogue order, each item taking its first generated
        candidate that no earlier item holds (an item whose candidates hold no word falls back to the first
        words of its text). ``id_search: diverse`` (the released code's schedule as of 5e20550, see the module
        docstring): diverse beam search, and an item whose candidates are all taken is searched again with a
        larger diversity penalty, then with longer IDs;
        ``beam``: plain beam search once. Left-over clashes get a suffix. ``details`` say how IDs were
        assigned."""
        p, ctx = self.params, self.ctx
        generator.eval()
        n_items = len(ctx.items)

        def search(items: list[int], penalties: list[float], longer: bool) -> list[list[tuple[int, ...]]]:
            """Each item's candidates as word tuples (its text's first words when none has a word)."""
            low, high = (p.id_max_tokens, 2 * p.id_max_tokens) if longer else (1, p.id_max_tokens)
            out = []
            for start in range(0, len(items), GENERATION_BATCH):
                rows = torch.tensor(items[start:start + GENERATION_BATCH], device=ctx.device)
                beams = (generator.candidates(rows, p.id_beams, high) if p.id_search == "beam" else
                         generator.diverse(rows, p.id_beams, penalties[start:start + len(rows)], low, high))
                for item, item_beams in zip(rows.tolist(), beams):
                    out.append([w for w in (self.words(vocab, beam, high) for beam in item_beams) if w]
                               or [self.words(vocab, generator.texts[item].tolist(), high)])
            return out

        first = search(list(range(n_items)), [DIVERSITY_STEP] * n_items, False)
        again: dict[int, list[tuple[float, tuple[int, ...]]]] = {}
        while True:  # assign in catalogue order; items found without a free candidate are searched again
            taken: set[tuple[int, ...]] = set()
            codes, counts, need, max_penalty = [], {"first_beam": 0, "later_beam": 0}, [], 0.0
            for item in range(n_items):
                free = [rank for rank, w in enumerate(first[item]) if w not in taken]
                choice = first[item][free[0] if free else 0]
                counts["first_beam"] += bool(free) and free[0] == 0
                counts["later_beam"] += bool(free) and free[0] > 0
                if not free and item in again:
                    found = [(penalty, w) for penalty, w in again[item] if w not in taken]
                    if found:
                        max_penalty, choice = max(max_penalty, found[0][0]), found[0][1]
                elif not free and p.id_search == "diverse":
                    need.append(item)
                taken.add(choice)
                codes.append(list(choice))
            if not need:
                break
            for item in need:
                again[item] = []
            for longer in (False, True):  # the searches again of every such item at once, used in this order
                penalties = [penalty for penalty, stage in DIVERSITY_RETRIES if stage == longer]
                rows = [item for item in need for _ in penalties]
                for row, (item, words) in enumerate(zip(rows, search(rows, penalties * len(need), longer))):
                    again[item] += [(penalties[row % len(penalties)], w) for w in words]
        unique, suffixed = disambiguate(codes, vocab)
        return ItemCodes(codes=code_table(unique), vocab_size=vocab.size, raw_codes=code_table(codes),
                         text_vocab=vocab, details={"id_assignment": {**counts, "searched_again": len(again),
                                                                      "suffixed": suffixed,
                                                                      "max_diversity_penalty": max_penalty}})

    def words(self, vocab: TextVocabulary, tokens: list[int], max_tokens: int | None = None) -> tuple[int, ...]:
        """A generated ID normalised to its words (punctuation dropped) and re-tokenised (at most
        ``max_tokens`` tokens, default ``id_max_tokens``)."""
        text = " ".join(WORD.findall(vocab.decode(tokens)))
        return tuple(vocab.encode([text], max_tokens or self.params.id_max_tokens)[0]) if text else ()

    def id_phase(self, generator: IDGenerator, vocab: TextVocabulary, model: GenerativeRecommender,
                 ids: ItemCodes, examples: Examples, round_: int) -> list[float]:
        """Train the generator through soft IDs with the recommender frozen; the mean loss per epoch."""
        p, ctx = self.params, self.ctx
        model.to(ctx.device).train()
        generator.train()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        optimizer = torch.optim.AdamW(generator.parameters(), lr=p.id_lr)
        embedding = model.backbone.get_input_embeddings().weight
        codes = ids.codes.to(ctx.device)
        rng = np.random.default_rng(ctx.seed + round_)

        def batches():
            for batch in iterate(examples, p.id_batch_size, ctx.device, rng):
                yield len(batch.targets), batch

        history = train_epochs(
            optimizer, p.id_epochs, batches,
            lambda batch: {"soft_ids": self.soft_id_loss(generator, vocab, model, batch, codes, embedding)},
            f"idgenrec ID generator, round {round_ + 1}", "schemes.idgenrec.id_lr", ctx.progress,
            clip=(ctx.config.train.grad_clip, list(generator.parameters())), max_steps=ctx.config.max_fit_steps).history
        losses = [epoch["soft_ids"] for epoch in history]
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return losses

    def soft_id_loss(self, generator: IDGenerator, vocab: TextVocabulary, model: GenerativeRecommender,
                     batch: HistoryBatch, codes: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The recommender's loss on the target ID when every history ID is written as ``p_t^T E``."""
        history = batch.items[:, -model.max_history:]
        unique, inverse = torch.unique(history, return_inverse=True)
        if self.params.soft_ids == "greedy":
            probs, lengths = generator.greedy(unique, self.params.id_max_tokens)
        else:
            probs = generator.teacher_forced(unique, codes[unique])
            lengths = (codes[unique] >= 0).sum(dim=1)
        soft = probs @ embedding[:probs.shape[-1]].float()
        width = soft.shape[1]
        positions = torch.arange(width + 1, device=soft.device)[None, :]
        rows = torch.cat([soft, torch.zeros_like(soft[:, :1])], dim=1)
        separator = embedding[vocab.separator_id].float()
        rows = torch.where((positions == lengths[:, None])[..., None], separator, rows)
        table = torch.where(positions <= lengths[:, None], 0, -1)
        layout = model.history_layout(inverse.view_as(history), batch.mask[:, -model.max_history:], table)
        inputs = rows[layout.items, layout.positions] * layout.real[..., None]
        at_eos = (torch.arange(inputs.shape[1], device=inputs.device)[None, :] == layout.lengths[:, None])
        inputs = torch.where(at_eos[..., None], embedding[model.eos_id].float(), inputs)
        labels = model.target_labels(batch.targets)
        logits = model.pair_logits(None, layout.attention_mask(), labels, inputs_embeds=inputs)
        return model.sequence_loss(logits, labels, batch)


def _padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` right-padded with -1 to the width of ``b`` (when narrower)."""
    return F.pad(a, (0, max(0, b.shape[1] - a.shape[1])), value=-1)
