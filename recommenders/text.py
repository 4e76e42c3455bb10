"""The backbone's text vocabulary: how item text becomes words of the backbone's own vocabulary.

Text identifiers (BIGRec's titles, IDGenRec's textual IDs) and STORE's text tasks need the backbone's
tokenizer. A checkpoint loaded with ``from_pretrained`` brings its own (``AutoTokenizer``); a randomly
initialised preset has none and no model hub is reachable, so a byte-pair-encoding vocabulary (Sennrich
et al., ACL 2016) is trained on the item texts of the catalogue (content known at catalogue time, so every
item, cold ones included, may contribute) with HF ``tokenizers``: NFKC + lower-casing, words and
punctuation split, ``vocab_size`` at most. It is deterministic for a corpus and cached on disk.

Token ids of a fitted vocabulary follow T5's convention: 0 is the pad (and decoder start), 1 the end of
sequence, 2 unknown; a T5 checkpoint's tokenizer must use the same pad and end of sequence, a decoder-only
checkpoint's tokenizer keeps its own (the model's :func:`~recommenders.backbones.special_ids` match it).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from benchmark.hashing import content_key
from benchmark.safeio import load_or_compute
from recommenders.backbones import EOS_ID, PAD_ID, PRESETS, BackboneError, family_of

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
ALPHABET = list(string.ascii_lowercase + string.digits + string.punctuation)
SEPARATOR = ";"
"""Text that separates the items of a history when they are written as words."""


@dataclass
class TextVocabulary:
    """A tokenizer whose ids are the backbone's text tokens (pad 0 and end of sequence 1 unless ``own_ids``:
    a decoder-only checkpoint's tokenizer, which needs only an end-of-sequence token)."""

    tokenizer: PreTrainedTokenizerBase
    source: str
    own_ids: bool = False

    def __post_init__(self) -> None:
        if self.own_ids:
            if self.tokenizer.eos_token_id is None:
                raise BackboneError(f"the tokenizer of '{self.source}' defines no end-of-sequence token")
        elif (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) != (PAD_ID, EOS_ID):
            raise BackboneError(f"the tokenizer of '{self.source}' uses pad id {self.tokenizer.pad_token_id} and "
                                f"eos id {self.tokenizer.eos_token_id}; the T5 backbones need pad {PAD_ID}, "
                                f"eos {EOS_ID}")

    @property
    def size(self) -> int:
        """Number of text token ids (the backbone's text embedding rows)."""
        return len(self.tokenizer)

    @property
    def separator_id(self) -> int:
        """The token that separates history items written as text."""
        return self.tokenizer.encode(SEPARATOR, add_special_tokens=False)[-1]

    def encode(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """Token ids of each text, no special tokens, cut after ``max_tokens``."""
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens)
        return encoded["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=True).strip()


def train_bpe(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BPE tokenizer of at most ``vocab_size`` tokens fitted on ``corpus`` (deterministic)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=ALPHABET, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def text_vocabulary(backbone: str, corpus: list[str], vocab_size: int, cache_dir: Path) -> TextVocabulary:
    """The backbone's text vocabulary: a checkpoint's own tokenizer, or BPE fitted on ``corpus`` for a preset.

    The fitted tokenizer's JSON is cached as ``<cache_dir>/text_vocab/<hash>.pt`` (hash of corpus and size) by
    :func:`benchmark.safeio.load_or_compute`, like every other cached component; an unreadable file is reported
    and the vocabulary fitted again.
    """
    if backbone not in PRESETS:
        try:
            tokenizer = AutoTokenizer.from_pretrained(backbone, local_files_only=True)
            return TextVocabulary(tokenizer, backbone, own_ids=family_of(backbone) != "t5")
        except (OSError, ValueError) as error:
            raise BackboneError(f"backbone '{backbone}': no tokenizer loadable with from_pretrained: "
                                f"{error}") from error
    path = cache_dir / "text_vocab" / f"{content_key(f'bpe:{vocab_size}', corpus)}.pt"
    saved, _ = load_or_compute(path, lambda: {"tokenizer": train_bpe(corpus, vocab_size).backend_tokenizer.to_str()})
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(saved["tokenizer"]), pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>")
    return TextVocabulary(tokenizer, f"bpe-{vocab_size} fitted on the item texts")


def disambiguate(codes: list[list[int]], vocab: TextVocabulary) -> tuple[list[list[int]], int]:
    """Make word codes unique: the first item (lowest id) of a group sharing a code keeps it, the k-th
    (k >= 2) gets the words `` (k)`` appended (the next free k when that code belongs to another item).

    Linear in the items: each code remembers the next suffix to try (suffixes below it are taken, and what is
    taken stays taken), and each suffix is tokenized once. Returns the unique codes and the number of items that
    got a suffix. Every suffix must be tokens that no other suffix is, so that each try is a new code and the
    search ends (a tokenizer that writes a suffix as no tokens, or two as the same, raises
    :class:`BackboneError`).
    """
    taken = {tuple(code) for code in codes}
    seen: set[tuple[int, ...]] = set()
    next_rank: dict[tuple[int, ...], int] = {}
    suffixes: dict[int, tuple[int, ...]] = {}
    ranks: dict[tuple[int, ...], int] = {}

    def suffix(rank: int) -> tuple[int, ...]:
        if rank not in suffixes:
            tokens = tuple(vocab.encode([f" ({rank})"], 16)[0])
            if not tokens or tokens in ranks:
                same = f"as ' ({ranks[tokens]})'" if tokens else "as no tokens"
                raise BackboneError(f"the tokenizer of '{vocab.source}' writes the suffix ' ({rank})' {same}, so "
                                    "items with the same text cannot be told apart")
            suffixes[rank], ranks[tokens] = tokens, rank
        return suffixes[rank]

    out, changed = [], 0
    for code in codes:
        key = tuple(code)
        if key in seen:
            rank = next_rank.get(key, 2)
            while key + suffix(rank) in taken:
                rank += 1
            next_rank[key] = rank + 1
            key, changed = key + suffix(rank), changed + 1
        seen.add(key)
        taken.add(key)
        out.append(list(key))
    return out, changed
