"""Option types shared by the scripts: argparse ``type=`` functions that refuse a bad value before any work.

Each raises :class:`argparse.ArgumentTypeError`, which argparse prints as ``error: argument --OPTION: MESSAGE``
under the usage line and exits with code 2, as ``python -m benchmark`` does (:mod:`benchmark.cli`); the checks
themselves are the suite's own (dataset names, backbones, devices, folders).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from benchmark.config import MAX_SEED
from benchmark.data.registry import check_dataset_name
from benchmark.runner import resolve_device
from benchmark.safeio import OutputDirError, check_input_dir, check_output_dir
from recommenders.backbones import BackboneError, check_backbone

T = TypeVar("T")


def at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """The type of an integer option from ``low`` (to ``high`` when given)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
        return value
    return parse


seed = at_least(0, MAX_SEED)
"""The type of ``--seed``: an integer from 0 to :data:`~benchmark.config.MAX_SEED`."""


def fraction(text: str) -> float:
    """The type of a rate: a number from 0 up to, not including, 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got '{text}'")
    return value


def non_negative(text: str) -> float:
    """The type of a tolerance: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'")
    return value


def comma_list(item: Callable[[str], T]) -> Callable[[str], list[T]]:
    """The type of a comma-separated list: at least one value, each parsed by ``item``, none given twice."""
    def parse(text: str) -> list[T]:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated values, none empty, got '{text}'")
        values = [item(part) for part in parts]
        twice = [part for index, part in enumerate(parts) if values[index] in values[:index]]
        if twice:
            raise argparse.ArgumentTypeError(f"'{twice[0]}' is given twice in '{text}'")
        return values
    return parse


def choice(choices: Iterable[str]) -> Callable[[str], str]:
    """The type of one name out of ``choices``."""
    names = tuple(choices)

    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"unknown '{text}'; choose from {', '.join(names)}")
        return text
    return parse


def dataset(text: str) -> str:
    """The type of a dataset name (:func:`benchmark.data.registry.check_dataset_name`)."""
    try:
        check_dataset_name(text)
    except KeyError as error:
        raise argparse.ArgumentTypeError(error.args[0]) from error
    return text


def backbone(text: str) -> str:
    """The type of a backbone: a preset, or a local or cached checkpoint (nothing is downloaded)."""
    try:
        check_backbone(text)
    except BackboneError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def device(text: str) -> str:
    """The type of ``--device``: auto, cpu, cuda or cuda:N of this machine, as resolved (``auto``: cuda or cpu)."""
    try:
        return str(resolve_device(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def data_dir(text: str) -> str:
    """The type of ``--data-dir``: an existing folder (nothing is created)."""
    check_input_dir(text, "folder", "the folder that holds the datasets' folders", argparse.ArgumentTypeError)
    return text


def output_dir(text: str, what: str = "folder") -> str:
    """The type of a folder the script writes in: made when missing, and writable (``what`` names it)."""
    try:
        check_output_dir(text, what)
    except OutputDirError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def output_file(text: str) -> Path:
    """The type of ``--output``: a file path, not a folder, whose folder is made when missing and is writable (as
    ``python -m benchmark tune --output``), and that is writable when it exists."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("give a file path (got an empty path)")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file path")
    output_dir(str(path.parent), "its folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path} is not writable")
    return path
