"""Benchmark of inference cost against catalogue size, per identifier paradigm.

For synthetic catalogues of 1k, 10k, 100k and 1M items (``--max-items`` caps the list), builds one randomly
initialised recommender per paradigm at a fixed small backbone and measures top-``k`` inference on random
user histories, as the evaluator runs it:

* sequence: TIGER-style codes (``--levels`` levels of ``--codebook`` tokens plus a de-duplication level),
  :class:`~recommenders.sequence.GenerativeRecommender` ranking with constrained beam search
  (:mod:`recommenders.decoding`);
* embedding: random ``--dim``-dimensional item vectors, :class:`~recommenders.embedding.EmbeddingRecommender`
  scoring every item with its linear head, then top-k;
* set: a CF vector and a semantic vector per item, :class:`~recommenders.set.SetRecommender` scoring every item,
  then top-k.

Each (paradigm, size) runs in a fresh process, so the peak memory is that measurement's own: peak resident
memory of the process on CPU (torch and the model included), peak allocated GPU memory on CUDA. Users/s is
measured after one untimed warm-up batch. It prints a Markdown table and the fitted growth exponent ``b`` of
time per user ~ items^b (least squares on log-log), per paradigm; ``--output`` also writes them to a file.
Untrained models decode as fast as trained ones (the work per step does not depend on the weights), so
the numbers are about cost, not quality. Example (CPU, a few minutes):

    python scripts/bench_scaling.py --max-items 100000 --output docs/reference/scaling-cpu.md
"""
from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _options  # noqa: E402
from bench_decoding import random_codes, random_histories  # noqa: E402

