"""Thin data, reported before it is scored: item-content coverage, duplicate item rows, ids that look malformed.

``stats`` and ``run`` print :func:`coverage_line` and :func:`data_warnings` for every dataset; before any work,
``run`` calls :func:`check_content` for every scheme, which stops a scheme whose needed item content is too thin
(exit 2, naming the data file). Coverage is computed from the :class:`~benchmark.data.dataset.Dataset`'s items
table (after k-core filtering), the same for every source format.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from benchmark.data.dataset import DataError, Dataset

CONTENT_FIELDS = ("text", "categories", "brand")

COVERAGE_WARNING: dict[str, float] = {"text": 0.9, "categories": 0.9, "brand": 0.5}
"""Below this share of items with the field (text: a title or a description), ``stats`` and ``run`` warn. Text
and categories are what the content schemes (TIGER, LETTER, SETRec, BIGRec, IDGenRec, STORE; SemID's category
paths) encode for every item, so a tenth of the items without them is worth a warning; a brand is optional in
every source (Amazon metadata lacks it for about a fifth of the Beauty items), so only a missing majority is.
A field no item has is not warned about: the source does not provide it (``stats`` shows 0%)."""

MIN_COVERAGE: dict[str, float] = {"text": 0.5, "categories": 0.5}
"""A scheme that needs the field (:meth:`identifiers.base.Scheme.required_content`) refuses to run (exit 2) when
some but fewer than this share of items have it: most of its identifiers would come from empty content. When no
item has the field the source lacks it, and the scheme's record is ``not_applicable`` instead."""

NUMERIC_ID_SHARE = 0.5
"""When at least this share of a dataset's user (or item) ids are non-negative integers, its source numbers its
ids (RecBole atomic files, LC-Rec json, remapped P5 files), and the ids that are not (``abc``, ``x1.5``, ``-3``)
are reported as malformed."""

_NUMERIC_ID = re.compile(r"\d+")
_EXAMPLES = 5


def coverage_line(dataset: Dataset) -> str:
    """``item content: text 98.0%, categories 100.0%, brand 82.3% of 12,101 items (from FILE)`` and what repeats."""
    coverage = dataset.content_coverage()
    shares = ", ".join(f"{field} {100 * coverage[field]:.1f}%" for field in CONTENT_FIELDS)
    source = f" (from {dataset.item_source})" if dataset.item_source else ""
    shared = dataset.shared_texts()
    repeats = f"; {shared:,} items share their text with another item" if shared else ""
    return f"item content: {shares} of {dataset.n_items:,} items{source}{repeats}"


def data_warnings(dataset: Dataset) -> list[str]:
    """Thin content (below :data:`COVERAGE_WARNING`), duplicate item rows and malformed-looking ids."""
    warnings = []
    coverage = dataset.content_coverage()
    source = dataset.item_source or "the item content"
    for field in CONTENT_FIELDS:
        share = coverage[field]
        if 0 < share < COVERAGE_WARNING[field]:
            warnings.append(f"{dataset.name}: only {_count(share, dataset.n_items)} items ({100 * share:.1f}%) have "
                            f"{_describe(field)} in {source}; below the warning threshold "
                            f"{100 * COVERAGE_WARNING[field]:.0f}%")
    if dataset.duplicate_item_rows:
        warnings.append(f"{dataset.name}: {dataset.duplicate_item_rows:,} duplicate item line(s) in {source} "
                        "repeat an earlier line's item id; the first line of each id is used")
    for what, ids in (("user", dataset.user_ids), ("item", dataset.items["raw_id"])):
        bad = malformed_ids(ids)
        if bad:
            shown = ", ".join(repr(i) for i in bad[:_EXAMPLES]) + (", ..." if len(bad) > _EXAMPLES else "")
            warnings.append(f"{dataset.name}: {len(bad):,} {what} id(s) are not non-negative integers although "
                            f"most {what} ids are, e.g. {shown}; check the source's {what} id column")
    return warnings


def check_content(dataset: Dataset, scheme: str, needs: Iterable[str]) -> str | None:
    """Raise :class:`DataError` when ``scheme`` needs a field that some but fewer than :data:`MIN_COVERAGE` of
    ``dataset``'s items have; return why the scheme is not applicable when no item has it, else None."""
    coverage = dataset.content_coverage()
    for field in needs:
        share = coverage[field]
        if share == 0:
            return f"dataset has no item {field}; {scheme} needs {_describe(field)} per item"
        if share < MIN_COVERAGE[field]:
            source = dataset.item_source or "its item content"
            raise DataError(f"{scheme} needs {_describe(field)} per item, but only "
                            f"{_count(share, dataset.n_items)} of {dataset.n_items:,} items ({100 * share:.1f}%) of "
                            f"dataset '{dataset.name}' have it in {source}; the minimum is "
                            f"{100 * MIN_COVERAGE[field]:.0f}%: complete that file or leave {scheme} out")
    return None


def malformed_ids(ids: Iterable[object]) -> list[str]:
    """The ids that are not non-negative integers when at least :data:`NUMERIC_ID_SHARE` of ``ids`` are."""
    ids = [str(i) for i in ids]
    numeric = [bool(_NUMERIC_ID.fullmatch(i)) for i in ids]
    if not ids or sum(numeric) < NUMERIC_ID_SHARE * len(ids):
        return []
    return [i for i, ok in zip(ids, numeric) if not ok]


def _describe(field: str) -> str:
    return {"text": "a title or description", "categories": "a category path", "brand": "a brand"}[field]


def _count(share: float, total: int) -> str:
    return f"{round(share * total):,}"
