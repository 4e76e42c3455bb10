"""Writing report figures: matplotlib with the non-interactive Agg backend, each figure as PNG and PDF.

Every figure carries a caption line at its bottom saying what data, hardware and settings it was drawn from.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmark.safeio import atomic_write  # noqa: E402

FIGURES_DIR = "figures"
"""Folder of the figures under the reports folder."""
DPI = 150


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Figure, Any]:
    """A figure with a ``rows`` x ``cols`` grid of axes (a single axes when 1 x 1)."""
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8})
    fig, axes = plt.subplots(rows, cols, figsize=(width, height))
    return fig, axes


def save(fig: Figure, reports_dir: Path, stem: str, caption: str) -> list[Path]:
    """Write ``figures/<stem>.png`` and ``.pdf`` under ``reports_dir`` with ``caption`` under the plot and in the
    files' metadata (PNG ``Description``, read back by :func:`caption_of`); close the figure."""
    folder = reports_dir / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fig.text(0.01, 0.005, caption, fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    paths = [folder / f"{stem}.{suffix}" for suffix in ("png", "pdf")]
    for path in paths:
        metadata = {"CreationDate": None, "Subject": caption} if path.suffix == ".pdf" else {"Description": caption}
        atomic_write(path, lambda tmp, path=path, metadata=metadata: fig.savefig(
            tmp, format=path.suffix[1:], dpi=DPI, metadata=metadata))
    plt.close(fig)
    return paths


def slug(*parts: str) -> str:
    """A file-name-safe stem from ``parts`` (``amazon2014:Beauty`` -> ``amazon2014_Beauty``)."""
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "_", part) for part in parts)


def caption_of(png: Path) -> str:
    """The caption :func:`save` stored in a PNG's metadata ("" when absent)."""
    from PIL import Image

    with Image.open(png) as image:
        return str(image.info.get("Description", ""))