from benchmark.records import cpu_model  # noqa: E402
from recommenders.base import HistoryBatch, Recommender  # noqa: E402
from recommenders.contracts import ItemTokenSets, ItemVectors  # noqa: E402
from recommenders.embedding import EmbeddingRecommender  # noqa: E402
from recommenders.sequence import GenerativeRecommender, SequenceOptions  # noqa: E402
from recommenders.set import SetRecommender  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
PARADIGMS = ("sequence", "embedding", "set")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-items", type=_options.at_least(SIZES[0]), default=SIZES[-1],
                        help=f"largest catalogue measured, at least {SIZES[0]:,} (default 1M)")
    parser.add_argument("--paradigms", type=_options.comma_list(_options.choice(PARADIGMS)),
                        default=",".join(PARADIGMS), help=f"comma-separated subset of {', '.join(PARADIGMS)}")
    parser.add_argument("--backbone", type=_options.backbone, default="t5-tiny",
                        help="backbone preset (default t5-tiny)")
    parser.add_argument("--users", type=_options.at_least(1), default=256, help="users decoded per measurement")
    parser.add_argument("--batch", type=_options.at_least(1), default=64, help="users per batch")
    parser.add_argument("--k", type=_options.at_least(1), default=10, help="items returned per user (= beam size)")
    parser.add_argument("--history", type=_options.at_least(1), default=20, help="maximal history length (items)")
    parser.add_argument("--levels", type=_options.at_least(1), default=3,
                        help="semantic code levels of the sequence paradigm")
    parser.add_argument("--codebook", type=_options.at_least(1), default=256, help="tokens per code level")
    parser.add_argument("--dim", type=_options.at_least(1), default=64,
                        help="item vector width of the embedding and set paradigms")
    parser.add_argument("--device", type=_options.device, default="cpu",
                        help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=_options.at_least(1), default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--seed", type=_options.seed, default=0)
    parser.add_argument("--output", type=_options.output_file, default=None,
                        help="also write the Markdown report to this file (its folder is made when missing)")
    return parser.parse_args(argv)


def build(paradigm: str, n_items: int, args: argparse.Namespace, rng: np.random.Generator) -> Recommender:
    if paradigm == "sequence":
        codes = random_codes(n_items, args.levels, args.codebook, "level", rng)
        return GenerativeRecommender(codes, args.backbone, args.history, SequenceOptions(beam_size=args.k))
    vectors = torch.as_tensor(rng.standard_normal((n_items, args.dim)), dtype=torch.float32)
    if paradigm == "embedding":
        return EmbeddingRecommender(ItemVectors(vectors), args.backbone, args.history)
    semantic = torch.as_tensor(rng.standard_normal((n_items, args.dim)), dtype=torch.float32)
    return SetRecommender(ItemTokenSets(cf=vectors, semantic=semantic, n_semantic=2), args.backbone, args.history)


def measure(paradigm: str, n_items: int, args: argparse.Namespace) -> dict[str, Any]:
    """Users/s and peak memory of one paradigm at one catalogue size (run in a fresh process)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    model = build(paradigm, n_items, args, rng).to(device).eval()
    examples = random_histories(args.users, n_items, args.history, rng)

    def infer(index: np.ndarray) -> torch.Tensor:
        batch = HistoryBatch.from_examples(examples, index, device)
        if model.output == "scores":
            return model.score(batch).topk(args.k, dim=1).indices
        return model.rank(batch, args.k)

    with torch.no_grad():
        infer(np.arange(min(args.batch, args.users)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for s in range(0, args.users, args.batch):
            infer(np.arange(s, min(s + args.batch, args.users)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return {"paradigm": paradigm, "items": n_items, "users_per_s": args.users / seconds,
            "ms_per_user": 1000.0 * seconds / args.users, "peak_mb": memory,
            "parameters": sum(p.numel() for p in model.parameters())}


def growth_exponent(items: list[int], ms_per_user: list[float]) -> float:
    """Least-squares slope b of log(time per user) = a + b log(items)."""
    return float(np.polyfit(np.log(items), np.log(ms_per_user), 1)[0])


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    memory = "peak allocated GPU MB" if args.device.startswith("cuda") else "peak process RSS MB"
    hardware = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
                else f"CPU {cpu_model()}, {args.threads} torch thread(s)")
    lines = ["# Inference cost against catalogue size\n",
             f"Generated by `python scripts/bench_scaling.py {' '.join(argv)}` on {hardware} "
             f"({platform.platform()}, torch {torch.__version__}) at "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; do not edit by hand.\n",
             f"Randomly initialised `{args.backbone}` recommenders, {args.users} users of random histories (at "
             f"most {args.history} items), batch {args.batch}, top-{args.k} (sequence: constrained beam search "
             f"with {args.k} beams over {args.levels}x{args.codebook} codes plus a de-duplication level; "
             f"embedding / set: a score for every item, then top-k). Each measurement runs in its own process; "
             f"memory is the {memory}, torch runtime included.\n",
             f"| Paradigm | Items | Users/s | ms/user | {memory} | Parameters |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['paradigm']} | {r['items']:,} | {r['users_per_s']:.1f} | {r['ms_per_user']:.3f} | "
              f"{r['peak_mb']:.0f} | {r['parameters']:,} |" for r in rows]
    lines += ["", "Fitted growth exponent b (time per user ∝ items^b, least squares on log-log):\n"]
    for paradigm in dict.fromkeys(r["paradigm"] for r in rows):
        mine = [r for r in rows if r["paradigm"] == paradigm]
        if len(mine) >= 2:
            b = growth_exponent([r["items"] for r in mine], [r["ms_per_user"] for r in mine])
            sizes = ", ".join(f"{r['items']:,}" for r in mine)
            lines.append(f"- {paradigm}: b = {b:.2f} (over {sizes} items)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sizes = [n for n in SIZES if n <= args.max_items]
    context = multiprocessing.get_context("spawn")
    rows = []
    for paradigm in args.paradigms:
        for n_items in sizes:
            with context.Pool(1, maxtasksperchild=1) as pool:
                row = pool.apply(measure, (paradigm, n_items, args))
            print(f"{paradigm:>9} {n_items:>9,} items: {row['users_per_s']:9.1f} users/s, "
                  f"peak {row['peak_mb']:.0f} MB", flush=True)
            rows.append(row)
    text = report(rows, args, argv)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
