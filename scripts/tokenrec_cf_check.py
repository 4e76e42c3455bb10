"""What TokenRec's CF vectors are worth as retrieval models, beside popularity.

TokenRec tokenizes LightGCN vectors and trains its backbone to generate a vector whose cosine to the target
item's LightGCN vector is high; items are then ranked by that cosine. So the ranking quality of the LightGCN
vectors themselves bounds what the row can be expected to reach. For one dataset and profile this script
trains (or loads from ``--cache-dir``, the cache the runs use) the LightGCN of the ``tokenrec`` scheme's
settings on the training split, for both ``cf_vectors`` (``final``: layer mean; ``layer0``: the learned table),
and ranks the **test** targets over all items, with the suite's evaluator, by the rules of
:func:`identifiers.lightgcn.cf_rankings` (a TokenRec record holds the same on validation, under
``lightgcn.retrieval_valid``):

* ``pop``: training interaction counts (the ``pop`` row);
* ``dot(user, item)``: LightGCN's own score, the inner product of the user's and the item's vectors;
* ``cos(user, item)``: the cosine TokenRec's retrieval uses, with the user's own CF vector as the generated
  vector (what a backbone that reproduced the user's vector would reach);
* ``cos(last item, item)``: the cosine to the last history item's vector (a sequence-aware use of the same
  vectors).

It prints a Markdown table (``--output`` also writes it) naming the data, settings and machine. Example (CPU,
about a minute when LightGCN is cached)::

    python scripts/tokenrec_cf_check.py --dataset synthetic --profile quick --output docs/reference/tokenrec-cf-check.md
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _options  # noqa: E402

from benchmark.config import PROFILES, ConfigError, resolve  # noqa: E402
from benchmark.data.dataset import DataError  # noqa: E402
from benchmark.evaluate import evaluate  # noqa: E402
from benchmark.records import code_version, cpu_model  # noqa: E402
from benchmark.runner import cached_dataset, cached_split  # noqa: E402
from benchmark.splits import SplitError  # noqa: E402
from identifiers.base import RunContext  # noqa: E402
from identifiers.lightgcn import FixedScores, cf_rankings  # noqa: E402
from identifiers.registry import get_scheme  # noqa: E402

RULES = {"user_dot": "dot(user, item)", "user_cosine": "cos(user, item)", "last_item_cosine": "cos(last item, item)"}
"""The rules of :func:`identifiers.lightgcn.cf_rankings` as the table names them."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=_options.dataset, default="synthetic")
    parser.add_argument("--data-dir", type=_options.data_dir, default=None,
                        help="folder of the datasets (default: $GENREC_DATA_DIR or ./datasets)")
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--seed", type=_options.seed, default=2026)
    parser.add_argument("--cache-dir", type=_options.output_dir, default=".cache",
                        help="the runs' cache, where LightGCN is read or written (made when missing)")
    parser.add_argument("--output", type=_options.output_file, default=None,
                        help="also write the Markdown table to this file (its folder is made when missing)")
    args = parser.parse_args(argv)

    cls = get_scheme("tokenrec")
    try:
        config = resolve(args.dataset, cls, args.seed, args.profile)
        dataset = cached_dataset(config.dataset, args.data_dir, config.k_core)
        split = cached_split(config.dataset, args.data_dir, config.k_core, config.split, config.max_history)
    except (ConfigError, DataError, SplitError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ctx = RunContext(config=config, dataset=dataset, valid=split.valid, warm=split.warm, device=torch.device("cpu"),
                     cf_config=None, cache_dir=Path(args.cache_dir), progress=False)
    k = 10
    rows = []
    popularity = torch.as_tensor(split.train.item_counts(), dtype=torch.float32)
    for vectors in ("final", "layer0"):
        users, items, _ = cls({**config.params, "cf_vectors": vectors}, ctx).cf_representations(split.train)
        for name, rule in cf_rankings(users.float(), items.float(), popularity).items():
            if name == "pop" and rows:
                continue
            result = evaluate(FixedScores(dataset.n_items, rule), split.test, split.warm, (k,),
                              config.eval_batch_size, "cpu")
            label = name if name == "pop" else f"{RULES[name]} [{vectors}]"
            rows.append((label, result.value(f"recall@{k}"), result.value(f"ndcg@{k}")))
    p = config.params
    lines = [f"# TokenRec's CF vectors as retrieval models ({args.dataset}, {args.profile} profile)", "",
             f"Written by `scripts/tokenrec_cf_check.py` on {datetime.now(timezone.utc):%Y-%m-%d} at commit "
             f"`{code_version()}`; {cpu_model()}, {torch.get_num_threads()} torch "
             f"thread(s), CPU. Test targets of the `{config.split}` split ({len(split.test.targets)} users), "
             f"ranked over all {dataset.n_items} items. LightGCN of the `tokenrec` scheme's {args.profile} settings: "
             f"dim {p['lightgcn_dim']}, {p['lightgcn_layers']} layers, {p['lightgcn_epochs']} epochs, lr "
             f"{p['lightgcn_lr']}, reg {p['lightgcn_reg']}, seed {args.seed}; `final` = layer mean, `layer0` = "
             f"the learned embedding table (the authors' code).", "",
             f"| ranking | Recall@{k} | NDCG@{k} |", "|---|---|---|"]
    lines += [f"| {name} | {recall:.4f} | {ndcg:.4f} |" for name, recall, ndcg in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
