"""Popularity groups: Recall@K / NDCG@K over the test targets of five item groups by training popularity.

Items are ordered by their number of training interactions (most first) and cut into :data:`N_GROUPS` groups,
G1 the most popular (as in SETRec's and LETTER's group studies). Two ways to cut:

* ``interactions`` (default): each group holds about a fifth of the training interactions, so G1 is a few
  head items and G5 the long tail (and every cold item, which has no training interaction);
* ``items``: each group holds about a fifth of the items.

Caveats: items with equal training counts are never split between groups, so groups are only approximately
equal (one count value shared by many items can leave a group empty). The groups come from each record's
histogram of item training counts and the metric of a group from its per-example ranks and target training
counts; records written before these fields existed are listed, not used. Values are means over seeds.

Records of one section (dataset, split, profile, backbone) trained on different data (e.g. a ``k_core``
variant) have different histograms, so one set of groups would put their targets in the wrong groups: such a
section is split into one table (and figure) per distinct histogram, each with its own groups, named by the
histogram's hash (csv column :data:`HISTOGRAM`) and the config keys that tell the training data apart. A test
target whose training count is not in its record's own histogram is an inconsistent record: an error.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.hashing import content_key
from benchmark.records import RecordScan, now
from benchmark.reports import GROUP_SCHEMES
from benchmark.reports.configs import (
    ABSENT,
    LEGEND,
    config_id,
    flat_config,
    flat_configs,
    row_label,
    variant_labels,
)
from benchmark.reports.figures import new_figure, save, slug
from benchmark.reports.hardware import machines
from benchmark.reports.sections import records_by_section
from benchmark.reports.stats import per_example
from benchmark.safeio import write_text

N_GROUPS = 5
SHOWN_K = 10
"""Cut-off of the Markdown tables and figures (the csv has every K of the records)."""
KEYS = ("dataset", "split", "profile", "backbone")
HISTOGRAM = "train_histogram"
"""Frame column: hash of the item training-count histogram a row's groups come from (:func:`histogram_id`)."""


@dataclass(frozen=True)
class Groups:
    """The popularity groups of one split: the group of each training-count value, and per group its items,
    training interactions and the range of training counts."""

    group_of_count: dict[int, int]
    items: list[int]
    interactions: list[int]
    count_range: list[tuple[int, int] | None]

    def label(self, g: int) -> str:
        span = self.count_range[g]
        counts = "no items" if span is None else (f"{span[1]}" if span[0] == span[1] else f"{span[1]}–{span[0]}")
        return f"G{g + 1} (train count {counts}; {self.items[g]} items, {self.interactions[g]} interactions)"


