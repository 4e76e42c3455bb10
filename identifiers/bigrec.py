"""BIGRec of Bao, Zhang, Wang, Zhang, Feng & He, "A Bi-Step Grounding Paradigm for Large Language Models in
Recommendation Systems", arXiv:2308.08434, 2023 (sequence paradigm, textual identifiers).

An item's identifier is its title written in the backbone's own vocabulary (:mod:`recommenders.text`). The
recommender reads the history's titles, oldest first, separated by ``;``, and generates the next item's
title (step 1, grounding to the language space: instruction tuning on next-title generation). Step 2
grounds the generated text to actual items; here generation is constrained to the prefix tree of valid
titles (:mod:`recommenders.decoding`), so every generated title is an item and the top-K items come from
K beams. Items whose (truncated) titles coincide get `` (2)``, `` (3)`` ... appended, so titles are unique.

Hyper-parameters (field: default = quick profile [paper / authors' code]): ``max_title_tokens`` 16 [the
full title; ``paper`` profile 64], ``beam_size`` 20 [paper: not stated in the sources available to us;
authors' code: ``inference.py`` generates one output with 4 beams and ``evaluate.py`` ranks all items by the L2
distance of its embedding; here the top-K items are K beams of constrained decoding, so 20, the suite's
setting for every sequence scheme].

Differences from the paper, by design of this benchmark: the backbone is the run's T5 (random-init preset
or a checkpoint, fully trained) instead of LLaMA-7B with LoRA on 1,024 sampled examples, there is no
instruction prompt, and grounding is exact through constrained decoding instead of the paper's L2 distance
between the LLM embeddings of the generated text and of every title (with optional popularity
re-weighting); constrained decoding is the choice of the later work on title identifiers and never
produces an out-of-catalogue title, which the L2 step exists to repair.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.config import param
from benchmark.splits import TrainData
from identifiers.base import SequenceScheme
from identifiers.registry import register
from recommenders.contracts import ItemCodes, code_table
from recommenders.text import disambiguate


@dataclass
class BIGRecParams:
    """BIGRec hyper-parameters (defaults = quick profile; paper values in brackets).

    max_title_tokens: title tokens kept per identifier; longer titles are cut (items whose cut titles
        coincide are told apart by a suffix) [the full title].
    beam_size: beams of the constrained beam search that decodes recommendations [paper: not stated in the
        sources available to us; authors' code: one output from 4 beams, items ranked by grounding].
    """

    max_title_tokens: int = param(16, low=1)
    beam_size: int = param(20, low=1, option=True)


@register("bigrec")
class BIGRec(SequenceScheme):
    """Item titles in the backbone's vocabulary, generated under a title prefix-tree constraint."""

    citation = ("Bao, Zhang, Wang, Zhang, Feng & He, A Bi-Step Grounding Paradigm for Large Language Models in "
                "Recommendation Systems, arXiv:2308.08434, 2023.")
    Params = BIGRecParams
    needs_content = ("text",)
    profiles = {"smoke": {"max_title_tokens": 8}, "paper": {"max_title_tokens": 64}}
    train_profiles = {"quick": {"epochs": 10}}

    def tokenize(self, data: TrainData) -> ItemCodes:
        vocab = self.ctx.text_vocabulary()
        items = self.ctx.items
        titles = [title if title.strip() else f"item {raw}" for title, raw in zip(items["title"], items["raw_id"])]
        raw = vocab.encode(titles, self.params.max_title_tokens)
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
