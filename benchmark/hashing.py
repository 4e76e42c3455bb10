"""One content hash for every cache key, checkpoint fingerprint and config id of the suite."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def content_key(*parts: Any, length: int = 16) -> str:
    """The first ``length`` hex characters of the SHA-256 of ``parts``, in order.

    A tensor or array counts by its dtype, shape and bytes; a list or tuple whose elements are tensors, arrays or
    strings counts element by element (each closed by a separator, so ``["ab"]`` and ``["a", "b"]`` differ); a
    string counts as its UTF-8 bytes; anything else as sorted-key JSON (``str`` for what JSON cannot write). A
    single JSON part hashes exactly its JSON text, which keeps config hashes stable.
    """
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()[:length]


def without_off_values(fields: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the keys of ``later`` (keys added after hashes of ``fields`` were first kept) that hold
    their off value ``later[key]``: adding a key leaves every existing hash, config id and cache key as it was."""
    return {key: value for key, value in fields.items() if not (key in later and value == later[key])}


def _update(digest: Any, part: Any) -> None:
    if isinstance(part, np.ndarray):
        digest.update(repr((str(part.dtype), part.shape)).encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, torch.Tensor):
        tensor = part.detach().cpu().contiguous().reshape(-1)
        digest.update(repr((str(part.dtype), tuple(part.shape))).encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(part, str):
        digest.update(part.encode())
    elif isinstance(part, (list, tuple)) and part and all(
            isinstance(item, (torch.Tensor, np.ndarray, str)) for item in part):
        for item in part:
            _update(digest, item)
            digest.update(b"\0")
    else:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")
"""Files of a checkpoint folder that :func:`checkpoint_fingerprint` samples instead of reading whole."""
SAMPLE_BLOCKS, BLOCK_BYTES = 64, 4096
"""Blocks read from each weights file, evenly spaced from its first byte to its last."""
MAX_HEADER_BYTES = 100_000_000
"""The largest safetensors header read (the format's own limit), so a file that is not one is not read whole."""


def checkpoint_fingerprint(folder: str | Path) -> str:
    """A content fingerprint of a checkpoint folder, cheap for any model size: 12 hex characters hashing the
    name and bytes of every top-level file not starting with ``.`` (config, tokenizer files, weights index), except
    weights files (:data:`WEIGHT_SUFFIXES`), which count by name, size, safetensors header (tensor names, dtypes,
    shapes, offsets) and :data:`SAMPLE_BLOCKS` blocks of :data:`BLOCK_BYTES` evenly spaced over the file, so a
    checkpoint saved again to the same folder after any training changes it. Sub-folders are not read."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(path.name.encode() + b"\0")
        if path.suffix in WEIGHT_SUFFIXES:
            _update_sampled(digest, path)
        else:
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _update_sampled(digest: Any, path: Path) -> None:
    """Hash a weights file's size, safetensors header and evenly spaced blocks (the whole file when small)."""
    size = path.stat().st_size
    digest.update(str(size).encode() + b"\0")
    with open(path, "rb") as handle:
        if path.suffix == ".safetensors" and size >= 8:
            length = int.from_bytes(handle.read(8), "little")
            digest.update(handle.read(min(length, size - 8, MAX_HEADER_BYTES)))
        if size <= SAMPLE_BLOCKS * BLOCK_BYTES:
            handle.seek(0)
            digest.update(handle.read())
            return
        for block in range(SAMPLE_BLOCKS):
            handle.seek(block * (size - BLOCK_BYTES) // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(BLOCK_BYTES))
