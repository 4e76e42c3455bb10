"""Safe file input/output: atomic writes, loads that never execute code, and output-folder checks.

* :func:`atomic_write` writes through a uniquely named temporary file in the target's folder, then renames it:
  readers and concurrent writers never see half a file, and a failed write (disk full, permission) leaves no
  file behind and raises :class:`WriteError` naming the path (the CLI exits with code 4).
* :func:`safe_load` reads a tensor file with ``torch.load(weights_only=True)``: tensors, numbers, strings,
  lists, tuples and dicts only; a pickle that would construct any other object (code) is refused, reported
  with a warning naming the file, and ``None`` is returned so the caller recomputes (and overwrites) it.
* :func:`load_or_compute` is how every cached component is read or fitted and written.
* :func:`check_output_dir` runs before any work: the folder exists or can be made, is a folder and is writable.
"""
from __future__ import annotations

import dataclasses
import os
import random
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch


class WriteError(OSError):
    """Writing an output file failed (disk full, permission, not a folder); the message names the file."""


class OutputDirError(ValueError):
    """A folder option is unusable (missing or not a folder to read from; cannot be made or not writable to write
    to); the message names it."""


def warn(message: str) -> None:
    """A warning on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def check_input_dir(path: str | os.PathLike, option: str, what: str,
                    error: type[Exception] = OutputDirError) -> Path:
    """``path`` checked to be an existing folder to read from (nothing is created); ``error`` naming ``option``
    and saying ``what`` the folder should be otherwise."""
    if not str(path).strip():
        raise error(f"{option}: give {what} (got an empty path)")
    folder = Path(path)
    if not folder.exists():
        raise error(f"{option} {folder}: no such folder; give {what}")
    if not folder.is_dir():
        raise error(f"{option} {folder}: is not a folder (a file of that name exists); give {what}")
    return folder


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """``path`` made if missing and checked to be a writable folder; :class:`OutputDirError` naming ``option``."""
    if not str(path).strip():
        raise OutputDirError(f"{option}: give a folder (got an empty path)")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"{option} {folder}: is not a folder (a file of that name exists)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"{option} {folder}: cannot be created ({error.strerror or error})") from error
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
    except OSError as error:
        raise OutputDirError(f"{option} {folder}: is not writable ({error.strerror or error})") from error
    os.close(fd)
    os.unlink(probe)
    return folder


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a fresh temporary file beside ``path``, flushed to disk, then renamed to ``path``.

    Any failure removes the temporary file; an ``OSError`` is raised again as :class:`WriteError` naming
    ``path`` (an interrupt is raised as it is). An existing ``path`` stays as it was until the rename.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """``text`` as the UTF-8 file ``path``, atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def plain(value: Any) -> Any:
    """``value`` in the types :func:`safe_load` reads back: NumPy arrays become tensors, NumPy scalars Python
    numbers, dataclasses dicts; dicts, lists and tuples are converted item by item."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return type(value)((key, plain(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def save_tensors(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` made :func:`plain` (tensors, numbers, strings, lists, tuples, dicts: what :func:`safe_load`
    reads back) saved with ``torch.save``, atomically."""
    payload = plain(payload)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def safe_load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The dict saved in ``path`` by :func:`save_tensors`, loaded with ``torch.load(weights_only=True)``; None,
    with a warning naming the file, when it is not such a file (a crafted pickle, another format, truncated),
    so the caller recomputes it. Nothing in the file is ever executed."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is recomputed, whatever the reason
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warn(f"{path}: not loaded (only tensors and plain values are read, nothing is executed: {first}); "
             "computing it again")
        return None
    if not isinstance(state, dict):
        warn(f"{path}: not loaded (expected a dict of tensors, got {type(state).__name__}); computing it again")
        return None
    return state


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Run the body, then put the global random generators (Python, NumPy, torch on the CPU and every CUDA
    device) back where they were. Fitting a cached component inside it makes a run's later draws (the
    recommender's initial weights, dropout) the same whether the component was fitted or loaded, so a result
    depends on its config and seed, not on what the cache held."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def load_or_compute(path: Path, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The cached component in ``path`` and whether it came from there: read with :func:`safe_load`, or, when the
    file is missing or unreadable, ``compute()`` (run under :func:`random_state_kept`, so what a run draws
    afterwards does not depend on whether the file existed) made :func:`plain` and saved with
    :func:`save_tensors`. The one way every cached component (CF encoder, quantizers, LightGCN, text embeddings,
    text vocabularies) is read and written."""
    saved = safe_load(path) if Path(path).is_file() else None
    if saved is not None:
        return saved, True
    with random_state_kept():
        saved = plain(compute())
    save_tensors(path, saved)
    return saved, False