def make_groups(train_count: Sequence[int], items: Sequence[int], scheme: str = "interactions") -> Groups:
    """Groups from a histogram (``items[i]`` items have ``train_count[i]`` training interactions).

    Count values in decreasing order; a value goes to group ``min(N-1, floor(N * before / total))``, where
    ``before`` is the mass (interactions or items, by ``scheme``) of the more popular values and ``total`` all.
    """
    if scheme not in GROUP_SCHEMES:
        raise ValueError(f"unknown group scheme '{scheme}'; choose from {', '.join(GROUP_SCHEMES)}")
    counts, sizes = np.asarray(train_count, dtype=np.int64), np.asarray(items, dtype=np.int64)
    order = np.argsort(-counts, kind="stable")
    counts, sizes = counts[order], sizes[order]
    mass = counts * sizes if scheme == "interactions" else sizes
    total = max(int(mass.sum()), 1)
    before = np.cumsum(mass) - mass
    group = np.minimum(N_GROUPS - 1, (N_GROUPS * before) // total)
    spans: list[tuple[int, int] | None] = []
    for g in range(N_GROUPS):
        values = counts[group == g]
        spans.append((int(values.min()), int(values.max())) if len(values) else None)
    return Groups(group_of_count={int(c): int(g) for c, g in zip(counts, group)},
                  items=[int(sizes[group == g].sum()) for g in range(N_GROUPS)],
                  interactions=[int((counts * sizes)[group == g].sum()) for g in range(N_GROUPS)],
                  count_range=spans)


def has_group_fields(record: dict[str, Any]) -> bool:
    """Whether a finished record carries the target training counts and the item training-count histogram."""
    return bool((record.get("per_user") or {}).get("target_train_counts") is not None
                and record.get("item_train_count_histogram"))


def histogram_id(record: dict[str, Any]) -> str:
    """A short hash of a record's item training-count histogram: records with equal ids share their groups."""
    return content_key(record["item_train_count_histogram"], length=8)


def record_groups(record: dict[str, Any], scheme: str) -> Groups:
    histogram = record["item_train_count_histogram"]
    return make_groups(histogram["train_count"], histogram["items"], scheme)


def group_metrics(record: dict[str, Any], groups: Groups) -> dict[str, float]:
    """``G<g>_<metric>@<k>`` (NaN for a group without test targets) and ``G<g>_targets`` of one run. A user with
    several test targets (a released multi-target split) counts each target as its own example here, ranked
    in the user's one list: per-target Recall/NDCG, not the multi-target metric of the leaderboard. Raises
    ValueError for a target training count that ``groups`` do not know."""
    per_user = record["per_user"]
    ranks = np.asarray(_flat(per_user["ranks"]))
    counts = [int(c) for c in _flat(per_user["target_train_counts"])]
    unknown = sorted(set(counts) - set(groups.group_of_count))
    if unknown:
        config = record["config"]
        raise ValueError(f"record {config['dataset']}/{config['scheme']}/{config['backbone']} seed "
                         f"{config.get('seed')}: test target training counts {unknown[:5]} are not in its item "
                         "training-count histogram")
    group = np.asarray([groups.group_of_count[c] for c in counts])
    out: dict[str, float] = {}
    for g in range(N_GROUPS):
        mask = group == g
        out[f"G{g + 1}_targets"] = int(mask.sum())
        for k in record["config"].get("ks", [SHOWN_K]):
            for metric in ("recall", "ndcg"):
                name = f"{metric}@{k}"
                out[f"G{g + 1}_{name}"] = float(per_example(ranks[mask], name).mean()) if mask.any() else np.nan
    return out


def _flat(values: list) -> list:
    """Per-example values with multi-target entries (lists) spread out, one value per target."""
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


def group_frame(records: Sequence[dict[str, Any]], scheme: str = "interactions") -> tuple[pd.DataFrame,
                                                                                          dict[tuple, Groups]]:
    """One row per section, training-data histogram (:data:`HISTOGRAM`) and scheme config (mean over seeds)
    with every group's metrics and target counts, and the groups of each (section, histogram id). Records
    without the fields are left out."""
    rows, sections = [], {}
    for key, section in records_by_section(records).items():
        for record in filter(has_group_fields, section):
            histogram = histogram_id(record)
            if (*key, histogram) not in sections:
                sections[(*key, histogram)] = record_groups(record, scheme)
            rows.append({**dict(zip(KEYS, key)), HISTOGRAM: histogram, "scheme": record["config"]["scheme"],
                         "config_id": config_id(record["config"]),
                         **group_metrics(record, sections[(*key, histogram)])})
    if not rows:
        return pd.DataFrame(), sections
    runs = pd.DataFrame(rows)
    keys = [*KEYS, HISTOGRAM, "scheme", "config_id"]
    values = [c for c in runs.columns if c not in keys]
    frame = runs.groupby(keys, sort=False)[values].mean()
    frame.insert(0, "n", runs.groupby(keys, sort=False).size())
    frame = frame.reset_index()
    frame.insert(len(KEYS) + 2, "variant", variant_labels(frame, [*KEYS, "scheme"], flat_configs(records)))
    frame.insert(len(KEYS) + 1, "groups", scheme)
    return frame, sections


def _data_labels(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per histogram id among ``records`` (one section): the config keys whose value is the same for all its
    records and differs between histograms (``k_core=5``; not the scheme or backbone), "" when no key tells
    them apart."""
    by_histogram: dict[str, list[dict[str, str]]] = {}
    for record in filter(has_group_fields, records):
        config = {k: v for k, v in flat_config(record["config"]).items() if k not in ("scheme", "backbone")}
        by_histogram.setdefault(histogram_id(record), []).append(config)
    keys = sorted({k for configs in by_histogram.values() for config in configs for k in config})
    shared = {h: {k: values.pop() for k in keys if len(values := {c.get(k, ABSENT) for c in configs}) == 1}
              for h, configs in by_histogram.items()}
    telling = [k for k in keys if all(k in values for values in shared.values())
               and len({values[k] for values in shared.values()}) > 1]
    return {h: ", ".join(f"{k}={values[k]}" for k in telling) for h, values in shared.items()}


def build_group_report(scan: RecordScan, reports_dir: Path, scheme: str = "interactions") -> list[Path]:
    """Write ``groups.md``, ``groups.csv`` and a grouped bar figure per section; [] without finished runs."""
    finished = [(path, r) for path, r in scan.records if r["status"] == "ok"]
    if not finished:
        return []
    frame, sections = group_frame([r for _, r in finished], scheme)
    lacking = [str(path) for path, r in finished if not has_group_fields(r)]
    reports_dir.mkdir(parents=True, exist_ok=True)
    md, csv = reports_dir / "groups.md", reports_dir / "groups.csv"
    cut = ("an equal number of training interactions" if scheme == "interactions" else "an equal number of items")
    lines = ["# Popularity groups\n",
             f"Generated by `python -m benchmark leaderboard` from the records in {scan.results_dir} at {now()}; "
             f"do not edit by hand. Items are cut into {N_GROUPS} groups by training interactions, G1 the most "
             f"popular, each holding about {cut} (`--groups {scheme}`; the other choice is "
             f"`--groups {'items' if scheme == 'interactions' else 'interactions'}`); items with equal counts stay "
             f"together, and cold items fall in G{N_GROUPS}. Cells: Recall@{SHOWN_K} / NDCG@{SHOWN_K} over the test "
             f"targets in the group, mean over n seeds; targets = test targets in the group. A section whose runs were "
             "trained on different data (another item training-count histogram, csv column train_histogram) has a "
             f"table with its own groups per histogram. {LEGEND}\n"]
    figures: list[Path] = []
    histograms = frame.groupby(list(KEYS), sort=False)[HISTOGRAM].nunique() if not frame.empty else None
    for key, table in (frame.groupby([*KEYS, HISTOGRAM], sort=False) if not frame.empty else []):
        groups = sections[key]
        first = table.iloc[0]
        records = [r for _, r in finished if _in_section(r, key)]
        data = ""
        if histograms[key[:4]] > 1:
            keys = _data_labels([r for _, r in finished if _in_section(r, key[:4])])[key[4]]
            data = (f", training data {key[4]}{f' ({keys})' if keys else ''}: this section's runs were trained on "
                    f"{histograms[key[:4]]} different item training-count histograms, each with its own groups")
        lines += [f"## {key[0]} — split {key[1]}, profile {key[2]}, backbone {key[3]}{data}\n",
                  *(f"- {groups.label(g)}, {int(first[f'G{g + 1}_targets'])} test targets" for g in range(N_GROUPS)),
                  ""]
        header = ["Scheme", *(f"G{g + 1} R@{SHOWN_K} / N@{SHOWN_K}" for g in range(N_GROUPS)), "n"]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for _, row in table.iterrows():
            cells = [_pair(row, g) for g in range(N_GROUPS)]
            lines.append(f"| {row_label(row['scheme'], row['variant'])} | " + " | ".join(cells) + f" | {row['n']} |")
        lines.append("")
        figures += _figure(table, groups, key if data else key[:4], scheme, reports_dir, records)
    if lacking:
        lines += ["## Records without popularity fields\n",
                  "These finished runs were recorded before records carried each test target's training count and "
                  "the item training-count histogram, so they are not in the tables above (re-run them with "
                  "`python -m benchmark run ... --force` to include them):\n", *(f"- {path}" for path in lacking), ""]
    write_text(md, "\n".join(lines))
    if frame.empty:
        write_text(csv, pd.DataFrame(columns=[*KEYS, HISTOGRAM, "groups", "scheme"]).to_csv(index=False))
    else:
        write_text(csv, frame.to_csv(index=False))
    return [md, csv, *figures]


def _in_section(record: dict[str, Any], key: tuple) -> bool:
    """Whether a record belongs to a section ``(dataset, split, profile, backbone)``, and when ``key`` also
    names a histogram id, has group fields with that histogram."""
    config = record["config"]
    return ((config["dataset"], config["split"], config["profile"]) == key[:3]
            and config["backbone"] in (key[3], "none")
            and (len(key) == 4 or (has_group_fields(record) and histogram_id(record) == key[4])))


def _pair(row: pd.Series, g: int) -> str:
    recall, ndcg = row[f"G{g + 1}_recall@{SHOWN_K}"], row[f"G{g + 1}_ndcg@{SHOWN_K}"]
    return "–" if pd.isna(recall) else f"{recall:.4f} / {ndcg:.4f}"


def _figure(table: pd.DataFrame, groups: Groups, key: tuple, scheme: str, reports_dir: Path,
            records: list[dict[str, Any]]) -> list[Path]:
    """Grouped bars: one panel per metric, groups on the x axis, a bar per scheme."""
    fig, axes = new_figure(10, 4.2, 1, 2)
    labels = [row_label(s, v) for s, v in zip(table["scheme"], table["variant"])]
    width = 0.8 / max(1, len(labels))
    x = np.arange(N_GROUPS)
    for ax, metric in zip(axes, ("recall", "ndcg")):
        for i, (label, (_, row)) in enumerate(zip(labels, table.iterrows())):
            values = [row[f"G{g + 1}_{metric}@{SHOWN_K}"] for g in range(N_GROUPS)]
            ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(values), width, label=label)
        ax.set_xticks(x, [f"G{g + 1}\n{groups.items[g]} items" for g in range(N_GROUPS)])
        ax.set_xlabel("item group by training interactions (G1 most popular)")
        ax.set_ylabel(f"Recall@{SHOWN_K} (share of the group's test targets)" if metric == "recall"
                      else f"NDCG@{SHOWN_K} (mean over the group's test targets)")
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="scheme")
    fig.suptitle(f"Popularity groups (equal {scheme} per group) — {key[0]}, split {key[1]}, profile {key[2]}, "
                 f"backbone {key[3]}")
    seeds = sorted({r["config"].get("seed") for r in records}, key=str)
    caption = (f"Data: {key[0]} ({key[1]} split), profile {key[2]}; mean over seeds {seeds}; "
               f"hardware: {machines(records)}. Drawn from run records by python -m benchmark leaderboard.")
    return save(fig, reports_dir, slug("groups", *key), caption)
