"""Markdown helpers shared by the per-scheme reports (identifier statistics, costs)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

SECTION_KEYS = ("dataset", "split", "profile", "backbone")


def markdown_sections(frame: pd.DataFrame, header: Sequence[str],
                      cells: Callable[[pd.Series], list[str]],
                      footer: Callable[[pd.DataFrame], list[str]] | None = None) -> list[str]:
    """One ``##`` section with a table per (dataset, split, profile, backbone); one row per scheme."""
    lines: list[str] = []
    for (dataset, split, profile, backbone), table in frame.groupby(list(SECTION_KEYS), sort=False):
        lines += [f"## {dataset} — split {split}, profile {profile}, backbone {backbone}\n",
                  "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(cells(row)) + " |" for _, row in table.iterrows()]
        lines += ["", *(footer(table) if footer else [])]
    return lines
