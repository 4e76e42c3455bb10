"""Which finished records belong to which report section (dataset, split, profile, backbone).

Baselines use no LLM backbone (``backbone == "none"``), so, as in the leaderboard, they are placed in every
backbone's section of their dataset, split and profile (in a section of their own when no backbone ran there).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NO_BACKBONE = "none"
Section = tuple[str, str, str, str]
"""(dataset, split, profile, backbone)."""


def records_by_section(records: Iterable[dict[str, Any]]) -> dict[Section, list[dict[str, Any]]]:
    """Records grouped by section, sorted by section; baselines copied into every backbone's section."""
    records = list(records)
    out: dict[Section, list[dict[str, Any]]] = {}
    for record in records:
        config = record["config"]
        if config["backbone"] != NO_BACKBONE:
            key = (config["dataset"], config["split"], config["profile"], config["backbone"])
            out.setdefault(key, []).append(record)
    for record in records:
        config = record["config"]
        if config["backbone"] == NO_BACKBONE:
            context = (config["dataset"], config["split"], config["profile"])
            backbones = [key[3] for key in out if key[:3] == context and key[3] != NO_BACKBONE] or [NO_BACKBONE]
            for backbone in dict.fromkeys(backbones):
                out.setdefault((*context, backbone), []).append(record)
    return dict(sorted(out.items()))
