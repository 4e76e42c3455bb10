"""Benchmark of item-code decoding: vectorised constrained beam search vs transformers' reference.

Builds a randomly initialised T5 or decoder-only model (``--backbone qwen-*``: the history is the prompt and
the searches continue it from its KV cache) and random unique TIGER-style codes (Rajput et al., NeurIPS 2023: ``levels``
semantic levels of ``codebook`` tokens each, plus a disambiguation level), random user histories, and runs

(a) the vectorised constrained beam search (:func:`recommenders.decoding.constrained_beam_search`),
(b) ``model.generate`` with ``prefix_allowed_tokens_fn`` walking a Python trie (on ``--reference-users``),
(c) the vectorised search without constraints (the speed ceiling; reports the invalid-generation rate).

It checks that (a) and (b) return the same top-k items and prints users/second for each. Example (CPU):

    python scripts/bench_decoding.py --items 2000 --users 64 --batch 64 --backbone t5-tiny
    python scripts/bench_decoding.py --items 2000 --users 64 --batch 64 --backbone qwen-5m
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _options  # noqa: E402

from benchmark.batches import HistoryBatch  # noqa: E402
from benchmark.splits import PAD, Examples  # noqa: E402
from recommenders.contracts import ItemCodes  # noqa: E402
from recommenders.decoding import (  # noqa: E402
    BeamResult,
    CodeTrie,
    causal_beam_search,
    causal_reference_generate,
    constrained_beam_search,
    reference_generate,
    unconstrained_beam_search,
)
from recommenders.sequence import GenerativeRecommender, SequenceOptions  # noqa: E402

Search = Callable[..., BeamResult]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=_options.backbone, default="t5-tiger",
                        help="backbone preset or path (default t5-tiger)")
    parser.add_argument("--items", type=_options.at_least(1), default=12101,
                        help="catalogue size (default 12101, Beauty)")
    parser.add_argument("--levels", type=_options.at_least(1), default=3,
                        help="semantic code levels before disambiguation")
    parser.add_argument("--codebook", type=_options.at_least(1), default=256, help="tokens per level")
    parser.add_argument("--dedup", choices=("level", "collisions"), default="level",
                        help="'level': a disambiguation token on every code, as TIGER (fixed length); "
                             "'collisions': only on colliding codes (variable length, EOS-terminated)")
    parser.add_argument("--history", type=_options.at_least(1), default=20, help="maximal history length (items)")
    parser.add_argument("--beam", type=_options.at_least(1), default=20, help="beam size")
    parser.add_argument("--k", type=_options.at_least(0), default=0,
                        help="items returned per user, at most the beam size (default 0: the beam size)")
    parser.add_argument("--batch", type=_options.at_least(1), default=512, help="users per batch")
    parser.add_argument("--users", type=_options.at_least(1), default=2048, help="users decoded by (a) and (c)")
    parser.add_argument("--reference-users", type=_options.at_least(1), default=256,
                        help="users decoded by (b) and compared")
    parser.add_argument("--device", type=_options.device, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=_options.at_least(0), default=0,
                        help="CPU threads for torch (default 0: torch's choice)")
    parser.add_argument("--seed", type=_options.seed, default=0)
    parser.add_argument("--tie-tolerance", type=_options.non_negative, default=1e-4,
                        help="log-prob difference under which two sequences count as tied")
    args = parser.parse_args(argv)
    if args.k > args.beam:
        parser.error(f"--k: at most the beam size (--beam {args.beam}), got {args.k}")
    return args


def random_codes(n_items: int, levels: int, codebook: int, dedup: str, rng: np.random.Generator) -> ItemCodes:
    """Random level-wise codes (level ``l`` uses tokens ``l * codebook ..``) made unique TIGER-style."""
    semantic = rng.integers(0, codebook, size=(n_items, levels)) + np.arange(levels) * codebook
    _, group, counts = np.unique(semantic, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    duplicate = np.empty(n_items, dtype=np.int64)
    duplicate[order] = np.arange(n_items) - np.repeat(starts, counts)
    extra = levels * codebook + duplicate
    if dedup == "collisions":
        extra = np.where(counts[group] > 1, extra, -1)
    codes = torch.as_tensor(np.concatenate([semantic, extra[:, None]], axis=1), dtype=torch.long)
    return ItemCodes(codes=codes, vocab_size=levels * codebook + int(duplicate.max()) + 1,
                     level_sizes=[codebook] * levels + [int(duplicate.max()) + 1])


def random_histories(n_users: int, n_items: int, history: int, rng: np.random.Generator) -> Examples:
    """Histories of 1..``history`` random items, left-padded with ``PAD``."""
    lengths = rng.integers(1, history + 1, size=n_users)
    histories = rng.integers(0, n_items, size=(n_users, history))
    histories[np.arange(history)[None, :] < (history - lengths)[:, None]] = PAD
    return Examples(np.arange(n_users), histories, rng.integers(0, n_items, size=n_users))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(name: str, search: Search, model: GenerativeRecommender, examples: Examples, batch_size: int,
        beam: int, k: int, device: torch.device) -> tuple[BeamResult, float]:
    """Encode and decode ``examples`` in batches (after one untimed warm-up batch); results and seconds."""
    def decode(index: np.ndarray) -> BeamResult:
        batch = HistoryBatch.from_examples(examples, index, device)
        inputs = model.prompt(batch) if model.decoder_only else model.encode(batch)
        return search(model.backbone, *inputs, model.trie, beam, k)

    with torch.no_grad():
        decode(np.arange(min(batch_size, len(examples))))
        synchronize(device)
        start = time.perf_counter()
        results = [decode(np.arange(s, min(s + batch_size, len(examples))))
                   for s in tqdm(range(0, len(examples), batch_size), desc=name, leave=False)]
        synchronize(device)
        seconds = time.perf_counter() - start
    return BeamResult(items=torch.cat([r.items for r in results]).cpu(),
                      scores=torch.cat([r.scores for r in results]).cpu()), seconds


def compare(fast: BeamResult, reference: BeamResult, tolerance: float) -> dict[str, float | int]:
    """Agreement of two top-k lists per user; a differing user is 'tied' when the position-wise scores
    agree within ``tolerance`` (the lists differ only by the order of, or choice among, equal scores)."""
    same_position = fast.items == reference.items
    overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(fast.items.tolist(), reference.items.tolist())]
    identical = same_position.all(dim=1)
    both_inf = torch.isinf(fast.scores) & torch.isinf(reference.scores)
    gap = torch.where(both_inf, 0.0, (fast.scores - reference.scores).abs()).amax(dim=1)
    return {"users": len(identical), "position_agreement": float(same_position.float().mean()),
            "set_agreement": float(np.mean(overlap)), "identical_users": int(identical.sum()),
            "tied_users": int((~identical & (gap <= tolerance)).sum()),
            "unexplained_users": int((~identical & (gap > tolerance)).sum()), "max_score_gap": float(gap.max())}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    k = args.k or args.beam
    codes = random_codes(args.items, args.levels, args.codebook, args.dedup, rng)
    options = SequenceOptions(beam_size=args.beam)
    model = GenerativeRecommender(codes, args.backbone, args.history, options).to(device).eval()
    examples = random_histories(args.users, args.items, args.history, rng)
    reference_examples = examples.subset(args.reference_users, args.seed)
    trie: CodeTrie = model.trie
    print(f"device {device} | backbone {args.backbone} | {args.items} items, code vocab {codes.vocab_size}, "
          f"decoded length {trie.depth} ({'EOS-terminated' if trie.uses_eos else 'fixed'}), trie nodes "
          f"{trie.n_nodes} | beam {args.beam}, k {k}, batch {args.batch}, history <= {args.history}")

    searches: dict[str, Search] = {"constrained": constrained_beam_search,
                                   "unconstrained": unconstrained_beam_search, "reference": reference_generate}
    if model.decoder_only:
        searches = {"constrained": lambda *a: causal_beam_search(*a, constrained=True),
                    "unconstrained": lambda *a: causal_beam_search(*a, constrained=False),
                    "reference": causal_reference_generate}
    constrained, t_constrained = run("constrained", searches["constrained"], model, examples, args.batch,
                                     args.beam, k, device)
    unconstrained, t_unconstrained = run("unconstrained", searches["unconstrained"], model, examples, args.batch,
                                         args.beam, k, device)
    reference, t_reference = run("reference", searches["reference"], model, reference_examples, args.batch,
                                 args.beam, k, device)
    subset = torch.as_tensor(np.searchsorted(examples.users, reference_examples.users))
    fast_subset = BeamResult(items=constrained.items[subset], scores=constrained.scores[subset])

    rates = {"constrained (a)": (len(examples), t_constrained), "reference generate (b)":
             (len(reference_examples), t_reference), "unconstrained (c)": (len(examples), t_unconstrained)}
    for name, (users, seconds) in rates.items():
        print(f"{name:>24}: {users / seconds:10.1f} users/s  ({users} users, {seconds:.2f} s)")
    per_user = {name: seconds / users for name, (users, seconds) in rates.items()}
    print(f"constrained / unconstrained time: {per_user['constrained (a)'] / per_user['unconstrained (c)']:.2f}x; "
          f"constrained speed-up over reference: "
          f"{per_user['reference generate (b)'] / per_user['constrained (a)']:.1f}x")
    print(f"unconstrained invalid-generation rate: {unconstrained.invalid_rate:.4f} "
          f"({unconstrained.n_invalid}/{unconstrained.n_generated} generated sequences name no item); "
          f"constrained: {constrained.invalid_rate:.4f}")
    valid = constrained.items[constrained.items >= 0]
    duplicates = sum(len(row) - len(set(row)) for row in
                     (r[r >= 0].tolist() for r in constrained.items))
    print(f"constrained output: {int(valid.numel())} valid items, {duplicates} duplicates within a user's list, "
          f"{int((constrained.items < 0).sum())} empty slots")
    agreement = compare(fast_subset, reference, args.tie_tolerance)
    print("agreement (a) vs (b) on {users} users: position {position_agreement:.4f}, set {set_agreement:.4f}; "
          "identical lists {identical_users}, differing only within ties {tied_users}, unexplained "
          "{unexplained_users}; max |score gap| {max_score_gap:.2e}".format(**agreement))


if __name__ == "__main__":
    main()
