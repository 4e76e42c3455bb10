"""Padding of training batches with and without ``train.bucketing``: history positions a batch computes / real items.

A sequence model trims a batch's histories to its longest one (``recommenders/sequence.py``), so a batch of
``B`` examples computes ``B x`` (longest history) positions; the ratio below is that sum over one epoch's batches
divided by the real history items (1.0 = no padding). Tokens per item are constant within a scheme, so the ratio
is the same in tokens. It uses every next-item example of the training split (the default training examples),
batched as :func:`benchmark.batches.iterate` does with a seeded shuffle, plain or bucketed. Example:

    python scripts/bench_padding.py --datasets synthetic --batch-sizes 64,256,1024
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _options  # noqa: E402

from benchmark.batches import bucketed_batches, history_lengths  # noqa: E402
from benchmark.config import MAX_HISTORY, SPLITS  # noqa: E402
from benchmark.data.dataset import DataError  # noqa: E402
from benchmark.data.registry import load_dataset  # noqa: E402
from benchmark.splits import SplitError, make_split  # noqa: E402


def padding_ratio(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Positions computed (each batch's size times its longest history) over real history items."""
    return sum(len(index) * int(lengths[index].max()) for index in batches) / max(1, int(lengths.sum()))


def plain_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The trainer's batches without bucketing: consecutive slices of a random permutation."""
    order = rng.permutation(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=_options.comma_list(_options.dataset), default="synthetic",
                        help="comma-separated dataset names")
    parser.add_argument("--data-dir", type=_options.data_dir, default=None,
                        help="folder of the datasets (default: $GENREC_DATA_DIR or ./datasets)")
    parser.add_argument("--split", default="loo", choices=SPLITS)
    parser.add_argument("--k-core", type=_options.at_least(1), default=5)
    parser.add_argument("--max-history", type=_options.at_least(1, MAX_HISTORY), default=20)
    parser.add_argument("--batch-sizes", type=_options.comma_list(_options.at_least(1)), default="256",
                        help="comma-separated batch sizes")
    parser.add_argument("--seed", type=_options.seed, default=2026)
    args = parser.parse_args(argv)
    try:  # every dataset read and split before the table starts
        lengths_of = {name: history_lengths(make_split(load_dataset(name, args.data_dir, args.k_core), args.split,
                                                       args.max_history).train.next_item_examples())
                      for name in args.datasets}
    except (DataError, SplitError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"split {args.split}, k-core {args.k_core}, max history {args.max_history}, seed {args.seed}; "
          "ratio = positions computed / real history items over one epoch")
    print(f"{'dataset':<14} {'examples':>9} {'mean len':>8} {'batch':>6} {'plain':>7} {'bucketed':>8} {'saved':>6}")
    for name, lengths in lengths_of.items():
        for batch_size in args.batch_sizes:
            plain = padding_ratio(lengths, plain_batches(len(lengths), batch_size, np.random.default_rng(args.seed)))
            bucketed = padding_ratio(lengths, bucketed_batches(lengths, batch_size, np.random.default_rng(args.seed)))
            print(f"{name:<14} {len(lengths):>9,} {lengths.mean():>8.2f} {batch_size:>6} {plain:>7.3f} "
                  f"{bucketed:>8.3f} {1 - bucketed / plain:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
