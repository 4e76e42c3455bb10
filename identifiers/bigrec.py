"""BIGRec of Bao, Zhang, Wang, Zhang, Feng & He, "A Bi-Step Grounding Paradigm for Large Language Models in
Recommendation Systems", arXiv:2308.08434, 2023 (sequence paradigm, textual identifiers).

An item's identifier is its title written in the backbone's own vocabulary (:mod:`recommenders.text`). The
recommender reads the history's titles, oldest first, separated by ``;``, and generates the next item's
title (step 1, grounding to the language space: instruction tuning on next-title generation). Items whose
(truncated) titles coincide get `` (2)``, `` (3)`` ... appended, so titles are unique. Step 2 grounds the
generated text to actual items, in one of two ways (``grounding``):

* ``l2`` (the paper's step, :mod:`recommenders.grounding`): the next title is generated freely (beam search
  over the whole vocabulary, ``generation_beams`` beams, the best sequence kept); the generated text and every
  item's title are embedded by the trained backbone, and the whole catalogue is ranked by the L2 distance,
  adjusted for popularity: key(i) = (1 + pop_i)^-gamma * dist_i, smaller first, with ``dist`` min-max
  normalised per user and ``pop`` the training interaction counts min-max normalised; gamma is chosen on
  validation from ``gamma_grid`` (the run's ``train.valid_metric``; the record's ``selection`` lists every
  gamma's validation value and the generation's beams, which the config leaves out at their defaults: both
  fields are declared ``added``). ``inference.invalid_generation_rate`` is the share of generated titles that are
  no item's title (``run.constrained_decoding`` does not apply).
* ``trie``: constrained generation: beam search restricted to the prefix tree of valid titles
  (:mod:`recommenders.decoding`), so every generated title is an item and the top-K items are K beams. This
  is not BIGRec's grounding but the choice of the later work on title identifiers; it never produces an
  out-of-catalogue title, which the L2 step exists to repair.

The authors' released code (github.com/SAI990323/BIGRec, read at its latest commit): ``inference.py``
generates with ``model.generate`` and a ``GenerationConfig`` of 4 beams (``num_beams=4``, 4 returned
sequences, ``max_new_tokens=128``, no sampling); ``data/movie/evaluate.py`` and ``data/game/evaluate.py`` embed
the first returned sequence with the base LLaMA (``hidden_states[-1][:, -1, :]`` of the left-padded text; the
item titles the same way in ``data/embedding.ipynb``) and rank all items by ``torch.cdist(..., p=2)``;
``data/movie/adjust_pda.py`` adds popularity: counts read from ``pop_count_real_time.json`` (a file the
repository neither contains nor builds) divided by their sum and min-max normalised, distances min-max
normalised per user, ranking by ``(1 + pop)^-gamma * dist`` with gamma in 0, 1, ..., 99, the best gamma for
each K chosen on the validation file and applied to test (``adjust_ci.py`` does the same with SASRec scores
instead of popularity, not implemented here).

Hyper-parameters (field: default = quick profile [paper / authors' code]): ``max_title_tokens`` 16 [the
full title; ``paper`` profile 64], ``grounding`` ``l2`` in every profile [paper: L2 grounding],
``generation_beams`` 4 [authors' code: 4], ``gamma_grid`` 0, 0.5, 1, 2, 4, 8, 16, 32, 64 [authors' code: 0 to
99 in steps of 1], ``beam_size`` 20 (``trie`` grounding only: the suite's setting for every sequence scheme).

Differences from the paper, by design of this benchmark: the backbone is the run's T5 or decoder-only model
(random-init preset or a checkpoint, fully trained) instead of LLaMA-7B with LoRA on 1,024 sampled examples,
and there is no instruction prompt. For L2 grounding: the embeddings come from the trained backbone, not the
base model (a random-init preset has no base model whose representation means anything; a checkpoint follows
the same rule); on a decoder-only
backbone it is the last position's last hidden state, as in the released code, and on a T5 the encoder's
states mean-pooled over the text (a T5 has no causal last position); the embedded text is the title's tokens
then EOS (the suite's input format; the released code embeds BOS then the text); generation stops after the
longest title plus EOS instead of 128 new tokens (titles are cut to ``max_title_tokens``); the popularity
counts are the training interactions of the run's split; one gamma is chosen on validation by the run's
validation metric instead of one per metric and K, on a coarser grid; items with the same title are told
apart by their suffix and so have their own embeddings (the released ``game`` evaluation counts a target at
the best rank of any item with its title).

Training and model selection differ from the released ``train.py`` too: it sets ``train_on_inputs=True`` (its
default, and every README command passes ``--train_on_inputs``), so the loss covers the whole prompt, the
history's titles included, as well as the target title; here, as for every sequence scheme, the loss covers
the target's tokens only (:mod:`recommenders.sequence`). It evaluates every epoch and keeps the epoch of
least validation loss (``load_best_model_at_end`` with no ``metric_for_best_model``, and
``EarlyStoppingCallback`` with patience 5); here the epoch is selected, and training stopped early, on the
run's validation metric (``train.valid_metric``) of the L2-grounded ranking at gamma = 0
(:mod:`recommenders.grounding`), as the suite's shared protocol selects every scheme on a ranking metric.

Default: the ``grounding`` field defaults to ``trie`` (declared ``added``), so the records made before the
field existed, all with constrained decoding, keep their config hash and read as what they are; every profile
sets ``l2``, so a run of ``bigrec`` is the paper's grounding and its config (hash) names ``grounding: l2``.
``schemes: {bigrec: {grounding: trie}}`` runs the constrained variant.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.config import ConfigError, param
from benchmark.splits import TrainData
from identifiers.base import SequenceScheme
from identifiers.registry import register
from recommenders.backbones import BackboneError
from recommenders.base import Recommender
from recommenders.contracts import ItemCodes, code_table
from recommenders.grounding import GroundingOptions, L2GroundedRecommender
from recommenders.text import disambiguate

GROUNDINGS = ("trie", "l2")


@dataclass
class BIGRecParams:
    """BIGRec hyper-parameters (defaults = quick profile, except ``grounding``; paper values in brackets).

    max_title_tokens: title tokens kept per identifier; longer titles are cut (items whose cut titles
        coincide are told apart by a suffix) [the full title].
    grounding: how generated text becomes a ranking of items: ``l2`` = the paper's step (free generation, L2
        distance of backbone embeddings to every title, popularity adjustment with gamma chosen on validation);
        ``trie`` = constrained beam search over valid titles, top-K = K beams [paper: l2]. The field's default
        is ``trie`` so that records made before it keep their hash; every profile sets ``l2``.
    generation_beams: beams of the free generation of ``l2`` grounding, best sequence kept [authors' code: 4].
    gamma_grid: popularity exponents of ``l2`` grounding tried on validation, key = (1 + pop)^-gamma * dist,
        first best in grid order kept [authors' code: 0, 1, ..., 99, one per K and metric].
    beam_size: beams of the constrained beam search of ``trie`` grounding [paper: not stated; authors' code
        uses L2 grounding, not beams].
    """

    max_title_tokens: int = param(16, low=1)
    beam_size: int = param(20, low=1, option=True)
    grounding: str = param("trie", choices=GROUNDINGS, added=True)
    generation_beams: int = param(4, low=1, added=True)
    gamma_grid: tuple[float, ...] = param((0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0), low=0, added=True)

    def check(self) -> None:
        if not self.gamma_grid:
            raise ConfigError("gamma_grid: expected at least one value")


@register("bigrec")
class BIGRec(SequenceScheme):
    """Item titles in the backbone's vocabulary, generated and grounded to items by L2 distance (or a trie)."""

    citation = ("Bao, Zhang, Wang, Zhang, Feng & He, A Bi-Step Grounding Paradigm for Large Language Models in "
                "Recommendation Systems, arXiv:2308.08434, 2023.")
    Params = BIGRecParams
    needs_content = ("text",)
    profiles = {"smoke": {"max_title_tokens": 8, "grounding": "l2"}, "quick": {"grounding": "l2"},
                "paper": {"max_title_tokens": 64, "grounding": "l2"}}
    train_profiles = {"quick": {"epochs": 10}}

    def tokenize(self, data: TrainData) -> ItemCodes:
        vocab = self.ctx.text_vocabulary()
        items = self.ctx.items
        titles = [title if title.strip() else f"item {raw}" for title, raw in zip(items["title"], items["raw_id"])]
        raw = vocab.encode(titles, self.params.max_title_tokens)
        empty = [(item, title) for item, (title, code) in enumerate(zip(titles, raw)) if not code]
        if empty:
            raise BackboneError(f"the tokenizer of '{vocab.source}' writes the title of {len(empty)} item(s) as no "
                                f"tokens, e.g. item {items['raw_id'].iloc[empty[0][0]]} ({empty[0][1]!r})")
        codes, suffixed = disambiguate(raw, vocab)
        lengths = np.array([len(code) for code in codes])
        details = {
            "items_without_title": int(sum(not title.strip() for title in items["title"])),
            "items_with_suffix": suffixed,
            "title_tokens_mean": float(lengths.mean()),
            "title_tokens_max": int(lengths.max()),
            "text_vocab_size": vocab.size,
        }
        return ItemCodes(codes=code_table(codes), vocab_size=vocab.size, raw_codes=code_table(raw), text_vocab=vocab,
                         details=details)

    def recommender(self, identifiers: ItemCodes) -> Recommender:
        if self.params.grounding == "trie":
            return super().recommender(identifiers)
        grounding = GroundingOptions(beams=self.params.generation_beams, gamma_grid=tuple(self.params.gamma_grid),
                                     selection_metric=self.ctx.config.train.valid_metric)
        return L2GroundedRecommender(identifiers, self.ctx.backbone, self.ctx.config.max_history,
                                     self.sequence_options(), grounding)
